"""Calibration of violation scores: ECE, reliability bins, PR curve and decision thresholds.

Imports nothing from hf_barred, like the rest of :mod:`hf_barred.evaluation.metrics`. The curves and counts
are scikit-learn's (imported on first use); the reliability bins and the ECE are numpy. ``scores`` are
violation probabilities in [0, 1]; ``labels`` are 1 (violation) or 0.

Example:
    >>> from hf_barred.evaluation.metrics.calibration import (expected_calibration_error, threshold_for_f1,
    ...                                                       threshold_for_fpr)
    >>> scores, labels = [0.1, 0.4, 0.35, 0.8, 0.9, 0.7], [0, 0, 1, 1, 1, 0]
    >>> threshold_for_f1(scores, labels), threshold_for_fpr(scores, labels, target_fpr=0.0)
    (0.8, 0.8)
    >>> threshold_for_fpr(scores, labels, target_fpr=0.5)
    0.7
    >>> round(expected_calibration_error([0.9, 0.9, 0.1, 0.1], [1, 1, 0, 0], bins=10), 3)
    0.1
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Union

import numpy as np

Scores = Union[Sequence[float], np.ndarray]
"""Violation probabilities: a sequence, or a numpy array (what the functions pass each other)."""
Labels = Union[Sequence[int], np.ndarray]
"""1 (violation) or 0 per score: a sequence, or a numpy array."""


def _arrays(scores: Scores, labels: Labels) -> tuple[np.ndarray, np.ndarray]:
    s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=int)
    if s.shape != y.shape:
        raise ValueError(f"Expected one score per label, found {s.size} scores and {y.size} labels.")
    return s, y


def reliability_bins(scores: Scores, labels: Labels, bins: int = 10) -> list[dict[str, float]]:
    """Equal-width bins of the score: count, mean score and share of violations in each non-empty bin.

    Bins are closed on the left (a score on an edge goes up: 0.5 is in [0.5, 0.6), 1.0 in the last bin).
    :func:`sklearn.calibration.calibration_curve` closes them on the right and gives no counts, so it is not used.

    >>> [(b["low"], b["count"]) for b in reliability_bins([0.5, 0.55, 1.0], [1, 0, 1], bins=10)]
    [(0.5, 2), (0.9, 1)]
    """
    s, y = _arrays(scores, labels)
    index = np.minimum((s * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        mask = index == b
        if mask.any():
            out.append(
                {
                    "low": b / bins,
                    "high": (b + 1) / bins,
                    "count": int(mask.sum()),
                    "mean_score": float(s[mask].mean()),
                    "positive_rate": float(y[mask].mean()),
                }
            )
    return out


def expected_calibration_error(scores: Scores, labels: Labels, bins: int = 10) -> float:
    """Mean over bins of |share of violations - mean score|, weighted by the bin's share of rows.

    scikit-learn has no ECE; it is computed from :func:`reliability_bins`.
    """
    table = reliability_bins(scores, labels, bins)
    n = sum(b["count"] for b in table)
    return float(sum(b["count"] / n * abs(b["positive_rate"] - b["mean_score"]) for b in table)) if n else 0.0


def _roc(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(thresholds, fpr, tpr)`` of ``score >= threshold`` at every seen score, highest first.

    :func:`sklearn.metrics.roc_curve` with ``drop_intermediate=False``, without its leading ``inf`` threshold.
    With one class only sklearn warns and gives NaN rates for the missing class: they are 0 here (no row of
    that class is flagged), as before.
    """
    from sklearn.exceptions import UndefinedMetricWarning
    from sklearn.metrics import roc_curve

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
    return thresholds[1:], np.nan_to_num(fpr[1:]), np.nan_to_num(tpr[1:])


def threshold_for_f1(scores: Scores, labels: Labels) -> float:
    """The candidate threshold (a score seen in the data) with the highest F1; ties keep the higher one.

    No scores: 0.5. One class only: the highest score if there is no violation (F1 is 0 everywhere), else the
    lowest (every violation flagged).

    >>> threshold_for_f1([0.9, 0.5, 0.4, 0.3], [1, 0, 0, 1]), threshold_for_f1([0.3, 0.7], [0, 0])  # 0.9 ties 0.3
    (0.9, 0.7)
    """
    s, y = _arrays(scores, labels)
    if not s.size:
        return 0.5
    thresholds, fpr, tpr = _roc(s, y)
    positives, negatives = int((y == 1).sum()), int((y == 0).sum())
    # F1 = 2tp / (2tp + fp + fn) from the integer counts, not 2PR / (P + R) from sklearn's precision and recall:
    # rounding there can split an exact tie, and a tie must go to the higher threshold (argmax: the first)
    tp, fp = np.rint(tpr * positives), np.rint(fpr * negatives)
    f1 = np.divide(2 * tp, tp + fp + positives, out=np.zeros_like(tp), where=tp > 0)
    return float(thresholds[np.argmax(f1)])


