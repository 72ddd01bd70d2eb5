"""The dataset card of a BARRED run, from ``hf_barred/hub/templates/dataset_card.md``.

:func:`make_dataset_card` fills ``DatasetCardData`` (licence, tags, task categories, size, and the
``configs`` that make ``load_dataset(DIR)`` and ``load_dataset(DIR, "decomposition")`` work on the
output folder and on the Hub) and renders the template with ``DatasetCard.from_template``: the task
and its rule, the seeds, the model, the prompt versions, per-stage statistics, licence and
citations. No card text is concatenated by hand.

Example:
    >>> from hf_barred.hub.dataset_card import make_dataset_card
    >>> from hf_barred.recipes.barred.run import BarredConfig
    >>> from hf_barred.policy.task import GuardrailTask
    >>> task = GuardrailTask(criterion="The agent's response contains health advice.",
    ...                      labels=("no_health_advice", "health_advice"), seeds=["User: hi\\nAgent: hello"])
    >>> card = make_dataset_card(task, BarredConfig(), example_statistics(task))
    >>> [c["config_name"] for c in card.data.configs]
    ['default', 'decomposition']
    >>> "```text" in card.text and "The agent's response contains health advice." in card.text  # the rule, fenced
    True
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional, Union

from huggingface_hub import DatasetCard, DatasetCardData

from .markdown import fenced, inline_code, inline_text
from .model_card import library_version, template_path

CITATION = """@misc{mazza2026barred,
  title         = {BARRED: Synthetic Training of Custom Policy Guardrails via Asymmetric Debate},
  author        = {Arnon Mazza and Elad Levi},
  year          = {2026},
  eprint        = {2604.25203},
  archivePrefix = {arXiv},
  primaryClass  = {cs.CL}
}"""

DEFAULT_LICENSE_TEXT = (
    "The samples were written by the model named above from the task's rule and seeds; check that model's licence "
    "and the seeds' licence before redistributing. hf_barred itself is Apache-2.0."
)


def dataset_configs(splits: tuple[str, ...] = ("train", "rejected")) -> list[dict[str, Any]]:
    """The YAML ``configs`` of a generated dataset (paths as written by :mod:`hf_barred.recipes.barred.writer`
    and by ``DatasetDict.push_to_hub``). ``splits``: the default config's non-empty splits
    (``datasets`` cannot load a declared split without rows)."""
    return [
        {
            "config_name": "default",
            "data_files": [{"split": split, "path": f"data/{split}-*.parquet"} for split in splits],
        },
        {"config_name": "decomposition", "data_files": [{"split": "train", "path": "decomposition/train-*.parquet"}]},
    ]


def add_dataset_info(card: DatasetCard, folder: Union[str, Path], configs: Mapping[str, Mapping[str, str]]) -> None:
    """Record in ``card``'s YAML what ``push_to_hub`` records on the Hub: each configuration's
    features, split sizes and parquet bytes. ``configs`` maps a config name to ``{split: parquet
    path relative to folder}``.

    Besides documenting the data, this is what lets ``load_dataset(folder)`` see new data after a
    rerun: for a folder whose card declares ``configs``, ``datasets`` keys its cache on the card's
    ``dataset_info`` rather than on the files' modification times.
    """
    import pyarrow.parquet as pq
    from datasets import Features
    from datasets.info import DatasetInfo, DatasetInfosDict
    from datasets.splits import SplitDict, SplitInfo

    folder = Path(folder)
    infos = {}
    for name, splits in configs.items():
        files = {split: folder / path for split, path in splits.items()}
        metadata = {split: pq.ParquetFile(path).metadata for split, path in files.items()}
        schema = pq.read_schema(next(iter(files.values())))
        split_infos = SplitDict()
        for split, meta in metadata.items():
            nbytes = sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups))
            split_infos.add(SplitInfo(name=split, num_bytes=nbytes, num_examples=meta.num_rows))
        info = DatasetInfo(features=Features.from_arrow_schema(schema), config_name=name, splits=split_infos)
        info.download_size = sum(path.stat().st_size for path in files.values())
        info.dataset_size = sum(split.num_bytes for split in split_infos.values())
        infos[name] = info
    DatasetInfosDict(infos).to_dataset_card_data(card.data)


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < limit:
            return name
    return "100K<n<1M"


def python_string(text: str) -> str:
    """A Python string literal of ``text`` that holds no backtick (safe inside a Markdown code fence).

    >>> print(python_string('me/data```'))
    "me/data\\u0060\\u0060\\u0060"
    """
    return json.dumps(text).replace("`", "\\u0060")


def make_dataset_card(
    task: Any,
    config: Any,
    stats: dict[str, Any],
    repo_id: Optional[str] = None,
    license: str = "apache-2.0",
    license_text: str = DEFAULT_LICENSE_TEXT,
) -> DatasetCard:
    """The card of a BARRED dataset for ``task`` made with ``config`` (a ``BarredConfig``), reporting
    ``stats`` (:func:`hf_barred.recipes.barred.stats.run_statistics`)."""
    card_data = DatasetCardData(
        language="en",
        license=license,
        pretty_name=f"BARRED: {task.name}",
        size_categories=_size_category(stats["accepted"] + stats.get("extra", 0) + stats["rejected"]),
        task_categories=["text-classification"],
        tags=["guardrail", "synthetic", "barred", "hf-barred"],
        configs=dataset_configs(
            tuple(
                split
                for split in ("train", "rejected", "extra")
                if stats.get("accepted" if split == "train" else split)
            )
            or ("train",)
        ),
    )
    return DatasetCard.from_template(
        card_data,
        template_path=str(template_path("dataset_card.md")),
        **card_variables(task, config, stats, repo_id, license_text),
    )


def card_variables(
    task: Any,
    config: Any,
    stats: dict[str, Any],
    repo_id: Optional[str] = None,
    license_text: str = DEFAULT_LICENSE_TEXT,
) -> dict[str, Any]:
    """The template variables of the card (besides ``card_data``)."""
    engine = config.generate.engine
    model = stats.get("engine_model") or stats["model"]["model"]
    repo_id = repo_id or f"path/to/{task.name}"
    return dict(  # user text is rendered inert: fenced blocks, escaped inline text (hf_barred.hub.markdown)
        pretty_name=inline_text(f"BARRED: {task.name}"),
        library_version=library_version(),
        criterion=task.criterion,
        criterion_block=fenced(task.criterion),
        labels=list(task.labels),
        label_codes=[inline_code(label) for label in task.labels],
        input_type=task.input_type,
        num_seeds=len(task.seeds),
        seed_example=task.seeds[0].text if task.seeds else "",
        seed_block=fenced(task.seeds[0].text if task.seeds else ""),
        stats=stats,
        num_decomposition_rows=stats.get("decomposition_rows", stats.get("dimensions", 0)),
        repo_id=repo_id,
        repo_id_literal=python_string(repo_id),
        model=inline_code(model),
        engine=engine.engine,
        judges=[inline_text(judge) for judge in stats.get("judges", list(config.debate.judges))],
        accepted_by_label=[(inline_text(name), count) for name, count in stats["accepted_by_label"].items()],
        rounds_per_debate=config.debate.rounds,
        max_refinements=config.max_refinements,
        prompt_versions=stats["prompt_versions"],
        license_text=license_text,
        citation=CITATION,
    )


def make_rule_set_card(
    rules: Any,
    config: Any,
    stats: dict[str, Any],
    configs: Mapping[str, Mapping[str, str]],
    repo_id: Optional[str] = None,
    license: str = "apache-2.0",
    license_text: str = DEFAULT_LICENSE_TEXT,
) -> DatasetCard:
    """The card of a rule-set run: ``rules`` (a :class:`~hf_barred.policy.rules.RuleSet`), ``stats`` (per rule
    under ``"rules"``, and the totals), ``configs`` (``{config: {split: parquet path}}``, as written), with
    ``all`` the default config."""
    card_data = DatasetCardData(
        language="en",
        license=license,
        pretty_name=f"BARRED: {rules.name or 'rule set'}",
        size_categories=_size_category(stats["accepted"] + stats.get("extra", 0) + stats["rejected"]),
        task_categories=["text-classification"],
        tags=["guardrail", "synthetic", "barred", "hf-barred", "rule-set", "policy-conditioned"],
        configs=[
            {
                "config_name": name,
                "data_files": [
                    {"split": split, "path": path.replace("-00000-of-00001.parquet", "-*.parquet")}
                    for split, path in splits.items()
                ],
                **({"default": True} if name == "all" else {}),
            }
            for name, splits in configs.items()
        ],
    )
    taxonomy, codes = rules.policy()
    repo_id = repo_id or f"path/to/{rules.name or 'rule-set'}"
    rule_rows = []
    for task in rules:
        rule_stats = stats["rules"][task.name]
        rule_rows.append(
            {
                "name": inline_text(task.name),
                "title": inline_code(task.name),
                "config": inline_code(task.name),
                "code": codes[task.name],
                "splits": ", ".join(inline_code(split) for split in configs.get(task.name, {})),
                "stats": rule_stats,
                "criterion_block": fenced(task.criterion),
                "label_codes": [inline_code(label) for label in task.labels],
                "input_type": task.input_type,
                "num_seeds": len(task.seeds),
                "accepted_by_label": [(inline_text(k), v) for k, v in rule_stats["accepted_by_label"].items()],
            }
        )
    first = rules[0].name
    return DatasetCard.from_template(
        card_data,
        template_path=str(template_path("rule_set_card.md")),
        pretty_name=inline_text(f"BARRED: {rules.name or 'rule set'}"),
        library_version=library_version(),
        rules=rule_rows,
        stats=stats,
        repo_id_literal=python_string(repo_id),
        first_rule_line=f"{python_identifier(first)} = load_dataset({python_string(repo_id)}, {python_string(first)})",
        model=inline_code(stats["model"]["model"]),
        engine=config.generate.engine.engine,
        judges=[inline_text(judge) for judge in stats.get("judges", list(config.debate.judges))],
        rounds_per_debate=config.debate.rounds,
        max_refinements=config.max_refinements,
        prompt_versions=stats["prompt_versions"],
        policy_block=fenced(taxonomy.render()),
        license_text=license_text,
        citation=CITATION,
    )


def python_identifier(name: str) -> str:
    """A Python variable name for a rule name (``health-advice`` -> ``health_advice``).

    >>> python_identifier("health-advice"), python_identifier("2fa")
    ('health_advice', 'rule_2fa')
    """
    identifier = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    return identifier if identifier.isidentifier() and not identifier[0].isdigit() else f"rule_{identifier}"


def example_statistics(task: Any) -> dict[str, Any]:
    """Statistics of an empty run (for examples and template tests)."""
    return {
        "requested": 8,
        "accepted": 0,
        "rejected": 0,
        "accepted_by_label": {name: 0 for name in task.labels},
        "planned_rows": 0,
        "rounds": 0,
        "acceptance_rate": 0.0,
        "acceptance_by_refinement": {},
        "debate_paths": {},
        "parse_failures": {},
        "request_failures": {},
        "requests": 0,
        "request_tokens": 0,
        "dimensions": 0,
        "instantiations": 0,
        "model": {"engine": "local", "model": "embedded"},
        "judges": ["recall", "strict"],
        "prompt_versions": {"generate": "small/generate/v1"},
    }


def make_augment_card(
    stats: dict[str, Any],
    source: str,
    repo_id: Optional[str] = None,
    license: str = "other",
    license_text: str = "The rows keep the licence of their source data; check it before redistributing.",
) -> DatasetCard:
    """The card of an APT-augmented dataset (:func:`hf_barred.recipes.apt.augment` statistics).

    Example:
        >>> stats = {"rows_original": 2, "rows_total": 4, "deleted_from": 2, "deleted_from_positive": 1,
        ...          "deleted_from_negative": 1, "edited_existing": 0, "new_category": 0, "kept_safe": 0,
        ...          "edit_failures": 1, "labels_original": {"safe": 1, "unsafe": 1},
        ...          "labels_augmented": {"safe": 2, "unsafe": 2}, "config": None}
        >>> card = make_augment_card(stats, source="XSTest (CC BY 4.0)")
        >>> "| original | 2 |" in card.text
        True
    """
    card_data = DatasetCardData(
        language="en",
        license=license,
        pretty_name="APT-augmented guardrail data",
        size_categories=_size_category(stats["rows_total"]),
        task_categories=["text-classification"],
        tags=["guardrail", "safety", "apt", "hf-barred", "policy-conditioned"],
    )
    return DatasetCard.from_template(
        card_data,
        template_path=str(template_path("augment_card.md")),
        **augment_card_variables(stats, source, repo_id, license_text),
    )


def augment_card_variables(
    stats: dict[str, Any],
    source: str,
    repo_id: Optional[str] = None,
    license_text: str = "The rows keep the licence of their source data; check it before redistributing.",
) -> dict[str, Any]:
    """The template variables of the APT card (besides ``card_data``)."""
    config = stats.get("config") or {}
    edit = config.get("guideline_edit") or {}
    return dict(
        pretty_name="APT-augmented guardrail data",
        library_version=library_version(),
        max_deleted=(config.get("category_delete") or {}).get("max_deleted", 5),
        model=inline_code((edit.get("engine") or {}).get("model", "none (guideline editing off)")),
        source=inline_text(source),
        labels_original=[(inline_text(name), count) for name, count in (stats.get("labels_original") or {}).items()],
        labels_augmented=[(inline_text(name), count) for name, count in (stats.get("labels_augmented") or {}).items()],
        stats=stats,
        repo_id=repo_id or "path/to/augmented",
        repo_id_literal=python_string(repo_id or "path/to/augmented"),
        license_text=license_text,
    )
