"""The statistics of a BARRED run: what the dataset card and the CLI summary report.

Example:
    >>> from hf_barred.recipes.barred.stats import run_statistics
    >>> run_statistics.__name__
    'run_statistics'
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Optional

from datasets import Dataset

from ...llm.base import is_cut_off, is_request_failure
from ...policy.task import GuardrailTask
from ...stages.prompting import load_prompt
from .budget import Budget
from .config import BarredConfig

__all__ = ["FAILURE_STAGES", "prompt_ids", "run_statistics"]


def prompt_ids(config: BarredConfig) -> dict[str, str]:
    """The template each stage of ``config`` renders, as ``<set>/<stage>/<version>``.

    >>> from hf_barred.llm import EngineConfig
    >>> prompt_ids(BarredConfig.for_engine(EngineConfig(engine="vllm", model="m")))["judge"]
    'served/judge/v1'
    """
    stages = {
        "decompose": ("decompose", config.decompose, config.decompose.prompt_version),
        "instantiate": ("instantiate", config.instantiate, config.instantiate.prompt_version),
        "generate": ("generate", config.generate, config.generate.prompt_version),
        "judge": ("judge", config.debate, config.debate.prompt_version),
        "advocate": ("advocate", config.debate, config.debate.advocate_prompt_version),
        "refine": ("refine", config.refine, config.refine.prompt_version),
    }
    return {key: load_prompt(name, version, stage.prompt_set).id for key, (name, stage, version) in stages.items()}


FAILURE_STAGES = ("decompose", "instantiate", "generate", "refine", "judge_answers", "advocate")
"""The stages whose parse failures and failed requests are counted (judges per answer)."""


def run_statistics(
    task: GuardrailTask,
    n: int,
    config: BarredConfig,
    dims: Dataset,
    inst: Dataset,
    debates: Optional[Dataset],
    train: Dataset,
    rejected: Dataset,
    planned: int,
    rounds_run: int,
    budget: Budget,
    engine_usage: dict[str, Any],
    reused: list[str],
    extra: Optional[Dataset] = None,
) -> dict[str, Any]:
    """The run's statistics: what the dataset card and the CLI summary report."""
    labels = list(task.labels)
    debate_paths: Counter = Counter()
    by_level: dict[int, dict[str, int]] = {}
    judge_answers = 0
    parse: Counter = Counter()  # answers that came but could not be used, per stage
    failed: Counter = Counter()  # requests that got no answer (HTTP errors after retries, timeouts), per stage

    cut: Counter = Counter()  # answers the token budget cut off before any answer (counted apart), per stage

    def count(stage: str, error: Optional[str]) -> None:
        if error:
            (failed if is_request_failure(error) else cut if is_cut_off(error) else parse)[stage] += 1

    believed_given = believed_mismatches = 0
    if debates is not None:
        for row in debates:
            level = by_level.setdefault(row["refinements"], {"debated": 0, "accepted": 0})
            if row["error"]:
                count(row["error_stage"] or "generate", row["error"])
                continue
            if row.get("believed_label"):  # the generator said which label it believes its sample gets
                believed_given += 1
                believed_mismatches += int(row["believed_label"] != row["labels"][row["target"]])
            level["debated"] += 1
            level["accepted"] += int(row["accepted"])
            debate_paths[row["debate_path"]] += 1
            for debate_round in row["debate"]:
                count("advocate", debate_round["advocate_error"])
                for answer in debate_round["judges"]:
                    judge_answers += 1
                    count("judge_answers", answer["error"])
    acceptance_by_refinement = {
        str(level): {**counts, "rate": round(counts["accepted"] / counts["debated"], 4) if counts["debated"] else None}
        for level, counts in sorted(by_level.items())
    }
    final_paths = Counter(train["debate_path"]) + Counter(p for p in rejected["debate_path"] if p)
    for error in dims["error"]:
        count("decompose", error)
    for row in inst:
        if row["dimension"]:
            count("instantiate", row["error"])
    instantiations = sum(len(v) for v in inst["instantiations"]) if len(inst) else 0
    return {
        "task": task.name,
        "criterion": task.criterion,
        "labels": labels,
        "requested": n,
        "accepted": len(train),
        "extra": len(extra) if extra is not None else 0,
        "rejected": len(rejected),
        "accepted_by_label": {labels[i]: int(sum(1 for x in train["label"] if x == i)) for i in range(2)},
        "rejection_reasons": dict(Counter(rejected["rejection_reason"])),
        "planned_rows": planned,
        "rounds": rounds_run,
        "acceptance_rate": round((len(train) + (len(extra) if extra is not None else 0)) / planned, 4)
        if planned
        else 0.0,
        "acceptance_by_refinement": acceptance_by_refinement,
        "debate_paths": dict(debate_paths),
        "final_debate_paths": dict(final_paths),
        "dimensions": int(sum(1 for row in inst if row["dimension"] and not row["error"])),
        "decomposition_rows": len(inst),
        "engine_model": next((m for m in list(train["model"]) + list(rejected["model"]) if m), ""),
        "instantiations": instantiations,
        "parse_failures": {stage: parse.get(stage, 0) for stage in FAILURE_STAGES},
        "request_failures": {stage: failed.get(stage, 0) for stage in FAILURE_STAGES},
        "cut_off": {stage: cut.get(stage, 0) for stage in FAILURE_STAGES},
        "budget_flag": (
            f"--reasoning-tokens (now {config.generate.engine.reasoning_allowance})"
            if config.generate.engine.is_reasoning
            else "--sample-max-tokens / --judge-max-tokens"
        ),
        "judge_answers": judge_answers,
        "believed_label": {"given": believed_given, "mismatches": believed_mismatches},
        "requests": budget.calls,
        "requests_by_stage": dict(budget.calls_by_stage),
        "request_tokens": budget.tokens,
        "engine": engine_usage,
        "stage_outputs_reused": len(reused),
        "budget_spent": budget.spent,
        "model": config.generate.engine.identity(),
        "prompt_set": config.generate.prompt_set,
        "prompt_versions": prompt_ids(config),
        "judges": list(config.debate.judges),
        "rounds_per_debate": config.debate.rounds,
        "max_refinements": config.max_refinements,
    }
