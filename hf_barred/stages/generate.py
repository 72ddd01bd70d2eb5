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
    ...              "input_block", ["no", "yes"])
    ({'text': 'User: I feel dizzy\\nAgent: Please sit down.', 'task': '', 'reasoning': 'advice', 'believed_label': 'yes'}, None)
    >>> parse_sample({"text": "As a test case, ...", "reasoning": "r"}, "input_block", ["no", "yes"])[1]
    "the input mentions 'test case': a generated input must not mention tests, models, dimensions or labels"
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from datasets import Dataset

from ..llm.base import Conversation
from ..llm.structured import structured_chat
from .features import generated_features
from .answers import sample_answer, string_budget
from .prompting import load_prompt
from .base import LLMStageConfig, add_usage, engine_for, map_stage, rows, stage_fingerprint
from .labels import clean_text, forbidden_mention, normalize_label

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


def parse_sample(data: dict[str, Any], input_type: str, labels: list[str]) -> tuple[Optional[dict[str, str]], Optional[str]]:
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


def write_samples(
    records: list[dict[str, Any]],
    conversations: list[Conversation],
    config: LLMStageConfig,
    stage: str,
    prompt_id: str,
) -> list[dict[str, Any]]:
    """One batched structured call for ``records`` (one conversation each); fills the sample
    columns, usage, ``raw``/``error`` in place and returns ``records``."""
    engine = engine_for(config.engine)
    by_type: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        by_type.setdefault(record["input_type"], []).append(i)
    for input_type, indexes in by_type.items():  # one call per input type (one in practice)
        believed = asks_believed_label(config.prompt_set)
        results = structured_chat(
            engine, [conversations[i] for i in indexes], sample_answer(input_type, believed), config.sampling(),
            stage=stage, max_repairs=config.max_repairs,
            constrained_schema=sample_grammar(input_type, config.max_tokens, believed),
        )
        for i, result in zip(indexes, results):
            record = records[i]
            record["usage"] = add_usage(record["usage"], result)
            record["raw"], record["error"], record["error_stage"] = result.raw, None, None
            record["model"], record["prompt_version"] = engine.model_name, prompt_id
            sample, error = (None, result.error) if not result.ok else parse_sample(result.data, input_type, record["labels"])
            if sample is None:
                record.update(text="", task="", reasoning="", believed_label="", error=error, error_stage=stage)
            else:
                record.update(sample)
    return records


def _generate_batch(batch: dict[str, list], config: GenerateConfig, prompts: tuple, version: str) -> dict[str, list]:
    (prompt,) = prompts
    records = rows(batch)
    conversations = [
        prompt.messages(
            criterion=r["criterion"], input_type=r["input_type"], seed_example=r["seed_example"],
            seed_task=r["seed_task"], dimension=r["dimension"], instantiation=r["instantiation"],
            applies=r["target"] == 1, sample_id=r["seed"],
        )
        for r in records
    ]
    for record in records:
        record.update(refinements=0, previous_texts=[], dissents=[], debate_history=[])
    write_samples(records, conversations, config, "generate", prompt.id)
    names = list(generated_features(["0", "1"]))
    return {name: [record[name] for record in records] for name in names}


def _prompts(config: GenerateConfig) -> tuple:
    return (load_prompt("generate", config.prompt_version, config.prompt_set),)


def generate_fingerprint(ds: Dataset, config: GenerateConfig) -> str:
    return stage_fingerprint(ds, "generate", STAGE_VERSION, _prompts(config), config, _generate_batch)


def generate(ds: Dataset, config: Optional[GenerateConfig] = None, **map_kwargs: Any) -> Dataset:
    """Plan rows (:func:`~hf_barred.stages.features.plan_features`) -> generated rows
    (:func:`~hf_barred.stages.features.generated_features`), one batched call per map batch.

    Example:
        >>> from hf_barred.stages.generate import GenerateConfig, generate
        >>> samples = generate(plan_rows, GenerateConfig())  # doctest: +SKIP
        >>> samples[0]["text"], samples[0]["error"]  # doctest: +SKIP
        ('User: ...\\nAgent: ...', None)
    """
    config = config or GenerateConfig()
    labels = ds.features["target"].names
    return map_stage(
        ds, _generate_batch, stage="generate", version=STAGE_VERSION, config=config, prompts=_prompts(config),
        features=generated_features(labels), map_kwargs=map_kwargs,
    )
