"""The stage-by-stage executor: each stage is a ``Dataset.map`` over every row of a round, saved and resumable.

For each rule in turn: decompose and instantiate once, then rounds of plan -> generate -> debate ->
(refine -> debate) x ``max_refinements``. A stage waits for the slowest row of the one before it; the
streaming executor (:mod:`.streaming`, the default) does not, and accepts the same rows from the same
answers. Every stage output is saved under the rule's ``work`` folder with its fingerprint
(:mod:`.store`) and read back on a rerun::

    work/decomposition/{dimensions,instantiations}/
    work/round_000/{plan,generate,debate_0,refine_1,debate_1,...}/

Example:
    >>> from hf_barred.recipes.barred.stages_executor import run_rule_by_stages
    >>> run_rule_by_stages.__name__
    'run_rule_by_stages'
"""

from __future__ import annotations

import functools

from ...stages.debate import DebateStage
from ...stages.decompose import DecomposeStage, task_dataset
from ...stages.generate import GenerateStage
from ...stages.instantiate import InstantiateStage
from ...stages.plan import plan, plan_fingerprint
from ...stages.refine import RefineStage
from .context import RunContext, map_arguments
from .rule_run import REFINE, RuleRun, disposition, require_usable_decomposition
from .store import saved_or_run

__all__ = ["decompose_by_stages", "run_rule_by_stages"]


def decompose_by_stages(rule: RuleRun, ctx: RunContext) -> None:
    """The rule's dimensions and instantiations (saved, or computed), checked for something to plan from."""
    config, work, view = rule.config, rule.work, ctx.view
    tasks = task_dataset(rule.task)
    view.stage(_label("decompose", rule, ctx), rows=len(tasks))
    rule.dims = ctx.run_stage(
        work / "decomposition" / "dimensions", DecomposeStage(config.decompose), tasks, "decompose"
    )
    view.stage(_label("instantiate", rule, ctx), rows=len(rule.dims), expected_requests=len(rule.dims))
    rule.inst = ctx.run_stage(
        work / "decomposition" / "instantiations", InstantiateStage(config.instantiate), rule.dims, "instantiate"
    )
    rule.budget.add(rule.inst, stage="decomposition")
    require_usable_decomposition(rule.inst, config, rule.name if ctx.view.rules > 1 else "")


def run_rule_by_stages(rule: RuleRun, ctx: RunContext) -> None:
    """Decompose, then run rounds until the rule is done (:meth:`RuleRun.rows_to_plan`)."""
    decompose_by_stages(rule, ctx)
    assert rule.inst is not None
    config, work, view = rule.config, rule.work, ctx.view
    generate, debate, refine = GenerateStage(config.generate), DebateStage(config.debate), RefineStage(config.refine)
    while (k := rule.rows_to_plan()) is not None:
        accepted_before = len(rule.accepted_rows)
        round_dir = work / f"round_{rule.rounds_run:03d}"
        where = _label(f"round {rule.rounds_run + 1}", rule, ctx)
        plan_rows = saved_or_run(
            round_dir / "plan",
            plan_fingerprint(rule.inst, rule.task, k, config.plan, rule.planned),
            functools.partial(plan, rule.inst, rule.task, k, config.plan, start=rule.planned, **map_arguments(config)),
            ctx.reused,
        )
        view.stage(f"generate ({where})", rows=len(plan_rows), expected_requests=len(plan_rows))
        current = ctx.run_stage(round_dir / "generate", generate, plan_rows, "generate")
        rule.budget.add(current, plan_rows, stage="generate")
        for level in range(config.max_refinements + 1):
            source = current
            view.stage(f"debate ({where}, refinement {level})", rows=len(source))
            judged = ctx.run_stage(round_dir / f"debate_{level}", debate, source, "debate")
            rule.budget.add(judged, source, stage="debate")
            rows = list(judged)
            outcomes = [disposition(row, level, config.max_refinements) for row in rows]
            if rule.budget.spent:  # no refinement once the budget is spent
                outcomes = ["budget" if outcome == REFINE else outcome for outcome in outcomes]
            rule.fold(rows, outcomes)
            view.accepted(rule.accepted_count, rule.name)
            to_refine = [i for i, outcome in enumerate(outcomes) if outcome == REFINE]
            if not to_refine:
                break
            failing = judged.select(to_refine)
            view.stage(f"refine ({where}, refinement {level + 1})", rows=len(failing), expected_requests=len(failing))
            current = ctx.run_stage(round_dir / f"refine_{level + 1}", refine, failing, "refine")
            rule.budget.add(current, failing, stage="refine")
        rule.end_round(k, accepted_before)


def _label(what: str, rule: RuleRun, ctx: RunContext) -> str:
    return f"{rule.name}: {what}" if ctx.view.rules > 1 else what
