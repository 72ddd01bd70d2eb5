"""Score a trained guardrail or an LLM-as-judge on a labelled dataset, with the same prompt.

Both take a *normalised* dataset (columns ``text, label, rule, task, taxonomy, categories``, from
:func:`hf_barred.guardrails.columns.normalize_dataset`) and return :class:`Predictions`; :func:`score` turns
them into the metrics of :mod:`hf_barred.evaluation.metrics.guardrail_metrics`. A judge answer that cannot be
parsed becomes prediction ``-1``: counted, kept with its raw text, scored as wrong.
:func:`evaluate_to_report` does it all for a dataset file and writes the report folder
(:mod:`hf_barred.evaluation.report`), with calibration figures when the subject gives scores.

Example:
    >>> from datasets import Dataset
    >>> from hf_barred.evaluation.evaluate import Predictions, score
    >>> ds = Dataset.from_dict({"label": [1, 0, 1], "categories": [[], [], []]})
    >>> score(ds, Predictions(predictions=[1, 0, -1]), "binary")["unparseable"]
    1
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Protocol, Union, cast

from ..guardrails.encoding import build_messages
from ..guardrails.formats import count_categories, format_task, parse_binary_answer, parse_policy_answer

if TYPE_CHECKING:
    from datasets import Dataset

    from ..guardrails.guardrail import Guardrail
    from ..guardrails.remote import RemoteGuardrail
    from ..guardrails.scoring import Verdict
    from ..llm import EngineConfig


@dataclass
class Predictions:
    """Per-row outputs: ``predictions`` (1, 0 or -1 = unparseable), violation ``scores`` (guardrails),
    predicted ``categories``, ``raw`` judge answers and parse ``errors``; ``seconds`` of wall time;
    ``windows``: how many model windows each input took (guardrails; > 1 = a long input)."""

    predictions: list[int]
    scores: list[Optional[float]] = field(default_factory=list)
    categories: list[list[str]] = field(default_factory=list)
    raw: list[Optional[str]] = field(default_factory=list)
    errors: list[Optional[str]] = field(default_factory=list)
    seconds: float = 0.0
    usage: dict[str, Any] = field(default_factory=dict)
    windows: list[int] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per row (for ``predictions.jsonl``)."""
        n = len(self.predictions)
        pad = lambda xs: list(xs) + [None] * (n - len(xs))  # noqa: E731
        return [
            {"prediction": p, "score": s, "categories": c, "raw": r, "error": e}
            for p, s, c, r, e in zip(
                self.predictions, pad(self.scores), pad(self.categories), pad(self.raw), pad(self.errors)
            )
        ]


class GuardrailLike(Protocol):
    """What :func:`predict_with_guardrail` calls: a local :class:`~hf_barred.guardrails.guardrail.Guardrail`, or
    a served one (:class:`~hf_barred.guardrails.remote.RemoteGuardrail`)."""

    def __call__(
        self,
        texts: Sequence[str],
        rule: Sequence[Optional[str]],
        taxonomy: Sequence[Optional[str]],
        task: Sequence[Optional[str]],
        batch_size: int,
    ) -> list[Verdict]: ...


def predict_with_guardrail(guardrail: GuardrailLike, ds: Dataset, batch_size: int = 32) -> Predictions:
    """Run a trained guardrail over a normalised dataset."""
    started = time.perf_counter()
    verdicts = guardrail(
        list(ds["text"]),
        rule=list(ds["rule"]),
        taxonomy=list(ds["taxonomy"]),
        task=list(ds["task"]),
        batch_size=batch_size,
    )
    seconds = time.perf_counter() - started
    return Predictions(
        predictions=[int(v.flagged) for v in verdicts],
        scores=[v.score for v in verdicts],
        categories=[v.categories for v in verdicts],
        raw=[v.raw for v in verdicts],
        errors=[v.error for v in verdicts],
        seconds=seconds,
        windows=[v.windows for v in verdicts],
    )


