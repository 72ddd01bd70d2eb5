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

from typing import Any, Optional, Sequence

import datasets
import evaluate

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


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def _parsed(value: Any) -> Optional[int]:
    return int(value) if value is not None and int(value) in (0, 1) else None


def binary_metrics(predictions: Sequence[Optional[int]], references: Sequence[int]) -> dict[str, Any]:
    """Accuracy, P/R/F1 (positive = 1), confusion counts and unparseable counts."""
    if len(predictions) != len(references):
        raise ValueError(f"Expected as many predictions as references, found {len(predictions)} and {len(references)}.")
    tp = fp = tn = fn = 0
    unparsed = [0, 0]
    for pred, ref in zip(predictions, references):
        ref, pred = int(ref), _parsed(pred)
        if pred is None:
            unparsed[ref] += 1
        elif pred == 1:
            tp, fp = tp + ref, fp + (1 - ref)
        else:
            fn, tn = fn + ref, tn + (1 - ref)
    n = len(references)
    precision = _ratio(tp, tp + fp + unparsed[0])
    recall = _ratio(tp, tp + fn + unparsed[1])
    return {
        "accuracy": _ratio(tp + tn, n),
        "precision": precision,
        "recall": recall,
        "f1": _f1(precision, recall),
        "n": n,
        "unparseable": sum(unparsed),
        "unparseable_rate": _ratio(sum(unparsed), n),
        "parsed_accuracy": _ratio(tp + tn, n - sum(unparsed)),
        "confusion_matrix": [[tn, fp], [fn, tp]],
        "unparseable_by_reference": unparsed,
    }


def _code_key(code: str) -> tuple[int, str]:
    digits = "".join(ch for ch in code if ch.isdigit())
    return (int(digits) if digits else 10**9, code)


def category_metrics(predictions: Sequence[Optional[int]], references: Sequence[int],
                     predicted_categories: Sequence[Sequence[str]],
                     reference_categories: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Micro P/R/F1 of category sets on positive rows (reference 1); per-category false-negative
    rate (over positive rows having the code) and false-positive count (over all rows)."""
    if not len(predictions) == len(references) == len(predicted_categories) == len(reference_categories):
        raise ValueError("Expected predictions, references, predicted_categories and reference_categories of one length.")
    tp = fp = fn = 0
    codes: set[str] = set()
    support: dict[str, int] = {}
    misses: dict[str, int] = {}
    false_pos: dict[str, int] = {}
    for pred, ref, pcats, rcats in zip(predictions, references, predicted_categories, reference_categories):
        pset = set(pcats or []) if _parsed(pred) is not None else set()
        rset = set(rcats or [])
        codes |= pset | rset
        for code in pset - rset:
            false_pos[code] = false_pos.get(code, 0) + 1
        if int(ref) != 1:
            continue
        tp, fp, fn = tp + len(pset & rset), fp + len(pset - rset), fn + len(rset - pset)
        for code in rset:
            support[code] = support.get(code, 0) + 1
            misses[code] = misses.get(code, 0) + (code not in pset)
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    ordered = sorted(codes, key=_code_key)
    return {
        "category_precision": precision,
        "category_recall": recall,
        "category_f1": _f1(precision, recall),
        "false_negative_rates": {c: _ratio(misses[c], support[c]) for c in ordered if support.get(c)},
        "false_positives": {c: false_pos.get(c, 0) for c in ordered},
        "category_support": {c: support.get(c, 0) for c in ordered},
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
