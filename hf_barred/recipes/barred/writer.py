"""Writing a BARRED run's outputs: the accepted and rejected splits, the decomposition, the card.

The layout is a Hub dataset repository (:data:`DATA_FILES`, ``README.md`` with YAML ``configs``,
``summary.json``, ``task.yaml``), so ``datasets.load_dataset(output_dir)`` and ``barred train``
read it as it is.

Example:
    >>> from hf_barred.recipes.barred.writer import DATA_FILES
    >>> DATA_FILES["train"]
    'data/train-00000-of-00001.parquet'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from datasets import Dataset

from ...policy.task import GuardrailTask, TaskFileError
from ...stages.features import accepted_features, decomposition_features
from .config import BarredConfig
from .stats import prompt_ids

__all__ = ["DATA_FILES", "decomposition_export", "publish_rows", "save_task", "write_outputs"]

DATA_FILES = {
    "train": "data/train-00000-of-00001.parquet",
    "rejected": "data/rejected-00000-of-00001.parquet",
    "extra": "data/extra-00000-of-00001.parquet",
    "decomposition": "decomposition/train-00000-of-00001.parquet",
}


def publish_rows(rows: list[dict[str, Any]], task: GuardrailTask, config: BarredConfig) -> Dataset:
    features = accepted_features(task.labels, task.input_type)
    ids = prompt_ids(config)
    version = f"{ids['judge']}+{ids['advocate']}"
    out = []
    for r in rows:
        record = {name: r.get(name) for name in features}
        record["label"] = r["target"]
        record["debate"] = r.get("debate") or []
        record["debate_path"] = r.get("debate_path") or ""
        record["dissent"] = r.get("dissent") or ""
        record["rejection_reason"] = r.get("rejection_reason") or ""
        record["prompt_version"] = f"{r['prompt_version'] or ids['generate']}+{version}"
        out.append(record)
    return (
        Dataset.from_list(out, features=features)
        if out
        else Dataset.from_dict({name: [] for name in features}, features=features)
    )


def decomposition_export(ds: Dataset) -> Dataset:
    features = decomposition_features()
    return (
        Dataset.from_list([{name: row[name] for name in features} for row in ds], features=features)
        if len(ds)
        else Dataset.from_dict({name: [] for name in features}, features=features)
    )


def write_outputs(
    out: Path,
    task: GuardrailTask,
    config: BarredConfig,
    train: Dataset,
    rejected: Dataset,
    decomposition: Dataset,
    stats: dict[str, Any],
    extra: Optional[Dataset] = None,
) -> None:
    from ...hub.dataset_card import add_dataset_info, make_dataset_card

    written: dict[str, dict[str, str]] = {}
    for split, ds in (("train", train), ("rejected", rejected), ("extra", extra), ("decomposition", decomposition)):
        path = out / DATA_FILES[split]
        path.parent.mkdir(parents=True, exist_ok=True)
        if ds is not None and (
            len(ds) or split == "train" and not len(rejected)
        ):  # an empty split is left out of the card's configs
            ds.to_parquet(str(path))
            config_name, split_name = ("decomposition", "train") if split == "decomposition" else ("default", split)
            written.setdefault(config_name, {})[split_name] = DATA_FILES[split]
        elif path.exists():
            path.unlink()
    (out / "summary.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    card = make_dataset_card(task, config, stats)
    add_dataset_info(card, out, written)
    card.save(str(out / "README.md"))
    save_task(task, out / "task.yaml")  # `barred train DIR` reads the rule and label names from it


def save_task(task: GuardrailTask, path: Path) -> None:
    """Write ``task`` to ``path`` unless the file there already holds it (which may be the user's own
    task file, with comments and layout worth keeping, when ``--output`` is its folder)."""
    if path.is_file():
        try:
            if GuardrailTask.load(path).to_dict() == task.to_dict():
                return
        except TaskFileError:
            pass
    task.save(path)
