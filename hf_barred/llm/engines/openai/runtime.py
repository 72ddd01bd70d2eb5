"""The per-process runtime of the ``openai`` engine: an event loop in a daemon thread, one SDK client per
server (:class:`Endpoint`) on a pooled HTTP transport, the rotation that picks a server for each request,
and the rate limiters.

**Several servers of one model** (``EngineConfig.extra_base_urls``): each request goes to the server with
the fewest requests in flight, each server takes up to ``max_concurrency``, and a request waits for a free
slot when all are full. A server that fails (refused connection, 5xx, timeout) sits out a back-off
(:data:`BACKOFF_FIRST` seconds, doubling per failure in a row up to :data:`BACKOFF_MAX`) while the others
take its requests; its first answer puts it back. When every server is out, requests still go to the one
due back first, so the retry bounds of :mod:`.backend` decide when the run stops. With one server, the
rotation is just the ``max_concurrency`` bound.

Example:
    >>> from hf_barred.llm.engines.openai.runtime import make_http_client
    >>> client = make_http_client("httpx", max_concurrency=4, timeout=5.0)   # the SDK's httpx pool
    >>> isinstance(client, HTTP.AsyncClient)
    True
    >>> a, b = Endpoint("http://a/v1", client), Endpoint("http://b/v1", client)
    >>> a.in_flight, b.in_flight = 3, 1
    >>> pick([a, b], now=0.0) is b                  # the least busy
    True
    >>> b.down_until = 5.0                          # b failed: out of the rotation for 5 s
    >>> pick([a, b], now=1.0) is a, pick([a, b], now=6.0) is b
    (True, True)
"""

from __future__ import annotations

import asyncio
import collections
import importlib
import os
import threading
from dataclasses import dataclass
from typing import Any, Optional

import openai
from aiolimiter import AsyncLimiter

from ...config import EngineConfig
from .wire import NO_KEY

__all__ = ["BACKOFF_FIRST", "BACKOFF_MAX", "Endpoint", "HTTP", "Runtime", "added_counts", "make_http_client", "pick"]

BACKOFF_FIRST = 2.0
"""Seconds a server that just failed sits out of the rotation (when there are several)."""
BACKOFF_MAX = 60.0
"""The longest back-off: it doubles per failure in a row up to this."""

# The HTTP library under the SDK: httpx (openai 1.x) or httpx2 (later versions).
HTTP: Any = importlib.import_module(type(openai.DEFAULT_CONNECTION_LIMITS).__module__.partition(".")[0])


@dataclass(eq=False)
class Endpoint:
    """One server of the rotation: its SDK client, its requests in flight, its counts, and until when it is out."""

    url: str
    client: Any
    in_flight: int = 0
    sent: int = 0
    answered: int = 0
    failed: int = 0
    failures_in_a_row: int = 0
    down_until: float = 0.0
    """Loop time until which the server sits out (0: in the rotation)."""

    def counts(self) -> dict[str, int]:
        return {"sent": self.sent, "answered": self.answered, "failed": self.failed}


def pick(endpoints: list[Endpoint], now: float) -> Endpoint:
    """The server for the next request: the least busy of those in the rotation, else the one due back first."""
    up = [endpoint for endpoint in endpoints if endpoint.down_until <= now]
    if not up:
        return min(endpoints, key=lambda endpoint: endpoint.down_until)
    return min(up, key=lambda endpoint: endpoint.in_flight)


