"""Score a trained guardrail or an LLM-as-judge on a labelled dataset, with the same prompt.

Both take a *normalised* dataset (columns ``text, label, rule, task, taxonomy, categories``, from
:func:`hf_barred.train.data.normalize_dataset`) and return :class:`Predictions`; :func:`score` turns
them into the metrics of :mod:`hf_barred.metrics.guardrail_metrics`. A judge answer that cannot be
parsed becomes prediction ``-1``: counted, kept with its raw text, scored as wrong.

Example:
    >>> from datasets import Dataset
    >>> from hf_barred.metrics.evaluation import Predictions, score
    >>> ds = Dataset.from_dict({"label": [1, 0, 1], "categories": [[], [], []]})
    >>> score(ds, Predictions(predictions=[1, 0, -1]), "binary")["unparseable"]
    1
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from ..formats import parse_binary_answer, parse_policy_answer
from ..train.data import build_messages

if TYPE_CHECKING:
    from datasets import Dataset

    from ..guardrail import Guardrail
    from ..llm import EngineConfig


@dataclass
class Predictions:
    """Per-row outputs: ``predictions`` (1, 0 or -1 = unparseable), violation ``scores`` (guardrails),
    predicted ``categories``, ``raw`` judge answers and parse ``errors``; ``seconds`` of wall time."""

    predictions: list[int]
    scores: list[Optional[float]] = field(default_factory=list)
    categories: list[list[str]] = field(default_factory=list)
    raw: list[Optional[str]] = field(default_factory=list)
    errors: list[Optional[str]] = field(default_factory=list)
    seconds: float = 0.0
    usage: dict[str, Any] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per row (for ``predictions.jsonl``)."""
        n = len(self.predictions)
        pad = lambda xs: list(xs) + [None] * (n - len(xs))  # noqa: E731
        return [{"prediction": p, "score": s, "categories": c, "raw": r, "error": e}
                for p, s, c, r, e in zip(self.predictions, pad(self.scores), pad(self.categories), pad(self.raw),
                                         pad(self.errors))]


def count_categories(taxonomy: Optional[str]) -> Optional[int]:
    """Number of ``S<i>:`` headers in a taxonomy text (None without one)."""
    if not taxonomy:
        return None
    return len(re.findall(r"^\s*S\d+\s*:", taxonomy, re.MULTILINE)) or None


def predict_with_guardrail(guardrail: "Guardrail", ds: "Dataset", batch_size: int = 32) -> Predictions:
    """Run a trained guardrail over a normalised dataset."""
    started = time.perf_counter()
    verdicts = guardrail(list(ds["text"]), rule=list(ds["rule"]), taxonomy=list(ds["taxonomy"]),
                         task=list(ds["task"]), batch_size=batch_size)
    return Predictions(
        predictions=[int(v.flagged) for v in verdicts], scores=[v.score for v in verdicts],
        categories=[v.categories for v in verdicts], raw=[v.raw for v in verdicts],
        errors=[v.error for v in verdicts], seconds=time.perf_counter() - started,
    )


def predict_with_judge(engine: "EngineConfig", ds: "Dataset", fmt: str, max_tokens: Optional[int] = None,
                       chunk_size: int = 64, progress: bool = True) -> Predictions:
    """Ask an LLM the classification prompt of :mod:`hf_barred.formats` (greedy), chunk by chunk.

    ``max_tokens`` defaults to 2 for the binary prompt (the answer is one character) and 96 for the
    policy JSON. Answers are cached by the engine layer, so a rerun costs no new calls.
    """
    from tqdm.auto import tqdm

    from ..llm import SamplingParams, get_engine

    backend = get_engine(engine)
    params = SamplingParams(max_tokens=max_tokens or (2 if fmt == "binary" else 96), temperature=0.0, seed=0)
    conversations = [build_messages(fmt, row["text"], row["rule"], row["task"], row["taxonomy"]) for row in ds]
    started = time.perf_counter()
    completions = []
    for start in tqdm(range(0, len(conversations), chunk_size), desc=f"Judging with {engine.model}",
                      disable=not progress):
        completions += backend.chat(conversations[start : start + chunk_size], params, stage="evaluate")
    out = Predictions(predictions=[], seconds=time.perf_counter() - started)
    for row, completion in zip(ds, completions):
        out.raw.append(completion.text)
        if not completion.ok:
            out.predictions.append(-1)
            out.categories.append([])
            out.errors.append(f"engine error: {completion.error}")
        elif fmt == "policy":
            verdict = parse_policy_answer(completion.text, n_categories=count_categories(row["taxonomy"]))
            out.predictions.append(-1 if verdict.unsafe is None else int(verdict.unsafe))
            out.categories.append(verdict.categories)
            out.errors.append(verdict.error)
        else:
            answer = parse_binary_answer(completion.text)
            out.predictions.append(-1 if answer is None else answer)
            out.categories.append([])
            out.errors.append(None if answer is not None else f"no 0/1 answer in {completion.text[:80]!r}")
    usage = backend.usage
    out.usage = {"calls": usage.calls, "cache_hits": usage.cache_hits, "prompt_tokens": usage.prompt_tokens,
                 "completion_tokens": usage.completion_tokens, "errors": usage.errors}
    return out


def score(ds: "Dataset", predictions: Predictions, fmt: str) -> dict[str, Any]:
    """Metrics of ``predictions`` against the dataset's labels (and categories for ``policy``),
    computed by the ``evaluate`` module of :mod:`hf_barred.metrics`."""
    from . import load_metric

    references = [int(v) for v in ds["label"]]
    if fmt == "policy":
        return load_metric("categories").compute(
            predictions=predictions.predictions, references=references,
            predicted_categories=[c or [] for c in predictions.categories],
            reference_categories=[list(c or []) for c in ds["categories"]],
        )
    return load_metric("binary").compute(predictions=predictions.predictions, references=references)
