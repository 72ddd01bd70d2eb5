"""Labelled data: loading it from files, folders or the Hub, and the one label normaliser.

:func:`label_index` is the single place that decides which class a raw label value means: a task's
label names, a dataset's safe/unsafe values, or an LLM judge's free-text answer. Every caller turns
its ``None`` ("none of these") into its own error message.

Example:
    >>> from hf_barred.policy.data import label_index
    >>> label_index("UNSAFE", ["safe"], ["unsafe"]), label_index(True, ["no"], ["yes"])
    (1, 1)
    >>> label_index(" Yes. ", ["no_advice"], ["advice"], answer=True), label_index("maybe", ["a"], ["b"])
    (1, None)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

if TYPE_CHECKING:  # datasets loads on first use, so that hf_barred.policy.task stays light
    from datasets import Dataset

__all__ = ["YES_WORDS", "NO_WORDS", "label_index", "load_labelled_data", "response_pairs", "seeds_from_pairs"]

YES_WORDS = frozenset({"yes", "true", "1", "applies", "positive", "holds", "y"})
"""Free-text answers meaning "the rule holds" (accepted with ``answer=True``)."""
NO_WORDS = frozenset({"no", "false", "0", "not applies", "does not apply", "negative", "n"})
"""Free-text answers meaning "the rule does not hold" (accepted with ``answer=True``)."""


def _norm(value: Any, answer: bool) -> Any:
    if not isinstance(value, str):
        return value
    text = value.strip()
    return (text.strip(".\"'") if answer else text).lower()


def label_index(value: Any, negative: Sequence[Any], positive: Sequence[Any], *, answer: bool = False) -> Optional[int]:
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


def load_labelled_data(source: Union[str, Path, Dataset], split: str = "train") -> Dataset:
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
        if path.is_dir() and split == "train":
            require_accepted_samples(path)
        try:
            loaded = load_dataset(str(source))
        except FileNotFoundError as err:  # datasets' EmptyDatasetError too: say what was expected
            what = "a folder with no data files" if path.is_dir() else "no such file, folder or Hub dataset"
            raise ValueError(
                f"{source}: expected a labelled dataset (a csv/tsv/json/jsonl/parquet file, a folder of them, a "
                f"saved dataset or a Hub id), found {what} ({err}). Check the path."
            ) from None
    if isinstance(loaded, DatasetDict):
        if split not in loaded:
            raise ValueError(f"{source}: expected a split {split!r}, found the splits {list(loaded)}. Pass --split.")
        return loaded[split]
    return loaded


def require_accepted_samples(folder: Union[str, Path]) -> None:
    """Raise a one-line ``ValueError`` when ``folder`` is a ``barred generate`` output with 0 accepted
    samples (its ``summary.json`` says so): there is nothing to train on, and its only split is
    ``rejected``, which must not be suggested as training data.

    >>> import json, tempfile
    >>> from pathlib import Path
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "summary.json").write_text(json.dumps({"accepted": 0, "rejected": 12, "requested": 8}))
    >>> require_accepted_samples(folder)
    Traceback (most recent call last):
    ...
    ValueError: ... 0 accepted samples of 8 requested (12 rejected; see .../summary.json): nothing to train on. ...
    """
    import json

    try:
        stats = json.loads((Path(folder) / "summary.json").read_text(encoding="utf-8"))
        accepted = int(stats["accepted"])
    except (OSError, ValueError, KeyError, TypeError):
        return
    if accepted == 0:
        raise ValueError(
            f"{folder}: expected accepted samples from `barred generate`, found 0 accepted samples of "
            f"{stats.get('requested', '?')} requested ({stats.get('rejected', 0)} rejected; "
            f"see {Path(folder) / 'summary.json'}): nothing to train on. Run `barred generate` again with a "
            "stronger --model, more --max-rounds or --max-refinements "
            "(the rejected split holds why the judges refused)."
        )


def require_two_classes(labels: Sequence[int], label_names: Sequence[str], source: str = "the training set") -> None:
    """Raise a one-line ``ValueError`` unless ``labels`` (0/1 ids) hold both classes of ``label_names``.

    >>> require_two_classes([1, 1, 1], ["safe", "unsafe"], "train.csv")  # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    ValueError: train.csv: expected rows of both classes ['safe', 'unsafe'], found only 'unsafe' (3 rows) and 0 'safe'.
    A guardrail needs examples of both: add rows labelled 'safe', or check --label_column / --positive_label.
    """
    counts = [0, 0]
    for label in labels:
        counts[int(label)] += 1
    if min(counts) == 0:
        present = 0 if counts[0] else 1
        names = list(label_names)
        raise ValueError(
            f"{source}: expected rows of both classes {names}, found only {names[present]!r} ({counts[present]} rows) "
            f"and 0 {names[1 - present]!r}. A guardrail needs examples of both: add rows labelled "
            f"{names[1 - present]!r}, or check --label_column / --positive_label."
        )


POLARITIES = ("violation", "compliance")
"""What a ``task_and_response`` criterion describes: the failing response (``violation``: the FAIL
response is the positive class, label 1) or the passing one (``compliance``: the PASS response is)."""


def response_pairs(
    source: Union[str, Path, Dataset],
    *,
    task_column: str = "task_input",
    pass_column: str,
    fail_column: str,
    criterion: Optional[str] = None,
    polarity: str = "violation",
    split: str = "train",
) -> Dataset:
    """A ``task_and_response`` test or training set from paired responses: each row of ``source`` (a task
    and a PASS and a FAIL response to it) becomes two rows ``task, text, label`` (plus ``rule`` when
    ``criterion`` is given), the columns ``barred train`` and ``barred evaluate`` read.

    ``polarity`` says what the criterion describes: ``violation`` (the default; "the response skips a
    required step") makes the FAIL response label 1 and the PASS one label 0; ``compliance`` ("the
    response carries out every step") the reverse. An empty response is left out.

    >>> from datasets import Dataset
    >>> pairs = Dataset.from_dict({"task_input": ["Book a table"], "good": ["Booked for 8pm."], "bad": ["No."]})
    >>> rows = response_pairs(pairs, pass_column="good", fail_column="bad")
    >>> rows.column_names, list(rows["label"]), list(rows["text"])
    (['task', 'text', 'label'], [0, 1], ['Booked for 8pm.', 'No.'])
    >>> response_pairs(pairs, task_column="prompt", pass_column="good", fail_column="bad")
    ... # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    ValueError: expected the columns ['prompt', 'good', 'bad'], but ['prompt'] were not found among
    ['task_input', 'good', 'bad']. Fix: pass --task-column, --pass-column and --fail-column.
    """
    from datasets import Dataset

    if polarity not in POLARITIES:
        raise ValueError(
            f"polarity: expected one of {list(POLARITIES)}, found {polarity!r}. Use 'violation' when "
            "the criterion describes a failing response, 'compliance' when it describes a passing one."
        )
    ds = load_labelled_data(source, split)
    wanted = [task_column, pass_column, fail_column]
    missing = [c for c in wanted if c not in ds.column_names]
    if missing:
        raise ValueError(
            f"expected the columns {wanted}, but {missing} were not found among {ds.column_names}. "
            "Fix: pass --task-column, --pass-column and --fail-column."
        )
    fail_label = 1 if polarity == "violation" else 0
    out: dict[str, list[Any]] = {"task": [], "text": [], "label": []}
    for row in ds.select_columns(wanted):
        for column, label in ((pass_column, 1 - fail_label), (fail_column, fail_label)):
            response = row[column]
            if response is None or not str(response).strip():
                continue
            out["task"].append(str(row[task_column] or ""))
            out["text"].append(str(response))
            out["label"].append(label)
    if criterion:
        out["rule"] = [criterion] * len(out["text"])
    return Dataset.from_dict(out)


def seeds_from_pairs(pairs: Dataset, limit: int = 30) -> list[dict[str, str]]:
    """Unlabelled ``task_and_response`` seeds (``{"task": ..., "response": ...}``, the task file's format)
    from the rows of :func:`response_pairs`, alternating the two kinds of response, at most ``limit``.

    >>> from datasets import Dataset
    >>> seeds_from_pairs(Dataset.from_dict({"task": ["t", "t"], "text": ["a", "b"], "label": [0, 1]}), limit=1)
    [{'task': 't', 'response': 'a'}]
    """
    return [{"task": row["task"], "response": row["text"]} for row in pairs.select(range(min(limit, len(pairs))))]
