"""The PNG figures of an evaluation report, drawn with matplotlib (Agg, no display needed).

- :func:`plot_confusion`: counts and row shares; unparseable answers as a third column.
- :func:`plot_category_heatmap`: reference versus predicted categories on the positive rows.
- :func:`plot_reliability`: share of violations per score bin against the diagonal (calibration).
- :func:`plot_score_histograms`: the score distribution of each true class, and the threshold.
- :func:`plot_pr_curve`: precision against recall over thresholds, with the operating point.

Titles are wrapped so they are never clipped; every figure is laid out with ``tight_layout``.

Example:
    >>> import tempfile
    >>> from hf_barred.evaluation.plots import plot_reliability
    >>> plot_reliability([0.1, 0.8, 0.9, 0.3], [0, 1, 1, 1], tempfile.mktemp(suffix=".png"), "demo").suffix
    '.png'
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

from ..policy.taxonomy import sort_codes
from .metrics.calibration import expected_calibration_error, pr_curve, reliability_bins


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _title(text: str, width: int = 48) -> str:
    return "\n".join(textwrap.wrap(text, width)) or text


def _save(fig: Any, path: str | Path) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    _pyplot().close(fig)
    return Path(path)


def plot_confusion(metrics: Mapping[str, Any], label_names: Sequence[str], path: str | Path, title: str) -> Path:
    """A confusion-matrix PNG: counts and row percentages; unparseable answers as a third column."""
    import numpy as np

    plt = _pyplot()
    matrix = np.array(metrics["confusion_matrix"], dtype=float)
    columns = [f"predicted\n{label_names[0]}", f"predicted\n{label_names[1]}"]
    unparsed = metrics.get("unparseable_by_reference", [0, 0])
    if sum(unparsed):
        matrix = np.column_stack([matrix, unparsed])
        columns.append("unparseable")
    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    widest = max(len(str(name)) for name in label_names)
    fig, ax = plt.subplots(figsize=(max(1.6, 0.11 * widest) * len(columns) + 2.4, 3.8), dpi=120)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(
            j,
            i,
            f"{int(count)}\n{share[i, j]:.0%}",
            ha="center",
            va="center",
            fontsize=11,
            color="white" if share[i, j] > 0.6 else "black",
        )
    ax.set_xticks(range(len(columns)), columns)
    ax.set_yticks(range(2), [f"true {label_names[0]}", f"true {label_names[1]}"])
    ax.set_title(
        _title(title) + f"\naccuracy {metrics['accuracy']:.3f} · F1 {metrics['f1']:.3f} · n={metrics['n']}", fontsize=10
    )
    return _save(fig, path)


def category_matrix(
    reference: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]], labels: Sequence[int]
) -> tuple[list[str], list[str], list[list[int]]]:
    """Counts over positive rows: for each reference code (rows) the predicted codes (columns, plus
    ``none`` when a row got no category). Returns ``(row codes, column names, counts)``."""
    codes = sort_codes([c for cats in list(reference) + list(predicted) for c in cats])
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


def plot_category_heatmap(
    reference: Sequence[Sequence[str]],
    predicted: Sequence[Sequence[str]],
    labels: Sequence[int],
    fnr: Mapping[str, float],
    path: str | Path,
    title: str,
) -> Optional[Path]:
    """Heatmap of reference vs predicted categories on positive rows; None when there are none."""
    import numpy as np

    plt = _pyplot()
    rows, columns, counts = category_matrix(reference, predicted, labels)
    if not rows:
        return None
    matrix = np.array(counts, dtype=float)
    fig, ax = plt.subplots(figsize=(0.7 * len(columns) + 3.2, 0.5 * len(rows) + 2.2), dpi=120)
    image = ax.imshow(matrix, cmap="Oranges")
    for (i, j), count in np.ndenumerate(matrix):
        if count:
            ax.text(
                j,
                i,
                int(count),
                ha="center",
                va="center",
                fontsize=9,
                color="white" if count > 0.6 * matrix.max() else "black",
            )
    ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), [f"{c} (FNR {fnr.get(c, 0.0):.2f})" for c in rows])
    ax.set_xlabel("predicted category")
    ax.set_ylabel("reference category")
    ax.set_title(_title(title), fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return _save(fig, path)


def plot_reliability(
    scores: Sequence[float], labels: Sequence[int], path: str | Path, title: str, bins: int = 10
) -> Path:
    """Reliability diagram: per score bin, the share of true violations (bars) against the mean score
    (the diagonal is perfect calibration); the row count of each bin is written above its bar."""
    plt = _pyplot()
    table = reliability_bins(scores, labels, bins)
    fig, ax = plt.subplots(figsize=(5.2, 4.4), dpi=120)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
    ax.bar(
        [b["low"] for b in table],
        [b["positive_rate"] for b in table],
        width=1 / bins,
        align="edge",
        color="#4c72b0",
        alpha=0.8,
        edgecolor="white",
        label="share of violations",
    )
    ax.plot(
        [b["mean_score"] for b in table],
        [b["positive_rate"] for b in table],
        "o",
        color="#dd8452",
        label="bin mean score",
    )
    for b in table:
        ax.text(b["low"] + 0.5 / bins, min(b["positive_rate"] + 0.03, 1.02), str(b["count"]), ha="center", fontsize=8)
    ax.set(xlim=(0, 1), ylim=(0, 1.08), xlabel="violation score", ylabel="share of true violations")
    ax.legend(loc="upper left", fontsize=8)
    ece = expected_calibration_error(scores, labels, bins)
    ax.set_title(_title(title) + f"\nreliability · ECE {ece:.3f} · n={len(scores)}", fontsize=10)
    return _save(fig, path)


def plot_score_histograms(
    scores: Sequence[float],
    labels: Sequence[int],
    label_names: Sequence[str],
    path: str | Path,
    title: str,
    threshold: Optional[float] = None,
) -> Path:
    """The scores of each true class as overlaid histograms (20 bins), with the threshold line."""
    import numpy as np

    plt = _pyplot()
    s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=int)
    fig, ax = plt.subplots(figsize=(5.6, 4.0), dpi=120)
    edges = np.linspace(0, 1, 21)
    for cls, color in ((0, "#4c72b0"), (1, "#c44e52")):
        ax.hist(
            s[y == cls], bins=edges, alpha=0.6, color=color, label=f"true {label_names[cls]} (n={(y == cls).sum()})"
        )
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:.3f}")
    ax.set(xlim=(0, 1), xlabel="violation score", ylabel="rows")
    ax.legend(fontsize=8)
    ax.set_title(_title(title) + "\nscore distribution per true class", fontsize=10)
    return _save(fig, path)


def plot_pr_curve(
    scores: Sequence[float], labels: Sequence[int], path: str | Path, title: str, threshold: Optional[float] = None
) -> Path:
    """Precision against recall over every threshold; the dot is the guardrail's threshold."""
    plt = _pyplot()
    curve = pr_curve(scores, labels)
    fig, ax = plt.subplots(figsize=(5.2, 4.4), dpi=120)
    ax.step(curve["recall"], curve["precision"], where="post", color="#4c72b0")
    if threshold is not None:
        import numpy as np

        s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=int)
        flagged = s >= threshold
        tp = int((flagged & (y == 1)).sum())
        precision = tp / flagged.sum() if flagged.sum() else 1.0
        recall = tp / max(1, int((y == 1).sum()))
        ax.plot([recall], [precision], "o", color="#c44e52", label=f"threshold {threshold:.3f}")
        ax.legend(loc="lower left", fontsize=8)
    ax.set(xlim=(0, 1.02), ylim=(0, 1.05), xlabel="recall (violations caught)", ylabel="precision")
    ax.set_title(_title(title) + f"\nprecision-recall · AP {curve['average_precision']:.3f}", fontsize=10)
    return _save(fig, path)
