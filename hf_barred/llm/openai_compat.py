"""The ``openai`` engine: any OpenAI-compatible chat server (vLLM serve, TGI, Ollama, llama.cpp server,
OpenAI, Azure OpenAI's ``/openai/v1`` endpoint).

How it works:

- **One event loop per backend, in a daemon thread.** The backend owns an ``openai.AsyncOpenAI``
  client (on the SDK's aiohttp transport when installed, else httpx; a connection pool of at least
  ``max_concurrency``) driven by a persistent asyncio loop. A synchronous
  :meth:`OpenAICompatBackend.chat` (e.g. inside ``Dataset.map``) submits the whole batch to that
  loop, so connections are reused across calls, and it works even where the caller already runs a
  loop (notebooks). After ``fork`` (``num_proc``) the child builds its own loop and client.
- **Many requests in flight.** One task per conversation; a semaphore bounds them to
  ``max_concurrency``; optional ``requests_per_minute`` (a per-second leaky bucket, so no burst of a
  whole minute) and ``tokens_per_minute`` (a per-minute bucket, estimating prompt characters / 4 +
  ``max_tokens`` per request) limits use ``aiolimiter``.
- **Answers are delivered as they arrive.** The loop hands each answer to the caller's thread,
  which calls ``on_result(i, completion)`` at once, so the response cache keeps finished work even
  when the batch is interrupted (Ctrl-C cancels the requests still in flight).
- **Retries.** The SDK retries connection errors, timeouts, 408/409/429 and 5xx up to
  ``max_retries`` times with exponential backoff (0.5 s doubling to 8 s, minus up to 25 % jitter),
  and waits exactly what a ``Retry-After`` / ``retry-after-ms`` header asks (up to 120 s). The SDK
  cannot see a malformed 200 (a body that is not JSON, or JSON that is not a chat completion, e.g.
  from a proxy); those are retried here with the same backoff, ``max_retries`` times. Requests go
  through the SDK's generic ``client.post`` (same retries and errors as ``chat.completions.create``,
  without its per-call parameter transform and response model, which cost ~0.8 ms CPU a request).
- **Structured output.** ``SamplingParams.json_schema`` is sent as
  ``response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": ...,
  "strict": False}}``, which OpenAI, vLLM serve, llama.cpp and Ollama accept.

What fails how (an engine-wide problem raises, a problem of one conversation does not):

=====================================================  ==============================================
Situation                                              Result
=====================================================  ==============================================
connection refused / DNS failure after the retries     :class:`EngineError` "could not reach ..."
401 / 403 (bad or missing key, no access)              :class:`EngineError` naming the env variable
404 (unknown model, or a base URL without ``/v1``)     :class:`EngineError` listing the served models
``api_key_env`` names an unset variable                :class:`EngineError` when the backend is built
timeout after the retries                              that conversation: ``Completion(error=...)``
429 / 5xx after the retries                            that conversation: ``Completion(error=...)``
400 / 413 / 422 (context too long, bad request)        that conversation, not retried
malformed body after the retries                       that conversation: ``Completion(error=...)``
=====================================================  ==============================================

An error ``Completion`` has ``text=""`` and ``finish_reason="error"``; the cache does not store it,
so a rerun retries it. When an ``EngineError`` is raised, the answers that had already arrived were
passed to ``on_result`` (and cached) first. The API key is read from the environment variable named
by ``api_key_env`` (``"EMPTY"`` when none is named, for local servers) when the live client is
built; it is never logged, pickled, or shown in the backend's repr or in error messages (a server
that echoes it back gets it replaced by ``***``).

Example:
    >>> from hf_barred.llm import EngineConfig, SamplingParams
    >>> from hf_barred.llm.openai_compat import OpenAICompatBackend
    >>> backend = OpenAICompatBackend.from_config(EngineConfig(
    ...     engine="openai", model="Qwen/Qwen2.5-7B-Instruct", base_url="http://127.0.0.1:8000/v1"))
    >>> backend
    OpenAICompatBackend(model='Qwen/Qwen2.5-7B-Instruct', base_url='http://127.0.0.1:8000/v1', api_key_env=None, max_concurrency=32)
    >>> backend.request_payload([{"role": "user", "content": "Is 7 prime?"}],
    ...                         SamplingParams(max_tokens=4, temperature=0.0, seed=None, stop=("\\n",)))
    {'model': 'Qwen/Qwen2.5-7B-Instruct', 'messages': [{'role': 'user', 'content': 'Is 7 prime?'}], 'max_tokens': 4, 'temperature': 0.0, 'top_p': 1.0, 'stop': ['\\n']}
    >>> answers = backend.chat([[{"role": "user", "content": "Is 7 prime?"}]],
    ...                        SamplingParams(max_tokens=4))  # doctest: +SKIP
    >>> answers[0].text, answers[0].completion_tokens  # doctest: +SKIP
    ('Yes', 1)
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import queue
import random
import socket
import threading
import weakref
from typing import Any, Optional, Sequence

import openai
from aiolimiter import AsyncLimiter

from .base import Completion, Conversation, EngineError, ResultCallback, SamplingParams
from .config import EngineConfig

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
NO_KEY = "EMPTY"  # what local servers (vLLM, llama.cpp, Ollama) accept when no key is configured
INITIAL_BACKOFF = 0.5  # seconds; same schedule as the SDK's own retries
MAX_BACKOFF = 8.0
_DONE = object()  # end-of-batch marker on the results queue
# The HTTP library under the SDK: httpx (openai 1.x) or httpx2 (later versions).
_http: Any = importlib.import_module(type(openai.DEFAULT_CONNECTION_LIMITS).__module__.partition(".")[0])


class MalformedResponse(ValueError):
    """A 200 response whose body is not a chat completion."""


def estimate_tokens(conversation: Conversation, max_tokens: int) -> int:
    """Tokens a request may cost, for the tokens-per-minute limit: prompt characters / 4 + ``max_tokens``.

    >>> estimate_tokens([{"role": "user", "content": "x" * 400}], max_tokens=50)
    150
    """
    chars = sum(len(str(message.get("content", ""))) for message in conversation)
    return chars // 4 + max_tokens


def backoff_delay(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): 0.5 s doubling up to 8 s, minus 0-25 % jitter."""
    return min(INITIAL_BACKOFF * 2.0**attempt, MAX_BACKOFF) * (1 - 0.25 * random.random())


