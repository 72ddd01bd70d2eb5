"""Provider batch mode of the ``openai`` engine: a step's requests as one Batch API job, at about half price.

With ``EngineConfig.batch`` (``--batch``), every ``chat`` call of the engine becomes one job of the
provider's Batch API (OpenAI's and Azure's, the same shape): the requests are written as one JSONL file,
``{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body": <the online request>}`` a line,
uploaded to ``/files`` (``purpose=batch``), run with ``/batches`` (``completion_window=24h``) and polled
until the job ends; its output and error files are read back by ``custom_id`` (they come in no set order)
and every answer goes through the engine's ``on_result``, so the response cache keeps it as an online
answer: a later online run reuses it. A BARRED run's stage step (all generations of a round, all judges
of a debate round, ...) is one job.

- **Nothing is submitted twice.** The jobs are recorded in ``batch_dir`` (the run's
  ``work/batches/``: ``jobs.json``, each job's input file and, once it ended, its output and error files)
  the moment they are created. The same command after Ctrl-C or ``kill -9`` finds the jobs that hold its
  requests (by ``custom_id``, a hash of the request) and polls them instead of submitting new ones.
- **Failed or expired lines are retried** in the next job, up to ``batch_max_retries`` times (5xx, 429 and
  ``batch_expired``; a 4xx line, a request the provider refuses, is not), then returned as failed requests.
  A job whose input the provider rejects as a whole (status ``failed``) raises :class:`EngineError`.
- **The live view** shows each job's state and its lines done and failed.
- **Offline on a GPU.** The input files are what ``python -m vllm.entrypoints.openai.run_batch -i JOB.jsonl
  -o results.jsonl --model MODEL`` reads (see the README).

Example:
    >>> from hf_barred.llm.engines.openai.batch import batch_line, custom_id
    >>> payload = {"model": "gpt-5-mini", "messages": [{"role": "user", "content": "Is 7 prime?"}]}
    >>> line = batch_line(payload, "/v1/chat/completions")
    >>> line["custom_id"] == custom_id(payload), line["method"], line["url"], line["body"] is payload
    (True, 'POST', '/v1/chat/completions', True)
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import openai

from ...activity import ACTIVITY
from ...base import Completion, EngineError
from ...config import EngineConfig
from .runtime import Runtime
from .wire import MalformedResponse, backoff_delay, parse_chat_completion

__all__ = ["BatchJob", "BatchRunner", "TERMINAL", "batch_line", "custom_id"]

logger = logging.getLogger(__name__)

TERMINAL = ("completed", "failed", "expired", "cancelled")
"""The states a job ends in (before them: validating, in_progress, finalizing, cancelling)."""
RETRIED_CODES = ("batch_expired",)
"""Line errors that a later job may succeed on (with 429 and 5xx responses)."""
API_RETRIES = 4
"""Retries of one files/batches call that failed on the way (a dropped connection, 5xx, 429)."""


def custom_id(payload: dict[str, Any]) -> str:
    """The ``custom_id`` of a request: a hash of its body, so the same request finds the same line again."""
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return "hfb-" + hashlib.sha256(blob.encode("utf-8")).hexdigest()[:40]


def batch_line(payload: dict[str, Any], url: str) -> dict[str, Any]:
    """One line of a batch input file (the OpenAI batch format, also what vLLM's ``run_batch`` reads)."""
    return {"custom_id": custom_id(payload), "method": "POST", "url": url, "body": payload}


@dataclass
class BatchJob:
    """One submitted job, as recorded in ``jobs.json``."""

    id: str
    input_file_id: str
    custom_ids: list[str]
    attempt: int
    status: str = "validating"
    done: bool = False
    """True once its output and error files are saved next to ``jobs.json``."""
    created: float = field(default_factory=time.time)


@dataclass
class _Outcome:
    completions: dict[str, Completion] = field(default_factory=dict)
    retry: dict[str, str] = field(default_factory=dict)  # custom_id -> why it failed (worth another job)
    failed: dict[str, str] = field(default_factory=dict)  # custom_id -> why it failed for good


class BatchRunner:
    """Runs requests as Batch API jobs for one engine config, recording them in ``config.batch_dir``."""

    def __init__(self, config: EngineConfig, azure: bool):
        if not config.batch_dir:
            raise EngineError(
                "batch mode needs a folder for its jobs (EngineConfig.batch_dir); `barred generate "
                "--batch` uses OUTPUT/work/batches."
            )
        self.config = config
        self.folder = Path(config.batch_dir)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.endpoint = "/chat/completions" if azure else "/v1/chat/completions"
        self.submitted = 0
        """Jobs this runner created (not those it found recorded and polled)."""

    # --- the record ------------------------------------------------------------------------------------------
    @property
    def _record(self) -> Path:
        return self.folder / "jobs.json"

    def jobs(self) -> list[BatchJob]:
        """The recorded jobs (oldest first)."""
        try:
            return [BatchJob(**job) for job in json.loads(self._record.read_text(encoding="utf-8"))["jobs"]]
        except FileNotFoundError:
            return []

    def _save(self, jobs: list[BatchJob]) -> None:
        tmp = self._record.with_name(f"jobs.json.tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"jobs": [asdict(job) for job in jobs]}, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, self._record)  # a killed run leaves the old record or the new one, never half of one

    def _update(self, job: BatchJob) -> None:
        jobs = self.jobs()
        self._save([job if j.id == job.id else j for j in jobs] if any(j.id == job.id for j in jobs) else jobs + [job])

    # --- a run ------------------------------------------------------------------------------------------------
    async def run(
        self, rt: Runtime, payloads: list[dict[str, Any]], on_result: Callable[[int, Completion], None]
    ) -> None:
        """Answer every payload (``on_result(i, completion)``, in the caller's loop thread), through recorded
        jobs that hold it or new ones; failed lines go again, up to ``batch_max_retries`` times."""
        ids = [custom_id(p) for p in payloads]
        where = {cid: i for i, cid in enumerate(ids)}
        wanted = set(ids)
        attempt_of: dict[str, int] = {}
        pending: list[BatchJob] = []
        for job in self.jobs():
            held = wanted.intersection(job.custom_ids)
            if held:
                pending.append(job)
                for cid in held:
                    attempt_of[cid] = max(attempt_of.get(cid, 0), job.attempt)
        covered = {cid for job in pending for cid in job.custom_ids}
        fresh = [cid for cid in dict.fromkeys(ids) if cid not in covered]
        if fresh:
            pending.append(await self._submit(rt, [payloads[where[cid]] for cid in fresh], attempt=0))
        answered: set[str] = set()
        while pending:
            finished = await self._wait_any(rt, pending)
            pending.remove(finished)
            outcome = self._read(finished)
            for cid, completion in outcome.completions.items():
                if cid in wanted and cid not in answered:
                    answered.add(cid)
                    on_result(where[cid], completion)
            retry = [cid for cid in outcome.retry if cid in wanted and cid not in answered]
            still = [cid for cid in retry if not any(cid in job.custom_ids for job in pending)]
            attempt = finished.attempt + 1
            if still and attempt <= self.config.batch_max_retries:
                pending.append(await self._submit(rt, [payloads[where[cid]] for cid in still], attempt=attempt))
                continue
            for cid in still + [c for c in outcome.failed if c in wanted and c not in answered]:
                if not any(cid in job.custom_ids for job in pending):
                    answered.add(cid)
                    why = outcome.retry.get(cid) or outcome.failed.get(cid) or "no answer in the job's files"
                    tries = f" after {finished.attempt + 1} job(s)" if cid in outcome.retry else ""
                    on_result(
                        where[cid],
                        Completion(
                            text="",
                            finish_reason="error",
                            model=self.config.model,
                            error=f"batch line failed{tries}: {why}",
                        ),
                    )
        for cid in wanted - answered:  # a job that ended without a line for it (never expected)
            on_result(
                where[cid],
                Completion(
                    text="",
                    finish_reason="error",
                    model=self.config.model,
                    error="batch line missing from the job's output and error files",
                ),
            )

    async def _submit(self, rt: Runtime, payloads: list[dict[str, Any]], attempt: int) -> BatchJob:
        lines = [batch_line(p, self.endpoint) for p in payloads]
        content = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode("utf-8")
        name = f"input-{custom_id({'lines': [line['custom_id'] for line in lines]})[4:20]}.jsonl"
        (self.folder / name).write_bytes(content)
        uploaded = await self._api(
            rt, lambda: rt.client.files.create(file=(name, content, "application/jsonl"), purpose="batch")
        )
        endpoint: Any = self.endpoint  # Azure's "/chat/completions" is not in the SDK's literal type; OpenAI's is
        created = await self._api(
            rt, lambda: rt.client.batches.create(input_file_id=uploaded.id, endpoint=endpoint, completion_window="24h")
        )
        job = BatchJob(
            id=created.id,
            input_file_id=uploaded.id,
            custom_ids=[line["custom_id"] for line in lines],
            attempt=attempt,
            status=created.status,
        )
        self._update(job)  # recorded at once: a rerun polls it instead of submitting it again
        self.submitted += 1
        return job

    async def _wait_any(self, rt: Runtime, jobs: list[BatchJob]) -> BatchJob:
        """Poll until one of ``jobs`` has ended and its files are saved; return it."""
        while True:
            for job in jobs:
                if job.done:
                    return job
                batch = await self._api(rt, functools.partial(rt.client.batches.retrieve, job.id))
                counts = batch.request_counts
                self._show(
                    job,
                    batch.status,
                    counts.completed if counts else 0,
                    counts.failed if counts else 0,
                    counts.total if counts else len(job.custom_ids),
                )
                job.status = batch.status
                if batch.status in TERMINAL:
                    if batch.status == "failed":
                        errors = [e.message for e in (batch.errors.data if batch.errors else []) if e.message]
                        why = "; ".join(errors[:3]) or "no reason given"
                        raise EngineError(
                            rt.redact(
                                f"the provider refused batch job {job.id} ({why}): nothing in it ran. Check --model "
                                "and the provider's batch limits, or run without --batch."
                            )
                        )
                    for kind, file_id in (("output", batch.output_file_id), ("errors", batch.error_file_id)):
                        data = b""
                        if file_id:
                            response = await self._api(rt, functools.partial(rt.client.files.content, file_id))
                            data = response.read() if hasattr(response, "read") else response.content
                        (self.folder / f"{kind}-{job.id}.jsonl").write_bytes(data)
                    job.done = True
                    self._update(job)
                    return job
            await asyncio.sleep(self.config.batch_poll_interval)

    def _read(self, job: BatchJob) -> _Outcome:
        """A finished job's answers and failures, from its saved output and error files."""
        outcome = _Outcome()
        for kind in ("output", "errors"):
            path = self.folder / f"{kind}-{job.id}.jsonl"
            for raw in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
                if not raw.strip():
                    continue
                line = json.loads(raw)
                cid, response, error = line.get("custom_id"), line.get("response"), line.get("error")
                status = (response or {}).get("status_code")
                if status == 200:
                    try:
                        body = json.dumps(response.get("body")).encode("utf-8")
                        outcome.completions[cid] = parse_chat_completion(body, self.config.model)
                    except MalformedResponse as exc:
                        outcome.retry[cid] = f"malformed answer: {exc}"
                    continue
                if error:
                    why = f"{error.get('code')}: {error.get('message')}"
                    (outcome.retry if error.get("code") in RETRIED_CODES else outcome.failed)[cid] = why
                    continue
                detail = ((response or {}).get("body") or {}).get("error", {}) or {}
                why = f"HTTP {status}: {detail.get('message', 'no message')}"
                (outcome.retry if status == 429 or (status or 500) >= 500 else outcome.failed)[cid] = why
        return outcome

    async def _api(self, rt: Runtime, call: Callable[[], Any]) -> Any:
        """A files/batches call, retried a few times on a dropped connection, 429 or 5xx."""
        for attempt in range(API_RETRIES + 1):
            try:
                return await call()
            except openai.APIStatusError as exc:
                if attempt >= API_RETRIES or not (exc.status_code == 429 or exc.status_code >= 500):
                    raise EngineError(
                        rt.redact(
                            f"the batch API at {self.config.base_url} refused a call "
                            f"(HTTP {exc.status_code}: {exc.message})"
                        )
                    ) from None
            except openai.APIConnectionError as exc:
                if attempt >= API_RETRIES:
                    raise EngineError(
                        rt.redact(f"could not reach the batch API at {self.config.base_url} ({exc})")
                    ) from None
            await asyncio.sleep(backoff_delay(attempt))
        raise AssertionError("unreachable")

    def _show(self, job: BatchJob, status: str, completed: int, failed: int, total: int) -> None:
        note = f"batch {job.id}: {status}, {completed}/{total} done" + (f", {failed} failed" if failed else "")
        if ACTIVITY.note_changed(note) and not ACTIVITY.view_open:
            print(f"  {note}", file=sys.stderr, flush=True)
        logger.debug(note)