def predict_with_judge(
    engine: EngineConfig,
    ds: Dataset,
    fmt: str,
    max_tokens: Optional[int] = None,
    chunk_size: int = 64,
    progress: bool = True,
) -> Predictions:
    """Ask an LLM the classification prompt of :mod:`hf_barred.guardrails.formats` (greedy), chunk by chunk.

    ``max_tokens`` defaults to 2 for the binary prompt (the answer is one character) and 96 for the
    policy JSON. Answers are cached by the engine layer, so a rerun costs no new calls.
    """
    from tqdm.auto import tqdm

    from ..llm import SamplingParams, get_engine

    backend = get_engine(engine)
    params = SamplingParams(
        max_tokens=max_tokens or (2 if format_task(fmt) == "binary" else 96), temperature=0.0, seed=0
    )
    conversations = [build_messages(fmt, row["text"], row["rule"], row["task"], row["taxonomy"]) for row in ds]
    started = time.perf_counter()
    completions = []
    for start in tqdm(
        range(0, len(conversations), chunk_size), desc=f"Judging with {engine.model}", disable=not progress
    ):
        completions += backend.chat(conversations[start : start + chunk_size], params, stage="evaluate")
    out = Predictions(predictions=[], seconds=time.perf_counter() - started)
    for row, completion in zip(ds, completions):
        out.raw.append(completion.text)
        if not completion.ok:
            out.predictions.append(-1)
            out.categories.append([])
            out.errors.append(f"engine error: {completion.error}")
        elif format_task(fmt) == "policy":
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
    out.usage = {
        "calls": usage.calls,
        "cache_hits": usage.cache_hits,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "errors": usage.errors,
    }
    return out


def score(ds: Dataset, predictions: Predictions, fmt: str) -> dict[str, Any]:
    """Metrics of ``predictions`` against the dataset's labels (and categories for ``policy``),
    computed by the ``evaluate`` module of :mod:`hf_barred.evaluation.metrics`."""
    from .metrics import load_metric

    references = [int(v) for v in ds["label"]]
    if format_task(fmt) == "policy":
        return load_metric("categories").compute(
            predictions=predictions.predictions,
            references=references,
            predicted_categories=[c or [] for c in predictions.categories],
            reference_categories=[list(c or []) for c in ds["categories"]],
        )
    return load_metric("binary").compute(predictions=predictions.predictions, references=references)