def parse_chat_completion(content: bytes, default_model: str) -> Completion:
    """A :class:`Completion` from the raw body of a ``/chat/completions`` response.

    Raises :class:`MalformedResponse` when the body is not JSON or has no ``choices[0].message``.
    A missing ``usage`` (some servers omit it) counts as 0 tokens.
    """
    try:
        data = json.loads(content)
    except ValueError:
        raise MalformedResponse(f"the body is not JSON: {content[:120]!r}") from None
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise MalformedResponse(f"expected a chat completion with a non-empty 'choices' list, found {content[:120]!r}")
    message = choices[0].get("message")
    text = message.get("content") if isinstance(message, dict) else None
    if not isinstance(message, dict) or not isinstance(text, (str, type(None))):
        raise MalformedResponse(f"expected choices[0].message.content to be a string, found {content[:120]!r}")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return Completion(
        text=text or "",  # None: a refusal or a tool call, no text
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        finish_reason=str(choices[0].get("finish_reason") or "stop"),
        model=str(data.get("model") or default_model),
    )


class _Runtime:
    """What one process needs to talk to the server: an event loop in a daemon thread, the SDK
    client, the concurrency semaphore and the rate limiters. Built on first use, never in a constructor."""

    def __init__(self, backend: "OpenAICompatBackend", api_key: str):
        self.pid = os.getpid()
        self.secret = api_key
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="hf_barred-openai", daemon=True)
        self.thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._setup(backend), self.loop).result()
        except BaseException:
            self.loop.call_soon_threadsafe(self.loop.stop)
            raise

    async def _setup(self, backend: "OpenAICompatBackend") -> None:
        # Built inside the loop so every asyncio object belongs to it.
        http_client = _make_http_client(backend.http_transport, backend.max_concurrency, backend.timeout)
        self.client = openai.AsyncOpenAI(
            api_key=self.secret, base_url=backend.base_url, timeout=backend.timeout,
            max_retries=backend.max_retries, http_client=http_client,
        )
        self.semaphore = asyncio.Semaphore(backend.max_concurrency)
        self.requests_limiter: Optional[AsyncLimiter] = None
        self.tokens_limiter: Optional[AsyncLimiter] = None
        if backend.requests_per_minute:
            window = max(1.0, 60.0 / backend.requests_per_minute)  # at least one request per bucket
            self.requests_limiter = AsyncLimiter(backend.requests_per_minute * window / 60.0, window)
        if backend.tokens_per_minute:
            self.tokens_limiter = AsyncLimiter(backend.tokens_per_minute, 60.0)

    async def throttle(self, tokens: int) -> None:
        if self.requests_limiter is not None:
            await self.requests_limiter.acquire()
        if self.tokens_limiter is not None:  # a request larger than the whole budget waits for a full bucket
            await self.tokens_limiter.acquire(min(tokens, self.tokens_limiter.max_rate))

    def redact(self, text: str) -> str:
        return text.replace(self.secret, "***") if self.secret and self.secret != NO_KEY else text

    def close(self) -> None:
        if self.pid != os.getpid() or not self.thread.is_alive():
            return  # a forked child does not own the parent's thread or sockets
        if threading.current_thread() is self.thread:  # garbage-collected on the loop itself: don't wait
            self.loop.create_task(self.client.close()).add_done_callback(lambda _: self.loop.stop())
            return
        try:
            asyncio.run_coroutine_threadsafe(self.client.close(), self.loop).result(timeout=5)
        except Exception:  # closing is best effort (interpreter shutdown)
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        if not self.thread.is_alive():
            self.loop.close()


