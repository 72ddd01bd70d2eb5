"""One rule's BARRED run: its label quota, its rounds, what each debated row becomes, its splits and statistics.

Both executors (:mod:`.stages_executor`, stage by stage over Datasets, and :mod:`.streaming`, row by row)
drive a :class:`RuleRun` the same way, so they plan the same rows and accept the same ones from the same
answers:

1. :meth:`RuleRun.rows_to_plan` says how many rows the next round plans (None: the rule is done);
2. each debated row gets a :func:`disposition`: accepted, refined again, or rejected (and why);
3. :meth:`RuleRun.fold` records a round's debated rows, refinement level by level, in ``row_id`` order;
4. :meth:`RuleRun.end_round` stops planning after a round that accepted nothing;
5. :meth:`RuleRun.finish` picks exactly ``n`` label-balanced samples (:func:`split_exactly`) and
   computes the statistics.

Example:
    >>> from hf_barred.recipes.barred.rule_run import disposition
    >>> disposition({"accepted": True, "error": None}, level=0, max_refinements=2)
    'accepted'
    >>> disposition({"accepted": False, "error": None}, level=0, max_refinements=2)
    'refine'
    >>> disposition({"accepted": False, "error": None}, level=2, max_refinements=2)
    'debate'
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from datasets import Dataset

from ...llm.base import is_cut_off, is_request_failure
from ...policy.task import GuardrailTask
from .budget import Budget, rows_to_plan
from .config import BarredConfig, BarredResult
from .failures import AnswersUnusable
from .stats import run_statistics
from .writer import decomposition_export, publish_rows

__all__ = [
    "ACCEPTED",
    "REFINE",
    "RuleRun",
    "disposition",
    "goal",
    "label_quota",
    "require_usable_decomposition",
    "shortfall",
    "split_exactly",
    "unusable_fix",
]

ACCEPTED = "accepted"
REFINE = "refine"
"""A debated row's :func:`disposition` when it is neither accepted nor rejected: it is refined and debated again."""


def disposition(row: dict[str, Any], level: int, max_refinements: int) -> str:
    """What a row debated at refinement ``level`` becomes: :data:`ACCEPTED`, :data:`REFINE`, or the rejection
    reason (``request_failure``, ``cut_off``, ``parse_failure``: the row has an error; ``debate``: still
    rejected after the last refinement)."""
    if row["accepted"]:
        return ACCEPTED
    if row["error"]:
        error = row["error"]
        return "request_failure" if is_request_failure(error) else "cut_off" if is_cut_off(error) else "parse_failure"
    return "debate" if level == max_refinements else REFINE


@dataclass
class RuleRun:
    """The state of one rule's run (see the module doc); ``work`` is the folder of its saved stage outputs."""

    task: GuardrailTask
    n: int
    config: BarredConfig
    work: Path
    budget: Budget
    quota: tuple[int, int] = (0, 0)
    dims: Optional[Dataset] = None
    inst: Optional[Dataset] = None
    accepted_rows: list[dict[str, Any]] = field(default_factory=list)
    rejected_rows: list[dict[str, Any]] = field(default_factory=list)
    debated: list[dict[str, Any]] = field(default_factory=list)
    accepted_by_label: list[int] = field(default_factory=lambda: [0, 0])
    planned: int = 0
    rounds_run: int = 0
    empty_round: Optional[str] = None
    """Why planning stopped early: a round accepted nothing."""
    speculated: set[int] = field(default_factory=set)
    """Rows the streaming executor started before a round planned them (see :mod:`.streaming`)."""

    def __post_init__(self) -> None:
        self.quota = label_quota(self.n, self.config.plan.seed)

    @property
    def name(self) -> str:
        return self.task.name

    @property
    def accepted_count(self) -> int:
        """Accepted samples that count toward ``n`` (at most the quota of each label)."""
        return sum(min(a, q) for a, q in zip(self.accepted_by_label, self.quota))

    def rows_to_plan(self) -> Optional[int]:
        """How many rows the next round plans, or None when the rule is done (its quota is met, its rounds
        or the budget are spent, or a round accepted nothing)."""
        if (
            self.empty_round is not None
            or not shortfall(self.accepted_by_label, self.quota)
            or self.rounds_run >= self.config.max_rounds
            or self.budget.spent
        ):
            return None
        # labels are planned in balanced pairs: enough pairs for the label that lacks the most
        needed = 2 * max(shortfall(self.accepted_by_label, self.quota, per_label=True))
        return rows_to_plan(needed, self.planned, len(self.accepted_rows), self.config)

    def fold(self, judged: Iterable[dict[str, Any]], dispositions: Iterable[str]) -> None:
        """Record debated rows (one refinement level of a round, in ``row_id`` order) and their dispositions."""
        for row, outcome in zip(judged, dispositions):
            self.debated.append(row)
            if outcome == ACCEPTED:
                self.accepted_rows.append(row)
                self.accepted_by_label[row["target"]] += 1
            elif outcome != REFINE:
                self.rejected_rows.append(row | {"rejection_reason": outcome})

    def end_round(self, k: int, accepted_before: int) -> None:
        """A round of ``k`` planned rows ended; one that accepted nothing stops the planning (no evidence that
        more rows would help)."""
        self.planned += k
        self.rounds_run += 1
        if len(self.accepted_rows) == accepted_before:
            self.empty_round = f"round {self.rounds_run} accepted none of its {k} planned rows"

    def finish(self, engine_usage: dict[str, Any], reused: list[str], output_dir: Path) -> BarredResult:
        """Exactly ``n`` samples (``train``), the extra and rejected ones, the decomposition and the statistics;
        nothing is written (see :mod:`.writer`)."""
        assert self.dims is not None and self.inst is not None, "finish() after the decomposition"
        task, config = self.task, self.config
        chosen, extra_rows = split_exactly(self.accepted_rows, self.quota)
        train = publish_rows(chosen, task, config)
        extra = publish_rows(extra_rows, task, config)
        rejected = publish_rows(sorted(self.rejected_rows, key=lambda r: (r["row_id"], r["refinements"])), task, config)
        stats = run_statistics(
            task,
            self.n,
            config,
            self.dims,
            self.inst,
            self.debated or None,
            train,
            rejected,
            self.planned,
            self.rounds_run,
            self.budget,
            engine_usage,
            reused,
            extra=extra,
        )
        stats["goal"] = goal(stats, config, self.budget, self.rounds_run, self.empty_round)
        stats["executor"] = config.run_executor
        if config.run_executor in ("streaming", "ray"):
            unplanned = sum(1 for i in self.speculated if i >= self.planned)
            stats["speculative_rows"] = {"started": len(self.speculated), "never_planned": unplanned}
        return BarredResult(train, rejected, decomposition_export(self.inst), stats, output_dir, extra=extra)


