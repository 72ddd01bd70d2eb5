"""Writing a BARRED run's outputs: the accepted and rejected splits, the decomposition, the card.

The layout is a Hub dataset repository (:data:`DATA_FILES`, ``README.md`` with YAML ``configs``,
``summary.json``, ``task.yaml``), so ``datasets.load_dataset(output_dir)`` and ``barred train``
read it as it is. A rule set (:func:`write_rule_set_outputs`) has one config per rule
(:func:`rule_files`), the ``all`` config (:func:`policy_view`: every rule's train samples as
policy-conditioned rows, the default config) and ``decomposition`` (every rule's, with a ``rule`` column).

Example:
    >>> from hf_barred.recipes.barred.writer import DATA_FILES
    >>> DATA_FILES["train"]
    'data/train-00000-of-00001.parquet'
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from datasets import Dataset, Features, Value, concatenate_datasets

from ...policy.rows import POLICY_DEFAULTS, POLICY_FEATURES
from ...policy.rules import RuleSet
from ...policy.task import GuardrailTask, TaskFileError
from ...stages.batches import rows_dataset
from ...stages.features import accepted_features, decomposition_features
from .config import BarredConfig, BarredResult
from .stats import prompt_ids

__all__ = [
    "ALL_CONFIG",
    "DATA_FILES",
    "RESERVED_RULE_NAMES",
    "RuleSetResult",
    "decomposition_export",
    "policy_view",
    "publish_rows",
    "rule_files",
    "save_task",
    "write_outputs",
    "write_rule_set_outputs",
]

DATA_FILES = {
    "train": "data/train-00000-of-00001.parquet",
    "rejected": "data/rejected-00000-of-00001.parquet",
    "extra": "data/extra-00000-of-00001.parquet",
    "decomposition": "decomposition/train-00000-of-00001.parquet",
}
ALL_CONFIG = "all"
"""The config of a rule-set output that holds every rule's train samples (the default config)."""
RESERVED_RULE_NAMES = (ALL_CONFIG, "decomposition", "default", "data", "work")
"""Names a rule of a rule set cannot have: the output's own configs and folders."""


def rule_files(rule: str) -> dict[str, str]:
    """Where a rule-set output keeps a rule's splits.

    >>> rule_files("health-advice")["train"]
    'health-advice/train-00000-of-00001.parquet'
    """
    return {split: f"{rule}/{split}-00000-of-00001.parquet" for split in ("train", "extra", "rejected")}


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
    return rows_dataset(out, features)


def decomposition_export(ds: Dataset) -> Dataset:
    features = decomposition_features()
    return rows_dataset([{name: row[name] for name in features} for row in ds], features)


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


@dataclass
class RuleSetResult:
    """What a rule-set run produced: each rule's :class:`BarredResult` (``results[name]``), the ``all`` config
    (:func:`policy_view`) and the run's ``stats`` (per rule and overall); ``output_dir`` holds all of it."""

    results: dict[str, BarredResult]
    all: Dataset
    stats: dict[str, Any]
    output_dir: Path

    @property
    def reached(self) -> bool:
        """Whether every rule accepted the ``n`` samples asked for."""
        return all(result.reached for result in self.results.values())


def policy_view_features() -> Features:
    """The ``all`` config: policy-conditioned rows (:data:`~hf_barred.policy.rows.POLICY_FEATURES`) plus the
    rule each sample was written and verified for, its label in that rule's names and its lineage."""
    return Features(
        dict(POLICY_FEATURES)
        | {
            "rule": Value("string"),
            "rule_label": Value("string"),
            "task": Value("string"),
            "row_id": Value("int64"),
            "debate_path": Value("string"),
            "model": Value("string"),
        }
    )


