"""One live progress view per run, and quiet libraries underneath it.

:class:`RunView` draws a single line that a refresher thread redraws four times a second from the
request counters of :mod:`hf_barred.llm.activity`, so it moves with every finished request, not
once per batch::

    generate (round 1, 16 rows)  9/16 req [00:21<00:16]  7 in flight · 0 cached · 96 tok/s · accepted 0/12

The stage's request count is known for one-call-per-row stages (generate, refine, instantiate), so
only they get an ETA; the debate's count depends on the judges' answers, so it shows what is done.
On a stream that is not a terminal (a CI log) it prints one line per stage instead of redrawing.

:func:`quiet_libraries` hides what the libraries print underneath (datasets' "Map", "Generating train
split", "Saving the dataset" and "Creating json from Arrow format" bars, transformers' "Loading weights"
bar and LOAD REPORT, Hub bars, the libraries' INFO logs and Python warnings) unless verbose.

Example:
    >>> import io
    >>> from hf_barred.progress import RunView
    >>> stream = io.StringIO()
    >>> with RunView(n=4, stream=stream) as view:
    ...     view.stage("plan", rows=8)
    ...     view.accepted(2)
    >>> stream.getvalue().splitlines()[0]
    'plan (8 rows)'
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Optional, cast

from .llm.activity import ACTIVITY, ActivitySnapshot

if TYPE_CHECKING:
    from tqdm.auto import tqdm

__all__ = ["RunView", "quiet_libraries"]


class RunView:
    """The live view of one run: stage, requests done / in flight, cache hits, tokens/s, accepted of ``n``
    (per rule and overall when the run has several ``rules``, ``n`` each).

    ``enabled=False`` draws nothing. ``stream`` defaults to stderr; a redrawn bar is used only when
    it is a terminal.
    """

    def __init__(
        self,
        n: int,
        enabled: bool = True,
        stream: Optional[IO[str]] = None,
        interval: float = 0.25,
        rules: int = 1,
    ):
        self.n = n
        self.rules = rules
        self._by_rule: dict[str, int] = {}
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.live = enabled and bool(getattr(self.stream, "isatty", lambda: False)())
        self._accepted = 0
        self._bar: Optional[tqdm] = None
        self._start = ACTIVITY.snapshot()
        self._window: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> RunView:
        if self.live:
            ACTIVITY.view_open = True
            self._thread = threading.Thread(target=self._refresh_loop, name="hf_barred-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            ACTIVITY.view_open = False
        with self._lock:
            if self._bar is not None:
                self._draw()
                self._bar.close()
                self._bar = None

    def stage(self, name: str, rows: int, expected_requests: Optional[int] = None) -> None:
        """A new stage starts: ``rows`` input rows, and ``expected_requests`` when that count is known."""
        if not self.enabled:
            return
        label = f"{name} ({rows} rows)"
        if not self.live:
            print(label, file=self.stream, flush=True)
            return
        from tqdm.auto import tqdm

        with self._lock:
            if self._bar is not None:
                self._draw()
                self._bar.close()
            self._start = ACTIVITY.snapshot()
            self._window.clear()
            self._bar = tqdm(
                total=expected_requests,
                desc=label,
                unit="req",
                file=self.stream,
                leave=True,
                dynamic_ncols=True,
                mininterval=0,
                bar_format="{desc} {n_fmt}/{total_fmt} req [{elapsed}<{remaining}] {postfix}"
                if expected_requests
                else "{desc} {n_fmt} req [{elapsed}] {postfix}",
            )

    def accepted(self, count: int, rule: str = "") -> None:
        """``count`` samples (of ``rule``, in a run of several) are accepted so far."""
        self._by_rule[rule] = count
        self._accepted = sum(self._by_rule.values())
        if self.enabled and not self.live:
            where = f"{rule}: " if self.rules > 1 else ""
            overall = f" ({self._overall()})" if self.rules > 1 else ""
            print(f"  {where}accepted {count}/{self.n}{overall}", file=self.stream, flush=True)

    def _overall(self) -> str:
        done = sum(1 for count in self._by_rule.values() if count >= self.n)
        return f"all rules: {self._accepted}/{self.n * self.rules}, {done}/{self.rules} rules done"

    def _tokens_per_second(self, now: float, tokens: int) -> float:
        self._window.append((now, tokens))
        while len(self._window) > 2 and now - self._window[0][0] > 10.0:  # a 10-second window
            self._window.popleft()
        (t0, k0), (t1, k1) = self._window[0], self._window[-1]
        return (k1 - k0) / (t1 - t0) if t1 > t0 else 0.0

    def _draw(self) -> None:
        done: ActivitySnapshot = ACTIVITY.snapshot().minus(self._start)
        rate = self._tokens_per_second(time.monotonic(), done.completion_tokens)
        failed = f" · {done.failed} failed" if done.failed else ""
        note = f" · {ACTIVITY.note}" if ACTIVITY.note else ""
        bar = cast("tqdm", self._bar)  # every caller holds the lock and has checked that the bar is set
        bar.set_postfix_str(
            f"{done.in_flight} in flight · {done.cache_hits} cached{failed} · {rate:.0f} tok/s · "
            + (f"accepted {self._overall()}" if self.rules > 1 else f"accepted {self._accepted}/{self.n}")
            + note,
            refresh=False,
        )
        bar.n = done.finished + done.cache_hits
        bar.refresh()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                if self._bar is not None:
                    self._draw()


_QUIET_LOGGERS = ("datasets", "transformers", "huggingface_hub", "accelerate", "peft", "filelock", "httpx")


@contextlib.contextmanager
def quiet_libraries(verbose: bool = False) -> Iterator[None]:
    """Hide the libraries' own bars, load reports, logs below ERROR and Python warnings (``verbose=True``
    keeps them), with each library's own switch; what is restored afterwards is what was set before.

    >>> import datasets
    >>> with quiet_libraries():
    ...     datasets.utils.logging.is_progress_bar_enabled()
    False
    """
    if verbose:
        yield
        return
    import datasets
    import huggingface_hub.utils as hub_utils
    import transformers.utils.logging as hf_logging

    datasets_bars = datasets.utils.logging.is_progress_bar_enabled()
    hub_bars = not hub_utils.are_progress_bars_disabled()
    hf_bars = hf_logging.is_progress_bar_enabled()
    hf_level = hf_logging.get_verbosity()
    levels = {name: logging.getLogger(name).level for name in _QUIET_LOGGERS}
    datasets.utils.logging.disable_progress_bar()
    hub_utils.disable_progress_bars()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # hf_barred's own warnings are log records, not these
            yield
    finally:
        if datasets_bars:
            datasets.utils.logging.enable_progress_bar()
        if hub_bars:
            hub_utils.enable_progress_bars()
        if hf_bars:
            hf_logging.enable_progress_bar()
        hf_logging.set_verbosity(hf_level)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
