"""The declared ``datasets.Features`` of every stage's rows: BARRED samples and APT policy rows.

A stage's output features are part of its contract: :func:`hf_barred.stages.generate.generate`
always returns :func:`generated_features`, whatever the model answered. Columns shared by several
stages are built by small helpers, so a lineage column has one type everywhere.

Columns common to the sample stages (plan, generate, debate, refine):

- ``row_id`` (int64): position in the run's plan, unique across rounds; ``seed`` (int64): the row's
  sampling seed (rendered into the generation prompt, so equal plans get distinct cached answers).
- ``criterion``, ``input_type``, ``labels`` (the two label names, [negative, positive]).
- ``dimension``, ``instantiation``, ``relevance`` (positive | negative | both): what the row is about.
- ``target`` (ClassLabel of the task's labels): the label y the sample is written for.
- ``seed_example``, ``seed_task``: the unlabelled seed whose style the sample follows.
- ``usage``: cumulative ``calls``, ``prompt_tokens``, ``completion_tokens`` spent on this row.

Example:
    >>> from hf_barred.stages.features import accepted_features
    >>> features = accepted_features(["no_health_advice", "health_advice"])
    >>> features["label"].names
    ['no_health_advice', 'health_advice']
    >>> "debate" in features and "refinements" in features
    True
"""

from __future__ import annotations

from collections.abc import Sequence

from datasets import ClassLabel, Features, List, Value

RELEVANCES = ("positive", "negative", "both")
"""Relevance of an instantiation: makes the criterion hold, not hold, or either."""

DEBATE_PATHS = ("agreement", "persuasion", "consensus_breaking", "disagreement")
"""How a debate ended; see :mod:`hf_barred.stages.debate` for the definitions."""

USAGE = {"calls": Value("int64"), "prompt_tokens": Value("int64"), "completion_tokens": Value("int64")}

JUDGE_ANSWER = {
    "judge": Value("string"),
    "label": Value("string"),
    "confidence": Value("float32"),
    "reasoning": Value("string"),
    "raw": Value("string"),
    "error": Value("string"),
}
DEBATE_ROUND = {
    "round": Value("int32"),
    "judges": List(JUDGE_ANSWER),
    "advocate": Value("string"),
    "advocate_error": Value("string"),
}
INSTANTIATION = {"value": Value("string"), "relevance": Value("string"), "probability": Value("float32")}


def task_features() -> Features:
    """One row per task: the input of :func:`~hf_barred.stages.decompose.extract_dimensions`."""
    return Features(
        {
            "task_name": Value("string"),
            "criterion": Value("string"),
            "labels": List(Value("string")),
            "input_type": Value("string"),
            "seeds": List(Value("string")),
            "seed_tasks": List(Value("string")),
        }
    )


def dimension_features() -> Features:
    """One row per proposed dimension (pooled over seed subsets, near-duplicates merged)."""
    return Features(
        {
            "task_name": Value("string"),
            "criterion": Value("string"),
            "labels": List(Value("string")),
            "dimension": Value("string"),
            "merged": List(Value("string")),
            "subset": Value("int32"),
            "raw": Value("string"),
            "error": Value("string"),
            "usage": USAGE,
        }
    )


def instantiation_features() -> Features:
    """A dimension row plus its verbalized distribution of instantiations."""
    features = dimension_features()
    features["instantiations"] = List(INSTANTIATION)
    features["dropped_instantiations"] = Value("int32")
    return features


def _sample_base(labels: Sequence[str]) -> dict:
    return {
        "row_id": Value("int64"),
        "seed": Value("int64"),
        "criterion": Value("string"),
        "input_type": Value("string"),
        "labels": List(Value("string")),
        "dimension": Value("string"),
        "instantiation": Value("string"),
        "relevance": Value("string"),
        "target": ClassLabel(names=list(labels)),
        "seed_example": Value("string"),
        "seed_task": Value("string"),
    }


def plan_features(labels: Sequence[str]) -> Features:
    """Rows of :func:`~hf_barred.stages.plan.plan` (no LLM)."""
    return Features(_sample_base(labels) | {"usage": USAGE})


def generated_features(labels: Sequence[str]) -> Features:
    """Rows of :func:`~hf_barred.stages.generate.generate` and :func:`~hf_barred.stages.refine.refine`.

    ``text`` (and ``task`` for ``task_and_response``) is the sample; ``believed_label`` is the label
    the generator says its sample gets (served prompt set; "" when it gave none); ``raw``/``error``
    keep an unparseable answer; ``refinements`` counts rewrites; ``previous_texts``, ``dissents`` and
    ``debate_history`` keep each rejected attempt, the dissent that answered it and its debate.
    """
    return Features(
        _sample_base(labels)
        | {
            "text": Value("string"),
            "task": Value("string"),
            "reasoning": Value("string"),
            "believed_label": Value("string"),
            "raw": Value("string"),
            "error": Value("string"),
            "error_stage": Value("string"),
            "refinements": Value("int32"),
            "previous_texts": List(Value("string")),
            "dissents": List(Value("string")),
            "debate_history": List(List(DEBATE_ROUND)),
            "model": Value("string"),
            "prompt_version": Value("string"),
            "usage": USAGE,
        }
    )


def debated_features(labels: Sequence[str]) -> Features:
    """Generated rows plus the debate: every round, the verdict, the path and the dissent."""
    features = generated_features(labels)
    features["debate"] = List(DEBATE_ROUND)
    features["accepted"] = Value("bool")
    features["debate_path"] = Value("string")
    features["dissent"] = Value("string")
    return features


def accepted_features(labels: Sequence[str], input_type: str = "input_block") -> Features:
    """The published sample: what ``load_dataset(DIR)`` returns for both splits.

    ``debate`` is the last debate (one entry per round); ``debate_history`` keeps the debates of
    earlier refinement attempts. ``rejection_reason`` is empty for accepted samples and one of
    ``debate`` (still rejected after the last refinement), ``parse_failure``, ``cut_off`` (the token budget ran
    out before any answer), ``request_failure`` or ``budget``.
    """
    columns: dict = {"text": Value("string")}
    if input_type == "task_and_response":
        columns["task"] = Value("string")
    columns |= {
        "label": ClassLabel(names=list(labels)),
        "reasoning": Value("string"),
        "believed_label": Value("string"),
        "dimension": Value("string"),
        "instantiation": Value("string"),
        "relevance": Value("string"),
        "refinements": Value("int32"),
        "debate": List(DEBATE_ROUND),
        "debate_history": List(List(DEBATE_ROUND)),
        "debate_path": Value("string"),
        "dissent": Value("string"),
        "previous_texts": List(Value("string")),
        "rejection_reason": Value("string"),
        "error": Value("string"),
        "raw": Value("string"),
        "seed_example": Value("string"),
        "row_id": Value("int64"),
        "seed": Value("int64"),
        "model": Value("string"),
        "prompt_version": Value("string"),
        "usage": USAGE,
    }
    return Features(columns)


def decomposition_features() -> Features:
    """The ``decomposition`` config of a generated dataset: dimensions with instantiations."""
    return Features(
        {
            "dimension": Value("string"),
            "merged": List(Value("string")),
            "instantiations": List(INSTANTIATION),
            "error": Value("string"),
            "raw": Value("string"),
        }
    )
