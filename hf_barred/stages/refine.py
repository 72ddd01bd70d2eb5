"""BARRED step 6: rewrite a rejected sample in the light of the dissent.

A sample the debate rejected is not dropped: the dissenting judges' reasoning (the debate's
``dissent`` column) goes back to the generator, which rewrites the input for the same
``(dimension, instantiation, target)``, seeing the failed input. The rewritten row has the
generated-row schema again (so it re-enters :func:`~hf_barred.stages.debate.debate`), with
``refinements`` incremented and the failed input, its dissent and its debate appended to
``previous_texts``, ``dissents`` and ``debate_history``. The bound ``R_max`` on refinements is
the recipe's (:class:`~hf_barred.recipes.barred.run.BarredConfig.max_refinements`): this stage rewrites
every row it is given.

Example:
    >>> from hf_barred.stages.refine import RefineConfig
    >>> RefineConfig().max_dissent_chars
    400
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from datasets import Dataset

from .features import generated_features
from .prompting import load_prompt
from .base import LLMStageConfig, map_stage, rows, stage_fingerprint
from .debate import input_text
from .generate import write_samples

STAGE_VERSION = "4"  # 2: reasoning optional; 3: strict schema for constrained decoding; 4: believed label


@dataclass(frozen=True)
class RefineConfig(LLMStageConfig):
    """Refinement (shared ``engine``, ``prompt_version``, ``max_tokens``, ``temperature``, ``seed``,
    ``max_repairs``); ``max_dissent_chars`` bounds the dissent shown to the generator."""

    max_tokens: int = field(default=128, metadata={"help": "Maximum tokens of one rewritten sample."})
    temperature: float = field(default=0.8, metadata={"help": "Sampling temperature of the rewriter."})
    max_dissent_chars: int = field(default=400, metadata={"help": "Characters of dissent shown to the generator."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_dissent_chars < 1:
            raise ValueError(f"RefineConfig.max_dissent_chars: expected >= 1, found {self.max_dissent_chars}.")


def _refine_batch(batch: dict[str, list], config: RefineConfig, prompts: tuple, version: str) -> dict[str, list]:
    (prompt,) = prompts
    records = rows(batch)
    conversations = []
    for r in records:
        failed = input_text(r)
        dissent = r["dissent"] or "(no reason given)"
        conversations.append(prompt.messages(
            criterion=r["criterion"], input_type=r["input_type"], seed_example=r["seed_example"],
            seed_task=r["seed_task"], dimension=r["dimension"], instantiation=r["instantiation"],
            applies=r["target"] == 1, failed_text=failed, failed_task=r["task"], failed_response=r["text"],
            dissent=dissent[: config.max_dissent_chars], sample_id=r["seed"],
        ))
        r["previous_texts"] = list(r["previous_texts"]) + [failed]
        r["dissents"] = list(r["dissents"]) + [r["dissent"]]
        r["debate_history"] = list(r["debate_history"]) + [r["debate"]]
        r["refinements"] = r["refinements"] + 1
    write_samples(records, conversations, config, "refine", prompt.id)
    names = list(generated_features(["0", "1"]))
    return {name: [record[name] for record in records] for name in names}


def _prompts(config: RefineConfig) -> tuple:
    return (load_prompt("refine", config.prompt_version, config.prompt_set),)


def refine_fingerprint(ds: Dataset, config: RefineConfig) -> str:
    return stage_fingerprint(ds, "refine", STAGE_VERSION, _prompts(config), config, _refine_batch)


def refine(ds: Dataset, config: Optional[RefineConfig] = None, **map_kwargs: Any) -> Dataset:
    """Debated, rejected rows -> rewritten generated rows (:func:`~hf_barred.stages.features.generated_features`).

    Example:
        >>> from hf_barred.stages.refine import RefineConfig, refine
        >>> rewritten = refine(rejected_rows, RefineConfig())  # doctest: +SKIP
        >>> rewritten[0]["refinements"]  # doctest: +SKIP
        1
    """
    config = config or RefineConfig()
    missing = sorted({"dissent", "debate", "text", "refinements"} - set(ds.column_names))
    if missing:
        raise ValueError(
            f"refine: expected debated rows (the output of hf_barred.stages.debate.debate), but the columns {missing} "
            f"were not found in {ds.column_names}. Run debate first."
        )
    labels = ds.features["target"].names
    return map_stage(
        ds, _refine_batch, stage="refine", version=STAGE_VERSION, config=config, prompts=_prompts(config),
        features=generated_features(labels), map_kwargs=map_kwargs,
    )
