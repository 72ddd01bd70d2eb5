"""Publish to the Hugging Face Hub: datasets as configurations of one repo, with a generated card.

:func:`push_dataset` pushes each configuration with ``DatasetDict.push_to_hub`` (which writes the
parquet shards and the ``configs`` / ``dataset_info`` of the README's YAML), then re-renders the
dataset card from our template while *keeping* the ``configs`` and ``dataset_info`` the pushes
wrote. :func:`push_barred_run` publishes a ``barred generate`` folder: the accepted/rejected
samples, the decomposition, and every stage's intermediate output, one configuration each.

Without a token these functions fail before any upload, saying how to log in.

Example:
    >>> from hf_barred.hub.push import push_barred_run
    >>> push_barred_run("outputs/health-advice", "me/health-advice", private=True)  # doctest: +SKIP
    'https://huggingface.co/datasets/me/health-advice'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional, Union

from datasets import Dataset, DatasetDict, Features, Sequence, concatenate_datasets, load_dataset, load_from_disk
from datasets.features import ClassLabel, List, Value
from huggingface_hub import DatasetCard, HfApi, get_token

STAGE_FOLDER = re.compile(r"^(plan|generate|debate|refine)(?:_(\d+))?$")


class HubAuthError(RuntimeError):
    """No token to write to the Hub."""


def require_token(token: Optional[str] = None) -> str:
    """The token to use: ``token``, else ``HF_TOKEN`` / the saved login; a clear error if none."""
    token = token or get_token()
    if not token:
        raise HubAuthError(
            "pushing to the Hub needs a token: expected HF_TOKEN or a saved login, found none. "
            "Run `hf auth login` or set HF_TOKEN to a token with write access."
        )
    return token


def push_dataset(
    configs: Mapping[str, Union[Dataset, DatasetDict]],
    repo_id: str,
    card: Optional[DatasetCard] = None,
    *,
    private: Optional[bool] = None,
    revision: Optional[str] = None,
    token: Optional[str] = None,
) -> str:
    """Push each configuration of ``configs`` to the dataset repo ``repo_id``, then the card.

    ``revision`` is a branch (created from ``main`` if absent). The card's own YAML is kept except
    ``configs`` and ``dataset_info``, which come from what the pushes wrote. Returns the repo URL.
    """
    token = require_token(token)
    api = HfApi(token=token)
    url = api.create_repo(repo_id, repo_type="dataset", private=bool(private), exist_ok=True)
    if revision:
        api.create_branch(repo_id, repo_type="dataset", branch=revision, exist_ok=True)
    for name, data in configs.items():
        data.push_to_hub(repo_id, config_name=name, private=private, revision=revision, token=token)
    if card is not None:
        pushed = _remote_card_data(api, repo_id, revision)
        for key in ("configs", "dataset_info"):
            if key in pushed:
                setattr(card.data, key, pushed[key])
        card.push_to_hub(
            repo_id,
            repo_type="dataset",
            token=token,
            revision=revision,
            commit_message="Update the dataset card (hf_barred)",
        )
    return str(url)


def _remote_card_data(api: HfApi, repo_id: str, revision: Optional[str]) -> dict:
    path = api.hf_hub_download(repo_id, "README.md", repo_type="dataset", revision=revision)
    return DatasetCard.load(path).data.to_dict()


def stage_configs(run_dir: Union[str, Path]) -> dict[str, DatasetDict]:
    """Every saved stage output of a BARRED run, one configuration per stage.

    ``work/round_XXX/<stage>[_k]`` folders (the stage-by-stage executor's) are concatenated per stage with
    ``round`` and ``pass`` columns (``debate_1`` is the debate after the first refinement); the streaming
    executor's finished rows (``work/stream/*/shard-*.parquet``: every debate, its ``pass`` and ``outcome``)
    give ``stage_debate``; ``work/decomposition/*`` give ``dimensions`` and ``instantiations``.
    """
    work = Path(run_dir) / "work"
    parts: dict[str, list[Dataset]] = {}
    for folder in sorted(work.glob("round_*/*")):
        match = STAGE_FOLDER.match(folder.name)
        if not match or not (folder / "dataset_info.json").is_file():
            continue
        ds = load_from_disk(str(folder))
        round_index = int(folder.parent.name.split("_")[1])
        ds = ds.add_column("round", [round_index] * len(ds)).add_column("pass", [int(match.group(2) or 0)] * len(ds))
        parts.setdefault(f"stage_{match.group(1)}", []).append(ds)
    shards = sorted(str(path) for path in work.glob("stream/*/shard-*.parquet"))
    if shards and "stage_debate" not in parts:
        streamed = load_dataset("parquet", data_files=shards, split="train")
        streamed = streamed.remove_columns(["step_usage", "debate_usage"]).rename_column("level", "pass")
        parts["stage_debate"] = [streamed.sort(["row_id", "pass"])]
    for name in ("dimensions", "instantiations"):
        folder = work / "decomposition" / name
        if (folder / "dataset_info.json").is_file():
            parts[f"stage_{name}"] = [load_from_disk(str(folder))]
    return {name: DatasetDict({"train": concatenate_datasets(dss)}) for name, dss in parts.items() if dss}


def _empty(feature: Any) -> Any:
    """The empty value of a feature: "" for strings, 0 for numbers, [] for lists, a dict of empties."""
    if isinstance(feature, dict):
        return {key: _empty(value) for key, value in feature.items()}
    if isinstance(feature, (List, Sequence, list)):
        return []
    if isinstance(feature, ClassLabel):
        return 0
    if isinstance(feature, Value):
        return "" if feature.dtype in ("string", "large_string") else (False if feature.dtype == "bool" else 0)
    return None


def align_features(ds: Dataset, features: Features, fill: Optional[dict[str, Any]] = None) -> Dataset:
    """``ds`` with exactly ``features``: missing columns get ``fill[name]`` or an empty value.

    Lets a human test split (``text``, ``label``) sit beside synthetic splits in one configuration.
    """
    fill = fill or {}
    missing = [name for name in features if name not in ds.column_names]
    extra = [name for name in ds.column_names if name not in features]

    def add(batch: dict[str, list]) -> dict[str, list]:
        n = len(next(iter(batch.values())))
        return {name: [fill.get(name, _empty(features[name]))] * n for name in missing}

    ds = ds.remove_columns(extra).map(add, batched=True, desc="align features")
    return ds.cast(features).select_columns(list(features))


def push_barred_run(
    run_dir: Union[str, Path],
    repo_id: str,
    *,
    private: Optional[bool] = None,
    revision: Optional[str] = None,
    token: Optional[str] = None,
    include_stages: bool = True,
    extra_splits: Optional[Mapping[str, Dataset]] = None,
) -> str:
    """Publish a ``barred generate`` folder: ``default`` (train / rejected, plus ``extra_splits``
    such as a human ``test`` split, aligned to the train features with :func:`align_features`),
    ``decomposition``, and each stage's output (``stage_generate``, ``stage_debate``, ...)."""
    run_dir = Path(run_dir)
    readme = run_dir / "README.md"
    if not readme.is_file():
        raise FileNotFoundError(
            f"expected a folder written by `barred generate` (with README.md) at {run_dir}, found none. "
            "Run `barred generate TASK --output DIR` first."
        )
    default = load_dataset(str(run_dir))
    for split, ds in (extra_splits or {}).items():
        default[split] = align_features(ds, default["train"].features)
    configs: dict[str, Union[Dataset, DatasetDict]] = {
        "default": default,
        "decomposition": load_dataset(str(run_dir), "decomposition"),
    }
    if include_stages:
        configs.update(stage_configs(run_dir))
    return push_dataset(configs, repo_id, DatasetCard.load(readme), private=private, revision=revision, token=token)


def push_rule_set_run(
    run_dir: Union[str, Path],
    repo_id: str,
    *,
    private: Optional[bool] = None,
    revision: Optional[str] = None,
    token: Optional[str] = None,
) -> str:
    """Publish a rule-set folder of ``barred generate``: ``all`` (the default config), one config per rule and
    ``decomposition``, with the folder's card (its per-rule sections and table)."""
    run_dir = Path(run_dir)
    readme = run_dir / "README.md"
    if not readme.is_file():
        raise FileNotFoundError(
            f"expected a folder written by `barred generate RULES` (with README.md) at {run_dir}, found none. "
            "Run `barred generate RULES --output DIR` first."
        )
    card = DatasetCard.load(readme)
    names = [entry["config_name"] for entry in card.data.configs or []]
    configs: dict[str, Union[Dataset, DatasetDict]] = {name: load_dataset(str(run_dir), name) for name in names}
    url = push_dataset(configs, repo_id, None, private=private, revision=revision, token=token)
    pushed = _remote_card_data(HfApi(token=require_token(token)), repo_id, revision)
    card.data.configs = [
        entry | ({"default": True} if entry.get("config_name") == "all" else {}) for entry in pushed.get("configs", [])
    ]
    if "dataset_info" in pushed:
        card.data.dataset_info = pushed["dataset_info"]
    card.push_to_hub(
        repo_id,
        repo_type="dataset",
        token=require_token(token),
        revision=revision,
        commit_message="Update the dataset card (hf_barred)",
    )
    return url
