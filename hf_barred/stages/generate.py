"""BARRED step 4: write a boundary-challenging input for each plan row.

For a plan row (dimension ``d``, instantiation ``v``, target label ``y``, a seed example) the
generator writes an input in the seed's domain and style, aligned with ``(d, v)``, whose label is
``y`` but only just, plus its reasoning, as JSON: ``{"text", "reasoning"}`` (``{"task",
"response", "reasoning"}`` for ``task_and_response``). On the ``served`` prompt set it also
returns ``label``, the label it believes its sample gets (yes: the criterion holds), kept in the
``believed_label`` column; the run's statistics count the samples where it differs from the target.
All rows of a batch go in one call.

An answer that is not valid JSON (after ``max_repairs`` repair rounds), that has an empty input,
or whose input mentions tests, models, dimensions or labels (:func:`~hf_barred.stages.labels.
forbidden_mention`) is a parse failure: the row keeps ``raw`` and ``error`` (``error_stage`` =
``"generate"``) and goes on to the rejected split, counted.

Example:
    >>> from hf_barred.stages.generate import parse_sample
    >>> parse_sample({"text": "User: I feel dizzy\\\\nAgent: Please sit down.", "reasoning": "advice", "label": "yes"},
    ...              "input_block", ["no", "yes"])  # doctest: +NORMALIZE_WHITESPACE
    ({'text': 'User: I feel dizzy\\nAgent: Please sit down.', 'task': '', 'reasoning': 'advice',
      'believed_label': 'yes'}, None)
    >>> parse_sample({"text": "As a test case, ...", "reasoning": "r"}, "input_block", ["no", "yes"])[1]
    "the input mentions 'test case': a generated input must not mention tests, models, dimensions or labels"
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, TypeVar, cast

from datasets import Dataset, Features

from ..llm.base import Conversation
from ..llm.structured import StructuredResult
from .answers import Answer, sample_answer, string_budget
from .base import LLMStageConfig, Rejected, Stage, Steps
from .features import generated_features
from .labels import clean_text, forbidden_mention, normalize_label
from .prompting import Prompt, load_prompt

STAGE_VERSION = "4"  # 2: reasoning optional; 3: strict schema for constrained decoding; 4: believed label


def asks_believed_label(prompt_set: str) -> bool:
    """Whether the generate and refine prompts of ``prompt_set`` ask for the label the generator
    believes its sample gets (the ``served`` set does, as the BARRED paper's prompts do)."""
    return prompt_set == "served"


def sample_grammar(input_type: str, max_tokens: int, believed_label: bool = False) -> dict[str, Any]:
    """The strict schema a constrained engine writes a sample with (:func:`~hf_barred.stages.answers.sample_answer`):
    the input field(s), then a short ``reasoning`` (then, with ``believed_label``, the ``label``
    yes/no the generator believes); string lengths bounded so the answer closes within ``max_tokens``."""
    keys = ["task", "response"] if input_type == "task_and_response" else ["text"]
    input_chars = string_budget(max_tokens, 1, 10 + 4 * len(keys)) * 7 // 10  # 70 % for the input
    reasoning_chars = string_budget(max_tokens, 1, 10 + 4 * len(keys)) - input_chars
    lengths = {key: input_chars // len(keys) for key in keys} | {"reasoning": max(8, reasoning_chars)}
    return sample_answer(input_type, believed_label).grammar(max_length=lengths)


@dataclass(frozen=True)
class GenerateConfig(LLMStageConfig):
    """Generation of boundary cases (shared ``engine``, ``prompt_version``, ``max_tokens``,
    ``temperature``, ``seed``, ``max_repairs``)."""

    max_tokens: int = field(default=128, metadata={"help": "Maximum tokens of one generated sample."})
    temperature: float = field(default=0.8, metadata={"help": "Sampling temperature of the generator."})


def parse_sample(
    data: dict[str, Any], input_type: str, labels: list[str]
) -> tuple[Optional[dict[str, str]], Optional[str]]:
    """``({"text", "task", "reasoning", "believed_label"}, None)`` from a parsed answer, or
    ``(None, error)``. ``believed_label`` is the label name the answer's ``label`` means, "" if none."""
    if input_type == "task_and_response":
        sample = {"text": clean_text(data["response"]), "task": clean_text(data["task"])}
    else:
        sample = {"text": clean_text(data["text"]), "task": ""}
    sample["reasoning"] = clean_text(data.get("reasoning", ""))
    believed = data.get("label")
    sample["believed_label"] = (normalize_label(believed, labels) or "") if believed not in (None, "") else ""
    if not sample["text"]:
        return None, "the generated input is empty"
    mention = forbidden_mention(sample["text"] + "\n" + sample["task"], labels)
    if mention:
        return None, (
            f"the input mentions {mention}: a generated input must not mention tests, models, dimensions or labels"
        )
    return sample, None


SampleConfigT = TypeVar("SampleConfigT", bound=LLMStageConfig)


class SampleStage(Stage[SampleConfigT, StructuredResult]):
    """What generation and refinement share: the sample answer model and grammar, parsing a sample,
    and the lineage columns (``raw``, ``error``, ``error_stage``, ``model``, ``prompt_version``)."""

    def prompts(self) -> tuple[Prompt, ...]:
        return (load_prompt(self.name, self.config.prompt_version, self.config.prompt_set),)

    def features(self, input_features: Features) -> Features:
        return generated_features(input_features["target"].names)

    def answer(self, row: dict[str, Any]) -> type[Answer]:
        prompt_set = cast(str, self.config.prompt_set)  # LLMStageConfig.__post_init__ resolves None
        return sample_answer(row["input_type"], asks_believed_label(prompt_set))

    def grammar(self, row: dict[str, Any]) -> dict[str, Any]:
        prompt_set = cast(str, self.config.prompt_set)  # LLMStageConfig.__post_init__ resolves None
        return sample_grammar(row["input_type"], self.config.max_tokens, asks_believed_label(prompt_set))

    def parse(self, row: dict[str, Any], result: StructuredResult) -> dict[str, Any]:
        data = cast(dict[str, Any], result.data)  # parse reads answers that parsed (ok) only
        sample, error = parse_sample(data, row["input_type"], row["labels"])
        if sample is None:
            raise Rejected(error)
        return row | sample | self._lineage(result, error=None)

    def failed(self, row: dict[str, Any], result: StructuredResult, error: str) -> dict[str, Any]:
        return row | {"text": "", "task": "", "reasoning": "", "believed_label": ""} | self._lineage(result, error)

    def _lineage(self, result: StructuredResult, error: Optional[str]) -> dict[str, Any]:
        return {
            "raw": result.raw,
            "error": error,
            "error_stage": self.name if error else None,
            "model": self.engine.model_name,
            "prompt_version": self.prompts()[0].id,
        }


class GenerateStage(SampleStage[GenerateConfig]):
    """BARRED step 4 (see the module docstring): one sample per plan row."""

    name = "generate"
    version = STAGE_VERSION

    def messages(self, row: dict[str, Any]) -> Conversation:
        return self.prompts()[0].messages(
            criterion=row["criterion"],
            input_type=row["input_type"],
            seed_example=row["seed_example"],
            seed_task=row["seed_task"],
            dimension=row["dimension"],
            instantiation=row["instantiation"],
            applies=row["target"] == 1,
            sample_id=row["seed"],
        )

    def steps(self, row: dict[str, Any]) -> Steps:
        row.update(refinements=0, previous_texts=[], dissents=[], debate_history=[])
        return (yield from super().steps(row))


def generate(ds: Dataset, config: Optional[GenerateConfig] = None, **map_kwargs: Any) -> Dataset:
    """Plan rows (:func:`~hf_barred.stages.features.plan_features`) -> generated rows
    (:func:`~hf_barred.stages.features.generated_features`), one batched call per map batch.

    Example:
        >>> from hf_barred.stages.generate import GenerateConfig, generate
        >>> samples = generate(plan_rows, GenerateConfig())  # doctest: +SKIP
        >>> samples[0]["text"], samples[0]["error"]  # doctest: +SKIP
        ('User: ...\\nAgent: ...', None)
    """
    return GenerateStage(config or GenerateConfig())(ds, **map_kwargs)
