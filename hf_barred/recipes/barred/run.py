"""BARRED as a recipe: one rule (:func:`run_barred`) or a rule set (:func:`run_barred_rules`) in one run.

Each rule is decomposed once (dimensions, then instantiations), then rounds of
plan -> generate -> debate -> (refine -> debate) x ``max_refinements`` run until ``n`` samples are
accepted, a budget is spent, or ``max_rounds`` rounds have run (:mod:`.rule_run`). The executor moves the
rows: :mod:`.streaming` (the default: each row to its next step as soon as its answers arrive, every rule
at once, on shared engines) or :mod:`.stages_executor` (``executor="stages"``: one ``Dataset.map`` per
stage, rule after rule) or :mod:`.ray_executor` (``executor="ray"``: the rules over the workers of a Ray cluster,
each streaming); all accept the same rows from the same answers.
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
    work/round_000/{plan,generate,debate_0,refine_1,debate_1,...}/   (stage by stage)
    work/stream/<key>/shard-*.parquet                    finished rows (streaming)

A rule set writes one config per rule and a combined ``all`` config (:func:`write_rule_set_outputs`)::

    README.md                      dataset card: a table across the rules, a section per rule
    all/train-00000-of-00001.parquet      every rule's train samples, with `rule` and the policy view
    <rule>/{train,extra,rejected}-00000-of-00001.parquet
    decomposition/train-00000-of-00001.parquet  every rule's dimensions, with `rule`
    rules.yaml, summary.json
    work/<rule>/...                the rule's work folder, as above

Resuming: a saved stage output whose fingerprint is the one this run expects (input fingerprint +
stage + version + prompts + output-relevant config) is loaded instead of recomputed, and so is every
finished row of a streaming run; anything interrupted is recomputed, and the response cache answers
every call that had finished.
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

import os
from pathlib import Path
from typing import Any, Optional

from ...policy.rules import RuleSet
from ...policy.task import GuardrailTask
from .budget import Budget, engine_usage, rows_to_plan, usage_delta, usage_total
from .config import SERVED_MAX_TOKENS, BarredConfig, BarredResult
from .context import RunContext
from .failures import FailureGuard
from .output import locked_output
from .rule_run import RuleRun, label_quota, shortfall, split_exactly, unusable_fix
from .stages_executor import run_rule_by_stages
from .stats import run_statistics
from .streaming import run_streaming
from .writer import DATA_FILES, RESERVED_RULE_NAMES, RuleSetResult, write_outputs, write_rule_set_outputs

__all__ = [
    "DATA_FILES",
    "SERVED_MAX_TOKENS",
    "BarredConfig",
    "BarredResult",
    "RuleSetResult",
    "label_quota",
    "rows_to_plan",
    "run_barred",
    "run_barred_rules",
    "run_statistics",
    "shortfall",
    "split_exactly",
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
    from ...progress import quiet_libraries

    task.require_seeds()
    config = config or BarredConfig()
    with locked_output(output_dir, overwrite=overwrite) as out:
        [result] = _run(RuleSet((task,)), n, config, out, progress, verbose, single=True)
        with quiet_libraries(verbose):
            write_outputs(
                out, task, config, result.train, result.rejected, result.decomposition, result.stats, result.extra
            )
        return result


def run_barred_rules(
    rules: RuleSet,
    n: int,
    config: Optional[BarredConfig] = None,
    output_dir: str | os.PathLike = "outputs/barred",
    progress: bool = True,
    verbose: bool = False,
    overwrite: bool = False,
) -> RuleSetResult:
    """Generate ``n`` verified, label-balanced samples for every rule of ``rules`` in one run (see the module doc).

    Example:
        >>> from hf_barred.policy.rules import RuleSet
        >>> from hf_barred.recipes.barred.run import BarredConfig, run_barred_rules
        >>> rules = RuleSet.load("examples/support-agent/rules.yaml")
        >>> rules.names
        ('health-advice', 'employee-location', 'repetition')
        >>> result = run_barred_rules(rules, n=8, output_dir="outputs/support-agent")  # doctest: +SKIP
        >>> from datasets import load_dataset
        >>> load_dataset("outputs/support-agent", "health-advice")["train"].num_rows  # doctest: +SKIP
        8
        >>> load_dataset("outputs/support-agent", "all")["train"].num_rows  # doctest: +SKIP
        24
    """
    if n < 1:
        raise ValueError(f"run_barred_rules: expected n >= 1 samples per rule, found {n}.")
    reserved = sorted(set(rules.names) & set(RESERVED_RULE_NAMES))
    if reserved:
        raise ValueError(
            f"run_barred_rules: expected rule names other than {', '.join(RESERVED_RULE_NAMES)} (the output's own "
            f"configs and folders), found {reserved}. Fix: rename the rule in the rule-set file."
        )
    from ...progress import quiet_libraries

    config = config or BarredConfig()
    with locked_output(output_dir, overwrite=overwrite) as out:
        results = _run(rules, n, config, out, progress, verbose, single=False)
        with quiet_libraries(verbose):
            return write_rule_set_outputs(out, rules, config, n, dict(zip(rules.names, results)))


def _run(
    rules: RuleSet, n: int, config: BarredConfig, out: Path, progress: bool, verbose: bool, single: bool
) -> list[BarredResult]:
    """Every rule run to its end by the config's executor; nothing written but the work folders."""
    from ...progress import RunView, quiet_libraries

    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    config = config.with_batch_dir(work / "batches")
    usage_before = engine_usage(config)
    pool = Budget(config, max_calls=len(rules) * config.call_budget(n))
    runs = [
        RuleRun(task, n, config, work if single else work / task.name, Budget(config, n, pool=pool)) for task in rules
    ]
    workers_usage: dict[str, Any] = {}
    if config.run_executor == "ray":  # the workers run the rules; then the pass below reads back what they saved
        from .ray_executor import run_on_ray

        workers_usage = run_on_ray(list(rules), n, config, work, single, progress, verbose)
    with (
        quiet_libraries(verbose),
        RunView(n, enabled=progress and config.run_executor != "ray", rules=len(rules)) as view,
    ):
        guard = FailureGuard(config.engines(), config.max_failure_rate, fix=unusable_fix(config))
        ctx = RunContext(config, guard, view)
        if config.run_executor in ("streaming", "ray"):
            run_streaming(runs, ctx)
        else:
            for rule in runs:
                run_rule_by_stages(rule, ctx)
        usage = usage_delta(usage_before, engine_usage(config))
        if workers_usage:
            usage = usage_total(workers_usage, usage)
        return [rule.finish(usage, ctx.reused, out) for rule in runs]
