"""Calibration of violation scores: ECE, reliability bins, PR curve and decision thresholds.

Pure numpy (imports nothing from hf_barred, like the rest of :mod:`hf_barred.evaluation.metrics`). ``scores``
are violation probabilities in [0, 1]; ``labels`` are 1 (violation) or 0.

Example:
    >>> from hf_barred.evaluation.metrics.calibration import expected_calibration_error, threshold_for_f1, threshold_for_fpr
    >>> scores, labels = [0.1, 0.4, 0.35, 0.8, 0.9, 0.7], [0, 0, 1, 1, 1, 0]
    >>> threshold_for_f1(scores, labels), threshold_for_fpr(scores, labels, target_fpr=0.0)
    (0.8, 0.8)
    >>> threshold_for_fpr(scores, labels, target_fpr=0.5)
    0.7
    >>> round(expected_calibration_error([0.9, 0.9, 0.1, 0.1], [1, 1, 0, 0], bins=10), 3)
    0.1
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def _arrays(scores: Sequence[float], labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=int)
    if s.shape != y.shape:
        raise ValueError(f"Expected one score per label, found {s.size} scores and {y.size} labels.")
    return s, y


def reliability_bins(scores: Sequence[float], labels: Sequence[int], bins: int = 10) -> list[dict[str, float]]:
    """Equal-width bins of the score: count, mean score and share of violations in each non-empty bin."""
    s, y = _arrays(scores, labels)
    index = np.minimum((s * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        mask = index == b
        if mask.any():
            out.append({"low": b / bins, "high": (b + 1) / bins, "count": int(mask.sum()),
                        "mean_score": float(s[mask].mean()), "positive_rate": float(y[mask].mean())})
    return out


def expected_calibration_error(scores: Sequence[float], labels: Sequence[int], bins: int = 10) -> float:
    """Mean over bins of |share of violations - mean score|, weighted by the bin's share of rows."""
    table = reliability_bins(scores, labels, bins)
    n = sum(b["count"] for b in table)
    return float(sum(b["count"] / n * abs(b["positive_rate"] - b["mean_score"]) for b in table)) if n else 0.0


def _confusion_at(s: np.ndarray, y: np.ndarray, threshold: float) -> tuple[int, int, int, int]:
    pred = s >= threshold
    tp, fp = int((pred & (y == 1)).sum()), int((pred & (y == 0)).sum())
    return tp, fp, int((~pred & (y == 1)).sum()), int((~pred & (y == 0)).sum())


def threshold_for_f1(scores: Sequence[float], labels: Sequence[int]) -> float:
    """The candidate threshold (a score seen in the data) with the highest F1; ties keep the higher one."""
    s, y = _arrays(scores, labels)
    best, best_f1 = 0.5, -1.0
    for t in sorted(set(s.tolist()), reverse=True):
        tp, fp, fn, _ = _confusion_at(s, y, t)
        f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        if f1 > best_f1:
            best, best_f1 = float(t), f1
    return best


def threshold_for_fpr(scores: Sequence[float], labels: Sequence[int], target_fpr: float) -> float:
    """The lowest seen score whose false-positive rate is at most ``target_fpr`` (most recall within it)."""
    s, y = _arrays(scores, labels)
    negatives = max(1, int((y == 0).sum()))
    best = float(s.max()) + 1e-6 if s.size else 0.5
    for t in sorted(set(s.tolist()), reverse=True):
        _, fp, _, _ = _confusion_at(s, y, t)
        if fp / negatives > target_fpr:
            break
        best = float(t)
    return best


def pr_curve(scores: Sequence[float], labels: Sequence[int]) -> dict[str, Any]:
    """Precision and recall at every seen threshold (highest first) and the average precision."""
    s, y = _arrays(scores, labels)
    thresholds = sorted(set(s.tolist()), reverse=True)
    precision, recall = [], []
    positives = max(1, int((y == 1).sum()))
    for t in thresholds:
        tp, fp, _, _ = _confusion_at(s, y, t)
        precision.append(tp / (tp + fp) if tp + fp else 1.0)
        recall.append(tp / positives)
    ap, last = 0.0, 0.0
    for p, r in zip(precision, recall):
        ap += (r - last) * p
        last = r
    return {"thresholds": thresholds, "precision": precision, "recall": recall, "average_precision": ap}


def calibration_summary(scores: Sequence[float], labels: Sequence[int], threshold: float,
                        bins: int = 10) -> dict[str, Any]:
    """ECE, average precision, the reliability table and the rates at ``threshold``, for reports."""
    s, y = _arrays(scores, labels)
    tp, fp, fn, tn = _confusion_at(s, y, threshold)
    return {"ece": expected_calibration_error(s, y, bins), "average_precision": pr_curve(s, y)["average_precision"],
            "threshold": threshold, "false_positive_rate": fp / (fp + tn) if fp + tn else 0.0,
            "true_positive_rate": tp / (tp + fn) if tp + fn else 0.0, "reliability": reliability_bins(s, y, bins)}
