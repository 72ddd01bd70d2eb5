"""Micro-batching: requests that arrive close together share one forward pass.

A :class:`MicroBatcher` wraps a synchronous ``check(rows) -> results`` (an in-process model). Each
``await submit(rows)`` queues its rows; one worker takes the first waiting request, then keeps adding
requests for at most ``max_wait_ms`` (or until ``max_rows``), runs ONE ``check`` in its worker thread
(always the same one, so the event loop keeps accepting requests) and hands every request its own slice of the results.
While a batch runs, the next one fills up. An exception fails only the requests of its batch.

Example:
    >>> import asyncio
    >>> from hf_barred.serve.batching import MicroBatcher
    >>> calls = []
    >>> def check(rows):
    ...     calls.append(len(rows))
    ...     return [r.upper() for r in rows]
    >>> async def main():
    ...     batcher = MicroBatcher(check, max_wait_ms=50)
    ...     out = await asyncio.gather(batcher.submit(["a", "b"]), batcher.submit(["c"]))
    ...     await batcher.close()
    ...     return out
    >>> asyncio.run(main()), calls
    ([['A', 'B'], ['C']], [3])
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any


class MicroBatcher:
    """Groups concurrent ``submit`` calls into one ``check`` call (see the module docstring)."""

    def __init__(self, check: Callable[[list[Any]], list[Any]], *, max_wait_ms: float = 5.0, max_rows: int = 256):
        self.check = check
        self.max_wait = max_wait_ms / 1000.0
        self.max_rows = max_rows
        self._workers: dict[asyncio.AbstractEventLoop, tuple[asyncio.Queue, asyncio.Task]] = {}
        # ONE thread runs every check: torch keeps one warm intra-op thread team (a fresh thread per
        # batch would start its own OpenMP team and spin it).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="barred-batch")
        self.batches = 0  # how many check calls ran (for tests and figures)

    async def submit(self, rows: Sequence[Any]) -> list[Any]:
        """The results of ``rows``, in order, computed in a batch with other pending requests."""
        if not rows:
            return []
        loop = asyncio.get_running_loop()
        if loop not in self._workers or self._workers[loop][1].done():  # one worker per event loop
            queue: asyncio.Queue = asyncio.Queue()
            self._workers[loop] = (queue, loop.create_task(self._run(queue)))
        future: asyncio.Future = loop.create_future()
        await self._workers[loop][0].put((list(rows), future))
        return await future

    async def close(self) -> None:
        """Stop the worker of the running event loop."""
        entry = self._workers.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            entry[1].cancel()
            try:
                await entry[1]
            except asyncio.CancelledError:
                pass

    async def _run(self, queue: asyncio.Queue) -> None:
        while True:
            pending = [await queue.get()]
            total = len(pending[0][0])
            deadline = time.monotonic() + self.max_wait
            while total < self.max_rows:
                remaining = deadline - time.monotonic()
                if remaining <= 0 and queue.empty():
                    break
                try:
                    item = queue.get_nowait() if remaining <= 0 else await asyncio.wait_for(queue.get(), remaining)
                except (asyncio.TimeoutError, asyncio.QueueEmpty):
                    break
                pending.append(item)
                total += len(item[0])
            await self._dispatch(pending)

    async def _dispatch(self, pending: list[tuple[list[Any], asyncio.Future]]) -> None:
        rows = [row for request_rows, _ in pending for row in request_rows]
        self.batches += 1
        try:
            results = await asyncio.get_running_loop().run_in_executor(self._executor, self.check, rows)
        except Exception as err:  # noqa: BLE001  (each waiting request gets the error)
            for _, future in pending:
                if not future.done():
                    future.set_exception(err)
            return
        start = 0
        for request_rows, future in pending:
            if not future.done():  # a client that went away has a cancelled future
                future.set_result(results[start : start + len(request_rows)])
            start += len(request_rows)
