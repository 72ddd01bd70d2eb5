"""APT (Augmented Policy Training): policy-conditioned rows, their loaders, and the ``augment`` recipe.

A *policy-conditioned row* is a user message judged under one S-coded policy (see
:mod:`hf_barred.taxonomy`): ``text``, ``taxonomy`` (the policy text), ``label`` (``safe`` |
``unsafe``) and ``categories`` (the violated codes, empty when safe), plus lineage columns that
say how the row's policy was perturbed (:data:`POLICY_FEATURES`). Every APT stage keeps this
schema, so original and perturbed rows concatenate into one training set.

:func:`augment` is the APT recipe: the original rows plus one perturbed copy of each, where
positives get a category deletion and negatives get an LLM guideline edit when the LLM gives one,
else a deletion. It returns the dataset and the statistics of what was done.

Example:
    >>> from hf_barred.apt import AugmentConfig, augment, policy_rows
    >>> from hf_barred.taxonomy import Category, Taxonomy
    >>> taxonomy = Taxonomy(tuple(Category(n, should_not=(f"Help with {n.lower()}.",))
    ...                           for n in ("Violence", "Fraud", "Privacy", "Hate")))
    >>> ds = policy_rows(["How do I hurt someone?", "How do I bake bread?"], taxonomy,
    ...                  labels=["unsafe", "safe"], categories=[["S1"], []])
    >>> ds.features["label"].names, ds[0]["categories"], ds[0]["perturbation"]
    (['safe', 'unsafe'], ['S1'], 'none')
    >>> out, stats = augment(ds, AugmentConfig(guideline_edit=None))   # deletion only: no LLM
    >>> len(out), stats["deleted_from"], out[2]["label"], out[2]["categories"]
    (4, 2, 1, ['S1'])
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Optional, Sequence, Union

from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Value, concatenate_datasets

from .taxonomy import Taxonomy, TaxonomyTextError, code_number

if TYPE_CHECKING:  # the stages import this module; the recipe imports them when it runs
    from .stages.category_delete import CategoryDeleteConfig
    from .stages.guideline_edit import GuidelineEditConfig

__all__ = [
    "AugmentConfig",
    "EDIT_KINDS",
    "LABEL_NAMES",
    "PERTURBATIONS",
    "POLICY_FEATURES",
    "RowRandom",
    "augment",
    "augment_statistics",
    "load_labelled_data",
    "load_policy_rows",
    "policy_rows",
    "save_augmented",
]

LABEL_NAMES = ("safe", "unsafe")
PERTURBATIONS = (
    "none",
    "category_delete",
    "category_shuffle",
    "guideline_edit_existing",
    "guideline_edit_new",
    "kept_safe",
)
EDIT_KINDS = ("edit_existing", "add_category", "keep_safe")
"""The three answers of the guideline-editing LLM (``edit_kind``; ``""`` when no edit was asked)."""

POLICY_FEATURES = Features(
    {
        "id": Value("string"),
        "text": Value("string"),
        "taxonomy": Value("string"),
        "label": ClassLabel(names=list(LABEL_NAMES)),
        "categories": List(Value("string")),
        # lineage of the policy perturbation
        "perturbation": Value("string"),
        "deleted_codes": List(Value("string")),
        "source_codes": List(Value("string")),
        # lineage of the guideline edit (set by hf_barred.stages.guideline_edit)
        "edit_kind": Value("string"),
        "edited_code": Value("string"),
        "edit_raw": Value("string"),
        "edit_error": Value("string"),
        "edit_model": Value("string"),
        "edit_prompt": Value("string"),
        "edit_prompt_tokens": Value("int64"),
        "edit_completion_tokens": Value("int64"),
    }
)
"""The columns of a policy-conditioned row.

- ``id``: the id of the source row (kept by every perturbation, so a copy points to its original).
- ``text``, ``taxonomy`` (S-coded policy text), ``label`` (ClassLabel safe|unsafe), ``categories``
  (violated codes in numeric order, empty when safe).
- ``perturbation``: one of :data:`PERTURBATIONS`. ``deleted_codes``: codes of the *original*
  policy that were deleted. ``source_codes``: for each category of the row's policy, its code in
  the original policy (``""`` for a category added by a guideline edit); empty when the policy is
  the original one.
- ``edit_*``: the guideline-editing call: its kind (:data:`EDIT_KINDS`), the edited or added code,
  the raw answer, the error (None when the edit was applied or not asked), model, prompt id, tokens.
