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
from typing import Any, Optional, cast

from datasets import Dataset

from ..llm.base import Conversation
from ..llm.structured import StructuredResult
from .base import LLMStageConfig, Steps
from .generate import SampleStage
from .judge import input_text

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


class RefineStage(SampleStage[RefineConfig]):
    """BARRED step 6 (see the module docstring): one rewritten sample per rejected row."""

    name = "refine"
    version = STAGE_VERSION

    def messages(self, row: dict[str, Any]) -> Conversation:
        failed = input_text(row)
        dissent = row["dissent"] or "(no reason given)"
        return self.prompts()[0].messages(
            criterion=row["criterion"],
            input_type=row["input_type"],
            seed_example=row["seed_example"],
            seed_task=row["seed_task"],
            dimension=row["dimension"],
            instantiation=row["instantiation"],
            applies=row["target"] == 1,
            failed_text=failed,
            failed_task=row["task"],
            failed_response=row["text"],
            dissent=dissent[: self.config.max_dissent_chars],
            sample_id=row["seed"],
        )

    def steps(self, row: dict[str, Any]) -> Steps:
        request = self.request(row)  # rendered from the failed attempt, before the row moves on
        row.update(
            previous_texts=list(row["previous_texts"]) + [input_text(row)],
            dissents=list(row["dissents"]) + [row["dissent"]],
            debate_history=list(row["debate_history"]) + [row["debate"]],
            refinements=row["refinements"] + 1,
        )
        [result] = yield [request]
        return self.read(row, cast(StructuredResult, result))  # the request names the sample answer model


def refine(ds: Dataset, config: Optional[RefineConfig] = None, **map_kwargs: Any) -> Dataset:
    """Debated, rejected rows -> rewritten generated rows (:func:`~hf_barred.stages.features.generated_features`).

    Example:
        >>> from hf_barred.stages.refine import RefineConfig, refine
        >>> rewritten = refine(rejected_rows, RefineConfig())  # doctest: +SKIP
        >>> rewritten[0]["refinements"]  # doctest: +SKIP
        1
    """
    missing = sorted({"dissent", "debate", "text", "refinements"} - set(ds.column_names))
    if missing:
        raise ValueError(
            f"refine: expected debated rows (the output of hf_barred.stages.debate.debate), but the columns {missing} "
            f"were not found in {ds.column_names}. Run debate first."
        )
    return RefineStage(config or RefineConfig())(ds, **map_kwargs)
