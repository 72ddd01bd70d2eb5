"""A run that cannot reach its goal stops early: failed requests and unusable answers both count.

A request the engine gave up on (an HTTP error after the retries, a timeout, a refused connection)
is not a parse failure: the model never answered. :class:`FailureGuard` runs a stage and checks two
shares against ``max_failure_rate``, *before* the stage's output is saved:

- its failed requests (from the engines' :class:`~hf_barred.llm.UsageMeter`) among the requests it
  made (:class:`RequestsFailed`: fix the endpoint, and the rerun retries them, every answer that
  arrived being in the response cache);
- its answers that could not be used (failed requests, answers that do not parse, answers the token
  budget cut off) among the answers it asked for (:class:`AnswersUnusable`: a model that ignores the
  JSON instructions, a wrong ``--model`` behind a proxy, a provider that refuses): one line names the
  stage, the share and one raw answer, and the fix. :func:`answer_counts` counts them from the stage's rows.

Both are :class:`RunStopped` (exit code 1). Nothing after the stage is spent.

Example:
    >>> from hf_barred.recipes.barred.failures import failure_message
    >>> failure_message("generate", 16, 16, "http://127.0.0.1:8000/v1",
    ...                 "request failed: HTTP 500 after 2 retries: upstream down", 0.5)[:93]
    'generate: 16 of 16 requests to http://127.0.0.1:8000/v1 failed (HTTP 500 after 2 retries: ups'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional, TypeVar

from ...llm import EngineConfig, built_engine
from ...llm.base import REQUEST_FAILED

__all__ = [
    "AnswerCounts",
    "AnswersUnusable",
    "FailureGuard",
    "RequestsFailed",
    "RunStopped",
    "StreamGuard",
    "answer_counts",
    "failure_message",
]

T = TypeVar("T")


class RunStopped(RuntimeError):
    """A run stopped because going on could not reach its goal (exit code 1)."""


class RequestsFailed(RunStopped):
    """A stage ended with more failed requests than ``max_failure_rate`` allows (exit code 1)."""


class AnswersUnusable(RunStopped):
    """A stage ended with more unusable answers than ``max_failure_rate`` allows (exit code 1)."""


@dataclass(frozen=True)
class AnswerCounts:
    """A stage's answers: how many it asked for, how many could not be used, and one of those (raw, error)."""

    asked: int
    unusable: int
    raw: str = ""
    error: str = ""


def _first(found: list[tuple[str, str]]) -> tuple[str, str]:
    return found[0] if found else ("", "")


def answer_counts(stage: str, ds: Any, subsets: int = 1) -> AnswerCounts:
    """The answers a stage's output rows hold (``subsets``: decomposition prompts per task row).

    - ``decompose``: one answer per seed subset; a failed call is an error row, and answers that parsed but
      named no dimension (the ``subset == -1`` row) are all unusable;
    - ``instantiate``: one per dimension row that was asked (a dimension, no earlier error);
    - ``generate`` / ``refine``: one per row; unusable when the row's ``error_stage`` is the stage;
    - ``debate``: every judge answer and every advocate argument.

    >>> from datasets import Dataset
    >>> rows = Dataset.from_dict({"error": ["no JSON object found", None], "error_stage": ["generate", None],
    ...                           "raw": ["Sure! Here is a sample.", "{}"]})
    >>> answer_counts("generate", rows)
    AnswerCounts(asked=2, unusable=1, raw='Sure! Here is a sample.', error='no JSON object found')
    """
    found: list[tuple[str, str]] = []
    if stage == "decompose":
        tasks = len({row["task_name"] for row in ds}) or 1
        for row in ds:
            if row["error"] and row["subset"] >= 0:
                found.append((row["raw"], row["error"]))
        if any(row["subset"] == -1 for row in ds):
            return AnswerCounts(tasks * subsets, tasks * subsets, *_first(found or [("", "no dimension named")]))
        return AnswerCounts(tasks * subsets, len(found), *_first(found))
    if stage == "instantiate":
        dimensions = [row for row in ds if row["dimension"]]
        found = [(row["raw"], row["error"]) for row in dimensions if row["error"] and not row["instantiations"]]
        return AnswerCounts(len(dimensions), len(found), *_first(found))
    if stage in ("generate", "refine"):
        found = [(row["raw"], row["error"]) for row in ds if row["error"] and row["error_stage"] == stage]
        return AnswerCounts(len(ds), len(found), *_first(found))
    if stage == "debate":
        asked = 0
        for row in ds:
            for debate_round in row["debate"]:
                asked += len(debate_round["judges"]) + (1 if debate_round["round"] > 1 else 0)
                found += [(a["raw"], a["error"]) for a in debate_round["judges"] if a["error"]]
                if debate_round["advocate_error"]:
                    found.append(("", debate_round["advocate_error"]))
        return AnswerCounts(asked, len(found), *_first(found))
    raise ValueError(f"answer_counts: no such stage {stage!r}")


