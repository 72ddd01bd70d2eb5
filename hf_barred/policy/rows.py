"""Policy-conditioned rows: building them from lists or labelled data, and the checks every APT stage shares.

A *policy-conditioned row* is a user message judged under one S-coded policy (see
:mod:`hf_barred.policy.taxonomy`): ``text``, ``taxonomy`` (the policy text), ``label`` (``safe`` |
``unsafe``) and ``categories`` (the violated codes, empty when safe), plus lineage columns that
say how the row's policy was perturbed (:data:`POLICY_FEATURES`). Every APT
stage keeps this schema, so original and perturbed rows concatenate into one training set.

Example:
    >>> from hf_barred.policy.rows import policy_rows
    >>> from hf_barred.policy.taxonomy import Category, Taxonomy
    >>> taxonomy = Taxonomy(tuple(Category(n) for n in ("Violence", "Fraud")))
    >>> ds = policy_rows(["How do I hurt someone?", "How do I bake bread?"], taxonomy,
    ...                  labels=["unsafe", "safe"], categories=[["S1"], []])
    >>> ds.features["label"].names, ds[0]["categories"], ds[0]["perturbation"]
    (['safe', 'unsafe'], ['S1'], 'none')
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

from datasets import ClassLabel, Dataset, Features, List, Value

from .data import label_index, load_labelled_data
from .taxonomy import Taxonomy, TaxonomyTextError, code_number

__all__ = [
    "EDIT_KINDS",
    "LABEL_NAMES",
    "LINEAGE_COLUMNS",
    "PERTURBATIONS",
    "POLICY_DEFAULTS",
    "POLICY_FEATURES",
    "REQUIRED_COLUMNS",
    "CategoryResolver",
    "check_policy_rows",
    "check_row_codes",
    "lineage_column",
    "load_policy_rows",
    "missing_lineage",
    "policy_features",
    "policy_rows",
    "row_taxonomy",
    "select_policy_text",
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
POLICY_DEFAULTS: dict[str, Any] = {
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
"""Values of the lineage columns of a row that no perturbation has touched yet."""
LINEAGE_COLUMNS = tuple(POLICY_DEFAULTS)


# --- checks and lineage helpers shared by the stages -------------------------------------------------
def check_policy_rows(ds: Dataset, stage: str) -> None:
    """Raise a clear error unless ``ds`` has the policy-conditioned columns with a safe/unsafe label."""
    missing = [c for c in REQUIRED_COLUMNS if c not in ds.column_names]
    if missing:
        raise ValueError(
            f"{stage}: expected the dataset to have the columns {list(REQUIRED_COLUMNS)}, but {missing} are missing "
            f"(found {ds.column_names}). Build policy-conditioned rows with "
            "hf_barred.policy.rows.load_policy_rows(...) or hf_barred.policy.rows.policy_rows(...)."
        )
    label = ds.features["label"]
    if not isinstance(label, ClassLabel) or list(label.names) != list(LABEL_NAMES):
        raise ValueError(
            f"{stage}: expected 'label' to be ClassLabel(names={list(LABEL_NAMES)}), found {label}. "
            "Fix: ds = ds.cast_column('label', hf_barred.policy.rows.POLICY_FEATURES['label']) or build the rows with "
            "hf_barred.policy.rows.load_policy_rows(...)."
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
    default = POLICY_DEFAULTS[name]
    return [list(default) if isinstance(default, list) else default for _ in range(n)]


def missing_lineage(batch: Mapping[str, list], n: int, written: Iterable[str]) -> dict[str, list]:
    """Default columns for every lineage column that the batch lacks and the stage does not write."""
    written = set(written)
    return {
        name: lineage_column(batch, name, n) for name in LINEAGE_COLUMNS if name not in batch and name not in written
    }


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

    >>> from hf_barred.policy.taxonomy import Category, Taxonomy
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
    resolver = CategoryResolver(taxonomy, None)
    records: dict[str, list] = {name: [] for name in POLICY_FEATURES}
    text_form = taxonomy.render()
    for i, (text, label, cats) in enumerate(zip(texts, labels, categories)):
        row = str(ids[i]) if ids is not None else str(i)
        unsafe = _label_value(label, ("safe",), ("unsafe",), row)
        codes = resolver.codes(cats, row)
        _check_label_categories(unsafe, codes, row)
        record = POLICY_DEFAULTS | {
            "id": row,
            "text": text,
            "taxonomy": text_form,
            "label": int(unsafe),
            "categories": codes,
        }
        for name in POLICY_FEATURES:
            records[name].append(record[name])
    return Dataset.from_dict(records, features=POLICY_FEATURES)


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
    >>> from hf_barred.policy.taxonomy import Category, Taxonomy
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
    resolver = CategoryResolver(taxonomy, category_map)
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
            record = POLICY_DEFAULTS | {
                "id": row,
                "text": text,
                "taxonomy": text_form,
                "label": int(unsafe),
                "categories": codes,
            }
            for name in POLICY_FEATURES:
                out[name].append(record[name])
        return out

    kwargs = {"desc": "policy rows"} | map_kwargs
    return ds.map(
        build, batched=True, with_indices=True, remove_columns=ds.column_names, features=POLICY_FEATURES, **kwargs
    )


def _label_value(value: Any, safe: Sequence[Any], unsafe: Sequence[Any], row: str) -> bool:
    """True for an unsafe label, False for a safe one; a clear error otherwise."""
    index = label_index(value, safe, unsafe)
    if index is None:
        raise ValueError(
            f"row {row}: unknown label {value!r}: expected one of the safe labels {list(safe)} or the unsafe labels "
            f"{list(unsafe)} (or 0/1). Fix: pass safe_labels=[...] / unsafe_labels=[...] (--safe-label/--unsafe-label)."
        )
    return bool(index)


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


class CategoryResolver:
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
