"""BARRED step 3: plan which samples to write (no LLM).

Row ``i`` of a run's plan (``row_id = i``, numbered across rounds) gets

- the target label ``y = labels[(i + seed) % 2]``: labels are exactly balanced over any even
  range of rows (the recipe plans even counts);
- a dimension ``d ~ Uniform(D_y)``, the dimensions with at least one instantiation relevant to
  ``y`` (relevance ``y`` or ``both``), and ``v ~ Uniform(V_d)`` restricted the same way;
- a seed example (``Uniform(seeds)``) whose domain and style the sample follows;
- a sampling seed.

Every draw comes from :class:`~hf_barred.rowrandom.RowRandom` keyed by ``(seed, row_id)``: the plan is
deterministic, and row ``i`` is the same whether it is planned in the first round or a later one. When
no dimension has an instantiation for ``y`` (a weak model's decomposition may be empty), the row is unconstrained
(``dimension == ""``) if ``allow_unconstrained``, else a clear error is raised.

Example:
    >>> from datasets import Dataset
    >>> from hf_barred.stages.features import instantiation_features
    >>> from hf_barred.stages.plan import PlanConfig, plan
    >>> from hf_barred.policy.task import GuardrailTask
    >>> task = GuardrailTask(criterion="The agent gives health advice.", labels=("no", "yes"),
    ...                      seeds=["User: hi\\nAgent: hello", "User: bye\\nAgent: ciao"])
    >>> dims = Dataset.from_dict({"task_name": ["t"], "criterion": [task.criterion], "labels": [["no", "yes"]],
    ...     "dimension": ["topic"], "merged": [[]], "subset": [0], "raw": [""], "error": [None],
    ...     "usage": [{"calls": 1, "prompt_tokens": 1, "completion_tokens": 1}],
    ...     "instantiations": [[{"value": "sleep", "relevance": "positive", "probability": 0.5},
    ...                         {"value": "parcels", "relevance": "negative", "probability": 0.5}]],
    ...     "dropped_instantiations": [0]}, features=instantiation_features())
    >>> rows = plan(dims, task, n=4, config=PlanConfig(seed=0))
    >>> [(r["target"], r["instantiation"]) for r in rows]
    [(0, 'parcels'), (1, 'sleep'), (0, 'parcels'), (1, 'sleep')]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from datasets import Dataset
from datasets.fingerprint import Hasher

from ..policy.task import GuardrailTask
from ..rowrandom import RowRandom
from .base import map_stage, zero_usage
from .features import plan_features
from .fingerprint import code_fingerprint, config_identity

STAGE_VERSION = "2"  # 2: draws from RowRandom


@dataclass(frozen=True)
class PlanConfig:
    """Sampling of plan rows (no LLM): ``seed`` fixes every draw; ``allow_unconstrained`` lets rows
    without a usable dimension through (else an error names the missing label)."""

    seed: int = field(default=0, metadata={"help": "Seed of every draw of the plan."})
    allow_unconstrained: bool = field(
        default=True,
        metadata={"help": "Plan rows without a dimension when no instantiation is relevant to the label."},
    )

    def __post_init__(self) -> None:
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"PlanConfig.seed: expected an integer >= 0, found {self.seed!r}.")


def _options(decomposition: Dataset) -> list[dict[str, Any]]:
    """The usable dimensions: no error, at least one instantiation."""
    found = []
    for row in decomposition:
        if row["error"] or not row["dimension"] or not row["instantiations"]:
            continue
        found.append({"dimension": row["dimension"], "instantiations": row["instantiations"]})
    return found


def _plan_batch(batch: dict[str, list], config: dict[str, Any], prompts: tuple, version: str) -> dict[str, list]:
    plan_config: PlanConfig = config["config"]
    task: dict[str, Any] = config["task"]
    labels = task["labels"]
    relevance_of = ("negative", "positive")
    out: dict[str, list] = {name: [] for name in plan_features(labels)}
    for row_id in batch["row_id"]:
        rng = RowRandom(plan_config.seed, "plan", str(row_id))
        target = (row_id + plan_config.seed) % 2
        wanted = relevance_of[target]
        usable = [
            (o["dimension"], [v for v in o["instantiations"] if v["relevance"] in (wanted, "both")])
            for o in config["options"]
        ]
        usable = [(d, vs) for d, vs in usable if vs]
        if usable:
            dimension, values = rng.choice(usable)
            value = rng.choice(values)
            instantiation, relevance = value["value"], value["relevance"]
        elif plan_config.allow_unconstrained:
            dimension, instantiation, relevance = "", "", ""
        else:
            raise ValueError(
                f"plan: expected at least one instantiation relevant to the label {labels[target]!r} "
                f"({wanted} or both), found none in the decomposition. Fix: rerun the decomposition with more "
                "dimensions or instantiations (or a stronger model), or set PlanConfig.allow_unconstrained=True."
            )
        seed_index = rng.below(len(task["seeds"]))
        out["row_id"].append(row_id)
        out["seed"].append(rng.below(2**31))
        out["criterion"].append(task["criterion"])
        out["input_type"].append(task["input_type"])
        out["labels"].append(list(labels))
        out["dimension"].append(dimension)
        out["instantiation"].append(instantiation)
        out["relevance"].append(relevance)
        out["target"].append(target)
        out["seed_example"].append(task["seeds"][seed_index])
        out["seed_task"].append(task["seed_tasks"][seed_index])
        out["usage"].append(zero_usage())
    return out


def _inputs(decomposition: Dataset, task: GuardrailTask, config: PlanConfig) -> dict[str, Any]:
    task.require_seeds()
    return {
        "config": config,
        "task": {
            "criterion": task.criterion,
            "labels": list(task.labels),
            "input_type": task.input_type,
            "seeds": [s.text for s in task.seeds],
            "seed_tasks": [s.task or "" for s in task.seeds],
        },
        "options": _options(decomposition),
    }


def plan_fingerprint(decomposition: Dataset, task: GuardrailTask, n: int, config: PlanConfig, start: int = 0) -> str:
    """The fingerprint of ``plan(decomposition, task, n, config, start)``: a pure function of its inputs."""
    inputs = _inputs(decomposition, task, config)
    return Hasher.hash(
        {
            "stage": "plan",
            "version": STAGE_VERSION,
            "start": start,
            "n": n,
            "inputs": config_identity(inputs),
            "code": code_fingerprint(_plan_batch),
        }
    )


def plan(
    ds: Dataset,
    task: GuardrailTask,
    n: int,
    config: Optional[PlanConfig] = None,
    start: int = 0,
    **map_kwargs: Any,
) -> Dataset:
    """Instantiated dimension rows -> ``n`` plan rows numbered ``start .. start + n - 1``
    (:func:`~hf_barred.stages.features.plan_features`)."""
    config = config or PlanConfig()
    if n < 0 or start < 0:
        raise ValueError(f"plan: expected n >= 0 and start >= 0, found n={n}, start={start}.")
    ids = Dataset.from_dict({"row_id": list(range(start, start + n))})
    map_kwargs.setdefault("new_fingerprint", plan_fingerprint(ds, task, n, config, start))
    return map_stage(
        ids,
        _plan_batch,
        stage="plan",
        version=STAGE_VERSION,
        config=_inputs(ds, task, config),
        features=plan_features(task.labels),
        map_kwargs=map_kwargs,
    )
