"""BARRED step 1: dimension extraction.

:func:`extract_dimensions` turns task rows into dimension rows: for each task it draws
``num_subsets`` subsets of the seeds, asks the LLM (one batched call) for the dimensions along
which such inputs vary in ways that matter for the criterion, pools the answers and merges
near-duplicates (cosine similarity of sentence embeddings >= ``similarity_threshold``; see
:mod:`hf_barred.stages.embedding`). Step 2 is :mod:`hf_barred.stages.instantiate`.

A call whose answer cannot be parsed gives a row with ``error`` and ``raw`` set (and an empty
``dimension``): it is counted by the recipe, never dropped.

Example:
    >>> from hf_barred.stages.decompose import seed_subsets
    >>> [len(s) for s in seed_subsets(["a", "b", "c", "d"], 2, 3, seed=0, name="t")]
    [3, 3]
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, cast

from datasets import Dataset, Features

from ..llm.structured import StructuredResult
from ..policy.task import GuardrailTask
from ..rowrandom import RowRandom
from .answers import Dimensions, string_budget
from .base import LLMStageConfig, Request, Result, Stage, Steps, add_usage, zero_usage
from .embedding import EMBEDDED_EMBEDDER, embed, merge_near_duplicates
from .features import dimension_features, task_features
from .prompting import Prompt, load_prompt

__all__ = ["DecomposeConfig", "DecomposeStage", "extract_dimensions", "seed_subsets", "task_dataset"]

STAGE_VERSION = "3"  # 2: strict schemas for constrained decoding; 3: seed subsets from RowRandom


def dimensions_grammar(config: DecomposeConfig) -> dict[str, Any]:
    """The strict schema a constrained engine decodes dimensions with (:class:`~hf_barred.stages.answers.Dimensions`):
    at most ``max_dimensions`` short strings that fit in ``max_tokens``."""
    k = config.max_dimensions
    return Dimensions.grammar(
        max_length={"dimensions[]": string_budget(config.max_tokens, k, 6 + 2 * k)}, max_items={"dimensions": k}
    )


@dataclass(frozen=True)
class DecomposeConfig(LLMStageConfig):
    """Dimension extraction.

    Parameters, by purpose:

    - Seeds per prompt: ``num_subsets`` prompts per task, each with ``subset_size`` seeds.
    - Answer size: ``max_dimensions`` per prompt, ``max_tokens``.
    - Deduplication: ``similarity_threshold`` (cosine), ``embedder`` (``"embedded"`` or a
      transformers model folder / Hub id; mean pooling of the last hidden state).
    - Plus the shared ``engine``, ``prompt_version``, ``temperature``, ``seed``, ``max_repairs``.
    """

    num_subsets: int = field(default=2, metadata={"help": "Seed subsets (one prompt each) per task."})
    subset_size: int = field(default=3, metadata={"help": "Seeds shown in each prompt."})
    max_dimensions: int = field(default=3, metadata={"help": "Dimensions asked for per prompt."})
    similarity_threshold: float = field(
        default=0.85, metadata={"help": "Cosine similarity at or above which two dimensions are merged."}
    )
    embedder: str = field(
        default=EMBEDDED_EMBEDDER,
        metadata={"help": "Sentence embedder for deduplication: 'embedded' (all-MiniLM-L6-v2) or a model path."},
    )
    max_tokens: int = field(default=80, metadata={"help": "Maximum tokens of one answer."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_subsets < 1 or self.subset_size < 1 or self.max_dimensions < 1:
            raise ValueError(
                "DecomposeConfig: num_subsets, subset_size and max_dimensions must be >= 1, found "
                f"{self.num_subsets}, {self.subset_size}, {self.max_dimensions}."
            )
        if not 0 < self.similarity_threshold <= 1:
            raise ValueError(
                f"DecomposeConfig.similarity_threshold: expected a cosine in (0, 1], found {self.similarity_threshold}."
            )


# --- tasks as rows -------------------------------------------------------------------------------
def task_dataset(task: GuardrailTask) -> Dataset:
    """One row holding ``task``: the input of :func:`extract_dimensions`.

    >>> from hf_barred.policy.task import GuardrailTask
    >>> task_dataset(GuardrailTask(criterion="Says hi", seeds=["User: hi"])).column_names[:3]
    ['task_name', 'criterion', 'labels']
    """
    task.require_seeds()
    return Dataset.from_dict(
        {
            "task_name": [task.name],
            "criterion": [task.criterion],
            "labels": [list(task.labels)],
            "input_type": [task.input_type],
            "seeds": [[s.text for s in task.seeds]],
            "seed_tasks": [[s.task or "" for s in task.seeds]],
        },
        features=task_features(),
    )


# --- step 1 ---------------------------------------------------------------------------------------
def seed_subsets(seeds: Sequence[Any], num_subsets: int, subset_size: int, seed: int, name: str) -> list[list[Any]]:
    """``num_subsets`` subsets of ``seeds`` drawn without replacement (cycling when they run out),
    from a :class:`~hf_barred.rowrandom.RowRandom` keyed by ``(seed, name)``."""
    rng = RowRandom(seed, "subsets", name)
    order = list(seeds)
    rng.shuffle(order)
    size = min(subset_size, len(order))
    return [[order[(k * size + j) % len(order)] for j in range(size)] for k in range(num_subsets)]


class DecomposeStage(Stage[DecomposeConfig, Result]):
    """BARRED step 1 (see the module docstring): a task row -> its pooled, de-duplicated dimension rows.

    A task's usage is pooled on its first dimension (so the column sums to the stage's usage); the base
    keeps no usage column here (:attr:`usage_column` None), as task rows have none.
    """

    name = "extract_dimensions"
    version = STAGE_VERSION
    usage_column = None

    def prompts(self) -> tuple[Prompt, ...]:
        return (load_prompt("decompose", self.config.prompt_version, self.config.prompt_set),)

    def features(self, input_features: Features) -> Features:
        return dimension_features()

    def steps(self, task: dict[str, Any]) -> Steps:
        config = self.config
        seed_tasks = list(task["seed_tasks"] or []) + [""] * len(task["seeds"])
        subsets = seed_subsets(
            list(range(len(task["seeds"]))), config.num_subsets, config.subset_size, config.seed, task["task_name"]
        )  # subsets of positions: the same draw as over the seeds themselves
        requests = [
            Request(
                role="decompose",
                params=config.sampling(),
                answer=Dimensions,
                constrained=dimensions_grammar(config),
                max_repairs=config.max_repairs,
                messages=self.prompts()[0].messages(
                    criterion=task["criterion"],
                    seeds=[task["seeds"][j] for j in subset],
                    seed_tasks=[seed_tasks[j] for j in subset],
                    max_dimensions=config.max_dimensions,
                ),
            )
            for subset in subsets
        ]
        results = cast(list[StructuredResult], (yield requests))  # every request names an answer model
        return self.pool(task, results)

    def pool(self, task: dict[str, Any], results: list[StructuredResult]) -> list[dict[str, Any]]:
        """The dimension rows of one task: the failed answers as error rows, then the proposals pooled with
        near-duplicates merged (cosine similarity of sentence embeddings, :mod:`hf_barred.stages.embedding`)."""
        base = {"task_name": task["task_name"], "criterion": task["criterion"], "labels": task["labels"]}
        out: list[dict[str, Any]] = []
        proposals: list[tuple[str, int]] = []
        usage_of: dict[int, dict[str, int]] = {}
        for k, result in enumerate(results):
            usage_of[k] = add_usage(zero_usage(), result)
            if not result.ok:
                out.append(
                    base
                    | {
                        "dimension": "",
                        "merged": [],
                        "subset": k,
                        "raw": result.raw,
                        "error": result.error,
                        "usage": usage_of.pop(k),
                    }
                )
                continue
            dimensions = cast(dict[str, Any], result.data)["dimensions"]  # ok: the answer parsed
            names = [" ".join(str(d).split()) for d in dimensions][: self.config.max_dimensions]
            proposals.extend((name, k) for name in names if name)
        subset_of: dict[str, int] = {}
        for name, k in proposals:
            subset_of.setdefault(name, k)
        merged = merge_near_duplicates(
            [name for name, _ in proposals],
            functools.partial(embed, embedder=self.config.embedder),
            self.config.similarity_threshold,
        )
        pooled_usage = zero_usage()
        for usage in usage_of.values():  # every successful call of this task
            pooled_usage = {key: pooled_usage[key] + usage[key] for key in pooled_usage}
        for position, (name, duplicates) in enumerate(merged):
            k = subset_of[name]
            # The pooled usage goes on the task's first dimension, so the column sums to the stage's usage.
            out.append(
                base
                | {
                    "dimension": name,
                    "merged": duplicates,
                    "subset": k,
                    "raw": results[k].raw,
                    "error": None,
                    "usage": pooled_usage if position == 0 else zero_usage(),
                }
            )
        if not merged and any(u["calls"] for u in usage_of.values()):  # parsed answers, but no dimension in them
            out.append(
                base
                | {
                    "dimension": "",
                    "merged": [],
                    "subset": -1,
                    "raw": "",
                    "error": "the answers listed no dimension",
                    "usage": pooled_usage,
                }
            )
        return out


def extract_dimensions(ds: Dataset, config: Optional[DecomposeConfig] = None, **map_kwargs: Any) -> Dataset:
    """Task rows (see :func:`task_dataset`) -> dimension rows (:func:`~hf_barred.stages.features.dimension_features`).

    Example:
        >>> from hf_barred.policy.task import GuardrailTask
        >>> from hf_barred.stages.decompose import DecomposeConfig, extract_dimensions, task_dataset
        >>> task = GuardrailTask(criterion="The agent's response contains health advice.",
        ...                      seeds=["User: hi\\nAgent: hello"])
        >>> dims = extract_dimensions(task_dataset(task), DecomposeConfig())  # doctest: +SKIP
        >>> dims.column_names[:4]  # doctest: +SKIP
        ['task_name', 'criterion', 'labels', 'dimension']
    """
    config = config or DecomposeConfig()
    missing = sorted({"criterion", "seeds", "task_name", "labels"} - set(ds.column_names))
    if missing:
        raise ValueError(
            f"extract_dimensions: expected task rows with the columns {sorted(task_features())}, but {missing} were "
            f"not found in {ds.column_names}. Build the input with hf_barred.stages.decompose.task_dataset(task)."
        )
    return DecomposeStage(config)(ds, **map_kwargs)
