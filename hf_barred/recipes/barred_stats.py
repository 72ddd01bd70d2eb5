"""The statistics of a BARRED run: what the dataset card and the CLI summary report.

Example:
    >>> from hf_barred.recipes.barred_stats import run_statistics
    >>> run_statistics.__name__
    'run_statistics'
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Optional

from datasets import Dataset

from ..task import GuardrailTask
from .barred_config import BarredConfig
from .budget import Budget

__all__ = ["run_statistics"]


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
) -> dict[str, Any]:
    """The run's statistics: what the dataset card and the CLI summary report."""
    labels = list(task.labels)
    debate_paths: Counter = Counter()
    by_level: dict[int, dict[str, int]] = {}
    judge_failures = advocate_failures = judge_answers = 0
    generation_failures: Counter = Counter()
    if debates is not None:
        for row in debates:
            level = by_level.setdefault(row["refinements"], {"debated": 0, "accepted": 0})
            if row["error"]:
                generation_failures[row["error_stage"] or "generate"] += 1
                continue
            level["debated"] += 1
            level["accepted"] += int(row["accepted"])
            debate_paths[row["debate_path"]] += 1
            for debate_round in row["debate"]:
                advocate_failures += int(bool(debate_round["advocate_error"]))
                for answer in debate_round["judges"]:
                    judge_answers += 1
                    judge_failures += int(bool(answer["error"]))
    acceptance_by_refinement = {
        str(level): {**counts, "rate": round(counts["accepted"] / counts["debated"], 4) if counts["debated"] else None}
        for level, counts in sorted(by_level.items())
    }
    final_paths = Counter(train["debate_path"]) + Counter(p for p in rejected["debate_path"] if p)
    instantiations = sum(len(v) for v in inst["instantiations"]) if len(inst) else 0
    return {
        "task": task.name,
        "criterion": task.criterion,
        "labels": labels,
        "requested": n,
        "accepted": len(train),
        "rejected": len(rejected),
        "accepted_by_label": {labels[i]: int(sum(1 for x in train["label"] if x == i)) for i in range(2)},
        "rejection_reasons": dict(Counter(rejected["rejection_reason"])),
        "planned_rows": planned,
        "rounds": rounds_run,
        "acceptance_rate": round(len(train) / planned, 4) if planned else 0.0,
        "acceptance_by_refinement": acceptance_by_refinement,
        "debate_paths": dict(debate_paths),
        "final_debate_paths": dict(final_paths),
        "dimensions": int(sum(1 for row in inst if row["dimension"] and not row["error"])),
        "decomposition_rows": len(inst),
        "engine_model": next((m for m in list(train["model"]) + list(rejected["model"]) if m), ""),
        "instantiations": instantiations,
        "parse_failures": {
            "decompose": int(sum(1 for e in dims["error"] if e)),
            "instantiate": int(sum(1 for row in inst if row["error"] and row["dimension"])),
            "generate": generation_failures.get("generate", 0),
            "refine": generation_failures.get("refine", 0),
            "judge_answers": judge_failures,
            "advocate": advocate_failures,
        },
        "judge_answers": judge_answers,
        "requests": budget.calls,
        "request_tokens": budget.tokens,
        "engine": engine_usage,
        "stage_outputs_reused": len(reused),
        "budget_spent": budget.spent,
        "model": config.generate.engine.identity(),
        "prompt_versions": {
            "decompose": config.decompose.prompt_version, "instantiate": config.instantiate.prompt_version,
            "generate": config.generate.prompt_version, "judge": config.debate.prompt_version,
            "advocate": config.debate.advocate_prompt_version, "refine": config.refine.prompt_version,
        },
        "judges": list(config.debate.judges),
        "rounds_per_debate": config.debate.rounds,
        "max_refinements": config.max_refinements,
    }