def policy_view(rules: RuleSet, trains: dict[str, Dataset]) -> Dataset:
    """Every rule's train samples as policy-conditioned rows under the rule set's policy
    (:meth:`RuleSet.policy`): ``label`` is ``unsafe`` when the sample's rule holds, and ``categories`` names
    that rule's code. A sample was verified against its own rule only: ``safe`` means "does not break the
    rule it was written for", not "breaks none".

    >>> from hf_barred.policy.task import GuardrailTask
    >>> rules = RuleSet((GuardrailTask("Gives health advice.", seeds=("User: hi",), name="health-advice"),))
    >>> from datasets import ClassLabel
    >>> train = Dataset.from_dict({"text": ["Take two aspirin."], "label": [1], "row_id": [3]},
    ...     features=Features({"text": Value("string"), "label": ClassLabel(names=["no", "yes"]),
    ...                        "row_id": Value("int64")}))
    >>> row = policy_view(rules, {"health-advice": train})[0]
    >>> row["label"], row["categories"], row["rule"], row["rule_label"], row["taxonomy"].splitlines()[0]
    (1, ['S1'], 'health-advice', 'yes', 'S1: health-advice.')
    """
    taxonomy, codes = rules.policy()
    text = taxonomy.render()
    features = policy_view_features()
    rows: list[dict[str, Any]] = []
    for name, train in trains.items():
        names = train.features["label"].names
        for sample in train:
            unsafe = sample["label"] == 1
            rows.append(
                dict(POLICY_DEFAULTS)
                | {
                    "id": f"{name}/{sample['row_id']}",
                    "text": sample["text"],
                    "taxonomy": text,
                    "label": int(unsafe),
                    "categories": [codes[name]] if unsafe else [],
                    "rule": name,
                    "rule_label": names[sample["label"]],
                    "task": sample.get("task") or "",
                    "row_id": sample["row_id"],
                    "debate_path": sample.get("debate_path") or "",
                    "model": sample.get("model") or "",
                }
            )
    return rows_dataset(rows, features)


def write_rule_set_outputs(
    out: Path, rules: RuleSet, config: BarredConfig, n: int, results: dict[str, BarredResult]
) -> RuleSetResult:
    """Write a rule-set run (see the module doc) and return it."""
    from ...hub.dataset_card import add_dataset_info, make_rule_set_card

    written: dict[str, dict[str, str]] = {}

    def write(ds: Dataset, config_name: str, split: str, path: str) -> None:
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        ds.to_parquet(str(out / path))
        written.setdefault(config_name, {})[split] = path

    trains = {name: result.train for name, result in results.items()}
    everything = policy_view(rules, trains)
    write(everything, ALL_CONFIG, "train", f"{ALL_CONFIG}/train-00000-of-00001.parquet")
    for name, result in results.items():
        save_task(rules[name], out / name / "task.yaml")  # `barred train DIR/RULE` reads the rule from it
        for split, path in rule_files(name).items():
            ds = getattr(result, split)
            if ds is not None and (len(ds) or split == "train"):
                write(ds, name, split, path)
            elif (out / path).exists():
                (out / path).unlink()
    decompositions = [
        result.decomposition.add_column("rule", [name] * len(result.decomposition)) for name, result in results.items()
    ]
    write(concatenate_datasets(decompositions), "decomposition", "train", DATA_FILES["decomposition"])
    stats = rule_set_statistics(rules, n, results)
    (out / "summary.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    card = make_rule_set_card(rules, config, stats, written)
    add_dataset_info(card, out, written)
    card.save(str(out / "README.md"))
    rules.save(out / "rules.yaml")
    return RuleSetResult(results, everything, stats, out)


def rule_set_statistics(rules: RuleSet, n: int, results: dict[str, BarredResult]) -> dict[str, Any]:
    """The run's statistics: each rule's (``rules``) and the totals across them."""
    per_rule = {name: result.stats for name, result in results.items()}
    first = next(iter(per_rule.values()))
    return {
        "rule_set": rules.name,
        "rules": per_rule,
        "requested_per_rule": n,
        "requested": n * len(rules),
        "accepted": sum(s["accepted"] for s in per_rule.values()),
        "extra": sum(s.get("extra", 0) for s in per_rule.values()),
        "rejected": sum(s["rejected"] for s in per_rule.values()),
        "planned_rows": sum(s["planned_rows"] for s in per_rule.values()),
        "requests": sum(s["requests"] for s in per_rule.values()),
        "request_tokens": sum(s["request_tokens"] for s in per_rule.values()),
        "engine": first["engine"],  # the engines are shared: one reading for the whole run
        "goal": {
            "reached": all(s["goal"]["reached"] for s in per_rule.values()),
            "short": [name for name, s in per_rule.items() if not s["goal"]["reached"]],
        },
        "model": first["model"],
        "prompt_set": first["prompt_set"],
        "prompt_versions": first["prompt_versions"],
        "judges": first["judges"],
        "rounds_per_debate": first["rounds_per_debate"],
        "max_refinements": first["max_refinements"],
    }