class Runtime:
    """What one process needs to talk to its servers: an event loop in a daemon thread, an SDK client per
    server, the rotation between them (:meth:`acquire`, :meth:`release`) and the rate limiters. Built on first
    use, never in a constructor."""

    def __init__(self, config: EngineConfig, api_key: str, http_transport: str = "auto"):
        if not config.endpoint_urls:
            raise ValueError("Runtime: expected a config with its base URL resolved, found none.")
        self.pid = os.getpid()
        self.secret = api_key
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="hf_barred-openai", daemon=True)
        self.thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._setup(config, http_transport), self.loop).result()
        except BaseException:
            self.loop.call_soon_threadsafe(self.loop.stop)
            raise

    async def _setup(self, config: EngineConfig, http_transport: str) -> None:
        # Built inside the loop so every asyncio object belongs to it.
        self.endpoints = [Endpoint(url, self._client(config, url, http_transport)) for url in config.endpoint_urls]
        self.client: openai.AsyncOpenAI = self.endpoints[0].client
        """The first server's client (batch jobs and error messages use it)."""
        self.limit = config.max_concurrency
        self._waiters: collections.deque[asyncio.Future] = collections.deque()
        self.requests_limiter: Optional[AsyncLimiter] = None
        self.tokens_limiter: Optional[AsyncLimiter] = None
        if config.requests_per_minute:
            window = max(1.0, 60.0 / config.requests_per_minute)  # at least one request per bucket
            self.requests_limiter = AsyncLimiter(config.requests_per_minute * window / 60.0, window)
        if config.tokens_per_minute:
            self.tokens_limiter = AsyncLimiter(config.tokens_per_minute, 60.0)

    def _client(self, config: EngineConfig, url: str, http_transport: str) -> openai.AsyncOpenAI:
        http_client = make_http_client(http_transport, config.max_concurrency, config.timeout)
        # the backend retries, with a bound per kind of failure: the SDK's own retries are off
        if config.provider == "azure":  # /openai/deployments/{model}/chat/completions?api-version=..., key in api-key
            return openai.AsyncAzureOpenAI(
                api_key=self.secret,
                azure_endpoint=url,
                api_version=config.api_version,
                timeout=config.timeout,
                max_retries=0,
                http_client=http_client,
            )
        return openai.AsyncOpenAI(
            api_key=self.secret, base_url=url, timeout=config.timeout, max_retries=0, http_client=http_client
        )

    # ------------------------------------------------------------------ the rotation
    async def acquire(self) -> Endpoint:
        """A server with a free slot for one request (the least busy in the rotation); waits while all are full."""
        while True:
            endpoint = pick(self.endpoints, self.loop.time())
            if endpoint.in_flight < self.limit and not self._waiters:
                endpoint.in_flight += 1
                endpoint.sent += 1
                return endpoint
            waiter = self.loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():  # woken, then cancelled: pass the slot on
                    self._wake()
                elif waiter in self._waiters:  # cancelled while waiting (a woken waiter was popped by _wake)
                    self._waiters.remove(waiter)
                raise
            endpoint = pick(self.endpoints, self.loop.time())
            if endpoint.in_flight < self.limit:
                endpoint.in_flight += 1
                endpoint.sent += 1
                return endpoint

    def release(self, endpoint: Endpoint) -> None:
        """The request on ``endpoint`` is over: its slot goes to the first waiting request."""
        endpoint.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def answered(self, endpoint: Endpoint) -> None:
        """``endpoint`` answered: it is (back) in the rotation."""
        endpoint.answered += 1
        endpoint.failures_in_a_row = 0
        endpoint.down_until = 0.0

    def failed(self, endpoint: Endpoint) -> bool:
        """``endpoint`` failed (refused, 5xx, timeout): out of the rotation for its back-off. Returns whether
        another server is in the rotation to take the request."""
        endpoint.failed += 1
        endpoint.failures_in_a_row += 1
        backoff = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (endpoint.failures_in_a_row - 1))
        now = self.loop.time()
        endpoint.down_until = now + backoff
        return any(other.down_until <= now for other in self.endpoints if other is not endpoint)

    def endpoint_counts(self) -> dict[str, dict[str, int]]:
        """Requests sent, answered and failed per server (failures counted per try)."""
        return {endpoint.url: endpoint.counts() for endpoint in self.endpoints}

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
            self.loop.create_task(self._close_clients()).add_done_callback(lambda _: self.loop.stop())
            return
        try:
            asyncio.run_coroutine_threadsafe(self._close_clients(), self.loop).result(timeout=5)
        except Exception:  # closing is best effort (interpreter shutdown)
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        if not self.thread.is_alive():
            self.loop.close()

    async def _close_clients(self) -> None:
        for endpoint in self.endpoints:
            await endpoint.client.close()


def make_http_client(transport: str, max_concurrency: int, timeout: float) -> Any:
    """The SDK's aiohttp-based client when available (``transport="auto"``), else its httpx client.

    aiohttp costs about 30 % less CPU per request than httpx's connection pool, which matters when
    hundreds of requests per second share a small machine with the server. Either way the pool is
    at least ``max_concurrency`` connections, each kept alive for reuse.
    """
    limits = HTTP.Limits(
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


def added_counts(a: dict[str, dict[str, int]], b: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """Two readings of per-server counts (:meth:`Runtime.endpoint_counts`) added up."""
    total = {url: dict(counts) for url, counts in a.items()}
    for url, counts in b.items():
        mine = total.setdefault(url, dict.fromkeys(counts, 0))
        for key, value in counts.items():
            mine[key] = mine.get(key, 0) + value
    return total
