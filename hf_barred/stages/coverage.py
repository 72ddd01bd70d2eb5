"""Coverage analysis (paper, Fig. 3a): how much of a real test set the decomposition of a BARRED run covers.

:func:`rate_coverage` is a ``Dataset.map`` stage over test samples: for each sample and each dimension of
the decomposition, one LLM call rates the relevance (0-1) of the sample to every instantiation of that
dimension (one batched call per map batch). A sample is **covered** when some instantiation is rated
``>= threshold`` (0.5); a dimension covers it when one of its own instantiations is. :func:`coverage_summary`
turns the rows into the share of covered samples, overall and per dimension.

A call whose answer cannot be parsed keeps its raw text and error in the row's ``dimension_scores``; it is
counted (``failures``), never dropped. A sample that no rated dimension covers but with a failed call has
``covered`` None: counted as undetermined, out of the coverage share. Answers are cached by content, so a
rerun or a resume after a crash costs no new call.

Example:
    >>> from hf_barred.stages.coverage import parse_scores
    >>> parse_scores({"scores": [0.2, 80, "0.9"]}, 3)
    ([0.2, 0.8, 0.9], None)
    >>> parse_scores({"scores": [0.2]}, 3)[1]
    'expected 3 scores (one per instantiation), found 1'
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional, cast

from datasets import Dataset, Features, List, Value

from ..llm.structured import StructuredResult
from .base import LLMStageConfig, Request, Result, Stage, Steps, add_usage, zero_usage
from .features import USAGE
from .prompting import Prompt, load_prompt

__all__ = ["CoverageConfig", "CoverageStage", "coverage_features", "coverage_summary", "parse_scores", "rate_coverage"]

STAGE_VERSION = "1"

SCORES_SCHEMA = {
    "type": "object",
    "properties": {"scores": {"type": "array", "items": {"type": ["number", "string"]}, "minItems": 1}},
    "required": ["scores"],
}
"""What answers are validated with (lenient: a percentage or a number in quotes is read by :func:`parse_scores`)."""

_TAGS = re.compile(r"<(/?\s*(?:CRITERION|DIMENSION|INSTANTIATIONS|TEST_SAMPLE|TASK)\s*>)", re.IGNORECASE)


def scores_grammar(n: int) -> dict[str, Any]:
    """The strict schema a constrained engine decodes with: exactly ``n`` numbers in [0, 1]."""
    item = {"type": "number", "minimum": 0, "maximum": 1}
    return {
        "type": "object",
        "properties": {"scores": {"type": "array", "items": item, "minItems": n, "maxItems": n}},
        "required": ["scores"],
        "additionalProperties": False,
    }


@dataclass(frozen=True)
class CoverageConfig(LLMStageConfig):
    """Coverage rating.

    Parameters, by purpose:

    - What is rated against: ``criterion`` and ``dimensions`` (``((dimension, (instantiation, ...)), ...)``,
      see :func:`hf_barred.evaluation.coverage.load_decomposition`); both reach the fingerprint.
    - Decision: ``threshold`` (an instantiation rated at or above it covers the sample; paper: 0.5).
    - Plus the shared ``engine``, ``prompt_version``, ``max_tokens``, ``temperature`` (greedy by default),
      ``seed``, ``max_repairs``.
    """

    criterion: str = field(default="", metadata={"help": "The rule the dataset was generated for."})
    dimensions: tuple[tuple[str, tuple[str, ...]], ...] = field(
        default=(), metadata={"help": "The decomposition: (dimension, instantiations) pairs."}
    )
    threshold: float = field(default=0.5, metadata={"help": "Relevance at or above which a sample is covered."})
    temperature: float = field(default=0.0, metadata={"help": "Sampling temperature (greedy by default)."})
    max_tokens: int = field(default=160, metadata={"help": "Maximum tokens of one answer."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.threshold <= 1:
            raise ValueError(f"CoverageConfig.threshold: expected a relevance in (0, 1], found {self.threshold}.")
        if not self.dimensions or any(not values for _, values in self.dimensions):
            raise ValueError(
                "CoverageConfig.dimensions: expected at least one dimension, each with instantiations, "
                f"found {self.dimensions!r}. "
                "Load them with hf_barred.evaluation.coverage.load_decomposition(DATASET_DIR)."
            )


def coverage_features(extra: Optional[Features] = None) -> Features:
    """The output rows: the input columns, then the ratings of every dimension and the verdict."""
    rating = {
        "dimension": Value("string"),
        "scores": List(Value("float32")),
        "max_relevance": Value("float32"),
        "best_instantiation": Value("string"),
        "raw": Value("string"),
        "error": Value("string"),
    }
    return Features(
        dict(extra or {})
        | {
            "dimension_scores": List(rating),
            "max_relevance": Value("float32"),
            "covered": Value("bool"),
            "failures": Value("int32"),
            "usage": USAGE,
        }
    )


def parse_scores(data: dict[str, Any], n: int) -> tuple[Optional[list[float]], Optional[str]]:
    """``n`` relevances in [0, 1] from a parsed answer (percentages divided by 100), or ``(None, error)``."""
    values = data.get("scores", [])
    if len(values) != n:
        return None, f"expected {n} scores (one per instantiation), found {len(values)}"
    out = []
    for value in values:
        try:
            score = float(value)
        except (TypeError, ValueError):
            return None, f"expected numbers in [0, 1], found {value!r}"
        score = score / 100 if 1 < score <= 100 else score
        if not 0 <= score <= 1:
            return None, f"expected numbers in [0, 1], found {value!r}"
        out.append(score)
    return out, None


def _escape(text: str) -> str:
    return _TAGS.sub(r"&lt;\1", text.strip())


class CoverageStage(Stage[CoverageConfig, Result]):
    """Coverage rating (see the module docstring): one request per (sample, dimension)."""

    name = "coverage"
    version = STAGE_VERSION
    usage_column = None  # the output's ``usage`` is this stage's alone, whatever the input carried

    def prompts(self) -> tuple[Prompt, ...]:
        return (load_prompt("coverage", self.config.prompt_version, prompt_set="served"),)  # rating needs no few-shot

    def features(self, input_features: Features) -> Features:
        kept = Features({name: feature for name, feature in input_features.items() if name not in coverage_features()})
        return coverage_features(kept)

    def steps(self, row: dict[str, Any]) -> Steps:
        config = self.config
        requests = [
            Request(
                role="coverage",
                params=config.sampling(),
                answer=SCORES_SCHEMA,
                constrained=scores_grammar(len(values)),
                max_repairs=config.max_repairs,
                messages=self.prompts()[0].messages(
                    criterion=_escape(config.criterion),
                    dimension=_escape(name),
                    instantiations=[_escape(v) for v in values],
                    test_sample=_escape(row["text"]),
                    task=_escape(row.get("task") or ""),
                ),
            )
            for name, values in config.dimensions
        ]
        results = cast(list[StructuredResult], (yield requests))  # every request names an answer schema
        usage = zero_usage()
        rated: list[dict[str, Any]] = []
        for (name, values), result in zip(config.dimensions, results):
            usage = add_usage(usage, result)
            # ok: the answer parsed, so its data is set
            scores, error = (
                parse_scores(cast(dict[str, Any], result.data), len(values)) if result.ok else (None, result.error)
            )
            best = max(range(len(values)), key=lambda k: scores[k]) if scores else None
            rated.append(
                {
                    "dimension": name,
                    "scores": scores or [],
                    "raw": result.raw,
                    "error": error,
                    "max_relevance": scores[best] if scores and best is not None else None,
                    "best_instantiation": values[best] if scores and best is not None else None,
                }
            )
        relevances = [x["max_relevance"] for x in rated if x["max_relevance"] is not None]
        failures = sum(x["error"] is not None for x in rated)
        top = max(relevances) if relevances else None
        covered = True if top is not None and top >= config.threshold else (None if failures else False)
        return row | {
            "dimension_scores": rated,
            "max_relevance": top,
            "covered": covered,
            "failures": failures,
            "usage": usage,
        }


def rate_coverage(ds: Dataset, config: CoverageConfig, **map_kwargs: Any) -> Dataset:
    """Test samples (a ``text`` column, optionally ``task``) -> the same rows with the coverage columns of
    :func:`coverage_features`.

    Example:
        >>> from datasets import Dataset
        >>> from hf_barred.stages.coverage import CoverageConfig, rate_coverage
        >>> config = CoverageConfig(criterion="The agent gives health advice.",
        ...                         dimensions=(("topic", ("sleep", "diet")),))
        >>> samples = Dataset.from_dict({"text": ["User: tired?\\nAgent: sleep 8 h"]})
        >>> rated = rate_coverage(samples, config)  # doctest: +SKIP
        >>> rated[0]["covered"], rated[0]["dimension_scores"][0]["best_instantiation"]  # doctest: +SKIP
        (True, 'sleep')
    """
    if "text" not in ds.column_names:
        raise ValueError(
            f"rate_coverage: expected a 'text' column, found {ds.column_names}. Fix: rename the column "
            "of the test inputs to 'text' (the command's --text-column)."
        )
    return CoverageStage(config)(ds, **map_kwargs)


def coverage_summary(ds: Dataset, config: CoverageConfig) -> dict[str, Any]:
    """Coverage overall and per dimension (the share of determined samples with a rating ``>= threshold``),
    the counts behind them, and the failures.

    >>> from datasets import Dataset
    >>> config = CoverageConfig(criterion="c", dimensions=(("a", ("x",)), ("b", ("y",))))
    >>> ds = Dataset.from_dict({"covered": [True, False, None], "failures": [0, 0, 1], "dimension_scores": [
    ...     [{"dimension": "a", "max_relevance": 0.9, "error": None},
    ...      {"dimension": "b", "max_relevance": 0.1, "error": None}],
    ...     [{"dimension": "a", "max_relevance": 0.2, "error": None},
    ...      {"dimension": "b", "max_relevance": 0.3, "error": None}],
    ...     [{"dimension": "a", "max_relevance": 0.1, "error": None},
    ...      {"dimension": "b", "max_relevance": None, "error": "e"}]]})
    >>> summary = coverage_summary(ds, config)
    >>> summary["coverage"], summary["undetermined"], [round(d["coverage"], 3) for d in summary["dimensions"]]
    (0.5, 1, [0.333, 0.0])
    """
    covered = list(ds["covered"])
    determined = [c for c in covered if c is not None]
    per_dimension = []
    for d, (name, values) in enumerate(config.dimensions):
        maxima = [row[d]["max_relevance"] for row in ds["dimension_scores"]]
        rated = [m for m in maxima if m is not None]
        hits = sum(m >= config.threshold for m in rated)
        per_dimension.append(
            {
                "dimension": name,
                "instantiations": len(values),
                "rated": len(rated),
                "covered": hits,
                "coverage": hits / len(rated) if rated else None,
                "failures": len(maxima) - len(rated),
            }
        )
    return {
        "samples": len(covered),
        "covered": sum(determined),
        "determined": len(determined),
        "undetermined": len(covered) - len(determined),
        "coverage": sum(determined) / len(determined) if determined else None,
        "threshold": config.threshold,
        "failed_calls": int(sum(ds["failures"])),
        "dimensions": per_dimension,
    }
