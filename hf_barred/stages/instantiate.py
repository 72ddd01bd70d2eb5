"""BARRED step 2: verbalized sampling of instantiations.

:func:`instantiate` asks, per dimension, for *all reasonable instantiations*, each with its
relevance to the label (positive: the criterion holds, negative: it does not, both) and a
probability in [0, 1]: a verbalized distribution rather than one answer.

A call whose answer cannot be parsed keeps ``error`` and ``raw`` (and empty ``instantiations``):
it is counted by the recipe, never dropped.

Example:
    >>> from hf_barred.stages.instantiate import parse_instantiations
    >>> parse_instantiations({"values": [{"value": "night", "applies": "no", "probability": 0.5}]}, 4)
    ([{'value': 'night', 'relevance': 'negative', 'probability': 0.5}], 0)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from datasets import Dataset

from .answers import Instantiations, string_budget
from .features import instantiation_features
from ..llm.structured import structured_chat
from .prompting import load_prompt
from .base import LLMStageConfig, add_usage, engine_for, map_stage, rows, stage_fingerprint
from .labels import normalize_relevance

__all__ = ["InstantiateConfig", "instantiate", "instantiate_fingerprint", "parse_instantiations"]

STAGE_VERSION = "2"  # 2: strict schemas for constrained decoding

def instantiations_grammar(config: "InstantiateConfig") -> dict[str, Any]:
    """The strict schema a constrained engine decodes instantiations with (:class:`~hf_barred.stages.answers.Instantiations`):
    every item has a short ``value``, ``applies`` among yes / no / both and a ``probability`` in [0, 1]."""
    k = config.max_instantiations
    return Instantiations.grammar(max_length={"values[].value": string_budget(config.max_tokens, k, 4 + 18 * k)},
                                  max_items={"values": k})


@dataclass(frozen=True)
class InstantiateConfig(LLMStageConfig):
    """Verbalized sampling of instantiations: ``max_instantiations`` asked for per dimension
    (the paper asks for all reasonable ones, typically 10-50; small models need few)."""

    max_instantiations: int = field(default=3, metadata={"help": "Instantiations asked for per dimension."})
    max_tokens: int = field(default=128, metadata={"help": "Maximum tokens of one answer."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_instantiations < 1:
            raise ValueError(f"InstantiateConfig.max_instantiations: expected >= 1, found {self.max_instantiations}.")


# --- step 2 ---------------------------------------------------------------------------------------
def _probability(value: Any) -> Optional[float]:
    try:
        p = float(value)
    except (TypeError, ValueError):
        return None
    if 1 < p <= 100:  # a percentage
        p /= 100
    return p if 0 <= p <= 1 else None


def parse_instantiations(data: dict[str, Any], limit: int) -> tuple[list[dict[str, Any]], int]:
    """Valid instantiations of a parsed answer, and how many were dropped as unusable.

    >>> parse_instantiations({"values": [{"value": "sleep", "applies": "yes", "probability": 30},
    ...                                  {"value": "", "applies": "no"}]}, 4)
    ([{'value': 'sleep', 'relevance': 'positive', 'probability': 0.3}], 1)
    """
    kept, dropped, seen = [], 0, set()
    for item in data.get("values", []):
        value = " ".join(str(item.get("value", "")).split())
        relevance = normalize_relevance(item.get("applies", item.get("relevance", "")))
        probability = _probability(item.get("probability", item.get("p")))
        if not value or relevance is None or value.lower() in seen or len(kept) >= limit:
            dropped += 1
            continue
        seen.add(value.lower())
        kept.append({"value": value, "relevance": relevance, "probability": probability if probability is not None else 0.0})
    return kept, dropped


def _instantiate_batch(batch: dict[str, list], config: InstantiateConfig, prompts: tuple, version: str) -> dict[str, list]:
    (prompt,) = prompts
    records = rows(batch)
    todo = [i for i, r in enumerate(records) if not r["error"] and r["dimension"]]
    conversations = [
        prompt.messages(criterion=records[i]["criterion"], dimension=records[i]["dimension"],
                        max_instantiations=config.max_instantiations)
        for i in todo
    ]
    results = structured_chat(
        engine_for(config.engine), conversations, Instantiations, config.sampling(),
        stage="instantiate", max_repairs=config.max_repairs, constrained_schema=instantiations_grammar(config),
    ) if todo else []
    for record in records:
        record["instantiations"], record["dropped_instantiations"] = [], 0
    for i, result in zip(todo, results):
        record = records[i]
        record["usage"] = add_usage(record["usage"], result)
        record["raw"] = result.raw
        if not result.ok:
            record["error"] = result.error
            continue
        values, dropped = parse_instantiations(result.data, config.max_instantiations)
        record["instantiations"], record["dropped_instantiations"] = values, dropped
        if not values:
            record["error"] = (
                "no usable instantiation: expected objects with 'value', 'applies' (yes/no/both) and 'probability', "
                f"found {len(result.data.get('values', []))} unusable ones"
            )
    names = list(instantiation_features())
    return {name: [record[name] for record in records] for name in names}


def _instantiate_prompts(config: InstantiateConfig) -> tuple:
    return (load_prompt("instantiate", config.prompt_version, config.prompt_set),)


def instantiate_fingerprint(ds: Dataset, config: InstantiateConfig) -> str:
    return stage_fingerprint(ds, "instantiate", STAGE_VERSION, _instantiate_prompts(config), config, _instantiate_batch)


def instantiate(ds: Dataset, config: Optional[InstantiateConfig] = None, **map_kwargs: Any) -> Dataset:
    """Dimension rows -> the same rows with ``instantiations`` (value, relevance, probability).

    Rows that already carry an error pass through without a call.

    Example:
        >>> from datasets import Dataset
        >>> from hf_barred.stages.features import dimension_features
        >>> from hf_barred.stages.instantiate import instantiate
        >>> failed = Dataset.from_dict({"task_name": ["t"], "criterion": ["c"], "labels": [["F", "T"]],
        ...     "dimension": [""], "merged": [[]], "subset": [0], "raw": ["?"], "error": ["no JSON"],
        ...     "usage": [{"calls": 1, "prompt_tokens": 5, "completion_tokens": 1}]}, features=dimension_features())
        >>> instantiate(failed)[0]["instantiations"]  # no call for a failed row
        []
    """
    config = config or InstantiateConfig()
    return map_stage(
        ds, _instantiate_batch, stage="instantiate", version=STAGE_VERSION, config=config,
        prompts=_instantiate_prompts(config), features=instantiation_features(), map_kwargs=map_kwargs,
    )
