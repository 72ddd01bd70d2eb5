"""Labelled data in the canonical columns ``text, label (0/1), rule, task, taxonomy, categories``.

A dataset from ``barred generate``, a CSV of human labels or a Hub dataset is brought to those
columns (:func:`normalize_dataset`) for training (:mod:`hf_barred.train`) and for evaluation
(:mod:`hf_barred.evaluation.evaluate`); :class:`ColumnMapping` says which columns and labels to read.

Example:
    >>> from datasets import Dataset
    >>> from hf_barred.guardrails.columns import ColumnMapping, normalize_dataset
    >>> ds = Dataset.from_dict({"prompt": ["How do I kill a process?", "How do I kill a man?"],
    ...                         "label": ["safe", "unsafe"]})
    >>> norm, info = normalize_dataset(ds, ColumnMapping(rule="The request is harmful."))
    >>> list(norm["label"]), info.label_names, norm["rule"][0]
    ([0, 1], ['safe', 'unsafe'], 'The request is harmful.')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, cast

from ..policy.data import label_index
from ..policy.taxonomy import sort_codes
from .formats import format_task

if TYPE_CHECKING:
    from datasets import Dataset

TEXT_COLUMNS = ("text", "input", "prompt", "transcript", "message", "sample", "content")
LABEL_COLUMNS = ("label", "labels", "predicate_label", "target_label", "unsafe", "is_unsafe")
RULE_COLUMNS = ("rule", "criterion", "predicate")
TASK_COLUMNS = ("task",)
TAXONOMY_COLUMNS = ("taxonomy", "policy")
CATEGORY_COLUMNS = ("categories", "violated_categories", "safety_categories")
CANONICAL = ("text", "label", "rule", "task", "taxonomy", "categories")

POSITIVE_VALUES = ("1", "true", "yes", "unsafe", "violation", "violating", "harmful", "flagged", "positive")
NEGATIVE_VALUES = ("0", "false", "no", "safe", "non-violation", "harmless", "unharmful", "benign", "negative")


@dataclass
class ColumnMapping:
    """Where the data's columns and labels are (``None`` = detected by name), and the rule or taxonomy
    to use when the data has no such column. ``prompt_format``: a format name, or ``auto`` (``policy``
    when a taxonomy is given)."""

    text_column: Optional[str] = None
    label_column: Optional[str] = None
    rule_column: Optional[str] = None
    task_column: Optional[str] = None
    taxonomy_column: Optional[str] = None
    categories_column: Optional[str] = None
    positive_label: Optional[str] = None
    class_names: Optional[list[str]] = None
    rule: Optional[str] = None
    taxonomy: Optional[str] = None
    prompt_format: str = "auto"

    def resolved_prompt_format(self, has_taxonomy_column: bool = False) -> str:
        if self.prompt_format != "auto":
            return self.prompt_format
        return "policy" if (self.taxonomy or has_taxonomy_column or self.taxonomy_column) else "a4"


def data_method(column_names: Sequence[str]) -> str:
    """How a training set was made, from its lineage columns: ``barred``, ``apt`` or ``labelled``.

    >>> data_method(["text", "label", "debate", "debate_path"]), data_method(["text", "label"])
    ('barred', 'labelled')
    """
    if "perturbation" in column_names:
        return "apt"
    if "debate" in column_names or "debate_path" in column_names:
        return "barred"
    return "labelled"


@dataclass
class DataInfo:
    """What :func:`normalize_dataset` found: label names ``[negative, positive]``, distinct rules."""

    label_names: list[str]
    rules: list[str] = field(default_factory=list)
    columns: dict[str, Optional[str]] = field(default_factory=dict)


def _pick(
    columns: Sequence[str], wanted: Optional[str], candidates: Sequence[str], what: str, required: bool
) -> Optional[str]:
    if wanted:
        if wanted not in columns:
            raise ValueError(
                f"Expected the dataset to have the {what} column {wanted!r}, but only {list(columns)} "
                f"were found. Fix: pass --{what}_column with one of them."
            )
        return wanted
    for name in candidates:
        if name in columns:
            return name
    if required:
        raise ValueError(
            f"Expected the dataset to have a {what} column (one of {list(candidates)}), but only "
            f"{list(columns)} were found. Fix: pass --{what}_column NAME."
        )
    return None


def label_mapping(values: Sequence[Any], positive_label: Optional[str] = None) -> tuple[dict[str, int], list[str]]:
    """Map raw label values (as strings) to 0/1 and name the classes ``[negative, positive]``.

    Without ``positive_label`` the values must be recognisable (``1/0``, ``true/false``,
    ``unsafe/safe``, ``yes/no``, ...).

    >>> label_mapping(["safe", "unsafe", "safe"])
    ({'safe': 0, 'unsafe': 1}, ['safe', 'unsafe'])
    >>> label_mapping([True, False])
    ({'False': 0, 'True': 1}, ['False', 'True'])
    >>> sorted(label_mapping(["PASS", "FAIL"], positive_label="FAIL")[0].items())
    [('FAIL', 1), ('PASS', 0)]
    """
    raw = sorted({str(v) for v in values if v is not None})
    if len(raw) > 2:
        raise ValueError(
            f"Expected a binary label with two values, found {len(raw)}: {raw[:10]}. "
            "Fix: pass --label_column with a binary column, or map the labels first."
        )
    if positive_label is not None:
        if raw and str(positive_label).lower() not in {v.lower() for v in raw}:
            raise ValueError(
                f"positive_label {positive_label!r} is not among the label values {raw}. "
                "Fix: pass one of them as --positive_label."
            )
        mapping = {v: int(label_index(v, (), (positive_label,)) == 1) for v in raw}
    else:
        mapping = {}
        for v in raw:
            index = label_index(v.removesuffix(".0"), NEGATIVE_VALUES, POSITIVE_VALUES)
            if index is None:
                raise ValueError(
                    f"Cannot tell which label value means 'the rule applies': found {raw}, expected values such as "
                    f"{POSITIVE_VALUES[:4]} / {NEGATIVE_VALUES[:4]}. "
                    "Fix: pass --positive_label with the positive value."
                )
            mapping[v] = index
        if len(set(mapping.values())) < len(mapping):
            raise ValueError(f"The label values {raw} all mean the same class. Fix: pass --positive_label.")
    if all(v.removesuffix(".0") in ("0", "1") for v in raw):
        return mapping, ["0", "1"]
    names = {c: v for v, c in mapping.items()}
    if 0 not in names:
        names[0] = f"not {names[1]}"
    if 1 not in names:
        names[1] = str(positive_label) if positive_label else f"not {names[0]}"
    return mapping, [names[0], names[1]]


def _categories(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return sort_codes([part for part in value.replace(";", ",").split(",") if part.strip()])
    return sort_codes([str(v) for v in value])


def _normalize_rows(
    batch: dict[str, list],
    columns: dict[str, Optional[str]],
    mapping: dict[str, int],
    class_names: Optional[list[str]],
    rule: Optional[str],
    taxonomy: Optional[str],
) -> dict[str, list]:
    text_column = cast(str, columns["text"])  # picked with required=True: never None
    n = len(batch[text_column])
    out: dict[str, list] = {"text": [str(t) for t in batch[text_column]]}
    if columns["label"]:
        values = [class_names[v] if class_names and v is not None else v for v in batch[columns["label"]]]
        out["label"] = [mapping[str(v)] if v is not None else None for v in values]
    else:
        out["label"] = [None] * n
    out["rule"] = [str(r) for r in batch[columns["rule"]]] if columns["rule"] else [rule] * n
    out["task"] = [t if t else None for t in batch[columns["task"]]] if columns["task"] else [None] * n
    out["taxonomy"] = list(batch[columns["taxonomy"]]) if columns["taxonomy"] else [taxonomy] * n
    out["categories"] = (
        [_categories(v) for v in batch[columns["categories"]]] if columns["categories"] else [[] for _ in range(n)]
    )
    return out


def normalize_dataset(
    ds: Dataset, config: ColumnMapping, require_labels: bool = True, label_names: Optional[list[str]] = None
) -> tuple[Dataset, DataInfo]:
    """Bring ``ds`` to the columns ``text, label (0/1), rule, task, taxonomy, categories``.

    Columns are found by name (``text``/``prompt``/``transcript``..., ``label``/``predicate_label``...,
    ``criterion``/``rule``/``predicate``...) unless the config names them; the rule and taxonomy come
    from the config when the data has no such column. ``label_names`` (from a trained guardrail)
    fixes which raw value is positive.
    """
    from datasets import ClassLabel, Features, List, Value

    names = list(ds.column_names)
    columns = {
        "text": _pick(names, config.text_column, TEXT_COLUMNS, "text", required=True),
        "label": _pick(names, config.label_column, LABEL_COLUMNS, "label", required=require_labels),
        "rule": _pick(names, config.rule_column, RULE_COLUMNS, "rule", required=False),
        "task": _pick(names, config.task_column, TASK_COLUMNS, "task", required=False),
        "taxonomy": _pick(names, config.taxonomy_column, TAXONOMY_COLUMNS, "taxonomy", required=False),
        "categories": _pick(names, config.categories_column, CATEGORY_COLUMNS, "categories", required=False),
    }
    mapping: dict[str, int] = {}
    class_names: Optional[list[str]] = None
    found_names = list(config.class_names or label_names or [])
    if columns["label"]:
        values = ds.unique(columns["label"])
        feature = ds.features[columns["label"]]
        positive = config.positive_label
        if isinstance(feature, ClassLabel) and feature.num_classes == 2:  # schema order: [negative, positive]
            class_names = list(feature.names)
            values = [feature.int2str(v) if v is not None else None for v in values]
            positive = positive or class_names[1]
        elif positive is None and label_names and {str(v) for v in values if v is not None} <= set(label_names):
            positive = label_names[1]
        mapping, derived = label_mapping(values, positive)
        found_names = found_names or class_names or derived
        if require_labels and None in values:
            raise ValueError(f"The label column {columns['label']!r} has empty values. Fix: drop those rows first.")
    fmt = config.resolved_prompt_format(has_taxonomy_column=columns["taxonomy"] is not None)
    if format_task(fmt) == "binary" and not columns["rule"] and not config.rule:
        raise ValueError(
            f"The binary format needs a rule: expected a rule column (one of {list(RULE_COLUMNS)}) or "
            f'--rule, found neither in {names}. Fix: pass --rule "...".'
        )
    if format_task(fmt) == "policy" and not columns["taxonomy"] and not config.taxonomy:
        raise ValueError(
            f"The policy format needs a taxonomy: expected a taxonomy column or --taxonomy, found "
            f"neither in {names}. Fix: pass --taxonomy FILE."
        )
    features = Features(
        {
            "text": Value("string"),
            "label": Value("int64"),
            "rule": Value("string"),
            "task": Value("string"),
            "taxonomy": Value("string"),
            "categories": List(Value("string")),
        }
    )
    out = ds.map(
        _normalize_rows,
        batched=True,
        remove_columns=names,
        features=features,
        fn_kwargs={
            "columns": columns,
            "mapping": mapping,
            "class_names": class_names,
            "rule": config.rule,
            "taxonomy": config.taxonomy,
        },
        desc="Normalising columns",
    )
    rules = sorted(set(out["rule"]) - {None})
    default_names = ["safe", "unsafe"] if format_task(fmt) == "policy" else ["0", "1"]
    return out, DataInfo(label_names=found_names or default_names, rules=rules, columns=columns)
