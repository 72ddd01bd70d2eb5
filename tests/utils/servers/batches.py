"""The Files and Batch APIs of the loopback OpenAI server, in memory, as OpenAI and Azure document them.

- ``POST /v1/files`` (multipart: ``file``, ``purpose=batch``): a JSONL of requests, each
  ``{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body": {...}}`` (Azure: ``url``
  ``/chat/completions``, ``model`` the deployment).
- ``POST /v1/batches`` (``input_file_id``, ``endpoint``, ``completion_window: 24h``) creates a batch in
  ``validating``; each ``GET /v1/batches/{id}`` moves it on: validation (custom ids unique, one model, every
  line's ``url`` the batch's ``endpoint``; a bad file ends ``failed`` with ``errors``), then ``in_progress``
  (``request_counts`` growing), ``finalizing`` and ``completed``, or ``expired`` when told to (the lines not
  done go to the error file as ``batch_expired``).
- ``GET /v1/files/{id}/content``: the output file (``{"custom_id", "response": {"status_code", "body"}}``)
  and the error file (a line's HTTP error, or ``"error": {"code", "message"}``). Lines come in no set order.

Example:
    >>> store = BatchStore(answer=lambda body: (200, {"choices": [{"message": {"content": "hi"}}]}))
    >>> file = store.upload(b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", '
    ...                     b'"body": {"model": "m", "messages": []}}\\n', "batch")
    >>> batch = store.create(file["id"], "/v1/chat/completions", "24h")
    >>> while batch["status"] not in ("completed", "failed", "expired"):
    ...     batch = store.retrieve(batch["id"])
    >>> batch["request_counts"], store.content(batch["output_file_id"]).count(b"\\n")
    ({'total': 1, 'completed': 1, 'failed': 0}, 1)
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

Answer = Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]
"""A line's body -> (HTTP status, response body): the server's own chat handling."""


@dataclass
class _Batch:
    id: str
    input_file_id: str
    endpoint: str
    lines: list[dict[str, Any]]
    status: str = "validating"
    polls: int = 0
    done: int = 0
    outputs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    validation_errors: list[dict[str, Any]] = field(default_factory=list)
    output_file_id: Optional[str] = None
    error_file_id: Optional[str] = None
    expire: bool = False


class BatchStore:
    """Files and batches (see the module docstring). ``polls_per_step``: how many retrievals each state
    lasts (a test that kills the client while it polls wants many); ``expire_after``: lines done before a
    batch expires (None: it completes); ``fail_line(custom_id, body)``: an error body for a line (a 500
    in the error file), or None."""

    def __init__(
        self,
        answer: Answer,
        polls_per_step: int = 1,
        expire_after: Optional[int] = None,
        fail_line: Optional[Callable[[str, dict[str, Any]], Optional[dict[str, Any]]]] = None,
    ):
        self.answer = answer
        self.polls_per_step = polls_per_step
        self.expire_after = expire_after
        self.fail_line = fail_line
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, _Batch] = {}
        self.created = 0
        self.uploads = 0
        self._lock = threading.Lock()
        self._counter = 0

    def _id(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}-{self._counter:04d}"

    # --- files -------------------------------------------------------------------------------------------
    def upload(self, content: bytes, purpose: str, filename: str = "batch.jsonl") -> dict[str, Any]:
        if purpose != "batch":
            raise ValueError(f"purpose: expected 'batch' for a batch input file, found {purpose!r}")
        with self._lock:
            self.uploads += 1
            file_id = self._id("file")
            self.files[file_id] = {
                "id": file_id,
                "object": "file",
                "bytes": len(content),
                "created_at": int(time.time()),
                "filename": filename,
                "purpose": purpose,
                "status": "processed",
                "content": content,
            }
        return {k: v for k, v in self.files[file_id].items() if k != "content"}

    def content(self, file_id: str) -> bytes:
        return self.files[file_id]["content"]

    def _store(self, lines: list[str], purpose: str) -> Optional[str]:
        if not lines:
            return None
        file_id = self._id("file")
        content = ("\n".join(lines) + "\n").encode()
        self.files[file_id] = {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": f"{purpose}.jsonl",
            "purpose": purpose,
            "status": "processed",
            "content": content,
        }
        return file_id

    # --- batches ------------------------------------------------------------------------------------------
    def create(self, input_file_id: str, endpoint: str, completion_window: str) -> dict[str, Any]:
        if completion_window != "24h":
            raise ValueError(f"completion_window: expected '24h', found {completion_window!r}")
        if input_file_id not in self.files:
            raise KeyError(input_file_id)
        lines = [json.loads(line) for line in self.files[input_file_id]["content"].splitlines() if line.strip()]
        with self._lock:
            self.created += 1
            batch = _Batch(self._id("batch"), input_file_id, endpoint, lines, expire=self.expire_after is not None)
            self.batches[batch.id] = batch
        return self._view(batch)

    def retrieve(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            batch = self.batches[batch_id]
            batch.polls += 1
            if batch.polls % self.polls_per_step == 0:
                self._step(batch)
            return self._view(batch)

    def _step(self, batch: _Batch) -> None:
        if batch.status == "validating":
            batch.validation_errors = self._validate(batch)
            batch.status = "failed" if batch.validation_errors else "in_progress"
        elif batch.status == "in_progress":
            chunk = max(1, len(batch.lines) // 3)  # a third of the lines per step: the view sees progress
            for line in batch.lines[batch.done : batch.done + chunk]:
                if batch.expire and batch.done >= (self.expire_after or 0):
                    batch.status = "expired"
                    break
                self._run(batch, line)
                batch.done += 1
            if batch.status == "expired" or batch.done >= len(batch.lines):
                if batch.status == "expired":
                    for line in batch.lines[batch.done :]:
                        batch.errors.append(
                            json.dumps(
                                {
                                    "id": self._id("batch_req"),
                                    "custom_id": line["custom_id"],
                                    "response": None,
                                    "error": {
                                        "code": "batch_expired",
                                        "message": "This request could not be executed before the "
                                        "completion window expired.",
                                    },
                                }
                            )
                        )
                    self._finish(batch)
                else:
                    batch.status = "finalizing"
        elif batch.status == "finalizing":
            batch.status = "completed"
            self._finish(batch)

    def _finish(self, batch: _Batch) -> None:
        random.Random(batch.id).shuffle(batch.outputs)  # lines come in no set order
        batch.output_file_id = self._store(batch.outputs, "batch_output")
        batch.error_file_id = self._store(batch.errors, "batch_output")

    def _validate(self, batch: _Batch) -> list[dict[str, Any]]:
        problems, seen, models = [], set(), set()
        for number, line in enumerate(batch.lines, 1):
            custom_id = line.get("custom_id")
            if not isinstance(custom_id, str) or custom_id in seen:
                problems.append(
                    {
                        "code": "duplicate_custom_id" if custom_id in seen else "missing_required_parameter",
                        "message": f"custom_id: expected a unique string, found {custom_id!r}",
                        "line": number,
                    }
                )
            seen.add(custom_id)
            if line.get("method") != "POST" or line.get("url") != batch.endpoint:
                problems.append(
                    {
                        "code": "invalid_url",
                        "message": f"The URL provided for this request does not match "
                        f"the batch endpoint {batch.endpoint!r}: found {line.get('url')!r}.",
                        "line": number,
                    }
                )
            models.add((line.get("body") or {}).get("model"))
        if len(models) > 1:
            problems.append(
                {
                    "code": "mismatched_model",
                    "message": f"Each batch may only use one model, found {sorted(map(str, models))}.",
                    "line": None,
                }
            )
        return problems

    def _run(self, batch: _Batch, line: dict[str, Any]) -> None:
        failure = self.fail_line(line["custom_id"], line["body"]) if self.fail_line else None
        status, body = (500, failure) if failure is not None else self.answer(line["body"])
        record = {
            "id": self._id("batch_req"),
            "custom_id": line["custom_id"],
            "response": {"status_code": status, "request_id": self._id("req"), "body": body},
            "error": None,
        }
        (batch.outputs if status == 200 else batch.errors).append(json.dumps(record))

    def _view(self, batch: _Batch) -> dict[str, Any]:
        failed = len(batch.errors) if batch.status in ("completed", "expired") else 0
        completed = len(batch.outputs)
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": batch.endpoint,
            "input_file_id": batch.input_file_id,
            "completion_window": "24h",
            "status": batch.status,
            "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id,
            "created_at": int(time.time()),
            "errors": {"object": "list", "data": batch.validation_errors} if batch.validation_errors else None,
            "request_counts": {"total": len(batch.lines), "completed": completed, "failed": failed},
        }
