"""Evaluation reports: ``report.json``, ``report.md``, ``predictions.jsonl`` and PNG plots.

The plots are a confusion matrix (with a column for unparseable answers when there are any) and,
for taxonomies, a heatmap of reference versus predicted categories on the positive rows.

Example:
    >>> import tempfile
    >>> from hf_barred.metrics.guardrail_metrics import binary_metrics
    >>> from hf_barred.report import write_report
    >>> metrics = binary_metrics([1, 0, 1, -1], [1, 0, 0, 1])
    >>> paths = write_report(tempfile.mkdtemp(), metrics, label_names=["safe", "unsafe"],
    ...                      subject={"kind": "guardrail", "model": "outputs/g"}, dataset={"name": "xstest"})
    >>> sorted(paths)
    ['confusion_matrix', 'report.json', 'report.md']
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

METRIC_ROWS = ("accuracy", "precision", "recall", "f1", "parsed_accuracy", "unparseable", "n",
               "category_precision", "category_recall", "category_f1")


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _subject_name(subject: Mapping[str, Any]) -> str:
    if subject.get("kind") == "judge":
        return f"{subject.get('model')} ({subject.get('engine')} judge)"
    return str(subject.get("model", "guardrail"))


def plot_confusion(metrics: Mapping[str, Any], label_names: Sequence[str], path: str | Path, title: str) -> Path:
    """A confusion-matrix PNG: counts and row percentages; unparseable answers as a third column."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    matrix = np.array(metrics["confusion_matrix"], dtype=float)
    columns = [f"pred. {label_names[0]}", f"pred. {label_names[1]}"]
    unparsed = metrics.get("unparseable_by_reference", [0, 0])
    if sum(unparsed):
        matrix = np.column_stack([matrix, unparsed])
        columns.append("unparseable")
    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    fig, ax = plt.subplots(figsize=(1.4 * len(columns) + 2.0, 3.6), dpi=120)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, f"{int(count)}\n{share[i, j]:.0%}", ha="center", va="center", fontsize=11,
                color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(columns)), columns)
    ax.set_yticks(range(2), [f"true {label_names[0]}", f"true {label_names[1]}"])
    ax.set_title(f"{title}\naccuracy {metrics['accuracy']:.3f} · F1 {metrics['f1']:.3f} · n={metrics['n']}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def category_matrix(reference: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]],
                    labels: Sequence[int]) -> tuple[list[str], list[str], list[list[int]]]:
    """Counts over positive rows: for each reference code (rows) the predicted codes (columns, plus
    ``none`` when a row got no category). Returns ``(row codes, column names, counts)``."""
    from .metrics.guardrail_metrics import _code_key

    codes = sorted({c for cats in list(reference) + list(predicted) for c in cats}, key=_code_key)
    ref_codes = [c for c in codes if any(c in r for r, y in zip(reference, labels) if y == 1)]
    columns = codes + ["none"]
    counts = [[0] * len(columns) for _ in ref_codes]
    for ref, pred, y in zip(reference, predicted, labels):
        if y != 1:
            continue
        for code in ref:
            row = counts[ref_codes.index(code)]
            for p in pred or ["none"]:
                row[columns.index(p)] += 1
    return ref_codes, columns, counts