"""

REQUIRED_COLUMNS = ("text", "taxonomy", "label", "categories")
_DEFAULTS: dict[str, Any] = {
    "id": "",
    "perturbation": "none",
    "deleted_codes": [],
    "source_codes": [],
    "edit_kind": "",
    "edited_code": "",
    "edit_raw": "",
    "edit_error": None,
    "edit_model": "",
    "edit_prompt": "",
    "edit_prompt_tokens": 0,
    "edit_completion_tokens": 0,
}
LINEAGE_COLUMNS = tuple(_DEFAULTS)


# --- schema helpers shared by the stages -------------------------------------------------------------
def check_policy_rows(ds: Dataset, stage: str) -> None:
    """Raise a clear error unless ``ds`` has the policy-conditioned columns with a safe/unsafe label."""
    missing = [c for c in REQUIRED_COLUMNS if c not in ds.column_names]
    if missing:
        raise ValueError(
            f"{stage}: expected the dataset to have the columns {list(REQUIRED_COLUMNS)}, but {missing} are missing "
            f"(found {ds.column_names}). Build policy-conditioned rows with hf_barred.apt.load_policy_rows(...) "
            "or hf_barred.apt.policy_rows(...)."
        )
    label = ds.features["label"]
    if not isinstance(label, ClassLabel) or list(label.names) != list(LABEL_NAMES):
        raise ValueError(
            f"{stage}: expected 'label' to be ClassLabel(names={list(LABEL_NAMES)}), found {label}. "
            "Fix: ds = ds.cast_column('label', hf_barred.apt.POLICY_FEATURES['label']) or build the rows with "
            "hf_barred.apt.load_policy_rows(...)."
        )


def policy_features(features: Features) -> Features:
    """``features`` with every policy column declared as in :data:`POLICY_FEATURES` (extra columns kept)."""
    merged = Features(dict(features))
    for name, feature in POLICY_FEATURES.items():
        merged[name] = feature
    return merged


def lineage_column(batch: Mapping[str, list], name: str, n: int) -> list:
    """The batch's ``name`` column, or defaults when the input does not have it yet."""
    if name in batch:
        return list(batch[name])
    default = _DEFAULTS[name]
    return [list(default) if isinstance(default, list) else default for _ in range(n)]


def missing_lineage(batch: Mapping[str, list], n: int, written: Iterable[str]) -> dict[str, list]:
    """Default columns for every lineage column that the batch lacks and the stage does not write."""
    written = set(written)
    return {name: lineage_column(batch, name, n) for name in LINEAGE_COLUMNS if name not in batch and name not in written}


class RowRandom:
    """Per-row randomness from a keyed hash: ``blake2b(seed, row content)`` in counter mode.

    The same seed and row give the same draws whatever the batch size, ``num_proc`` or row order,
    and the draws do not depend on the Python or numpy version. About 3 µs per row, several times
    cheaper than seeding a numpy Generator per row.

    >>> rng = RowRandom(0, "How do I bake bread?", "S1: Violence.")
    >>> rng.below(10) == RowRandom(0, "How do I bake bread?", "S1: Violence.").below(10)
    True
    >>> sorted(RowRandom(1, "x").sample(["S1", "S2", "S3"], 3))
    ['S1', 'S2', 'S3']
    """

    __slots__ = ("_block", "_words", "_next")

    def __init__(self, seed: int, *parts: str):
        content = "\x1f".join(parts).encode("utf-8", "surrogatepass")
        self._block = hashlib.blake2b(content, digest_size=64, key=str(seed).encode(), person=b"hf_barred.apt").digest()
        self._words = struct.unpack("<8Q", self._block)
        self._next = 0

    def _word(self) -> int:
        if self._next == 8:  # next counter block
            self._block = hashlib.blake2b(self._block, digest_size=64).digest()
            self._words = struct.unpack("<8Q", self._block)
            self._next = 0
        word = self._words[self._next]
        self._next += 1
        return word

    def below(self, m: int) -> int:
        """An integer in ``[0, m)`` (the modulo bias is below 1e-17 for the small m used here)."""
        return self._word() % m

    def sample(self, population: Sequence[Any], k: int) -> list[Any]:
        """``k`` distinct items (partial Fisher-Yates)."""
        pool = list(population)
        for i in range(k):
            j = i + self.below(len(pool) - i)
            pool[i], pool[j] = pool[j], pool[i]
        return pool[:k]

    def shuffle(self, items: list[Any]) -> None:
        """Shuffle ``items`` in place (Fisher-Yates)."""
        for i in range(len(items) - 1, 0, -1):
            j = self.below(i + 1)
            items[i], items[j] = items[j], items[i]


