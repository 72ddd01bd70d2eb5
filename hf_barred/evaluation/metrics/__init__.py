"""Guardrail metrics: an ``evaluate`` module loaded from this package, never from the Hub.

Example:
    >>> from hf_barred.evaluation.metrics import load_metric
    >>> metric = load_metric()
    >>> round(metric.compute(predictions=[1, 0, 1], references=[1, 0, 0])["precision"], 2)
    0.5
    >>> load_metric("categories").compute(predictions=[1], references=[1], predicted_categories=[["S2"]],
    ...                                   reference_categories=[["S2"]])["category_f1"]
    1.0
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

METRIC_FILE = "guardrail_metrics.py"


def metric_path() -> str:
    """Path of the metric module file (for ``evaluate.load(path)``)."""
    return str(Path(__file__).with_name(METRIC_FILE))


def load_metric(config_name: str = "binary", **kwargs: Any) -> Any:
    """``evaluate.load`` of the guardrail metric by path; ``config_name``: ``binary`` or ``categories``.

    Extra keyword arguments go to ``evaluate.load`` (e.g. ``experiment_id``, ``num_process``);
    results are kept in memory unless ``keep_in_memory=False`` is passed.
    """
    import evaluate

    kwargs.setdefault("keep_in_memory", True)
    return evaluate.load(metric_path(), config_name, **kwargs)
