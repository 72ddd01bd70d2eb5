"""Evaluation reports: ``report.json``, ``report.md``, ``predictions.jsonl`` and PNG plots.

The plots (:mod:`hf_barred.evaluation.plots`) are a confusion matrix (with a column for unparseable answers
when there are any); for taxonomies, a heatmap of reference versus predicted categories on the
positive rows; and, when the subject gives scores (a trained guardrail), a reliability diagram, the
score histograms of each class and a precision-recall curve, with the ECE and the average precision
in the metrics.

Example:
    >>> import tempfile
    >>> from hf_barred.evaluation.metrics.guardrail_metrics import binary_metrics
    >>> from hf_barred.evaluation.report import write_report
    >>> metrics = binary_metrics([1, 0, 1, -1], [1, 0, 0, 1])
    >>> paths = write_report(tempfile.mkdtemp(), metrics, label_names=["safe", "unsafe"],
    ...                      subject={"kind": "guardrail", "model": "outputs/g"}, dataset={"name": "xstest"})
    >>> sorted(paths)
    ['confusion_matrix', 'report.json', 'report.md']
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

from .plots import plot_category_heatmap, plot_confusion, plot_pr_curve, plot_reliability, plot_score_histograms

METRIC_ROWS = (
    "accuracy",
    "precision",
    "recall",
    "f1",
    "parsed_accuracy",
    "unparseable",
    "n",
    "category_precision",
    "category_recall",
    "category_f1",
    "ece",
    "average_precision",
)
SMALL_SAMPLE = 20  # fewer rows than this: the report says the figures are not reliable


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _subject_name(subject: Mapping[str, Any]) -> str:
    if subject.get("kind") == "judge":
        return f"{subject.get('model')} ({subject.get('engine')} judge)"
    return str(subject.get("model", "guardrail"))


def _markdown(report: Mapping[str, Any], label_names: Sequence[str]) -> str:
    metrics = report["metrics"]
    lines = [f"# Evaluation: {_subject_name(report['subject'])}", ""]
    dataset = report.get("dataset", {})
    lines += [
        f"- **Dataset:** `{dataset.get('name', '?')}`"
        + (f" (split `{dataset['split']}`)" if dataset.get("split") else ""),
        f"- **Rows:** {metrics.get('n')}",
        f"- **Positive class:** `{label_names[1]}`",
    ]
    for key, value in report.get("timing", {}).items():
        lines.append(f"- **{key.replace('_', ' ')}:** {_fmt(value)}")
    if isinstance(metrics.get("n"), int) and metrics["n"] < SMALL_SAMPLE:
        lines.append(
            f"- **Caution:** only {metrics['n']} rows: these figures are not a reliable estimate "
            f"(a single row moves accuracy by {1 / max(1, metrics['n']):.2f})."
        )
    scoring = report.get("scoring")
    if scoring:
        lines.append(
            f"- **Scoring mode:** {scoring['scoring_mode']} ({scoring['rows_logprob']} rows by "
            f'P("1")/(P("1")+P("0")) from log-probabilities, {scoring["rows_generation"]} by a '
            f"generated answer; {scoring['unparseable']} unparseable; "
            f"{scoring['rows_scored_above_half']} rows scored above 0.5)"
        )
    if report.get("prompt_format"):
        lines.append(f"- **Prompt format:** `{report['prompt_format']}`")
    long = report.get("long_inputs")
    if long:
        verb = "scored in overlapping windows (maximum score)" if long["mode"] == "chunk" else "truncated"
        lines.append(
            f"- **Long inputs:** {long['inputs']} of {metrics.get('n')} inputs exceeded the "
            f"{long['window_tokens']}-token window and were {verb}."
        )
    lines += ["", "| Metric | Value |", "|---|---|"]
    lines += [f"| {name} | {_fmt(metrics[name])} |" for name in METRIC_ROWS if name in metrics]
    (tn, fp), (fn, tp) = metrics["confusion_matrix"]
    un = metrics.get("unparseable_by_reference", [0, 0])
    lines += [
        "",
        "## Confusion matrix",
        "",
        f"| | pred. {label_names[0]} | pred. {label_names[1]} | unparseable |",
        "|---|---|---|---|",
        f"| true {label_names[0]} | {tn} | {fp} | {un[0]} |",
        f"| true {label_names[1]} | {fn} | {tp} | {un[1]} |",
    ]
    if metrics.get("false_negative_rates") is not None:
        lines += [
            "",
            "## Categories",
            "",
            "| Category | Support | False-negative rate | False positives |",
            "|---|---|---|---|",
        ]
        for code, fps in metrics["false_positives"].items():
            fnr = metrics["false_negative_rates"].get(code)
            lines.append(
                f"| {code} | {metrics['category_support'].get(code, 0)} | "
                f"{_fmt(fnr) if fnr is not None else '-'} | {fps} |"
            )
    calibration = metrics.get("calibration")
    if calibration:
        lines += [
            "",
            "## Calibration",
            "",
            f"At the threshold {calibration['threshold']:.3f}: false-positive rate "
            f"{calibration['false_positive_rate']:.3f}, true-positive rate {calibration['true_positive_rate']:.3f}; "
            f"ECE {calibration['ece']:.4f}, average precision {calibration['average_precision']:.4f}.",
            "",
            "| Score bin | Rows | Mean score | Share of violations |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {b['low']:.1f}-{b['high']:.1f} | {b['count']} | {b['mean_score']:.3f} | {b['positive_rate']:.3f} |"
            for b in calibration["reliability"]
        ]
    if report.get("plots"):
        lines += ["", "## Plots", ""]
        for name in report["plots"]:
            lines += [f"![{name}]({name})", "", PLOT_CAPTIONS.get(name, ""), ""]
    return "\n".join(lines) + "\n"


PLOT_CAPTIONS = {
    "confusion_matrix.png": "Confusion matrix: counts and row shares (unparseable answers in their own column).",
    "category_heatmap.png": "Reference (rows) against predicted (columns) categories on the unsafe rows.",
    "reliability.png": "Reliability diagram: the share of true violations in each score bin; bars on the "
    "diagonal are calibrated, bars below it over-flag, above it under-flag.",
    "score_histograms.png": "Scores of the truly negative and truly positive rows, and the threshold: the less "
    "they overlap, the better the guardrail separates them.",
    "pr_curve.png": "Precision against recall over all thresholds; the dot is the guardrail's threshold.",
}


def write_report(
    output_dir: str | Path,
    metrics: Mapping[str, Any],
    *,
    label_names: Sequence[str] = ("0", "1"),
    subject: Optional[Mapping[str, Any]] = None,
    dataset: Optional[Mapping[str, Any]] = None,
    rows: Optional[Sequence[Mapping[str, Any]]] = None,
    reference_categories: Optional[Sequence[Sequence[str]]] = None,
    predicted_categories: Optional[Sequence[Sequence[str]]] = None,
    references: Optional[Sequence[int]] = None,
    timing: Optional[Mapping[str, Any]] = None,
    scores: Optional[Sequence[float]] = None,
    threshold: Optional[float] = None,
    extra: Optional[Mapping[str, Any]] = None,
) -> dict[str, str]:
    """Write the report folder; returns ``{name: path}`` of what was written. With ``scores`` (and
    ``references``) the calibration figures and ``metrics["calibration"]`` are added."""
    from .metrics.calibration import calibration_summary

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    subject = dict(subject or {})
    metrics = dict(metrics)
    title = f"{_short(_subject_name(subject))} on {_short(str((dataset or {}).get('name', 'dataset')))}"
    written = {"confusion_matrix": str(plot_confusion(metrics, label_names, out / "confusion_matrix.png", title))}
    if reference_categories is not None and predicted_categories is not None and references is not None:
        heatmap = plot_category_heatmap(
            reference_categories,
            predicted_categories,
            references,
            metrics.get("false_negative_rates", {}),
            out / "category_heatmap.png",
            f"Categories on unsafe rows: {title}",
        )
        if heatmap:
            written["category_heatmap"] = str(heatmap)
    if scores is not None and references is not None and len(set(references)) == 2:
        cut = 0.5 if threshold is None else threshold
        summary = calibration_summary(scores, references, cut)
        metrics["ece"], metrics["average_precision"] = summary["ece"], summary["average_precision"]
        metrics["calibration"] = summary
        written["reliability"] = str(plot_reliability(scores, references, out / "reliability.png", title))
        written["score_histograms"] = str(
            plot_score_histograms(scores, references, label_names, out / "score_histograms.png", title, cut)
        )
        written["pr_curve"] = str(plot_pr_curve(scores, references, out / "pr_curve.png", title, cut))
    plots = [Path(path).name for path in written.values()]
    report = {
        "subject": subject,
        "dataset": dict(dataset or {}),
        "label_names": list(label_names),
        "metrics": metrics,
        "timing": dict(timing or {}),
        "plots": plots,
    } | dict(extra or {})
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n")
    (out / "report.md").write_text(_markdown(report, label_names), encoding="utf-8")
    written["report.json"], written["report.md"] = str(out / "report.json"), str(out / "report.md")
    if rows is not None:
        with open(out / "predictions.jsonl", "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        written["predictions.jsonl"] = str(out / "predictions.jsonl")
    return written


def _short(name: str) -> str:
    """The last path part of a folder or file name (titles stay short); Hub ids are kept."""
    path = Path(name)
    return path.name if (name.startswith(("/", ".", "~")) or len(path.parts) > 2) else name