def row_taxonomy(text: str, row: str) -> Taxonomy:
    """Parse a row's policy text (cached); a clear error names the row."""
    try:
        return Taxonomy.parse(text)
    except TaxonomyTextError as err:
        raise ValueError(f"row {row}: the 'taxonomy' column is not S-coded policy text: {err}") from None


@functools.lru_cache(maxsize=16384)
def select_policy_text(text: str, codes: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """The policy text keeping only ``codes`` (in that order, re-indexed) and ``{old: new}``; cached,
    since a stage meets the same (policy, selection) pairs over and over. Do not mutate the map."""
    new, code_map = Taxonomy.parse(text).select(codes)
    return new.render(), code_map


def check_row_codes(codes: Sequence[str], n: int, row: str) -> None:
    for code in codes:
        try:
            ok = 1 <= code_number(code) <= n
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(
                f"row {row}: expected violated category codes among S1..S{n} of the row's policy, found {code!r}. "
                "Fix the row's 'categories' (codes refer to the row's own 'taxonomy' text)."
            )


# --- building rows ----------------------------------------------------------------------------------
def policy_rows(
    texts: Sequence[str],
    taxonomy: Union[Taxonomy, str],
    labels: Sequence[Union[str, int, bool]],
    categories: Optional[Sequence[Sequence[str]]] = None,
    ids: Optional[Sequence[str]] = None,
) -> Dataset:
    """Policy-conditioned rows for in-memory lists, all under one taxonomy (or policy text).

    ``labels`` are ``"safe"``/``"unsafe"`` (or 0/1, False/True); ``categories`` are S-codes or
    category names (names are turned into codes).

    >>> from hf_barred.taxonomy import Category, Taxonomy
    >>> t = Taxonomy((Category("Violence"), Category("Privacy")))
    >>> policy_rows(["What is my neighbour's PIN?"], t, ["unsafe"], [["Privacy"]])[0]["categories"]
    ['S2']
    """
    taxonomy = taxonomy if isinstance(taxonomy, Taxonomy) else Taxonomy.parse(taxonomy)
    categories = categories if categories is not None else [[] for _ in texts]
    if not len(texts) == len(labels) == len(categories):
        raise ValueError(
            f"policy_rows: expected as many labels and category lists as texts ({len(texts)}), "
            f"found {len(labels)} labels and {len(categories)} category lists."
        )
    resolver = _CategoryResolver(taxonomy, None)
    records: dict[str, list] = {name: [] for name in POLICY_FEATURES}
    text_form = taxonomy.render()
    for i, (text, label, cats) in enumerate(zip(texts, labels, categories)):
        row = str(ids[i]) if ids is not None else str(i)
        unsafe = _label_value(label, ("safe",), ("unsafe",), row)
        codes = resolver.codes(cats, row)
        _check_label_categories(unsafe, codes, row)
        record = _DEFAULTS | {"id": row, "text": text, "taxonomy": text_form, "label": int(unsafe), "categories": codes}
        for name in POLICY_FEATURES:
            records[name].append(record[name])
    return Dataset.from_dict(records, features=POLICY_FEATURES)


def load_labelled_data(source: Union[str, Path, Dataset], split: str = "train") -> Dataset:
    """A labelled dataset from a file (csv, tsv, json, jsonl, parquet), a ``save_to_disk`` folder,
    a Hub-style folder or a Hub id (``split`` picks the split)."""
    if isinstance(source, Dataset):
        return source
    from datasets import load_dataset, load_from_disk

    path = Path(source)
    builders = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
    if path.is_file():
        builder = builders.get(path.suffix.lower())
        if builder is None:
            raise ValueError(f"{path}: expected a file ending in {sorted(builders)}, found {path.suffix!r}.")
        kwargs = {"sep": "\t"} if path.suffix.lower() == ".tsv" else {}
        return load_dataset(builder, data_files=str(path), split="train", **kwargs)
    if path.is_dir() and ((path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()):
        loaded = load_from_disk(str(path))
    else:
        loaded = load_dataset(str(source))
    if isinstance(loaded, DatasetDict):
        if split not in loaded:
            raise ValueError(f"{source}: expected a split {split!r}, found the splits {list(loaded)}. Pass --split.")
        return loaded[split]
    return loaded


def load_policy_rows(
    data: Union[str, Path, Dataset],
    taxonomy: Union[str, Path, Taxonomy],
    *,
    text_column: str = "text",
    label_column: str = "label",
    category_column: Optional[str] = "categories",
    id_column: Optional[str] = None,
    safe_labels: Sequence[Any] = ("safe",),
    unsafe_labels: Sequence[Any] = ("unsafe",),
    category_map: Optional[Mapping[str, Union[str, Sequence[str]]]] = None,
    split: str = "train",
    **map_kwargs: Any,
) -> Dataset:
    """Policy-conditioned rows from a taxonomy file and a labelled dataset with a category column.

    Parameters, by purpose:

    - Sources: ``data`` (a :class:`~datasets.Dataset`, a file, a folder or a Hub id; see
      :func:`load_labelled_data`), ``taxonomy`` (a :class:`Taxonomy` or a YAML/JSON file), ``split``.
    - Columns: ``text_column``, ``label_column``, ``category_column`` (None: no categories; then
      unsafe rows cannot be built), ``id_column`` (None: the row index).
    - Values: ``safe_labels`` / ``unsafe_labels`` (the label values of each class, compared
      case-insensitively for strings; 0/1 and False/True always work), ``category_map`` (a
      dataset value -> category code(s) or name(s)). A category value is a list, a single
      code/name/map key, or a comma-separated string of them.

    Unknown labels or categories, unsafe rows without a category and safe rows with one raise an
    error that names the row, the value, what was expected and how to fix it.

    >>> from datasets import Dataset
    >>> from hf_barred.taxonomy import Category, Taxonomy
    >>> t = Taxonomy((Category("Violent Crimes"), Category("Privacy")))
    >>> raw = Dataset.from_dict({"prompt": ["How do I stab someone?", "How do I kill a Python process?"],
    ...                          "verdict": ["harmful", "benign"], "type": ["violence", ""]})
    >>> rows = load_policy_rows(raw, t, text_column="prompt", label_column="verdict", category_column="type",
    ...                         safe_labels=["benign"], unsafe_labels=["harmful"], category_map={"violence": "S1"})
    >>> list(rows["label"]), rows[0]["categories"], rows[0]["id"]
    ([1, 0], ['S1'], '0')
    """
    taxonomy = taxonomy if isinstance(taxonomy, Taxonomy) else Taxonomy.load(taxonomy)
    ds = load_labelled_data(data, split=split)
    wanted = [c for c in (text_column, label_column, category_column, id_column) if c is not None]
    missing = [c for c in wanted if c not in ds.column_names]
    if missing:
        raise ValueError(
            f"load_policy_rows: expected the dataset to have the columns {wanted}, but {missing} were not found "
            f"(found {ds.column_names}). Pass text_column=, label_column=, category_column= or id_column= "
            "with the names your dataset uses."
        )
    resolver = _CategoryResolver(taxonomy, category_map)
    label_feature = ds.features[label_column]
    label_names = list(label_feature.names) if isinstance(label_feature, ClassLabel) else None

    def build(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        out: dict[str, list] = {name: [] for name in POLICY_FEATURES}
        text_form = taxonomy.render()
        for j, index in enumerate(indices):
            row = str(batch[id_column][j]) if id_column else str(index)
            label = batch[label_column][j]
            if label_names is not None and isinstance(label, int):  # a ClassLabel id: compare its name
                label = label_names[label]
            unsafe = _label_value(label, safe_labels, unsafe_labels, row)
            codes = resolver.codes(batch[category_column][j] if category_column else None, row)
            _check_label_categories(unsafe, codes, row)
            text = batch[text_column][j]
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"row {row}: expected a non-empty text in column {text_column!r}, found {text!r}.")
            record = _DEFAULTS | {"id": row, "text": text, "taxonomy": text_form, "label": int(unsafe), "categories": codes}
            for name in POLICY_FEATURES:
                out[name].append(record[name])
        return out

    kwargs = {"desc": "policy rows"} | map_kwargs
    return ds.map(build, batched=True, with_indices=True, remove_columns=ds.column_names,
                  features=POLICY_FEATURES, **kwargs)


def _label_value(value: Any, safe: Sequence[Any], unsafe: Sequence[Any], row: str) -> bool:
    """True for an unsafe label, False for a safe one; a clear error otherwise."""
    def norm(v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v

    if norm(value) in {norm(v) for v in unsafe}:
        return True
    if norm(value) in {norm(v) for v in safe}:
        return False
    if isinstance(value, bool) or value in (0, 1):
        return bool(value)
    raise ValueError(
        f"row {row}: unknown label {value!r}: expected one of the safe labels {list(safe)} or the unsafe labels "
        f"{list(unsafe)} (or 0/1). Fix: pass safe_labels=[...] / unsafe_labels=[...] (--safe-label/--unsafe-label)."
    )


def _check_label_categories(unsafe: bool, codes: list[str], row: str) -> None:
    if unsafe and not codes:
        raise ValueError(
            f"row {row}: the label is unsafe but no violated category was given: expected at least one category "
            "(APT needs the violated codes to delete categories safely). Fix the category column or the category_map."
        )
    if not unsafe and codes:
        raise ValueError(
            f"row {row}: the label is safe but categories {codes} were given: expected none for a safe row. "
            "Fix the label or the category column."
        )


class _CategoryResolver:
    """Turns a row's category value (codes, names, map keys; list or comma-separated) into S-codes."""

    def __init__(self, taxonomy: Taxonomy, category_map: Optional[Mapping[str, Any]]):
        self.taxonomy = taxonomy
        self.lookup: dict[str, list[str]] = {}
        for code, name in zip(taxonomy.codes, taxonomy.names):
            self.lookup[code.lower()] = [code]
            self.lookup[name.lower()] = [code]
        for key, target in (category_map or {}).items():
            targets = [target] if isinstance(target, str) else list(target or [])
            codes = []
            for t in targets:
                if str(t).strip().lower() not in self.lookup:
                    raise ValueError(
                        f"category_map[{key!r}]: expected category codes {list(taxonomy.codes)} or names "
                        f"{list(taxonomy.names)}, found {t!r}."
                    )
                codes.extend(self.lookup[str(t).strip().lower()])
            self.lookup[str(key).strip().lower()] = codes  # an empty list maps a value to "no category"

    def codes(self, value: Any, row: str) -> list[str]:
        if value is None:
            return []
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        codes: list[str] = []
        for item in items:
            text = str(item).strip()
            if not text:
                continue
            key = text.lower()
            if key in self.lookup:
                codes.extend(self.lookup[key])
                continue
            for part in (p.strip() for p in text.split(",")):
                if part and part.lower() not in self.lookup:
                    raise ValueError(
                        f"row {row}: unknown category {part!r}: expected one of the codes {list(self.taxonomy.codes)}, "
                        f"the names {list(self.taxonomy.names)}, or a key of category_map. "
                        "Fix: add it to category_map (or --category-map), or to the taxonomy."
                    )
                if part:
                    codes.extend(self.lookup[part.lower()])
        return sorted(set(codes), key=code_number)


# --- the recipe ---------------------------------------------------------------------------------------
def _default_delete_config() -> "CategoryDeleteConfig":
    from .stages.category_delete import CategoryDeleteConfig

    return CategoryDeleteConfig()


def _default_edit_config() -> "GuidelineEditConfig":
    from .stages.guideline_edit import GuidelineEditConfig

    return GuidelineEditConfig()


@dataclass(frozen=True)
class AugmentConfig:
    """The APT recipe: original rows plus one perturbed copy of each (2x rows).

    Parameters:
        category_delete: How categories are deleted (seed, maximum number deleted); applied to
            positives and to negatives without a usable guideline edit.
        guideline_edit: How negatives are edited by an LLM (engine, prompt, sampling); None
            deletes categories of every row and calls no LLM.

    >>> AugmentConfig(guideline_edit=None).category_delete.max_deleted
    5
    """

    category_delete: "CategoryDeleteConfig" = field(
        default_factory=_default_delete_config, metadata={"help": "CategoryDeleteConfig: seed, max_deleted."}
    )
    guideline_edit: Optional["GuidelineEditConfig"] = field(
        default_factory=_default_edit_config,
        metadata={"help": "GuidelineEditConfig (default: the embedded local model); None: deletion only, no LLM."},
    )

    def __post_init__(self) -> None:
        from .stages.category_delete import CategoryDeleteConfig
        from .stages.guideline_edit import GuidelineEditConfig

        if not isinstance(self.category_delete, CategoryDeleteConfig):
            raise TypeError(f"AugmentConfig.category_delete: expected a CategoryDeleteConfig, found {self.category_delete!r}.")
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
    from .stages.category_delete import category_delete
    from .stages.guideline_edit import guideline_edit

    config = config or AugmentConfig()
    check_policy_rows(ds, "augment")
    original = _with_lineage(ds)
    perturbed = original
    if config.guideline_edit is not None:
        perturbed = guideline_edit(perturbed, config.guideline_edit, **map_kwargs)
    delete_config = dataclasses.replace(config.category_delete, skip_edited=True)
    perturbed = category_delete(perturbed, delete_config, **map_kwargs)
    out = concatenate_datasets([original, perturbed])
    return out, augment_statistics(out, n_original=len(original), config=config)


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
    from .stages._common import config_identity

    columns = ds.select_columns(["label", "perturbation", "edit_kind", "edit_error",
                                 "edit_prompt_tokens", "edit_completion_tokens"]).to_dict()
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
    (output / "augment_stats.json").write_text(json.dumps(dict(stats), indent=2, ensure_ascii=False) + "\n",
                                               encoding="utf-8")
    return output