def evaluate_to_report(
    model: str,
    dataset: str,
    output: str | Path,
    *,
    engine: Optional[EngineConfig] = None,
    split: str = "test",
    limit: Optional[int] = None,
    rule: Optional[str] = None,
    taxonomy: Optional[str] = None,
    prompt_format: str = "auto",
    threshold: Optional[float] = None,
    batch_size: int = 32,
    max_tokens: Optional[int] = None,
    columns: Optional[dict[str, Optional[str]]] = None,
    positive_label: Optional[str] = None,
    scoring: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a guardrail folder or repo ``model`` (``engine=None``), or the judge that ``engine`` serves,
    on ``dataset`` and write the report folder. A judge of a binary rule is scored by
    :func:`hf_barred.evaluation.judges.judge_dataset` (``scoring``: ``auto`` takes log-probabilities where the
    engine gives them, else generation; the report names the mode that ran)
    (:func:`hf_barred.evaluation.report.write_report`); returns the report. Guardrails also get calibration
    (ECE, reliability diagram, score histograms, precision-recall curve) and a count of long inputs.
    ``progress``: a bar while a judge answers the policy prompt."""
    from ..guardrails.columns import ColumnMapping, normalize_dataset
    from ..policy.data import load_labelled_data
    from .report import write_report

    raw = load_labelled_data(dataset, split)
    if limit:
        raw = raw.select(range(min(limit, len(raw))))
    column_fields: dict[str, Any] = {f"{k}_column": v for k, v in (columns or {}).items() if v}
    extra: dict[str, Any] = {}
    subject: dict[str, Any]
    if engine is not None:
        mapping = ColumnMapping(
            rule=rule, taxonomy=taxonomy, prompt_format=prompt_format, positive_label=positive_label, **column_fields
        )
        norm, info = normalize_dataset(raw, mapping)
        fmt = mapping.resolved_prompt_format(has_taxonomy_column=info.columns["taxonomy"] is not None)
        if format_task(fmt) == "binary":  # P("1") / (P("1") + P("0")) where the engine gives log-probabilities
            from .judges import judge_dataset

            judged = judge_dataset(engine, norm, format=fmt, mode=scoring, generation_max_tokens=max_tokens or 16)
            predictions = Predictions(
                predictions=judged.predictions,
                scores=judged.scores,
                categories=judged.categories,
                raw=judged.raw,
                errors=judged.errors,
                seconds=judged.seconds,
                usage=judged.usage,
            )
            extra["scoring"] = judged.summary()
        else:
            predictions = predict_with_judge(engine, norm, fmt, max_tokens=max_tokens, progress=progress)
        subject = {"kind": "judge"} | engine.identity() | ({"base_url": engine.base_url} if engine.base_url else {})
        label_names = info.label_names
    else:
        from ..guardrails.guardrail import Guardrail

        guardrail: Union[Guardrail, RemoteGuardrail]
        if str(model).startswith(("http://", "https://")):  # a guardrail that `barred serve` serves: URL#NAME
            url, _, name = str(model).partition("#")
            if not name:
                raise ValueError(
                    f"expected a served guardrail as URL#NAME (e.g. http://127.0.0.1:8000#health), "
                    f"found {model!r}. Fix: add '#' and the guardrail's name (GET {url}/v1/models)."
                )
            from ..guardrails.remote import from_endpoint

            guardrail = from_endpoint(url, name, threshold=threshold)
        else:
            guardrail = Guardrail.from_pretrained(model, threshold=threshold)
        spec = guardrail.spec
        fmt = spec.prompt_format
        mapping = ColumnMapping(
            rule=rule or spec.rule,
            taxonomy=taxonomy or spec.taxonomy,
            prompt_format=fmt,
            positive_label=positive_label,
            **column_fields,
        )
        norm, info = normalize_dataset(raw, mapping, label_names=spec.label_names)
        predictions = predict_with_guardrail(guardrail, norm, batch_size=batch_size)
        subject = {
            "kind": "guardrail",
            "model": str(model),
            "guardrail_kind": spec.kind,
            "threshold": guardrail.threshold,
            "threshold_source": spec.threshold_source,
        }
        label_names = spec.label_names
        long = sum(w > 1 for w in predictions.windows)
        extra["long_inputs"] = {
            "mode": spec.long_inputs,
            "window_tokens": getattr(guardrail, "window", spec.max_length),
            "inputs": long,
            "windows": sum(predictions.windows),
        }
    metrics = score(norm, predictions, fmt)
    rows = [{"text": t, "label": y} | p for t, y, p in zip(norm["text"], norm["label"], predictions.rows())]
    timing = {
        "seconds": round(predictions.seconds, 3),
        "rows_per_second": round(len(norm) / predictions.seconds, 2) if predictions.seconds else None,
    }
    policy = format_task(fmt) == "policy"
    scored = predictions.scores and all(s is not None for s in predictions.scores)
    write_report(
        output,
        metrics,
        label_names=label_names,
        subject=subject,
        dataset={"name": str(dataset), "split": split if not Path(dataset).is_file() else None, "rows": len(norm)},
        rows=rows,
        timing=timing,
        references=list(norm["label"]),
        reference_categories=[list(c) for c in norm["categories"]] if policy else None,
        predicted_categories=predictions.categories if policy else None,
        scores=cast(list[float], predictions.scores) if scored else None,  # scored: no score is None
        threshold=cast(Optional[float], subject.get("threshold")),  # a guardrail's float; a judge has none
        extra={"prompt_format": fmt} | extra | ({"usage": predictions.usage} if predictions.usage else {}),
    )
    return json.loads((Path(output) / "report.json").read_text())