def unusable_fix(config: BarredConfig) -> str:
    """What to change when a stage's answers cannot be used (the end of :class:`AnswersUnusable`'s line)."""
    engine = config.generate.engine
    other = "served" if config.generate.prompt_set == "small" else "small"
    where = f" behind {engine.base_url}" if engine.base_url else ""
    budget = (
        f"--reasoning-tokens (now {engine.reasoning_allowance})"
        if engine.is_reasoning
        else ("--sample-max-tokens / --judge-max-tokens")
    )
    return (
        f"check that --model {engine.model}{where} is the model you meant and follows JSON instructions, raise the "
        f"answer budget ({budget}), or try --prompt-set {other}."
    )


def require_usable_decomposition(inst: Dataset, config: BarredConfig, rule: str = "") -> None:
    """Stop (:class:`AnswersUnusable`) before any generation when no dimension came with a usable instantiation:
    the plan would have nothing to write about (whatever ``max_failure_rate`` lets through)."""
    if any(row["instantiations"] for row in inst):
        return
    errors = [row["error"] for row in inst if row["error"]]
    raws = [" ".join((row["raw"] or "").split())[:120] for row in inst if row["raw"]]
    where = f"decomposition of the rule {rule!r}" if rule else "decomposition"
    raise AnswersUnusable(
        f"{where}: {len(inst)} dimension row(s), none with a usable instantiation "
        f"({errors[0] if errors else 'no dimension named'}); the run stopped before any generation. "
        f"One answer: {raws[0] if raws else ''!r}. Fix: {unusable_fix(config)}"
    )


def goal(
    stats: dict[str, Any], config: BarredConfig, budget: Budget, rounds: int, empty: Optional[str]
) -> dict[str, Any]:
    """Whether the run reached its goal (``n`` accepted samples) and, when not, why it ended and what to change."""
    if stats["accepted"] >= stats["requested"]:
        return {"reached": True, "why": f"{stats['accepted']} samples accepted, as asked", "fix": ""}
    if empty is not None:
        why = empty
        fix = (
            "read the rejected split's dissent: the judges reject what the generator writes; try a stronger "
            "--model, or --judges 1 / --rounds 3"
        )
    elif budget.spent:
        why = (
            f"the budget was spent ({budget.total_calls} of {budget.total_max_calls} requests, {budget.tokens} tokens)"
        )
        fix = "raise --max-calls (or --max-calls-per-sample), or --max-total-tokens"
    else:
        why = f"{rounds} planning round(s) ran, --max-rounds {config.max_rounds}"
        fix = "raise --max-rounds (the same command resumes: finished calls are cached)"
    return {"reached": False, "why": why, "fix": fix}


def label_quota(n: int, plan_seed: int = 0) -> tuple[int, int]:
    """How many accepted samples of each label the ``train`` split holds: ``n`` split evenly, the odd
    one to the label the plan draws first (row 0 has label ``plan_seed % 2``).

    >>> label_quota(12), label_quota(5), label_quota(5, plan_seed=1)
    ((6, 6), (3, 2), (2, 3))
    """
    quota = [n // 2, n // 2]
    quota[plan_seed % 2] += n % 2
    return quota[0], quota[1]


def shortfall(accepted: list[int], quota: tuple[int, int], per_label: bool = False) -> Any:
    """The samples still missing: their total, or per label.

    >>> shortfall([6, 2], (6, 6)), shortfall([6, 2], (6, 6), per_label=True)
    (4, [0, 4])
    """
    missing = [max(0, q - a) for a, q in zip(accepted, quota)]
    return missing if per_label else sum(missing)


def split_exactly(accepted: list[dict[str, Any]], quota: tuple[int, int]) -> tuple[list[dict], list[dict]]:
    """Exactly ``quota[y]`` accepted rows of each label ``y`` (the lowest ``row_id`` first, so the
    choice is deterministic), and the rest: the ``extra`` split.

    >>> rows = [{"row_id": i, "target": i % 2} for i in (3, 0, 1, 2, 4)]
    >>> train, extra = split_exactly(rows, (2, 1))
    >>> [r["row_id"] for r in train], [r["row_id"] for r in extra]
    ([0, 1, 2], [3, 4])
    """
    taken = [0, 0]
    chosen: list[dict[str, Any]] = []
    extra: list[dict[str, Any]] = []
    for row in sorted(accepted, key=lambda r: r["row_id"]):
        y = row["target"]
        (chosen if taken[y] < quota[y] else extra).append(row)
        taken[y] += 1
    return chosen, extra
