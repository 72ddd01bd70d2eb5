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
from typing import Any, Optional, cast

from datasets import Dataset, Features

from ..llm.base import Conversation
from ..llm.structured import StructuredResult
from .answers import Instantiations, string_budget
from .base import LLMStageConfig, Stage
from .features import instantiation_features
from .labels import normalize_relevance
from .prompting import Prompt, load_prompt

__all__ = ["InstantiateConfig", "InstantiateStage", "instantiate", "parse_instantiations"]

STAGE_VERSION = "2"  # 2: strict schemas for constrained decoding


def instantiations_grammar(config: InstantiateConfig) -> dict[str, Any]:
    """The strict schema a constrained engine decodes instantiations with
    (:class:`~hf_barred.stages.answers.Instantiations`): every item has a short ``value``, ``applies`` among
    yes / no / both and a ``probability`` in [0, 1]."""
    k = config.max_instantiations
    return Instantiations.grammar(
        max_length={"values[].value": string_budget(config.max_tokens, k, 4 + 18 * k)}, max_items={"values": k}
    )


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
    kept: list[dict[str, Any]] = []
    dropped, seen = 0, set()
    for item in data.get("values", []):
        value = " ".join(str(item.get("value", "")).split())
        relevance = normalize_relevance(item.get("applies", item.get("relevance", "")))
        probability = _probability(item.get("probability", item.get("p")))
        if not value or relevance is None or value.lower() in seen or len(kept) >= limit:
            dropped += 1
            continue
        seen.add(value.lower())
        kept.append(
            {"value": value, "relevance": relevance, "probability": probability if probability is not None else 0.0}
        )
    return kept, dropped


class InstantiateStage(Stage[InstantiateConfig, StructuredResult]):
    """BARRED step 2 (see the module docstring): one verbalized distribution per dimension row."""

    name = "instantiate"
    version = STAGE_VERSION

    def prompts(self) -> tuple[Prompt, ...]:
        return (load_prompt("instantiate", self.config.prompt_version, self.config.prompt_set),)

    def features(self, input_features: Features) -> Features:
        return instantiation_features()

    def skip(self, row: dict[str, Any]) -> Optional[dict[str, Any]]:
        """A dimension row that failed (or proposed no dimension) passes through without a call."""
        return (
            row | {"instantiations": [], "dropped_instantiations": 0} if row["error"] or not row["dimension"] else None
        )

    def messages(self, row: dict[str, Any]) -> Conversation:
        return self.prompts()[0].messages(
            criterion=row["criterion"], dimension=row["dimension"], max_instantiations=self.config.max_instantiations
        )

    def answer(self, row: dict[str, Any]) -> type[Instantiations]:
        return Instantiations

    def grammar(self, row: dict[str, Any]) -> dict[str, Any]:
        return instantiations_grammar(self.config)

    def parse(self, row: dict[str, Any], result: StructuredResult) -> dict[str, Any]:
        data = cast(dict[str, Any], result.data)  # parse reads answers that parsed (ok) only
        values, dropped = parse_instantiations(data, self.config.max_instantiations)
        error = (
            None
            if values
            else (
                "no usable instantiation: expected objects with 'value', 'applies' (yes/no/both) and 'probability', "
                f"found {len(data.get('values', []))} unusable ones"
            )
        )
        return row | {"instantiations": values, "dropped_instantiations": dropped, "raw": result.raw, "error": error}

    def failed(self, row: dict[str, Any], result: StructuredResult, error: str) -> dict[str, Any]:
        return row | {"instantiations": [], "dropped_instantiations": 0, "raw": result.raw, "error": error}


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
    return InstantiateStage(config or InstantiateConfig())(ds, **map_kwargs)
