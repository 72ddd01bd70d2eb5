"""Choose the decision threshold on the validation split, with the inference code itself.

The trained model is wrapped in :class:`hf_barred.guardrails.guardrail.Guardrail` (so the scores are exactly
those a user gets, chunked long inputs included) and scored on the validation rows; the threshold is
the one with the highest F1 (``--threshold_for f1``) or the lowest one whose false-positive rate stays
within ``--target_fpr`` (``--threshold_for fpr``). Without a validation split the configured
``--threshold`` stays, and the card says so.

Example:
    >>> from hf_barred.train.calibrate import choose_threshold
    >>> choose_threshold([0.1, 0.4, 0.35, 0.8, 0.9, 0.7], [0, 0, 1, 1, 1, 0], "f1", target_fpr=0.05)
    (0.8, 'max F1 on 6 validation rows')
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional

from ..evaluation.metrics.calibration import calibration_summary, threshold_for_f1, threshold_for_fpr
from ..evaluation.metrics.guardrail_metrics import binary_metrics

if TYPE_CHECKING:
    from datasets import Dataset

    from ..guardrails.spec import GuardrailSpec
    from .args import GuardrailTrainingArguments


def choose_threshold(scores: Sequence[float], labels: Sequence[int], how: str, target_fpr: float) -> tuple[float, str]:
    """``(threshold, how it was chosen)`` for ``how`` in ``f1`` / ``fpr``."""
    if how == "fpr":
        return threshold_for_fpr(scores, labels, target_fpr), f"FPR <= {target_fpr:g} on {len(scores)} validation rows"
    return threshold_for_f1(scores, labels), f"max F1 on {len(scores)} validation rows"


def validation_report(
    model: Any, tokenizer: Any, spec: GuardrailSpec, validation: Optional[Dataset], args: GuardrailTrainingArguments
) -> dict[str, Any]:
    """``{"threshold", "source", "metrics"}``: metrics on the validation rows at the chosen threshold."""
    if validation is None or len(validation) == 0:
        return {"threshold": args.threshold, "source": "fixed (no validation split to calibrate on)", "metrics": {}}
    from ..guardrails.guardrail import Guardrail

    guard = Guardrail(model, tokenizer, spec)
    scores = guard.scores(
        list(validation["text"]),
        list(validation["rule"]),
        list(validation["taxonomy"]),
        list(validation["task"]),
        batch_size=args.per_device_eval_batch_size,
    )
    labels = [int(v) for v in validation["label"]]
    if args.threshold_for == "fixed":
        threshold, source = args.threshold, "fixed"
    else:
        threshold, source = choose_threshold(scores, labels, args.threshold_for, args.target_fpr)
    metrics = binary_metrics([int(s >= threshold) for s in scores], labels)
    summary = calibration_summary(scores, labels, threshold)
    keep = {k: metrics[k] for k in ("accuracy", "precision", "recall", "f1", "n")}
    return {
        "threshold": threshold,
        "source": source,
        "metrics": keep | {k: summary[k] for k in ("ece", "average_precision", "false_positive_rate")},
    }
