"""APT (Augmented Policy Training) as a recipe: the original rows plus one perturbed copy of each.

Positives get a category deletion and negatives get an LLM guideline edit when the LLM gives one,
else a deletion. :func:`augment` returns the dataset and the statistics of what was done.

Example:
    >>> from hf_barred.policy.rows import policy_rows
    >>> from hf_barred.recipes.apt import AugmentConfig, augment
    >>> from hf_barred.policy.taxonomy import Category, Taxonomy
    >>> taxonomy = Taxonomy(tuple(Category(n, should_not=(f"Help with {n.lower()}.",))
    ...                           for n in ("Violence", "Fraud", "Privacy", "Hate")))
    >>> ds = policy_rows(["How do I hurt someone?", "How do I bake bread?"], taxonomy,
    ...                  labels=["unsafe", "safe"], categories=[["S1"], []])
    >>> out, stats = augment(ds, AugmentConfig(guideline_edit=None))   # deletion only: no LLM
    >>> len(out), stats["deleted_from"], out[2]["label"], out[2]["categories"]
    (4, 2, 1, ['S1'])
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from datasets import Dataset, concatenate_datasets

from ..policy.rows import LABEL_NAMES, POLICY_FEATURES, check_policy_rows, missing_lineage, policy_features
from ..stages.category_delete import CategoryDeleteConfig, category_delete
from ..stages.fingerprint import config_identity
from ..stages.guideline_edit import GuidelineEditConfig, guideline_edit
from .barred.failures import AnswersUnusable

__all__ = ["AugmentConfig", "augment", "augment_statistics", "save_augmented"]


@dataclass(frozen=True)
class AugmentConfig:
    """The APT recipe: original rows plus one perturbed copy of each (2x rows).

    Parameters:
        category_delete: How categories are deleted (seed, maximum number deleted); applied to
            positives and to negatives without a usable guideline edit.
        guideline_edit: How negatives are edited by an LLM (engine, prompt, sampling); None
            deletes categories of every row and calls no LLM.
        max_failure_rate: The share of edits that may be unusable (failed requests, answers that do not
            parse or cannot be applied); above it :func:`augment` stops (:class:`AnswersUnusable`).

    >>> AugmentConfig(guideline_edit=None).category_delete.max_deleted
    5
    """

    category_delete: CategoryDeleteConfig = field(
        default_factory=CategoryDeleteConfig, metadata={"help": "CategoryDeleteConfig: seed, max_deleted."}
    )
    guideline_edit: Optional[GuidelineEditConfig] = field(
        default_factory=GuidelineEditConfig,
        metadata={"help": "GuidelineEditConfig (default: the embedded local model); None: deletion only, no LLM."},
    )
    max_failure_rate: float = field(
        default=0.5,
        metadata={"help": "Stop when more than this share of the guideline edits asked for could not be used."},
    )

    def __post_init__(self) -> None:
        if not isinstance(self.category_delete, CategoryDeleteConfig):
            raise TypeError(
                f"AugmentConfig.category_delete: expected a CategoryDeleteConfig, found {self.category_delete!r}."
            )
        if self.guideline_edit is not None and not isinstance(self.guideline_edit, GuidelineEditConfig):
            raise TypeError(
                f"AugmentConfig.guideline_edit: expected a GuidelineEditConfig or None, found {self.guideline_edit!r}."
            )


def augment(ds: Dataset, config: Optional[AugmentConfig] = None, **map_kwargs: Any) -> tuple[Dataset, dict[str, Any]]:
    """The APT recipe: ``ds`` followed by one perturbed copy of each row, and the statistics.

    Positives get a category deletion. Negatives get a guideline edit where the LLM gives one
    (``guideline_edit_existing`` / ``guideline_edit_new``: they become positives); where it keeps
    the row safe, or its answer could not be used, they get a deletion instead (the ``edit_*``
    columns still say what the LLM answered). ``map_kwargs`` (``batch_size``, ``num_proc``, ...)
    go to every stage. See :func:`augment_statistics` for the statistics (the hook for a card).
    """
    config = config or AugmentConfig()
    check_policy_rows(ds, "augment")
    original = _with_lineage(ds)
    perturbed = original
    if config.guideline_edit is not None:
        perturbed = guideline_edit(perturbed, config.guideline_edit, **map_kwargs)
        check_edits(perturbed, config)
    delete_config = dataclasses.replace(config.category_delete, skip_edited=True)
    perturbed = category_delete(perturbed, delete_config, **map_kwargs)
    out = concatenate_datasets([original, perturbed])
    return out, augment_statistics(out, n_original=len(original), config=config)


def check_edits(ds: Dataset, config: AugmentConfig) -> None:
    """Stop (:class:`AnswersUnusable`, exit code 1) when more than ``max_failure_rate`` of the edits asked for
    (the negative rows) could not be used: a model that does not follow the edit schema would only produce
    category deletions, at the price of an LLM call each."""
    asked = [row for row in ds.select_columns(["edit_prompt", "edit_error", "edit_raw"]) if row["edit_prompt"]]
    failed = [row for row in asked if row["edit_error"]]
    if asked and len(failed) / len(asked) > config.max_failure_rate:
        raw = " ".join((failed[0]["edit_raw"] or "").split())[:120]
        raise AnswersUnusable(
            f"guideline_edit: {len(failed)} of {len(asked)} edits ({len(failed) / len(asked):.0%}) could not be "
            f"used ({failed[0]['edit_error'].splitlines()[0][:200]}), more than --max-failure-rate "
            f"{config.max_failure_rate:g} allows; nothing was written. One answer: {raw!r}. Fix: check --model, "
            "raise --max-tokens, or try --prompt-set served (answers are cached: the same command resumes)."
        )


def _with_lineage(ds: Dataset) -> Dataset:
    """``ds`` with every policy column present (defaults for missing lineage columns)."""
    if all(name in ds.column_names for name in POLICY_FEATURES) and ds.features["label"] == POLICY_FEATURES["label"]:
        return ds

    def fill(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        out = missing_lineage(batch, len(indices), ())
        if "id" in out:  # the row index, so that each perturbed copy points to its original
            out["id"] = [str(i) for i in indices]
        return out

    return ds.map(fill, batched=True, with_indices=True, features=policy_features(ds.features), desc="lineage columns")


def augment_statistics(ds: Dataset, n_original: int, config: Optional[AugmentConfig] = None) -> dict[str, Any]:
    """What :func:`augment` did, from the augmented dataset's columns (the perturbed half is
    ``ds[n_original:]``).

    Keys: ``rows_original``, ``rows_total``, ``deleted_from`` (copies made by deletion; split
    into ``deleted_from_positive`` / ``deleted_from_negative``), ``edited_existing``,
    ``new_category``, ``kept_safe`` (the LLM kept the row safe; its copy got a deletion),
    ``edit_failures`` (no usable edit; the copy got a deletion), ``unperturbed`` (copies equal to
    their original: a policy with one category), ``labels_original``, ``labels_augmented``,
    ``perturbations``, ``edit_prompt_tokens``, ``edit_completion_tokens``, ``config``.
    """
    columns = ds.select_columns(
        ["label", "perturbation", "edit_kind", "edit_error", "edit_prompt_tokens", "edit_completion_tokens"]
    ).to_dict()
    perturbed = slice(n_original, len(ds))
    perturbation = columns["perturbation"][perturbed]
    labels_before = columns["label"][perturbed]  # a deleted copy has its original's label
    edit_kind = columns["edit_kind"][perturbed]
    edit_error = columns["edit_error"][perturbed]
    deletions = [i for i, p in enumerate(perturbation) if p == "category_delete"]

    def label_counts(values: list[int]) -> dict[str, int]:
        counts = Counter(values)
        return {name: counts.get(i, 0) for i, name in enumerate(LABEL_NAMES)}

    return {
        "rows_original": n_original,
        "rows_total": len(ds),
        "deleted_from": len(deletions),
        "deleted_from_positive": sum(1 for i in deletions if labels_before[i] == 1),
        "deleted_from_negative": sum(1 for i in deletions if labels_before[i] == 0),
        "edited_existing": perturbation.count("guideline_edit_existing"),
        "new_category": perturbation.count("guideline_edit_new"),
        "kept_safe": edit_kind.count("keep_safe"),
        "edit_failures": sum(1 for e in edit_error if e),
        "unperturbed": perturbation.count("none"),
        "perturbations": dict(sorted(Counter(perturbation).items())),
        "labels_original": label_counts(columns["label"][:n_original]),
        "labels_augmented": label_counts(columns["label"]),
        "edit_prompt_tokens": sum(columns["edit_prompt_tokens"][perturbed]),
        "edit_completion_tokens": sum(columns["edit_completion_tokens"][perturbed]),
        "config": config_identity(config) if config is not None else None,
    }


def save_augmented(ds: Dataset, stats: Mapping[str, Any], output: Union[str, Path]) -> Path:
    """Write ``ds`` as a Hub-style folder (``data/train-00000-of-00001.parquet``, so
    ``datasets.load_dataset(output)`` works) and ``stats`` as ``augment_stats.json``; returns the folder.
    A dataset card (README.md) can be written into the same folder from ``stats``."""
    output = Path(output)
    (output / "data").mkdir(parents=True, exist_ok=True)
    for old in (output / "data").glob("train-*.parquet"):
        old.unlink()
    ds.to_parquet(str(output / "data" / "train-00000-of-00001.parquet"))
    (output / "augment_stats.json").write_text(
        json.dumps(dict(stats), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return output
