"""Live request counters of this process, read by the run's progress view.

:class:`~hf_barred.llm.cache.CachedBackend` counts every request it sends, every answer the moment
it arrives (through the engines' ``on_result`` callback, so an HTTP engine moves the counters
request by request) and every answer the cache served. The counters only ever grow; a reader takes
a :meth:`Activity.snapshot` and subtracts an earlier one.

Example:
    >>> from hf_barred.llm.activity import Activity
    >>> from hf_barred.llm.base import Completion
    >>> activity = Activity()
    >>> activity.sent(2)
    >>> activity.finished(Completion(text="ok", completion_tokens=5))
    >>> snap = activity.snapshot()
    >>> snap.finished, snap.in_flight, snap.completion_tokens
    (1, 1, 5)
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from .base import Completion

__all__ = ["ACTIVITY", "Activity", "ActivitySnapshot"]


@dataclass(frozen=True)
class ActivitySnapshot:
    """The counters at one moment."""

    sent: int = 0
    finished: int = 0
    failed: int = 0
    cache_hits: int = 0
    completion_tokens: int = 0

    @property
    def in_flight(self) -> int:
        return self.sent - self.finished

    def minus(self, earlier: ActivitySnapshot) -> ActivitySnapshot:
        """What happened between ``earlier`` and this snapshot."""
        return ActivitySnapshot(
            sent=self.sent - earlier.sent,
            finished=self.finished - earlier.finished,
            failed=self.failed - earlier.failed,
            cache_hits=self.cache_hits - earlier.cache_hits,
            completion_tokens=self.completion_tokens - earlier.completion_tokens,
        )


class Activity:
    """Thread-safe, monotonic counters of requests sent, answered, failed and served from the cache."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sent = self._finished = self._failed = self._hits = self._tokens = 0
        self.view_open = False
        """True while a run's live view draws: engines then draw no bar of their own."""
        self.note = ""
        """A line of status from an engine that waits on something other than requests (a provider batch job)."""

    def sent(self, count: int) -> None:
        with self._lock:
            self._sent += count

    def finished(self, completion: Completion) -> None:
        with self._lock:
            self._finished += 1
            self._failed += int(not completion.ok)
            self._tokens += completion.completion_tokens

    def cache_hits(self, count: int) -> None:
        with self._lock:
            self._hits += count

    def note_changed(self, note: str) -> bool:
        """Set :attr:`note`; True when it differs from the last one (worth printing)."""
        with self._lock:
            changed, self.note = note != self.note, note
            return changed

    def snapshot(self) -> ActivitySnapshot:
        with self._lock:
            return ActivitySnapshot(self._sent, self._finished, self._failed, self._hits, self._tokens)


ACTIVITY = Activity()
"""The counters of this process (one per process: with ``num_proc > 1`` each worker has its own)."""
