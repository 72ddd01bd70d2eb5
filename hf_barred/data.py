"""Labelled data: loading it from files, folders or the Hub, and the one label normaliser.

:func:`label_index` is the single place that decides which class a raw label value means: a task's
label names, a dataset's safe/unsafe values, or an LLM judge's free-text answer. Every caller turns
its ``None`` ("none of these") into its own error message.

Example:
    >>> from hf_barred.data import label_index
    >>> label_index("UNSAFE", ["safe"], ["unsafe"]), label_index(True, ["no"], ["yes"])
    (1, 1)
    >>> label_index(" Yes. ", ["no_advice"], ["advice"], answer=True), label_index("maybe", ["a"], ["b"])
    (1, None)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

if TYPE_CHECKING:  # datasets loads on first use, so that hf_barred.task stays light
    from datasets import Dataset

__all__ = ["YES_WORDS", "NO_WORDS", "label_index", "load_labelled_data"]

YES_WORDS = frozenset({"yes", "true", "1", "applies", "positive", "holds", "y"})
"""Free-text answers meaning "the rule holds" (accepted with ``answer=True``)."""
NO_WORDS = frozenset({"no", "false", "0", "not applies", "does not apply", "negative", "n"})
"""Free-text answers meaning "the rule does not hold" (accepted with ``answer=True``)."""


def _norm(value: Any, answer: bool) -> Any:
    if not isinstance(value, str):
        return value
    text = value.strip()
    return (text.strip(".\"'") if answer else text).lower()


def label_index(
    value: Any, negative: Sequence[Any], positive: Sequence[Any], *, answer: bool = False
) -> Optional[int]:
    """0 (negative class) or 1 (positive class) for a raw label value; None when it means neither.

    In order: a value among ``positive`` / ``negative`` (strings compared case-insensitively, spaces
    stripped), then a bool or the numbers 0/1. With ``answer=True`` (a model's free-text answer)
    quotes and a final full stop are stripped too and yes/no words count (:data:`YES_WORDS`,
    :data:`NO_WORDS`).

    >>> label_index("PASS", ["PASS"], ["FAIL"]), label_index(0, ["safe"], ["unsafe"])
    (0, 0)
    >>> label_index('"does not apply"', ["x"], ["y"], answer=True)
    0
    """
    key = _norm(value, answer)
    if key in {_norm(v, answer) for v in positive}:
        return 1
    if key in {_norm(v, answer) for v in negative}:
        return 0
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return int(value)
    if answer and isinstance(key, str):
        if key in YES_WORDS:
            return 1
        if key in NO_WORDS:
            return 0
    return None


def load_labelled_data(source: Union[str, Path, "Dataset"], split: str = "train") -> "Dataset":
    """A labelled dataset from a file (csv, tsv, json, jsonl, parquet), a ``save_to_disk`` folder,
    a Hub-style folder or a Hub id (``split`` picks the split).

    >>> from datasets import Dataset
    >>> load_labelled_data(Dataset.from_dict({"text": ["hi"], "label": [0]})).num_rows
    1
    """
    from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

    if isinstance(source, Dataset):
        return source

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
