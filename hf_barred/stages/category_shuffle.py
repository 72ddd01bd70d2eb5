"""Category shuffling (APT ablation): permute the categories of each row's policy and remap the codes.

Labels do not change; only the positions (and so the codes) of the categories do. Randomness is
per row, from ``(config.seed, text, policy text)``, as in category deletion. A policy with a
single category is left as it is.

Example:
    >>> from hf_barred.policy.rows import policy_rows
    >>> from hf_barred.stages.category_shuffle import CategoryShuffleConfig, category_shuffle
    >>> from hf_barred.policy.taxonomy import Category, Taxonomy
    >>> taxonomy = Taxonomy(tuple(Category(name) for name in ("Violence", "Fraud", "Privacy", "Hate")))
    >>> ds = policy_rows(["How do I hurt someone?"], taxonomy, labels=["unsafe"], categories=[["S1"]])
    >>> row = category_shuffle(ds, CategoryShuffleConfig(seed=2))[0]
    >>> row["perturbation"], row["source_codes"], row["categories"]
    ('category_shuffle', ['S4', 'S3', 'S1', 'S2'], ['S3'])
    >>> row["taxonomy"].splitlines()[-1]
    'S4: Fraud.'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from datasets import Dataset

from ..policy.rows import lineage_column, missing_lineage, select_policy_text
from ..policy.taxonomy import remap_codes
from ..rowrandom import RowRandom
from .base import map_policy_stage
from .category_delete import row_policy

STAGE = "category_shuffle"
VERSION = "1"


@dataclass(frozen=True)
class CategoryShuffleConfig:
    """Parameters of category shuffling.

    Parameters:
        seed: Seed of the per-row permutations (same seed, same dataset).
    """

    seed: int = field(default=0, metadata={"help": "Seed of the per-row permutations (same seed, same dataset)."})

    def __post_init__(self) -> None:
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"CategoryShuffleConfig.seed: expected an integer >= 0, found {self.seed!r}.")


def _shuffle_batch(
    batch: dict[str, list], config: CategoryShuffleConfig, prompts: tuple, version: str
) -> dict[str, list]:
    texts, policies, categories = batch["text"], batch["taxonomy"], batch["categories"]
    n = len(texts)
    ids = batch["id"] if "id" in batch else None
    perturbation = lineage_column(batch, "perturbation", n)
    source_codes = lineage_column(batch, "source_codes", n)
    out_policies = list(policies)
    out_categories = list(categories)
    for i in range(n):
        policy, codes = policies[i], categories[i]
        row = ids[i] if ids else "?"
        all_codes, position, digest = row_policy(STAGE, policy, codes, row)
        if len(all_codes) < 2:
            continue
        order = list(all_codes)
        RowRandom(config.seed, STAGE, texts[i], digest).shuffle(order)
        out_policies[i], code_map = select_policy_text(policy, tuple(order))
        out_categories[i] = remap_codes(codes, code_map)
        sources = source_codes[i] or all_codes
        source_codes[i] = [sources[position[c]] for c in order]
        perturbation[i] = "category_shuffle"
    out = {
        "taxonomy": out_policies,
        "categories": out_categories,
        "perturbation": perturbation,
        "source_codes": source_codes,
    }
    return out | missing_lineage(batch, n, out)


def category_shuffle(
    ds: Dataset, config: CategoryShuffleConfig = CategoryShuffleConfig(), **map_kwargs: Any
) -> Dataset:
    """Permute the categories of each row's policy (see the module docstring); ``map_kwargs`` go to
    :meth:`datasets.Dataset.map` (``batch_size`` defaults to 1000)."""
    return map_policy_stage(
        ds, _shuffle_batch, stage=STAGE, version=VERSION, config=config, map_kwargs={"batch_size": 1000} | map_kwargs
    )