def endpoint_of(config: EngineConfig) -> str:
    """Where an engine's requests go: the base URL (openai), else the engine and model."""
    if config.engine == "openai":
        return config.base_url or "https://api.openai.com/v1"
    return f"the {config.engine} engine ({config.model})"


def failure_message(stage: str, failed: int, total: int, endpoint: str, last_error: str, limit: float) -> str:
    """The one-line message of :class:`RequestsFailed`."""
    reason = last_error[len(REQUEST_FAILED) :] if last_error.startswith(REQUEST_FAILED) else last_error
    return (
        f"{stage}: {failed} of {total} requests to {endpoint} failed "
        f"({reason.splitlines()[0][:300] if reason else 'no answer'}), "
        f"more than --max-failure-rate {limit:g} allows; the run stopped. Every answer that arrived is cached: fix the "
        "endpoint and run the same command again to resume."
    )


class FailureGuard:
    """Run stages on ``engines`` and stop the run when one's failed requests, or its unusable answers, are
    over ``max_failure_rate``; ``fix`` says what to change when answers are unusable."""

    def __init__(self, engines: list[EngineConfig], max_failure_rate: float, fix: str = ""):
        self.engines = engines
        self.max_failure_rate = max_failure_rate
        self.fix = fix

    def usage(self, stage: str = "") -> dict[EngineConfig, tuple[int, int, str]]:
        """Per engine: requests made (answered, cached or failed), failed requests and the last error, of the
        requests tagged ``stage`` (or ``stage/...``, e.g. ``debate/judge``) when given, else of all."""
        found: dict[EngineConfig, tuple[int, int, str]] = {}
        for config in self.engines:
            engine = built_engine(config)
            if engine is None:
                continue
            u = engine.usage
            if not stage:
                found[config] = (u.calls + u.cache_hits + u.errors, u.errors, u.last_error)
                continue
            buckets = [b for tag, b in u.by_stage.items() if tag == stage or tag.startswith(stage + "/")]
            requests = sum(b["calls"] + b["cache_hits"] + b["errors"] for b in buckets)
            found[config] = (requests, sum(b["errors"] for b in buckets), u.last_error)
        return found

    def run(self, stage: str, compute: Callable[[], T], subsets: int = 1) -> T:
        """``compute()``, unless its requests failed more than allowed (:class:`RequestsFailed`) or its
        answers could not be used more than allowed (:class:`AnswersUnusable`; see :func:`answer_counts`)."""
        before = self.usage()
        result = compute()
        self.check_requests(stage, before, usage=self.usage())
        self.check_answers(stage, answer_counts(stage, result, subsets))
        return result

    def check_requests(
        self,
        stage: str,
        before: dict[EngineConfig, tuple[int, int, str]],
        minimum: int = 1,
        usage: Optional[dict[EngineConfig, tuple[int, int, str]]] = None,
    ) -> None:
        """Raise :class:`RequestsFailed` when more than ``max_failure_rate`` of the requests made between ``before``
        and ``usage`` (two :meth:`usage` readings; now when not given), at least ``minimum`` of them, failed."""
        failed = total = 0
        worst: Optional[tuple[EngineConfig, str]] = None
        for config, (requests, errors, last_error) in (usage if usage is not None else self.usage()).items():
            requests_before, errors_before, _ = before.get(config, (0, 0, ""))
            total += requests - requests_before
            if errors > errors_before:
                failed += errors - errors_before
                worst = (config, last_error)
        if worst is not None and total >= max(1, minimum) and failed / total > self.max_failure_rate:
            raise RequestsFailed(
                failure_message(stage, failed, total, endpoint_of(worst[0]), worst[1], self.max_failure_rate)
            )

    def check_answers(self, stage: str, counts: AnswerCounts, minimum: int = 1) -> None:
        """Raise :class:`AnswersUnusable` when more than ``max_failure_rate`` of ``counts`` (at least ``minimum``
        answers) could not be used."""
        if counts.asked >= max(1, minimum) and counts.unusable / counts.asked > self.max_failure_rate:
            raw = " ".join(counts.raw.split())
            raw = raw if len(raw) <= 120 else raw[:117] + "..."
            error = (counts.error or "").splitlines()[0][:200] if counts.error else "no answer"
            raise AnswersUnusable(
                f"{stage}: {counts.unusable} of {counts.asked} answers ({counts.unusable / counts.asked:.0%}) could "
                f"not be used ({error}), more than --max-failure-rate {self.max_failure_rate:g} allows; the run "
                f"stopped before spending more. One answer: {raw!r}. Fix: {self.fix or 'check --model'}"
            )


