"""An engine whose ``chat`` is awaited: what the streaming executor drives, row by row.

:class:`AsyncEngine` wraps the cached engine of a config (:func:`hf_barred.llm.get_engine`), so the
response cache, the usage meter and the engine's own concurrency limits are the batched path's. Every
awaited request joins a queue; a dispatcher sends what is queued as batched ``chat`` calls, one per
(sampling parameters, stage) group, and each answer wakes its own waiter the moment
it arrives (the engines' ``on_result``), so no request waits for another's:

- an in-process engine (``local``, ``vllm``: one forward pass at a time) gets one call at a time, made
  of whatever rows are ready when the previous call ends, from any stage: it batches without a barrier;
- an HTTP engine (``openai``, ``concurrent_calls``) gets calls as soon as requests are queued, with at most
  its ``max_concurrency`` requests in flight: the queue, not the engine's semaphore, decides which go first.
  A request goes out in order of :data:`request_priority` (higher first; the streaming executor sets it
  to how far along its chain the row is, so rows near their end finish first and the run's tail is
  short), then of arrival.

Example:
    >>> import asyncio
    >>> from hf_barred.llm.async_engine import AsyncEngine
    >>> from hf_barred.llm.base import Completion, SamplingParams
    >>> class Echo:
    ...     model_name, supports_json_schema, calls = "echo", False, []
    ...     def chat(self, conversations, params, on_result=None, stage=""):
    ...         self.calls.append(len(conversations))
    ...         return [Completion(text=c[-1]["content"]) for c in conversations]
    >>> engine = AsyncEngine(Echo())
    >>> async def three():
    ...     return await asyncio.gather(*(engine.chat([[{"role": "user", "content": str(i)}]], SamplingParams())
    ...                                   for i in range(3)))
    >>> [answers[0].text for answers in asyncio.run(three())], Echo.calls   # three rows, one batched call
    (['0', '1', '2'], [3])
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import Any, Optional

from .base import Completion, Conversation, SamplingParams

__all__ = ["SETTLE_TURNS", "AsyncEngine", "request_priority"]

request_priority: ContextVar[int] = ContextVar("request_priority", default=0)
"""The priority of the requests awaited in this context (an asyncio task inherits its creator's): higher goes
first when an HTTP engine has more requests queued than it keeps in flight."""

Queued = tuple[Conversation, SamplingParams, str, "asyncio.Future[Completion]"]

SETTLE_TURNS = 16
"""Turns of the event loop without a new request before the queue goes out (about a tenth of a millisecond
each when nothing else runs): a woken row needs about seven turns to ask again."""


class AsyncEngine:
    """``await engine.chat(conversations, params, stage=...)`` over a synchronous engine (see the module doc).

    Bound to the event loop it is first awaited in; ``concurrent`` (default: the backend's
    ``concurrent_calls``) says whether calls may overlap.
    """

    def __init__(self, engine: Any, concurrent: Optional[bool] = None):
        self.engine = engine
        self.model_name: str = engine.model_name
        self.supports_json_schema: bool = engine.supports_json_schema
        self.concurrent = _concurrent_calls(engine) if concurrent is None else concurrent
        self.max_in_flight = _max_concurrency(engine) if self.concurrent else 0
        """Requests an HTTP engine keeps in flight (0: no limit here, an in-process engine takes one call at a time)."""
        self._queue: list[tuple[int, int, Queued]] = []  # a heap: (-priority, arrival, request)
        self._arrivals = itertools.count()
        self._in_flight = 0
        self._busy = 0
        self._scheduled = False
        self._settled_at = -1
        self._quiet_turns = 0
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        # An HTTP engine's calls wait in threads, up to one per request in flight; an in-process engine's run on the
        # loop's thread (see _dispatch)
        self._threads = ThreadPoolExecutor(max_workers=self.max_in_flight + 1, thread_name_prefix="hf-barred-async")
        self.calls = 0
        """Batched ``chat`` calls sent so far."""

    async def chat(
        self, conversations: Sequence[Conversation], params: SamplingParams, stage: str = ""
    ) -> list[Completion]:
        """The engine's answers to ``conversations``, in order (see :meth:`CachedBackend.chat`)."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        futures = []
        priority = request_priority.get()
        for conversation in conversations:
            future: asyncio.Future[Completion] = loop.create_future()
            heapq.heappush(self._queue, (-priority, next(self._arrivals), (list(conversation), params, stage, future)))
            futures.append(future)
        if not self._scheduled:
            self._scheduled = True
            self._settled_at = -1
            # an HTTP engine sends at the end of this turn of the loop (a request waits for nothing); an in-process
            # engine waits for the queue to settle, so one forward batch takes every ready row
            loop.call_soon(self._send_now if self.max_in_flight else self._settle)
        return list(await asyncio.gather(*futures))

    def _send_now(self) -> None:
        self._scheduled = False
        self._dispatch()

    def _settle(self) -> None:
        """Dispatch once the queue has not grown for :data:`SETTLE_TURNS` turns of the loop: rows woken by one batch
        of answers pass through a few layers of awaits (tasks, gathers) before they ask again, and their
        requests belong in one call."""
        if len(self._queue) != self._settled_at:
            self._settled_at, self._quiet_turns = len(self._queue), 0
        else:
            self._quiet_turns += 1
        if self._quiet_turns < SETTLE_TURNS:
            asyncio.get_running_loop().call_soon(self._settle)
            return
        self._scheduled = False
        self._dispatch()

    def _dispatch(self) -> None:
        """Send what is queued (an HTTP engine: the first requests, up to its free slots), unless an in-process
        engine is busy (it takes the queue when it is done)."""
        if not self._queue or (self._busy and not self.concurrent):
            return
        if self.max_in_flight:
            take = min(len(self._queue), self.max_in_flight - self._in_flight)
            queued = [heapq.heappop(self._queue)[2] for _ in range(take)]
        else:
            queued, self._queue = [item for _, _, item in sorted(self._queue)], []
        groups: dict[str, list[Queued]] = {}
        for item in queued:
            key = json.dumps([item[1].cache_fields(), item[2]], sort_keys=True, default=str)
            groups.setdefault(key, []).append(item)
        loop = asyncio.get_running_loop()
        for group in groups.values():
            self._busy += 1
            self._in_flight += len(group)
            self.calls += 1
            if self.concurrent:
                loop.run_in_executor(self._threads, self._call, group)
            else:  # on the loop's thread: the rows a call wakes ask again together; no thread contends for the GIL
                loop.call_soon(self._call, group)

    def _call(self, group: list[Queued]) -> None:
        """One batched call (an HTTP engine's in a worker thread, an in-process engine's on the loop's thread); each
        answer resolves its future as it arrives (an in-process engine's once the call returns)."""
        loop = self._loop
        assert loop is not None
        futures = [future for _, _, _, future in group]
        delivered = [False] * len(group)

        def deliver(i: int, completion: Completion) -> None:
            if not delivered[i]:
                delivered[i] = True
                loop.call_soon_threadsafe(self._answered, futures[i], completion)

        try:
            answers = self.engine.chat([c for c, _, _, _ in group], group[0][1], on_result=deliver, stage=group[0][2])
            for i, completion in enumerate(answers):  # an engine that ignores on_result delivers here
                deliver(i, completion)
        except BaseException as err:  # an engine-wide error (unreachable endpoint, bad key) fails every waiter
            for future in futures:
                loop.call_soon_threadsafe(_fail, future, err)
            if not isinstance(err, Exception) and not self.concurrent:
                raise  # Ctrl-C during an in-process call: the run stops here
        finally:
            loop.call_soon_threadsafe(self._done, delivered.count(False))

    def _answered(self, future: asyncio.Future[Completion], completion: Completion) -> None:
        """One answer in: its waiter wakes, and its slot goes to the next queued request."""
        _resolve(future, completion)
        self._in_flight -= 1
        if self.max_in_flight and self._queue:
            self._dispatch()

    def _done(self, undelivered: int) -> None:
        self._busy -= 1
        self._in_flight -= undelivered
        if self.max_in_flight:  # an HTTP engine: the freed slots go to what is queued
            self._dispatch()
        elif not self._scheduled:  # the rows this call woke ask again after a few turns of the loop
            self._scheduled = True
            self._settled_at = -1
            asyncio.get_running_loop().call_soon(self._settle)


def _concurrent_calls(engine: Any) -> bool:
    """Whether the engine under any wrappers (cache, budget) takes overlapping calls."""
    while engine is not None:
        if getattr(engine, "concurrent_calls", False):
            return True
        engine = getattr(engine, "backend", None)
    return False


def _max_concurrency(engine: Any) -> int:
    """The ``max_concurrency`` of the engine under any wrappers (32, the engines' default, if none says)."""
    while engine is not None:
        if isinstance(getattr(engine, "max_concurrency", None), int):
            return int(engine.max_concurrency)
        engine = getattr(engine, "backend", None)
    return 32


def _resolve(future: asyncio.Future[Completion], completion: Completion) -> None:
    if not future.done():
        future.set_result(completion)


def _fail(future: asyncio.Future[Completion], err: BaseException) -> None:
    if not future.done():
        future.set_exception(err)
