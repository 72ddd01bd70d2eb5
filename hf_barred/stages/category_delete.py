"""Category deletion (APT): remove k ~ U{1..min(max_deleted, n-1)} categories from each row's policy.

A positive row keeps at least one of its violated categories (one of them, drawn at random, is
protected from deletion) and stays positive with its remaining violated codes; a negative row
stays negative. The remaining categories are re-indexed S1..Sm and the codes remapped. A row
whose policy has a single category is left as it is (``perturbation`` unchanged).

Randomness is per row, from ``(config.seed, stage, text, policy text)`` (:class:`~hf_barred.rowrandom.RowRandom`):
the same seed gives the same dataset whatever the batch size, ``num_proc`` or row order. The
stage is pure Python over Arrow; each distinct policy text is parsed once and each distinct
(policy, deletion) rendered once (both cached), so it runs at tens of thousands of rows per second.

Example:
    >>> from datasets import Dataset
    >>> from hf_barred.policy.rows import policy_rows
    >>> from hf_barred.stages.category_delete import CategoryDeleteConfig, category_delete
    >>> from hf_barred.policy.taxonomy import Category, Taxonomy
    >>> taxonomy = Taxonomy(tuple(Category(name) for name in ("Violence", "Fraud", "Privacy", "Hate")))
    >>> ds = policy_rows(["What is my neighbour's home address?", "How do I bake bread?"], taxonomy,
    ...                  labels=["unsafe", "safe"], categories=[["S3"], []])
    >>> out = category_delete(ds, CategoryDeleteConfig(seed=1))
    >>> row = out[0]
    >>> row["label"], row["perturbation"], row["deleted_codes"], row["source_codes"], row["categories"]
    (1, 'category_delete', ['S1', 'S2'], ['S3', 'S4'], ['S1'])
    >>> print(row["taxonomy"])
    S1: Privacy.
    <BLANKLINE>
    S2: Hate.
    >>> out[1]["label"], out[1]["categories"], out[1]["deleted_codes"]
    (0, [], ['S4'])
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from typing import Any

from datasets import Dataset

from ..policy.rows import check_row_codes, lineage_column, missing_lineage, select_policy_text
from ..policy.taxonomy import Taxonomy, TaxonomyTextError, remap_codes
from ..rowrandom import RowRandom
from .base import map_policy_stage

STAGE = "category_delete"
VERSION = "1"
EDITED = frozenset({"guideline_edit_existing", "guideline_edit_new"})


@dataclass(frozen=True)
class CategoryDeleteConfig:
    """Parameters of category deletion.

    Parameters:
        seed: Seed of the per-row draws (same seed, same dataset).
        max_deleted: Upper bound of k; k ~ U{1..min(max_deleted, n-1)} for a policy of n categories.
        skip_edited: Leave rows that a guideline edit already perturbed unchanged (``augment`` sets
            it, so negatives with an edit are not also deleted from).
    """

    seed: int = field(default=0, metadata={"help": "Seed of the per-row draws (same seed, same dataset)."})
    max_deleted: int = field(
        default=5, metadata={"help": "At most this many categories are deleted: k ~ U{1..min(max_deleted, n-1)}."}
    )
    skip_edited: bool = field(
        default=False, metadata={"help": "Leave rows already perturbed by a guideline edit unchanged."}
    )

    def __post_init__(self) -> None:
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"CategoryDeleteConfig.seed: expected an integer >= 0, found {self.seed!r}.")
        if not isinstance(self.max_deleted, int) or self.max_deleted < 1:
            raise ValueError(f"CategoryDeleteConfig.max_deleted: expected an integer >= 1, found {self.max_deleted!r}.")


@functools.lru_cache(maxsize=4096)
def _policy_codes(text: str) -> tuple[tuple[str, ...], dict[str, int], str]:
    """The codes of a policy text, each code's position, and a digest of the text that keys the
    per-row draws (cached per distinct text, so a 3 kB policy is hashed once, not once per row)."""
    codes = Taxonomy.parse(text).codes
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
    return codes, {code: i for i, code in enumerate(codes)}, digest


def row_policy(stage: str, policy: str, codes: list[str], row: str) -> tuple[tuple[str, ...], dict[str, int], str]:
    """:func:`_policy_codes` of a row's policy, after checking that the row's violated codes are among them."""
    try:
        all_codes, position, digest = _policy_codes(policy)
    except TaxonomyTextError as err:
        raise ValueError(f"{stage}: row {row}: the 'taxonomy' column is not S-coded policy text: {err}") from None
    if any(c not in position for c in codes):
        check_row_codes(codes, len(all_codes), row)
    return all_codes, position, digest


def _delete_batch(
    batch: dict[str, list], config: CategoryDeleteConfig, prompts: tuple, version: str
) -> dict[str, list]:
    texts, policies, labels, categories = batch["text"], batch["taxonomy"], batch["label"], batch["categories"]
    n = len(texts)
    ids = batch["id"] if "id" in batch else None
    perturbation = lineage_column(batch, "perturbation", n)
    deleted_codes = lineage_column(batch, "deleted_codes", n)
    source_codes = lineage_column(batch, "source_codes", n)
    out_policies = list(policies)
    out_categories = list(categories)
    for i in range(n):
        if config.skip_edited and perturbation[i] in EDITED:
            continue
        policy, codes = policies[i], categories[i]
        row = ids[i] if ids else "?"
        all_codes, position, digest = row_policy(STAGE, policy, codes, row)
        if len(all_codes) < 2:
            continue  # nothing can be deleted
        rng = RowRandom(config.seed, STAGE, texts[i], digest)
        k = 1 + rng.below(min(config.max_deleted, len(all_codes) - 1))
        if labels[i] == 1:
            if not codes:
                raise ValueError(
                    f"{STAGE}: row {row} is unsafe but has no violated categories: expected at least one code in "
                    "'categories'. Fix the row (hf_barred.policy.rows.load_policy_rows checks this)."
                )
            protected = codes[rng.below(len(codes))] if len(codes) > 1 else codes[0]
            doomed = set(rng.sample([c for c in all_codes if c != protected], k))
        else:
            doomed = set(rng.sample(all_codes, k))
        remaining = tuple(c for c in all_codes if c not in doomed)
        out_policies[i], code_map = select_policy_text(policy, remaining)
        out_categories[i] = remap_codes(codes, code_map)
        sources = source_codes[i] or all_codes  # codes of the original policy
        deleted_codes[i] = deleted_codes[i] + [sources[position[c]] for c in all_codes if c in doomed]
        source_codes[i] = [sources[position[c]] for c in remaining]
        perturbation[i] = "category_delete"
    out = {
        "taxonomy": out_policies,
        "categories": out_categories,
        "perturbation": perturbation,
        "deleted_codes": deleted_codes,
        "source_codes": source_codes,
    }
    return out | missing_lineage(batch, n, out)


def category_delete(ds: Dataset, config: CategoryDeleteConfig = CategoryDeleteConfig(), **map_kwargs: Any) -> Dataset:
    """Delete categories from each row's policy (see the module docstring).

    ``ds`` holds policy-conditioned rows (:data:`hf_barred.policy.rows.POLICY_FEATURES`; extra columns are
    kept). ``map_kwargs`` go to :meth:`datasets.Dataset.map` (``batch_size`` defaults to 1000 here:
    the work per row is small).
    """
    return map_policy_stage(
        ds, _delete_batch, stage=STAGE, version=VERSION, config=config, map_kwargs={"batch_size": 1000} | map_kwargs
    )