class OpenAICompatBackend:
    """An engine that answers through an OpenAI-compatible ``/v1/chat/completions`` endpoint.

    Build it with :meth:`from_config` (``engine="openai"``) or directly; the constructor makes no
    network call. See the module docstring for concurrency, retries and what fails how.
    """

    supports_json_schema: bool = True
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
        self.model_name = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.api_key_env = api_key_env
        self.max_concurrency = max_concurrency
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self.timeout = timeout
        self.max_retries = max_retries
        self._read_api_key()  # fail now, with the variable's name, rather than at the first call
        self._rt: Optional[_Runtime] = None
        self._lock = threading.Lock()
        self._finalizer: Optional[weakref.finalize] = None

    @classmethod
    def from_config(cls, config: EngineConfig) -> "OpenAICompatBackend":
        return cls(
            model=config.model,
            base_url=config.base_url,
            api_key_env=config.api_key_env,
            max_concurrency=config.max_concurrency,
            requests_per_minute=config.requests_per_minute,
            tokens_per_minute=config.tokens_per_minute,
            timeout=config.timeout,
            max_retries=config.max_retries,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model={self.model_name!r}, base_url={self.base_url!r}, "
            f"api_key_env={self.api_key_env!r}, max_concurrency={self.max_concurrency})"
        )

    # Pickling carries the settings, never a live client or the key (spawned workers rebuild them).
    def __getstate__(self) -> dict[str, Any]:
        names = ("base_url", "api_key_env", "max_concurrency", "requests_per_minute", "tokens_per_minute",
                 "timeout", "max_retries")
        return {"model": self.model_name} | {name: getattr(self, name) for name in names}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    # ------------------------------------------------------------------ the batch interface
    def request_payload(self, conversation: Conversation, params: SamplingParams) -> dict[str, Any]:
        """The JSON body sent for one conversation (``seed`` only when set, ``stop`` only when non-empty)."""
        payload: dict[str, Any] = {
            "model": self.model_name,
            "messages": list(conversation),
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.seed is not None:
            payload["seed"] = params.seed
        if params.stop:
            payload["stop"] = list(params.stop)
        if params.json_schema is not None:
            payload["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": params.json_schema, "strict": False},
            }
        return payload

    def chat(
        self,
        conversations: Sequence[Conversation],
        params: SamplingParams,
        on_result: Optional[ResultCallback] = None,
    ) -> list[Completion]:
        """Answer every conversation, in order, with up to ``max_concurrency`` requests in flight.

        ``on_result(i, completion)`` runs in the calling thread as soon as answer ``i`` arrives.
        Raises :class:`EngineError` for engine-wide problems (see the module docstring).
        """
        conversations = list(conversations)
        if not conversations:
            return []
        rt = self._runtime()
        results: list[Optional[Completion]] = [None] * len(conversations)
        inbox: queue.SimpleQueue = queue.SimpleQueue()
        future = asyncio.run_coroutine_threadsafe(self._run_batch(rt, conversations, params, inbox), rt.loop)
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

    def close(self) -> None:
        """Close the connections and stop the loop thread (also done at interpreter exit)."""
        with self._lock:
            rt, self._rt = self._rt, None
            if self._finalizer is not None:
                self._finalizer.detach()
                self._finalizer = None
        if rt is not None:
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

    def _runtime(self) -> _Runtime:
        rt = self._rt
        if rt is not None and rt.pid == os.getpid():
            return rt
        if rt is not None:  # forked: the parent's thread does not exist here, and its lock may be held
            self._lock = threading.Lock()
            self._rt = self._finalizer = None
        with self._lock:
            if self._rt is None:
                self._rt = _Runtime(self, self._read_api_key())
                self._finalizer = weakref.finalize(self, self._rt.close)
            return self._rt

    async def _run_batch(
        self, rt: _Runtime, conversations: list[Conversation], params: SamplingParams, inbox: queue.SimpleQueue
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

    async def _answer(self, rt: _Runtime, conversation: Conversation, params: SamplingParams) -> Completion:
        payload = self.request_payload(conversation, params)
        tokens = estimate_tokens(conversation, params.max_tokens)
        problem = ""
        for attempt in range(self.max_retries + 1):
            async with rt.semaphore:
                await rt.throttle(tokens)
                try:
                    # client.post is the SDK's documented call for any endpoint: its retries and errors, without
                    # the per-call parameter transform and pydantic parsing of chat.completions.create
                    # (~0.8 ms CPU per request, which capped throughput on a small machine).
                    response = await rt.client.post("/chat/completions", body=payload, cast_to=_http.Response)
                    return parse_chat_completion(response.content, self.model_name)
                except MalformedResponse as exc:
                    problem = str(exc)
                except openai.APIError as exc:
                    return await self._on_api_error(rt, exc)
            if attempt < self.max_retries:
                logger.info("malformed response from %s (%s); retry %d of %d", self.base_url, problem,
                            attempt + 1, self.max_retries)
                await asyncio.sleep(backoff_delay(attempt))
        return self._failed(rt, f"malformed response after {_retries(self.max_retries)}: {problem}")

    def _failed(self, rt: _Runtime, message: str) -> Completion:
        return Completion(text="", finish_reason="error", model=self.model_name, error=rt.redact(message))

    async def _on_api_error(self, rt: _Runtime, exc: openai.APIError) -> Completion:
        """Turn an SDK error (after its retries) into an error Completion, or raise EngineError."""
        url, retries = self.base_url, self.max_retries
        if isinstance(exc, openai.APIConnectionError):  # includes timeouts
            reason = _unreachable_reason(exc)
            if reason is not None:
                raise EngineError(rt.redact(
                    f"could not reach the OpenAI-compatible server at {url} after {_retries(retries)} "
                    f"({reason}). Start the server (e.g. `vllm serve {self.model_name}`) or fix --base-url."
                )) from None
            cause = type(exc.__cause__).__name__ if exc.__cause__ else "timeout"
            return self._failed(
                rt, f"no answer within the {self.timeout:g} s timeout, after {_retries(retries)} ({cause})"
            )
        if not isinstance(exc, openai.APIStatusError):
            return self._failed(rt, f"{type(exc).__name__}: {exc}")
        status, detail = exc.status_code, _error_detail(exc)
        if status in (401, 403):
            if self.api_key_env:
                fix = f"Set {self.api_key_env} to a valid key for this server (and model)."
            else:
                fix = ("Put the key in an environment variable and pass its name as --api-key-env "
                       "(EngineConfig.api_key_env), e.g. OPENAI_API_KEY.")
            source = f"the API key in ${self.api_key_env}" if self.api_key_env else "no API key (api_key_env unset)"
            raise EngineError(rt.redact(
                f"the server at {url} refused the request for model {self.model_name!r} with {source} "
                f"(HTTP {status}: {detail}). {fix}"
            )) from None
        if status == 404:
            served = await self._served_models(rt)
            found = f"it serves {served}" if served else f"GET {url}/models lists the models it serves"
            raise EngineError(rt.redact(
                f"the server at {url} does not know the model {self.model_name!r} (HTTP 404: {detail}); {found}. "
                "Pass one of those as --model (EngineConfig.model), or check that --base-url ends with /v1."
            )) from None
        retried = f" after {_retries(retries)}" if status in (408, 409, 429) or status >= 500 else ""
        return self._failed(rt, f"HTTP {status}{retried}: {detail}")

    async def _served_models(self, rt: _Runtime) -> list[str]:
        try:
            page = await rt.client.with_options(max_retries=0, timeout=5.0).models.list()
            return sorted(model.id for model in page.data)
        except Exception:  # best effort: only used to improve an error message
            return []


def _make_http_client(transport: str, max_concurrency: int, timeout: float) -> Any:
    """The SDK's aiohttp-based client when available (``transport="auto"``), else its httpx client.

    aiohttp costs about 30 % less CPU per request than httpx's connection pool, which matters when
    hundreds of requests per second share a small machine with the server. Either way the pool is
    at least ``max_concurrency`` connections, each kept alive for reuse.
    """
    limits = _http.Limits(
        max_connections=max(1000, 2 * max_concurrency), max_keepalive_connections=max(100, max_concurrency)
    )
    if transport not in ("auto", "aiohttp", "httpx"):
        raise ValueError(f"http_transport: expected 'auto', 'aiohttp' or 'httpx', found {transport!r}.")
    if transport != "httpx" and hasattr(openai, "DefaultAioHttpClient"):
        try:
            return openai.DefaultAioHttpClient(limits=limits, timeout=timeout)
        except RuntimeError:  # the SDK's aiohttp extra is not installed
            if transport == "aiohttp":
                raise
    elif transport == "aiohttp":
        raise RuntimeError(
            "http_transport='aiohttp' needs openai.DefaultAioHttpClient (pip install -U 'openai[aiohttp]')."
        )
    return openai.DefaultAsyncHttpxClient(limits=limits, timeout=timeout)


def _retries(n: int) -> str:
    return "1 retry" if n == 1 else f"{n} retries"


def _error_detail(exc: "openai.APIStatusError") -> str:
    body = exc.body
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])[:500]
    return str(exc.message)[:500]


def _unreachable_reason(exc: "openai.APIConnectionError") -> Optional[str]:
    """Why the server could not be reached at all, read from the exception chain; None for a timeout
    of a server that was reached (that request fails alone). The aiohttp transport reports a refused
    connection as a timeout, so the chain is checked before the exception's type."""
    link: Optional[BaseException] = exc
    seen: set[int] = set()
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if isinstance(link, ConnectionRefusedError):
            return "connection refused"
        if isinstance(link, socket.gaierror):
            return "host name not found"
        link = link.__cause__ or link.__context__
    if isinstance(exc, openai.APITimeoutError):
        return None
    cause = exc.__cause__
    return f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
