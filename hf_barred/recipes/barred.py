"""BARRED as a recipe: a plain, resumable sequence of stage calls.

:func:`run_barred` decomposes the task once (dimensions, then instantiations), then runs rounds of
plan -> generate -> debate -> (refine -> debate) x ``max_refinements`` until ``n`` samples are
accepted, a budget is spent, or ``max_rounds`` rounds have run. Each round plans as many rows as
the acceptance rate so far says are needed (the first round assumes ``initial_acceptance``), an
even number, so labels stay balanced.

Everything is saved under ``output_dir``, laid out like a Hub dataset repository::

    README.md                      dataset card, with YAML `configs` (default, decomposition)
    data/train-00000-of-00001.parquet      accepted samples
    data/rejected-00000-of-00001.parquet   rejected samples, with their dissent
    decomposition/train-00000-of-00001.parquet
    summary.json                   the run's statistics
    work/decomposition/{dimensions,instantiations}/      every intermediate dataset
    work/round_000/{plan,generate,debate_0,refine_1,debate_1,...}/

Resuming: a stage whose saved output has the fingerprint this run expects (input fingerprint +
stage + version + prompts + output-relevant config) is loaded instead of recomputed; a stage
that was interrupted is recomputed, and the response cache answers every call that had finished.
Budgets: :mod:`hf_barred.recipes.budget`; the saved outputs: :mod:`hf_barred.recipes.store`;
statistics and files: :mod:`~hf_barred.recipes.barred_stats`, :mod:`~hf_barred.recipes.barred_writer`.

Example:
    >>> from hf_barred.recipes.barred import BarredConfig
    >>> from hf_barred.llm import EngineConfig
    >>> config = BarredConfig.for_engine(EngineConfig(engine="local"), judges=3, rounds=2, max_refinements=1)
    >>> len(config.debate.judges), config.debate.rounds, config.max_refinements
    (3, 2, 1)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from datasets import Dataset, concatenate_datasets

from ..stages.debate import debate, debate_fingerprint
from ..stages.decompose import extract_dimensions, extract_dimensions_fingerprint, task_dataset
from ..stages.generate import generate, generate_fingerprint
from ..stages.instantiate import instantiate, instantiate_fingerprint
from ..stages.plan import plan, plan_fingerprint
from ..stages.refine import refine, refine_fingerprint
from ..task import GuardrailTask
from .barred_config import SERVED_MAX_TOKENS, BarredConfig, BarredResult
from .barred_stats import run_statistics
from .barred_writer import DATA_FILES, decomposition_export, publish_rows, write_outputs
from .budget import Budget, engine_usage, rows_to_plan, usage_delta
from .store import saved_or_run

__all__ = ["DATA_FILES", "SERVED_MAX_TOKENS", "BarredConfig", "BarredResult", "rows_to_plan", "run_barred",
           "run_statistics"]


def run_barred(
    task: GuardrailTask,
    n: int,
    config: Optional[BarredConfig] = None,
    output_dir: str | os.PathLike = "outputs/barred",
    progress: bool = True,
) -> BarredResult:
    """Generate ``n`` verified, label-balanced boundary samples for ``task`` (see the module doc).

    Example:
        >>> from hf_barred.recipes.barred import BarredConfig, run_barred
        >>> from hf_barred.task import GuardrailTask
        >>> task = GuardrailTask.load("dataset_scripts/health-advice/task.yaml")  # doctest: +SKIP
        >>> result = run_barred(task, n=8, config=BarredConfig(), output_dir="outputs/health-advice")  # doctest: +SKIP
        >>> result.train.features["label"].names  # doctest: +SKIP
        ['no_health_advice', 'health_advice']
    """
    from datasets.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled
    from tqdm.auto import tqdm

    if n < 1:
        raise ValueError(f"run_barred: expected n >= 1 samples, found {n}.")
    task.require_seeds()
    config = config or BarredConfig()
    out = Path(output_dir)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    bars_were_on = is_progress_bar_enabled()
    if not progress:
        disable_progress_bar()
    usage_before = engine_usage(config)
    map_kwargs: dict[str, Any] = {"batch_size": config.batch_size}
    if config.num_proc:
        map_kwargs["num_proc"] = config.num_proc
    reused: list[str] = []
    budget = Budget(config)
    try:
        # 1-2: decomposition, once
        tasks = task_dataset(task)
        dims = saved_or_run(
            work / "decomposition" / "dimensions", extract_dimensions_fingerprint(tasks, config.decompose),
            lambda: extract_dimensions(tasks, config.decompose, **map_kwargs), reused,
        )
        inst = saved_or_run(
            work / "decomposition" / "instantiations", instantiate_fingerprint(dims, config.instantiate),
            lambda: instantiate(dims, config.instantiate, **map_kwargs), reused,
        )
        budget.add(inst)

        accepted_rows: list[dict[str, Any]] = []
        rejected_rows: list[dict[str, Any]] = []
        debated_parts: list[Dataset] = []
        planned = 0
        rounds_run = 0
        bar = tqdm(total=n, desc="accepted", unit="sample", disable=not progress)
        while len(accepted_rows) < n and rounds_run < config.max_rounds and not budget.spent:
            round_dir = work / f"round_{rounds_run:03d}"
            k = rows_to_plan(n - len(accepted_rows), planned, len(accepted_rows), config)
            start = planned
            plan_rows = saved_or_run(
                round_dir / "plan", plan_fingerprint(inst, task, k, config.plan, start),
                lambda: plan(inst, task, k, config.plan, start=start, **map_kwargs), reused,
            )
            current = saved_or_run(
                round_dir / "generate", generate_fingerprint(plan_rows, config.generate),
                lambda: generate(plan_rows, config.generate, **map_kwargs), reused,
            )
            budget.add(current, plan_rows)
            for level in range(config.max_refinements + 1):
                source = current
                judged = saved_or_run(
                    round_dir / f"debate_{level}", debate_fingerprint(source, config.debate),
                    lambda: debate(source, config.debate, **map_kwargs), reused,
                )
                budget.add(judged, source)
                debated_parts.append(judged)
                to_refine: list[int] = []
                for i, row in enumerate(judged):
                    if row["accepted"]:
                        accepted_rows.append(row)
                        bar.update(1)
                    elif row["error"]:
                        rejected_rows.append(row | {"rejection_reason": "parse_failure"})
                    elif level == config.max_refinements:
                        rejected_rows.append(row | {"rejection_reason": "debate"})
                    else:
                        to_refine.append(i)
                if not to_refine:
                    break
                if budget.spent:
                    rejected_rows.extend(judged[i] | {"rejection_reason": "budget"} for i in to_refine)
                    break
                failing = judged.select(to_refine)
                current = saved_or_run(
                    round_dir / f"refine_{level + 1}", refine_fingerprint(failing, config.refine),
                    lambda: refine(failing, config.refine, **map_kwargs), reused,
                )
                budget.add(current, failing)
            planned += k
            rounds_run += 1
        bar.close()

        train = publish_rows(sorted(accepted_rows, key=lambda r: r["row_id"]), task, config)
        rejected = publish_rows(sorted(rejected_rows, key=lambda r: (r["row_id"], r["refinements"])), task, config)
        decomposition = decomposition_export(inst)
        all_debates = concatenate_datasets(debated_parts) if debated_parts else None
        stats = run_statistics(
            task, n, config, dims, inst, all_debates, train, rejected, planned, rounds_run, budget,
            usage_delta(usage_before, engine_usage(config)), reused,
        )
        write_outputs(out, task, config, train, rejected, decomposition, stats)
        return BarredResult(train, rejected, decomposition, stats, out)
    finally:
        if bars_were_on:
            enable_progress_bar()