class StreamGuard:
    """A :class:`FailureGuard` for an executor that finishes rows one at a time: it keeps running counts per
    stage and stops the run as soon as a stage's unusable answers, or the failed requests, are over
    ``max_failure_rate`` among at least ``min_answers`` of them (:meth:`observe`), then once more over
    everything at the end (:meth:`final`).

    >>> guard = StreamGuard(FailureGuard([], 0.5), min_answers=4)
    >>> for _ in range(3):
    ...     guard.observe("generate", [{"error": "no JSON object found", "error_stage": "generate", "raw": "Hi!"}])
    >>> guard.observe("generate", [{"error": None, "error_stage": None, "raw": "{}"}])
    Traceback (most recent call last):
    ...
    hf_barred.recipes.barred.failures.AnswersUnusable: generate: 3 of 4 answers (75%) could not be used ...
    """

    def __init__(self, guard: FailureGuard, min_answers: int = 16):
        self.guard = guard
        self.min_answers = min_answers
        self.counts: dict[str, AnswerCounts] = {}
        # every stage's reading before the run's first request (rows of a stage finish after their requests)
        self._before = {stage: guard.usage(stage) for stage in ("generate", "debate", "refine")}

    def observe(self, stage: str, rows: Any, subsets: int = 1) -> None:
        """Count the answers of ``stage``'s new ``rows``; raise when the stage, or the requests, fail too often."""
        new = answer_counts(stage, rows, subsets)
        old = self.counts.get(stage, AnswerCounts(0, 0))
        self.counts[stage] = AnswerCounts(
            old.asked + new.asked, old.unusable + new.unusable, old.raw or new.raw, old.error or new.error
        )
        before = self._before.setdefault(stage, self.guard.usage(stage))
        self.guard.check_requests(stage, before, self.min_answers, usage=self.guard.usage(stage))
        self.guard.check_answers(stage, self.counts[stage], self.min_answers)

    def final(self) -> None:
        """The checks of a stage-by-stage run, over everything the run answered."""
        for stage, counts in self.counts.items():
            self.guard.check_requests(stage, self._before.get(stage, {}), usage=self.guard.usage(stage))
            self.guard.check_answers(stage, counts)
