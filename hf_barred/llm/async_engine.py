"""An engine whose ``chat`` is awaited: what the streaming executor drives, row by row.

:class:`AsyncEngine` wraps the cached engine of a config (:func:`hf_barred.llm.get_engine`), so the
response cache, the usage meter and the engine's own concurrency limits are the batched path's. Every
awaited request joins a queue; a dispatcher sends what is queued as batched ``chat`` calls, one per
(sampling parameters, stage) group, in a worker thread, and each answer wakes its own waiter the moment
it arrives (the engines' ``on_result``), so no request waits for another's:

- an in-process engine (``local``, ``vllm``: one forward pass at a time) gets one call at a time, made
  of whatever rows are ready when the previous call ends, from any stage: it batches without a barrier;
- an HTTP engine (``openai``, ``concurrent_calls``) gets a call as soon as requests are queued, with as
  many calls in flight as come, its own semaphore bounding the requests.

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
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

from .base import Completion, Conversation, SamplingParams

__all__ = ["SETTLE_TURNS", "AsyncEngine"]

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
        self._queue: list[tuple[Conversation, SamplingParams, str, asyncio.Future[Completion]]] = []
        self._busy = 0
        self._scheduled = False
        self._settled_at = -1
        self._quiet_turns = 0
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        # Calls wait in threads: an HTTP engine may have a few (one per stage) in flight at once.
        self._threads = ThreadPoolExecutor(
            max_workers=16 if self.concurrent else 1, thread_name_prefix="hf-barred-async"
        )
        self.calls = 0
        """Batched ``chat`` calls sent so far."""

    async def chat(
        self, conversations: Sequence[Conversation], params: SamplingParams, stage: str = ""
    ) -> list[Completion]:
        """The engine's answers to ``conversations``, in order (see :meth:`CachedBackend.chat`)."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        futures = []
        for conversation in conversations:
            future: asyncio.Future[Completion] = loop.create_future()
            self._queue.append((list(conversation), params, stage, future))
            futures.append(future)
        if not self._scheduled:
            self._scheduled = True
            self._settled_at = -1
            loop.call_soon(self._settle)
        return list(await asyncio.gather(*futures))

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
        """Send what is queued, unless an in-process engine is busy (it takes the queue when it is done)."""
        if not self._queue or (self._busy and not self.concurrent):
            return
        queued, self._queue = self._queue, []
        groups: dict[str, list[tuple[Conversation, SamplingParams, str, asyncio.Future[Completion]]]] = {}
        for item in queued:
            key = json.dumps([item[1].cache_fields(), item[2]], sort_keys=True, default=str)
            groups.setdefault(key, []).append(item)
        for group in groups.values():
            self._busy += 1
            self.calls += 1
            asyncio.get_running_loop().run_in_executor(self._threads, self._call, group)

    def _call(self, group: list[tuple[Conversation, SamplingParams, str, asyncio.Future[Completion]]]) -> None:
        """One batched call (in a worker thread); each answer resolves its future as it arrives."""
        loop = self._loop
        assert loop is not None
        futures = [future for _, _, _, future in group]

        def deliver(i: int, completion: Completion) -> None:
            loop.call_soon_threadsafe(_resolve, futures[i], completion)

        try:
            answers = self.engine.chat([c for c, _, _, _ in group], group[0][1], on_result=deliver, stage=group[0][2])
            for i, completion in enumerate(answers):  # an engine that ignores on_result delivers here
                loop.call_soon_threadsafe(_resolve, futures[i], completion)
        except BaseException as err:  # an engine-wide error (unreachable endpoint, bad key) fails every waiter
            for future in futures:
                loop.call_soon_threadsafe(_fail, future, err)
        finally:
            loop.call_soon_threadsafe(self._done)

    def _done(self) -> None:
        self._busy -= 1
        if not self._scheduled:  # the rows this call woke ask again after a few turns of the loop
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


def _resolve(future: asyncio.Future[Completion], completion: Completion) -> None:
    if not future.done():
        future.set_result(completion)


def _fail(future: asyncio.Future[Completion], err: BaseException) -> None:
    if not future.done():
        future.set_exception(err)