def plot_category_heatmap(reference: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]],
                          labels: Sequence[int], fnr: Mapping[str, float], path: str | Path, title: str) -> Optional[Path]:
    """Heatmap of reference vs predicted categories on positive rows; None when there are none."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows, columns, counts = category_matrix(reference, predicted, labels)
    if not rows:
        return None
    matrix = np.array(counts, dtype=float)
    fig, ax = plt.subplots(figsize=(0.7 * len(columns) + 2.8, 0.5 * len(rows) + 1.8), dpi=120)
    image = ax.imshow(matrix, cmap="Oranges")
    for (i, j), count in np.ndenumerate(matrix):
        if count:
            ax.text(j, i, int(count), ha="center", va="center", fontsize=9,
                    color="white" if count > 0.6 * matrix.max() else "black")
    ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), [f"{c} (FNR {fnr.get(c, 0.0):.2f})" for c in rows])
    ax.set_xlabel("predicted category")
    ax.set_ylabel("reference category")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def _markdown(report: Mapping[str, Any], label_names: Sequence[str]) -> str:
    metrics = report["metrics"]
    lines = [f"# Evaluation: {_subject_name(report['subject'])}", ""]
    dataset = report.get("dataset", {})
    lines += [f"- **Dataset:** `{dataset.get('name', '?')}`" + (f" (split `{dataset['split']}`)" if dataset.get("split") else ""),
              f"- **Rows:** {metrics.get('n')}",
              f"- **Positive class:** `{label_names[1]}`"]
    for key, value in report.get("timing", {}).items():
        lines.append(f"- **{key.replace('_', ' ')}:** {_fmt(value)}")
    lines += ["", "| Metric | Value |", "|---|---|"]
    lines += [f"| {name} | {_fmt(metrics[name])} |" for name in METRIC_ROWS if name in metrics]
    (tn, fp), (fn, tp) = metrics["confusion_matrix"]
    un = metrics.get("unparseable_by_reference", [0, 0])
    lines += ["", "## Confusion matrix", "",
              f"| | pred. {label_names[0]} | pred. {label_names[1]} | unparseable |", "|---|---|---|---|",
              f"| true {label_names[0]} | {tn} | {fp} | {un[0]} |", f"| true {label_names[1]} | {fn} | {tp} | {un[1]} |"]
    if metrics.get("false_negative_rates") is not None:
        lines += ["", "## Categories", "", "| Category | Support | False-negative rate | False positives |",
                  "|---|---|---|---|"]
        for code, fps in metrics["false_positives"].items():
            fnr = metrics["false_negative_rates"].get(code)
            lines.append(f"| {code} | {metrics['category_support'].get(code, 0)} | "
                         f"{_fmt(fnr) if fnr is not None else '-'} | {fps} |")
    if report.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{name}]({name})" for name in report["plots"]]
    return "\n".join(lines) + "\n"


def write_report(output_dir: str | Path, metrics: Mapping[str, Any], *, label_names: Sequence[str] = ("0", "1"),
                 subject: Optional[Mapping[str, Any]] = None, dataset: Optional[Mapping[str, Any]] = None,
                 rows: Optional[Sequence[Mapping[str, Any]]] = None,
                 reference_categories: Optional[Sequence[Sequence[str]]] = None,
                 predicted_categories: Optional[Sequence[Sequence[str]]] = None,
                 references: Optional[Sequence[int]] = None, timing: Optional[Mapping[str, Any]] = None,
                 extra: Optional[Mapping[str, Any]] = None) -> dict[str, str]:
    """Write the report folder; returns ``{name: path}`` of what was written."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    subject = dict(subject or {})
    title = f"{_subject_name(subject)} on {(dataset or {}).get('name', 'dataset')}"
    written: dict[str, str] = {}
    plots = [str(plot_confusion(metrics, label_names, out / "confusion_matrix.png", title).name)]
    written["confusion_matrix"] = str(out / "confusion_matrix.png")
    if reference_categories is not None and predicted_categories is not None and references is not None:
        heatmap = plot_category_heatmap(reference_categories, predicted_categories, references,
                                        metrics.get("false_negative_rates", {}), out / "category_heatmap.png",
                                        f"Categories on unsafe rows: {title}")
        if heatmap:
            plots.append(heatmap.name)
            written["category_heatmap"] = str(heatmap)
    report = {"subject": subject, "dataset": dict(dataset or {}), "label_names": list(label_names),
              "metrics": dict(metrics), "timing": dict(timing or {}), "plots": plots} | dict(extra or {})
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n")
    (out / "report.md").write_text(_markdown(report, label_names), encoding="utf-8")
    written["report.json"], written["report.md"] = str(out / "report.json"), str(out / "report.md")
    if rows is not None:
        with open(out / "predictions.jsonl", "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        written["predictions.jsonl"] = str(out / "predictions.jsonl")
    return written
