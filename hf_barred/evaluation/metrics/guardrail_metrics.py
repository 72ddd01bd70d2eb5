"""Guardrail metrics as an ``evaluate`` module: binary verdicts and violated-category sets.

Load it by path (``evaluate.load("accuracy")`` would need the Hub): ``hf_barred.evaluation.metrics.load_metric()``
or ``evaluate.load("<path to this file>", "categories")``. The file imports nothing from hf_barred,
because ``evaluate`` copies it into its module cache.

Configs:

- ``binary`` (default): ``predictions`` and ``references`` are ints, 1 = the rule applies / unsafe
  (the positive class), 0 = not; a prediction that could not be parsed is ``-1`` (or ``None``).
- ``categories`` (APT): also ``predicted_categories`` and ``reference_categories``, lists of S-codes.

Unparseable predictions are counted (``unparseable``) and scored as wrong: in precision/recall they
count as the opposite of the reference (a false alarm on a negative row, a miss on a positive row).
The counting is scikit-learn's (``confusion_matrix``, ``precision_recall_fscore_support``,
``MultiLabelBinarizer``, ``multilabel_confusion_matrix``); empty inputs and zero divisions give 0.

Example:
    >>> from hf_barred.evaluation.metrics.guardrail_metrics import binary_metrics, category_metrics
    >>> m = binary_metrics(predictions=[1, 0, 1, -1], references=[1, 0, 0, 1])
    >>> m["accuracy"], m["precision"], m["recall"], m["unparseable"]
    (0.5, 0.5, 0.5, 1)
    >>> c = category_metrics([1, 1, 0], [1, 1, 0], [["S1"], ["S2", "S3"], ["S3"]], [["S1"], ["S2"], []])
    >>> round(c["category_precision"], 3), c["category_recall"], c["false_positives"]["S3"]
    (0.667, 1.0, 2)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import datasets
import evaluate
import numpy as np
from sklearn.metrics import confusion_matrix, multilabel_confusion_matrix, precision_recall_fscore_support
from sklearn.preprocessing import MultiLabelBinarizer

_CITATION = """\
@misc{barred,
  title  = {BARRED: Boundary Alignment Refinement through REflection and Debate for guardrail training data},
  author = {{Plurai}},
  year   = {2025},
  note   = {The BARRED paper}
}
@misc{apt,
  title = {Augmented Policy Training for policy-conditioned guardrails},
  year  = {2025},
  note  = {The APT paper}
}
"""

_DESCRIPTION = """\
Metrics for guardrail models (BARRED / APT): accuracy; binary precision, recall and F1 with the
violation as the positive class; micro precision/recall/F1 of the violated-category sets on the
positive rows; per-category false-negative rates and false-positive counts; and the number of
predictions that could not be parsed.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[int]`): 1 = violation / unsafe, 0 = no violation, -1 or None = unparseable.
    references (`list[int]`): 1 or 0.
    predicted_categories (`list[list[str]]`, config `categories` only): predicted S-codes per row.
    reference_categories (`list[list[str]]`, config `categories` only): gold S-codes per row.
Returns:
    accuracy, precision, recall, f1, n, unparseable, unparseable_rate, parsed_accuracy,
    confusion_matrix ([[tn, fp], [fn, tp]] over parsed rows), unparseable_by_reference ([on 0, on 1]);
    with config `categories` also category_precision, category_recall, category_f1,
    false_negative_rates (per code), false_positives (per code), category_support (per code).
Examples:
    >>> import evaluate
    >>> from hf_barred.evaluation.metrics import metric_path
    >>> metric = evaluate.load(metric_path())
    >>> metric.compute(predictions=[1, 0], references=[1, 1])["recall"]
    0.5
"""


def _ratio(num: float, den: float) -> float:
    return float(num) / den if den else 0.0


def _parsed(value: Any) -> Optional[int]:
    return int(value) if value is not None and int(value) in (0, 1) else None


def binary_metrics(predictions: Sequence[Optional[int]], references: Sequence[int]) -> dict[str, Any]:
    """Accuracy, P/R/F1 (positive = 1), confusion counts and unparseable counts.

    The counts are scikit-learn's :func:`~sklearn.metrics.confusion_matrix`, with "unparseable" as a third
    predicted label; P/R/F1 are :func:`~sklearn.metrics.precision_recall_fscore_support` with each unparseable
    prediction replaced by the opposite of its reference. Empty input and zero divisions give 0.0.

    >>> m = binary_metrics([1, 1, None, 0], [1, 0, 1, 0])
    >>> m["confusion_matrix"], m["unparseable_by_reference"], m["precision"], m["recall"]
    ([[1, 1], [0, 1]], [0, 1], 0.5, 0.5)
    """
    if len(predictions) != len(references):
        raise ValueError(f"Expected as many predictions as references, found {len(predictions)} and {len(references)}.")
    n = len(references)
    if not n:  # sklearn refuses empty input
        (tn, fp, u0), (fn, tp, u1) = (0, 0, 0), (0, 0, 0)
        precision = recall = f1 = 0.0
    else:
        refs = np.array([int(r) for r in references])
        preds = np.array([-1 if p is None else p for p in map(_parsed, predictions)])
        # rows: reference 0, 1 (a third, reference -1, stays empty); columns: predicted 0, 1, unparseable
        (tn, fp, u0), (fn, tp, u1), _ = confusion_matrix(refs, preds, labels=[0, 1, -1]).tolist()
        scored = np.where(preds == -1, 1 - refs, preds)  # unparseable = wrong
        precision, recall, f1, _ = precision_recall_fscore_support(
            refs, scored, average="binary", pos_label=1, zero_division=0
        )
    unparsed = u0 + u1
    return {
        "accuracy": _ratio(tp + tn, n),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "n": n,
        "unparseable": unparsed,
        "unparseable_rate": _ratio(unparsed, n),
        "parsed_accuracy": _ratio(tp + tn, n - unparsed),
        "confusion_matrix": [[tn, fp], [fn, tp]],
        "unparseable_by_reference": [u0, u1],
    }


def _code_key(code: str) -> tuple[int, str]:
    digits = "".join(ch for ch in code if ch.isdigit())
    return (int(digits) if digits else 10**9, code)


def _indicator(sets: Sequence[set[str]], codes: list[str]) -> np.ndarray:
    """Rows x (codes + one always-empty column): with one code only, a single column would be read by sklearn
    as binary 0/1 labels (micro averages over both values); the empty column keeps it multilabel, counts nothing."""
    matrix = MultiLabelBinarizer(classes=codes).fit_transform(sets)
    return np.hstack([matrix, np.zeros((len(sets), 1), dtype=matrix.dtype)])


def category_metrics(
    predictions: Sequence[Optional[int]],
    references: Sequence[int],
    predicted_categories: Sequence[Sequence[str]],
    reference_categories: Sequence[Sequence[str]],
) -> dict[str, Any]:
    """Micro P/R/F1 of category sets on positive rows (reference 1); per-category false-negative
    rate (over positive rows having the code) and false-positive count (over all rows).

    scikit-learn does the counting: :class:`~sklearn.preprocessing.MultiLabelBinarizer`,
    :func:`~sklearn.metrics.multilabel_confusion_matrix` and ``precision_recall_fscore_support(average="micro")``.
    An unparseable prediction predicts no category. Codes are ordered by number (S2 before S10).

    >>> c = category_metrics([1, 1], [1, 1], [["S1"], []], [["S1"], ["S1"]])
    >>> c["category_precision"], c["category_recall"], c["false_negative_rates"], c["category_support"]
    (1.0, 0.5, {'S1': 0.5}, {'S1': 2})
    """
    if not len(predictions) == len(references) == len(predicted_categories) == len(reference_categories):
        raise ValueError(
            "Expected predictions, references, predicted_categories and reference_categories of one length."
        )
    pred_sets = [
        set(cats or []) if _parsed(p) is not None else set() for p, cats in zip(predictions, predicted_categories)
    ]
    ref_sets = [set(cats or []) for cats in reference_categories]
    codes = sorted(set().union(*pred_sets, *ref_sets), key=_code_key)
    positive = np.flatnonzero([int(r) == 1 for r in references])
    precision = recall = f1 = 0.0
    false_pos, misses, support = [0] * len(codes), [0] * len(codes), [0] * len(codes)
    if codes:  # sklearn refuses a label matrix without columns (and, below, without rows)
        y_true, y_pred = _indicator(ref_sets, codes), _indicator(pred_sets, codes)
        # multilabel_confusion_matrix: [[tn, fp], [fn, tp]] per column; the last column is the empty one
        false_pos = multilabel_confusion_matrix(y_true, y_pred)[:-1, 0, 1].tolist()
        if positive.size:
            y_true, y_pred = y_true[positive], y_pred[positive]
            precision, recall, f1, _ = precision_recall_fscore_support(y_true, y_pred, average="micro", zero_division=0)
            per_code = multilabel_confusion_matrix(y_true, y_pred)[:-1, 1]  # [fn, tp] per code
            misses, support = per_code[:, 0].tolist(), per_code.sum(axis=1).tolist()
    return {
        "category_precision": float(precision),
        "category_recall": float(recall),
        "category_f1": float(f1),
        "false_negative_rates": {c: _ratio(m, s) for c, m, s in zip(codes, misses, support) if s},
        "false_positives": dict(zip(codes, false_pos)),
        "category_support": dict(zip(codes, support)),
    }


def _features(config_name: str) -> datasets.Features:
    base = {"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}
    if config_name == "categories":
        strings = datasets.List(datasets.Value("string"))
        base |= {"predicted_categories": strings, "reference_categories": strings}
    return datasets.Features(base)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class GuardrailMetrics(evaluate.Metric):
    """The ``evaluate`` face of :func:`binary_metrics` and :func:`category_metrics`."""

    def _info(self) -> evaluate.MetricInfo:
        if self.config_name not in ("default", "binary", "categories"):
            raise ValueError(f"Expected the config 'binary' or 'categories', found {self.config_name!r}.")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=_features(self.config_name),
        )

    def _compute(self, predictions, references, predicted_categories=None, reference_categories=None):
        result = binary_metrics(predictions, references)
        if self.config_name == "categories":
            result |= category_metrics(predictions, references, predicted_categories, reference_categories)
        return result
