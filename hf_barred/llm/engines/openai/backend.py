"""The ``openai`` engine: any OpenAI-compatible chat server (vLLM serve, TGI, Ollama, llama.cpp server,
OpenAI, Azure OpenAI, Anthropic's and Gemini's OpenAI-compatible endpoints).

Each request follows its provider's contract (:mod:`hf_barred.llm.providers`, ``EngineConfig.provider``):
OpenAI's reasoning models get ``max_completion_tokens`` and ``reasoning_effort`` and no ``temperature``;
Azure's client adds the deployment to the URL and the ``api-version``; Anthropic gets no JSON schema or
seed (:meth:`OpenAICompatBackend.request_payload`). With ``EngineConfig.batch`` every ``chat`` call is one
job of the provider's Batch API instead (:mod:`.batch`).

How it works:

- **One event loop per backend, in a daemon thread.** The backend owns an ``openai.AsyncOpenAI``
  client (on the SDK's aiohttp transport when installed, else httpx; a connection pool of at least
  ``max_concurrency``) driven by a persistent asyncio loop. A synchronous
  :meth:`OpenAICompatBackend.chat` (e.g. inside ``Dataset.map``) submits the whole batch to that
  loop, so connections are reused across calls, and it works even where the caller already runs a
  loop (notebooks). After ``fork`` (``num_proc``) the child builds its own loop and client.
- **Many requests in flight.** One task per conversation, at most ``max_concurrency`` in flight per server;
  with several servers (``extra_base_urls``) each request goes to the least busy, and one that fails
  sits out a back-off while the others take its requests (:mod:`.runtime`); optional
  ``requests_per_minute`` (a per-second leaky bucket, so no burst of a
  whole minute) and ``tokens_per_minute`` (a per-minute bucket, estimating prompt characters / 4 +
  ``max_tokens`` per request) limits use ``aiolimiter``.
- **Answers are delivered as they arrive.** The loop hands each answer to the caller's thread,
  which calls ``on_result(i, completion)`` at once, so the response cache keeps finished work even
  when the batch is interrupted (Ctrl-C cancels the requests still in flight).
- **Retries, bounded.** Every request is retried here (the SDK's own retries are off), so each kind
  of failure gets its own bound: 408/409/429 and 5xx, and malformed 200s (a body that is not a chat
  completion, e.g. from a proxy), up to ``max_retries`` times with exponential backoff (0.5 s
  doubling to 8 s, minus up to 25 % jitter), or exactly what a ``Retry-After`` / ``retry-after-ms``
  header asks (up to 120 s); a request that timed out at most :data:`TIMEOUT_RETRIES` times, each
  retry announced by a warning line on the ``hf_barred`` logger (at most one every
  :data:`WARNING_INTERVAL` seconds); a refused connection at most :data:`UNREACHABLE_RETRIES` times
  (about 2 s), so an endpoint that is down is reported within seconds. Requests go through the
  SDK's generic ``client.post`` (its errors, without the per-call parameter transform and response
  model of ``chat.completions.create``, which cost ~0.8 ms CPU a request).
- **Structured output.** ``SamplingParams.json_schema`` is sent as
  ``response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": ...,
  "strict": False}}``, which OpenAI, vLLM serve, llama.cpp and Ollama accept.

What fails how (an engine-wide problem raises :class:`EngineError`, a problem of one conversation gives
that conversation an error ``Completion``), and how the API key is kept out of logs: :mod:`.errors`.

Example:
    >>> from hf_barred.llm import EngineConfig, SamplingParams
    >>> from hf_barred.llm.engines.openai.backend import OpenAICompatBackend
    >>> backend = OpenAICompatBackend.from_config(EngineConfig(
    ...     engine="openai", model="Qwen/Qwen2.5-7B-Instruct", base_url="http://127.0.0.1:8000/v1"))
    >>> backend  # doctest: +NORMALIZE_WHITESPACE
    OpenAICompatBackend(model='Qwen/Qwen2.5-7B-Instruct', base_url='http://127.0.0.1:8000/v1',
                        api_key_env=None, max_concurrency=32)
    >>> params = SamplingParams(max_tokens=4, temperature=0.0, seed=None, stop=("\\n",))
    >>> backend.request_payload([{"role": "user", "content": "Is 7 prime?"}], params)  # doctest: +NORMALIZE_WHITESPACE
    {'model': 'Qwen/Qwen2.5-7B-Instruct', 'messages': [{'role': 'user', 'content': 'Is 7 prime?'}],
     'max_tokens': 4, 'temperature': 0.0, 'top_p': 1.0, 'stop': ['\\n']}
    >>> answers = backend.chat([[{"role": "user", "content": "Is 7 prime?"}]],
    ...                        SamplingParams(max_tokens=4))  # doctest: +SKIP
    >>> answers[0].text, answers[0].completion_tokens  # doctest: +SKIP
    ('Yes', 1)
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any, Optional

import openai

from ...base import Completion, Conversation, EngineError, ResultCallback, SamplingParams
from ...config import EngineConfig
from ...providers import PROVIDERS
from .batch import BatchRunner
from .errors import api_error_message, retries_text, unreachable_error, unreachable_reason
from .runtime import HTTP, Runtime, added_counts
from .wire import (
    DEFAULT_BASE_URL,
    MAX_RETRY_AFTER,
    NO_KEY,
    RETRIED_STATUSES,
    MalformedResponse,
    backoff_delay,
    chat_payload,
    estimate_tokens,
    parse_chat_completion,
    retry_after,
)

__all__ = [
    "MalformedResponse",
    "OpenAICompatBackend",
    "TIMEOUT_RETRIES",
    "UNREACHABLE_RETRIES",
    "parse_chat_completion",
]

TIMEOUT_RETRIES = 2
"""Most retries of a request that timed out (each costs a whole ``timeout``), whatever ``max_retries``."""
UNREACHABLE_RETRIES = 2
"""Most retries of a refused connection or an unknown host (0.5 + 1 s of backoff) before the
engine-wide :class:`EngineError`, whatever ``max_retries``."""
WARNING_INTERVAL = 10.0
"""Seconds between two "retrying after a timeout" warnings of one backend."""

logger = logging.getLogger(__name__)

_DONE = object()  # end-of-batch marker on the results queue


class OpenAICompatBackend:
    """An engine that answers through an OpenAI-compatible ``/v1/chat/completions`` endpoint.

    Build it with :meth:`from_config` (``engine="openai"``) or directly; the constructor makes no
    network call. See the module docstring for concurrency and retries, :mod:`.errors` for what fails how.
    """

    concurrent_calls = True
    """Several ``chat`` calls may run at once (they share the runtime's slots: ``max_concurrency`` per server)."""

    http_transport: str = "auto"
    """``"auto"`` (the SDK's aiohttp client when installed, else httpx), ``"aiohttp"`` or ``"httpx"``;
    set it on an instance before its first call."""

    def __init__(
        self,
        model: str,
        base_url: Optional[str] = None,
        api_key_env: Optional[str] = None,
        max_concurrency: int = 32,
        requests_per_minute: Optional[float] = None,
        tokens_per_minute: Optional[float] = None,
        timeout: float = 120.0,
        max_retries: int = 6,
    ):
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, found {max_concurrency}.")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, found {max_retries}.")
        self._setup(
            EngineConfig(
                engine="openai",
                model=model,
                # no base URL and no key: a local server named by $OPENAI_BASE_URL (else OpenAI's URL, keyless)
                base_url=base_url or (None if api_key_env else os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL),
                api_key_env=api_key_env,
                max_concurrency=max_concurrency,
                requests_per_minute=requests_per_minute,
                tokens_per_minute=tokens_per_minute,
                timeout=timeout,
                max_retries=max_retries,
            )
        )

    @classmethod
    def from_config(cls, config: EngineConfig) -> OpenAICompatBackend:
        backend = cls.__new__(cls)
        backend._setup(config)
        return backend

    def _setup(self, config: EngineConfig) -> None:
        base_url = (config.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.config = config.replace(base_url=base_url) if base_url != config.base_url else config
        """The settings of this backend, its base URL resolved (what the runtime and the error messages read)."""
        self.profile = PROVIDERS[self.config.provider or "generic"]
        self.supports_json_schema = self.profile.json_schema
        settings = [("reasoning_effort", self.config.reasoning_effort)]
        if self.config.is_reasoning:
            settings.append(("reasoning_tokens", str(self.config.reasoning_allowance)))
        extras = ",".join(f"{name}={value}" for name, value in settings if value is not None)
        self.cache_name = self.config.model + (f"@{extras}" if extras else "")
        """The response cache's name for the answers: the model's, with the reasoning settings that change them."""
        self._read_api_key()  # fail now, with the variable's name, rather than at the first call
        self._rt: Optional[Runtime] = None
        self._batches: Optional[BatchRunner] = None
        self._lock = threading.Lock()
        self._finalizer: Optional[weakref.finalize] = None
        self._closed_counts: dict[str, dict[str, int]] = {}

    model_name = property(lambda self: self.config.model)
    base_url = property(lambda self: self.config.base_url)
    api_key_env = property(lambda self: self.config.api_key_env)
    max_concurrency = property(lambda self: self.config.total_concurrency)
    """Requests in flight at once: ``EngineConfig.max_concurrency`` per server."""
    timeout = property(lambda self: self.config.timeout)
    max_retries = property(lambda self: self.config.max_retries)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model={self.model_name!r}, base_url={self.base_url!r}, "
            f"api_key_env={self.api_key_env!r}, max_concurrency={self.max_concurrency})"
        )

    # Pickling carries the settings, never a live client or the key (spawned workers rebuild them).
    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._setup(state["config"])

    # ------------------------------------------------------------------ the batch interface
    def request_payload(self, conversation: Conversation, params: SamplingParams) -> dict[str, Any]:
        """The JSON body sent for one conversation, in the provider's contract (:func:`.wire.chat_payload`)."""
        return chat_payload(self.config, conversation, params)

    def chat(
        self,
        conversations: Sequence[Conversation],
        params: SamplingParams,
        on_result: Optional[ResultCallback] = None,
    ) -> list[Completion]:
        """Answer every conversation, in order, with up to ``max_concurrency`` requests in flight.

        ``on_result(i, completion)`` runs in the calling thread as soon as answer ``i`` arrives.
        Raises :class:`EngineError` for engine-wide problems (:mod:`.errors`).
        """
        conversations = list(conversations)
        if not conversations:
            return []
        rt = self._runtime()
        results: list[Optional[Completion]] = [None] * len(conversations)
        inbox: queue.SimpleQueue = queue.SimpleQueue()
        work = self._run_job if self.config.batch else self._run_batch
        future = asyncio.run_coroutine_threadsafe(work(rt, conversations, params, inbox), rt.loop)
        try:
            remaining, done = len(conversations), False
            while remaining and not done:
                items = [inbox.get()]  # interruptible: Ctrl-C lands here and cancels the batch below
                while not inbox.empty():  # answers arrive in bursts: one wake-up of this thread per burst
                    items.append(inbox.get_nowait())
                for item in items:
                    if item is _DONE:
                        done = True
                        break
                    i, completion = item
                    results[i] = completion
                    remaining -= 1
                    if on_result is not None:
                        on_result(i, completion)
            future.result()  # re-raises an EngineError from the loop
        except BaseException:
            future.cancel()
            raise
        return results  # type: ignore[return-value]

    def endpoint_counts(self) -> dict[str, dict[str, int]]:
        """Requests sent, answered and failed per server in this process (tries, not conversations), closed
        runtimes included."""
        rt = self._rt
        live = rt.endpoint_counts() if rt is not None and rt.pid == os.getpid() else {}
        return added_counts(self._closed_counts, live)

    def close(self) -> None:
        """Close the connections and stop the loop thread (also done at interpreter exit)."""
        with self._lock:
            rt, self._rt = self._rt, None
            if self._finalizer is not None:
                self._finalizer.detach()
                self._finalizer = None
        if rt is not None:
            if rt.pid == os.getpid():
                self._closed_counts = added_counts(self._closed_counts, rt.endpoint_counts())
            rt.close()

    # ------------------------------------------------------------------ internals
    def _read_api_key(self) -> str:
        if not self.api_key_env:
            return NO_KEY
        key = os.environ.get(self.api_key_env)
        if not key:
            raise EngineError(
                f"the openai engine expected an API key in the environment variable {self.api_key_env} "
                f"(api_key_env), but {self.api_key_env} is not set or empty. Set it "
                f"(export {self.api_key_env}=...), or leave api_key_env unset for a local server that needs no key."
            )
        return key

    def _runtime(self) -> Runtime:
        rt = self._rt
        if rt is not None and rt.pid == os.getpid():
            return rt
        if rt is not None:  # forked: the parent's thread does not exist here, and its lock may be held
            self._lock = threading.Lock()
            self._rt = self._finalizer = None
        with self._lock:
            if self._rt is None:
                self._rt = Runtime(self.config, self._read_api_key(), self.http_transport)
                self._finalizer = weakref.finalize(self, self._rt.close)
            return self._rt

    async def _run_batch(
        self, rt: Runtime, conversations: list[Conversation], params: SamplingParams, inbox: queue.SimpleQueue
    ) -> None:
        async def one(i: int) -> None:
            inbox.put((i, await self._answer(rt, conversations[i], params)))

        tasks = [asyncio.ensure_future(one(i)) for i in range(len(conversations))]
        try:
            await asyncio.gather(*tasks)  # the first EngineError (or a cancellation) stops the batch
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            inbox.put(_DONE)

    async def _run_job(
        self, rt: Runtime, conversations: list[Conversation], params: SamplingParams, inbox: queue.SimpleQueue
    ) -> None:
        """Batch mode: the conversations as one provider batch job (:mod:`.batch`)."""
        if self._batches is None:
            self._batches = BatchRunner(self.config, azure=self.config.provider == "azure")
        try:
            payloads = [self.request_payload(conversation, params) for conversation in conversations]
            await self._batches.run(rt, payloads, lambda i, completion: inbox.put((i, completion)))
        finally:
            inbox.put(_DONE)

    async def _answer(self, rt: Runtime, conversation: Conversation, params: SamplingParams) -> Completion:
        payload = self.request_payload(conversation, params)
        tokens = estimate_tokens(conversation, params.max_tokens)
        attempt = moves = 0  # moves: tries handed to another server after this one failed (not retries)
        while True:
            endpoint = await rt.acquire()
            try:
                await rt.throttle(tokens)
                try:
                    # client.post is the SDK's documented call for any endpoint: its errors, without the per-call
                    # parameter transform and pydantic parsing of chat.completions.create (~0.8 ms CPU per request).
                    response = await endpoint.client.post("/chat/completions", body=payload, cast_to=HTTP.Response)
                    completion = parse_chat_completion(response.content, self.model_name)
                    rt.answered(endpoint)
                    return completion
                except MalformedResponse as exc:
                    if attempt >= self.max_retries:
                        return self.failed(rt, f"malformed response after {retries_text(attempt)}: {exc}")
                    logger.info(
                        "malformed response from %s (%s); retry %d of %d",
                        endpoint.url,
                        exc,
                        attempt + 1,
                        self.max_retries,
                    )
                    delay = backoff_delay(attempt)
                except openai.APIStatusError as exc:
                    if exc.status_code >= 500 and rt.failed(endpoint) and moves < len(rt.endpoints):
                        moves += 1  # another server is in the rotation: it takes the request now
                        continue
                    wait = retry_after(exc.response.headers)
                    retried = exc.status_code in RETRIED_STATUSES or exc.status_code >= 500
                    if not retried or attempt >= self.max_retries or (wait is not None and wait > MAX_RETRY_AFTER):
                        return self.failed(rt, await api_error_message(self.config, rt, exc, attempt if retried else 0))
                    delay = wait if wait is not None and wait > 0 else backoff_delay(attempt)
                except openai.APIConnectionError as exc:  # refused, unknown host, or a timeout (a subclass)
                    if rt.failed(endpoint) and moves < len(rt.endpoints):
                        moves += 1
                        continue
                    reason = unreachable_reason(exc)
                    if reason is not None:
                        if attempt >= min(self.max_retries, UNREACHABLE_RETRIES):
                            raise unreachable_error(self.config, rt, reason, attempt) from None
                    elif attempt >= min(self.max_retries, TIMEOUT_RETRIES):
                        return self.failed(rt, await api_error_message(self.config, rt, exc, attempt))
                    else:
                        self._warn_timeout(endpoint.url, attempt + 1, min(self.max_retries, TIMEOUT_RETRIES))
                    delay = backoff_delay(attempt)
                except openai.APIError as exc:
                    return self.failed(rt, await api_error_message(self.config, rt, exc, 0))
            finally:
                rt.release(endpoint)
            attempt += 1
            await asyncio.sleep(delay)

    def _warn_timeout(self, url: str, retry: int, retries: int) -> None:
        now = time.monotonic()
        if now - getattr(self, "_warned_at", -WARNING_INTERVAL) >= WARNING_INTERVAL:
            self._warned_at = now
            logger.warning(
                "no answer from %s within the %g s timeout: retrying (retry %d of %d; set --timeout or "
                "--max-retries to change this)",
                url,
                self.timeout,
                retry,
                retries,
            )

    def failed(self, rt: Runtime, message: str) -> Completion:
        """An error Completion for one conversation, the API key redacted from ``message``."""
        return Completion(text="", finish_reason="error", model=self.model_name, error=rt.redact(message))