def threshold_for_fpr(scores: Scores, labels: Labels, target_fpr: float) -> float:
    """The lowest seen score whose false-positive rate is at most ``target_fpr`` (most recall within it).

    If even the highest score is above the target: just above the highest score (nothing flagged). No scores: 0.5.
    No negative rows: the lowest score (the false-positive rate is 0).

    >>> scores, labels = [0.2, 0.6, 0.7, 0.9], [1, 0, 1, 0]
    >>> threshold_for_fpr(scores, labels, target_fpr=0.0), threshold_for_fpr(scores, labels, target_fpr=0.5)
    (0.900001, 0.7)
    """
    s, y = _arrays(scores, labels)
    if not s.size:
        return 0.5
    thresholds, fpr, _ = _roc(s, y)
    # fpr never falls as the threshold falls: the thresholds within the target are the first ``within``
    within = int(np.searchsorted(fpr, target_fpr, side="right"))
    return float(thresholds[within - 1]) if within else float(s.max()) + 1e-6


def pr_curve(scores: Scores, labels: Labels) -> dict[str, Any]:
    """Precision and recall at every seen threshold (highest first) and the average precision.

    :func:`sklearn.metrics.precision_recall_curve` (reversed, without its closing point at recall 0) and
    :func:`sklearn.metrics.average_precision_score`. Without any violation sklearn sets the recall to 1 (and warns);
    here it stays 0, and so does the average precision. No scores: empty lists and 0.0.

    >>> curve = pr_curve([0.2, 0.6, 0.9], [0, 1, 1])
    >>> curve["thresholds"], curve["precision"], curve["recall"], curve["average_precision"]
    ([0.9, 0.6, 0.2], [1.0, 1.0, 0.6666666666666666], [0.5, 1.0, 1.0], 1.0)
    """
    s, y = _arrays(scores, labels)
    if not s.size:
        return {"thresholds": [], "precision": [], "recall": [], "average_precision": 0.0}
    from sklearn.metrics import average_precision_score, precision_recall_curve

    positives = int((y == 1).sum())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # no violation: "recall is set to one" (replaced below)
        precision, recall, thresholds = precision_recall_curve(y, s, drop_intermediate=False)
    recall = recall[-2::-1] if positives else np.zeros(thresholds.size)
    return {
        "thresholds": thresholds[::-1].tolist(),
        "precision": precision[-2::-1].tolist(),
        "recall": recall.tolist(),
        "average_precision": float(average_precision_score(y, s)) if positives else 0.0,
    }


def calibration_summary(scores: Scores, labels: Labels, threshold: float, bins: int = 10) -> dict[str, Any]:
    """ECE, average precision, the reliability table and the rates at ``threshold``, for reports.

    >>> summary = calibration_summary([0.2, 0.6, 0.9, 0.4], [0, 1, 1, 0], threshold=0.5)
    >>> summary["false_positive_rate"], summary["true_positive_rate"], summary["average_precision"]
    (0.0, 1.0, 1.0)
    """
    s, y = _arrays(scores, labels)
    (tn, fp), (fn, tp) = [[0, 0], [0, 0]]
    if s.size:  # sklearn refuses empty input
        from sklearn.metrics import confusion_matrix

        (tn, fp), (fn, tp) = confusion_matrix(y, (s >= threshold).astype(int), labels=[0, 1]).tolist()
    return {
        "ece": expected_calibration_error(s, y, bins),
        "average_precision": pr_curve(s, y)["average_precision"],
        "threshold": threshold,
        "false_positive_rate": fp / (fp + tn) if fp + tn else 0.0,
        "true_positive_rate": tp / (tp + fn) if tp + fn else 0.0,
        "reliability": reliability_bins(s, y, bins),
    }
