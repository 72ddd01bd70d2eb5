"""BARRED as a recipe: a plain, resumable sequence of stage calls.

:func:`run_barred` decomposes the task once (dimensions, then instantiations), then runs rounds of
plan -> generate -> debate -> (refine -> debate) x ``max_refinements`` until ``n`` samples are
accepted, a budget is spent, or ``max_rounds`` rounds have run.
``train`` holds exactly ``n`` accepted samples, balanced across the labels as the plan intends
(:func:`label_quota`); a round accepts more than it needs when the debate is kinder than
expected, and those samples go to the ``extra`` split rather than being dropped (lowest
``row_id`` first, so the choice is deterministic and survives a resume). Each round plans as many rows as
the acceptance rate so far says are needed (the first round assumes ``initial_acceptance``), an
even number, so labels stay balanced.

Everything is saved under ``output_dir``, laid out like a Hub dataset repository::

    README.md                      dataset card, with YAML `configs` (default, decomposition)
    data/train-00000-of-00001.parquet      exactly n accepted samples, n/2 of each label
    data/extra-00000-of-00001.parquet      accepted samples beyond n (kept, not trained on by default)
    data/rejected-00000-of-00001.parquet   rejected samples, with their dissent
    decomposition/train-00000-of-00001.parquet
    summary.json                   the run's statistics
    work/decomposition/{dimensions,instantiations}/      every intermediate dataset
    work/round_000/{plan,generate,debate_0,refine_1,debate_1,...}/

Resuming: a stage whose saved output has the fingerprint this run expects (input fingerprint +
stage + version + prompts + output-relevant config) is loaded instead of recomputed; a stage
that was interrupted is recomputed, and the response cache answers every call that had finished.
Budgets: :mod:`hf_barred.recipes.barred.budget`; the saved outputs: :mod:`hf_barred.recipes.barred.store`;
statistics and files: :mod:`~hf_barred.recipes.barred.stats`, :mod:`~hf_barred.recipes.barred.writer`.

Example:
    >>> from hf_barred.recipes.barred.run import BarredConfig
    >>> from hf_barred.llm import EngineConfig
    >>> config = BarredConfig.for_engine(EngineConfig(engine="local"), judges=3, rounds=2, max_refinements=1)
    >>> len(config.debate.judges), config.debate.rounds, config.max_refinements
    (3, 2, 1)
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Optional

from datasets import Dataset, concatenate_datasets

from ...llm.base import is_cut_off, is_request_failure
from ...policy.task import GuardrailTask
from ...stages.base import Stage
from ...stages.debate import DebateStage
from ...stages.decompose import DecomposeStage, task_dataset
from ...stages.generate import GenerateStage
from ...stages.instantiate import InstantiateStage
from ...stages.plan import plan, plan_fingerprint
from ...stages.refine import RefineStage
from .budget import Budget, engine_usage, rows_to_plan, usage_delta
from .config import SERVED_MAX_TOKENS, BarredConfig, BarredResult
from .failures import AnswersUnusable, FailureGuard
from .output import locked_output
from .stats import run_statistics
from .store import saved_or_run
from .writer import DATA_FILES, decomposition_export, publish_rows, write_outputs

__all__ = [
    "DATA_FILES",
    "SERVED_MAX_TOKENS",
    "BarredConfig",
    "BarredResult",
    "rows_to_plan",
    "run_barred",
    "run_statistics",
]


def run_barred(
    task: GuardrailTask,
    n: int,
    config: Optional[BarredConfig] = None,
    output_dir: str | os.PathLike = "outputs/barred",
    progress: bool = True,
    verbose: bool = False,
    overwrite: bool = False,
) -> BarredResult:
    """Generate ``n`` verified, label-balanced boundary samples for ``task`` (see the module doc).

    The output folder is locked for the run (:func:`~hf_barred.recipes.barred.output.locked_output`:
    a second run into it fails at once; a folder with someone else's README.md is refused unless
    ``overwrite``). A stage whose requests failed more than ``config.max_failure_rate`` stops the
    run with :class:`~hf_barred.recipes.barred.failures.RequestsFailed`, its output unsaved.

    Example:
        >>> from hf_barred.recipes.barred.run import BarredConfig, run_barred
        >>> from hf_barred.policy.task import GuardrailTask
        >>> task = GuardrailTask.load("dataset_scripts/health-advice/task.yaml")  # doctest: +SKIP
        >>> result = run_barred(task, n=8, config=BarredConfig(), output_dir="outputs/health-advice")  # doctest: +SKIP
        >>> result.train.features["label"].names  # doctest: +SKIP
        ['no_health_advice', 'health_advice']
    """
    if n < 1:
        raise ValueError(f"run_barred: expected n >= 1 samples, found {n}.")
    task.require_seeds()
    config = config or BarredConfig()
    with locked_output(output_dir, overwrite=overwrite) as out:
        return _run_locked(task, n, config, out, progress, verbose)


def _run_locked(
    task: GuardrailTask, n: int, config: BarredConfig, out: Path, progress: bool, verbose: bool
) -> BarredResult:
    from ...progress import RunView, quiet_libraries

    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    config = config.with_batch_dir(work / "batches")
    guard = FailureGuard(config.engines(), config.max_failure_rate, fix=unusable_fix(config)).run
    usage_before = engine_usage(config)
    # The resume store (not datasets' map cache) decides what is reused: a stage stopped by failed
    # requests must be recomputed on the rerun, not read back from the map cache it left behind.
    map_kwargs: dict[str, Any] = {"batch_size": config.batch_size, "load_from_cache_file": False}
    if any(engine.batch for engine in config.engines()):
        map_kwargs["batch_size"] = None  # provider batch mode: a whole stage step in one job
    if config.num_proc:
        map_kwargs["num_proc"] = config.num_proc
    reused: list[str] = []
    budget = Budget(config, n)
    quota = label_quota(n, config.plan.seed)
    decompose, instantiate = DecomposeStage(config.decompose), InstantiateStage(config.instantiate)
    generate, debate, refine = GenerateStage(config.generate), DebateStage(config.debate), RefineStage(config.refine)

    def run_stage(folder: Path, stage: Stage, ds: Dataset, what: str) -> Dataset:
        """The stage's saved output in ``folder`` when its fingerprint matches, else the stage run (and saved),
        stopped by the failure guard when its requests failed or its answers were unusable, mostly."""
        subsets = config.decompose.num_subsets
        return saved_or_run(
            folder,
            stage.fingerprint(ds),
            lambda: guard(what, lambda: stage(ds, **map_kwargs), subsets=subsets),
            reused,
        )

    with quiet_libraries(verbose), RunView(n, enabled=progress) as view:
        # 1-2: decomposition, once
        tasks = task_dataset(task)
        view.stage("decompose", rows=len(tasks))
        dims = run_stage(work / "decomposition" / "dimensions", decompose, tasks, "decompose")
        view.stage("instantiate", rows=len(dims), expected_requests=len(dims))
        inst = run_stage(work / "decomposition" / "instantiations", instantiate, dims, "instantiate")
        budget.add(inst, stage="decomposition")
        require_usable_decomposition(inst, config)

        accepted_rows: list[dict[str, Any]] = []
        rejected_rows: list[dict[str, Any]] = []
        debated_parts: list[Dataset] = []
        accepted_by_label = [0, 0]
        planned = 0
        rounds_run = 0
        empty_round: Optional[str] = None  # why planning stopped: a round accepted nothing
        while shortfall(accepted_by_label, quota) and rounds_run < config.max_rounds and not budget.spent:
            accepted_before = len(accepted_rows)
            round_dir = work / f"round_{rounds_run:03d}"
            # labels are planned in balanced pairs: enough pairs for the label that lacks the most
            k = rows_to_plan(
                2 * max(shortfall(accepted_by_label, quota, per_label=True)), planned, len(accepted_rows), config
            )
            start = planned
            where = f"round {rounds_run + 1}"
            plan_rows = saved_or_run(
                round_dir / "plan",
                plan_fingerprint(inst, task, k, config.plan, start),
                functools.partial(plan, inst, task, k, config.plan, start=start, **map_kwargs),
                reused,
            )
            view.stage(f"generate ({where})", rows=len(plan_rows), expected_requests=len(plan_rows))
            current = run_stage(round_dir / "generate", generate, plan_rows, "generate")
            budget.add(current, plan_rows, stage="generate")
            for level in range(config.max_refinements + 1):
                source = current
                view.stage(f"debate ({where}, refinement {level})", rows=len(source))
                judged = run_stage(round_dir / f"debate_{level}", debate, source, "debate")
                budget.add(judged, source, stage="debate")
                debated_parts.append(judged)
                to_refine: list[int] = []
                for i, row in enumerate(judged):
                    if row["accepted"]:
                        accepted_rows.append(row)
                        accepted_by_label[row["target"]] += 1
                    elif row["error"]:
                        reason = (
                            "request_failure"
                            if is_request_failure(row["error"])
                            else "cut_off"
                            if is_cut_off(row["error"])
                            else "parse_failure"
                        )
                        rejected_rows.append(row | {"rejection_reason": reason})
                    elif level == config.max_refinements:
                        rejected_rows.append(row | {"rejection_reason": "debate"})
                    else:
                        to_refine.append(i)
                view.accepted(sum(min(a, q) for a, q in zip(accepted_by_label, quota)))
                if not to_refine:
                    break
                if budget.spent:
                    rejected_rows.extend(judged[i] | {"rejection_reason": "budget"} for i in to_refine)
                    break
                failing = judged.select(to_refine)
                view.stage(
                    f"refine ({where}, refinement {level + 1})", rows=len(failing), expected_requests=len(failing)
                )
                current = run_stage(round_dir / f"refine_{level + 1}", refine, failing, "refine")
                budget.add(current, failing, stage="refine")
            planned += k
            rounds_run += 1
            if len(accepted_rows) == accepted_before:  # no evidence that more rows would help: stop, not grow
                empty_round = f"round {rounds_run} accepted none of its {k} planned rows"
                break

        chosen, extra_rows = split_exactly(accepted_rows, quota)
        train = publish_rows(chosen, task, config)
        extra = publish_rows(extra_rows, task, config)
        rejected = publish_rows(sorted(rejected_rows, key=lambda r: (r["row_id"], r["refinements"])), task, config)
        decomposition = decomposition_export(inst)
        all_debates = concatenate_datasets(debated_parts) if debated_parts else None
        stats = run_statistics(
            task,
            n,
            config,
            dims,
            inst,
            all_debates,
            train,
            rejected,
            planned,
            rounds_run,
            budget,
            usage_delta(usage_before, engine_usage(config)),
            reused,
            extra=extra,
        )
        stats["goal"] = goal(stats, config, budget, rounds_run, empty_round)
        write_outputs(out, task, config, train, rejected, decomposition, stats, extra=extra)
    return BarredResult(train, rejected, decomposition, stats, out, extra=extra)


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


def require_usable_decomposition(inst: Dataset, config: BarredConfig) -> None:
    """Stop (:class:`AnswersUnusable`) before any generation when no dimension came with a usable instantiation:
    the plan would have nothing to write about."""
    if any(row["instantiations"] for row in inst):
        return
    errors = [row["error"] for row in inst if row["error"]]
    raws = [" ".join((row["raw"] or "").split())[:120] for row in inst if row["raw"]]
    raise AnswersUnusable(
        f"decomposition: {len(inst)} dimension row(s), none with a usable instantiation "
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
        why = f"the budget was spent ({budget.calls} of {budget.max_calls} requests, {budget.tokens} tokens)"
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
