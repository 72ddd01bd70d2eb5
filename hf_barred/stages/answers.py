"""The answers stages ask an LLM for: one pydantic model each, for validation and for the grammar.

A model's fields say what an answer must hold to be used (validation: strict types, extra keys
allowed unless the model forbids them, optional fields may be missing). :meth:`Answer.grammar`
derives from the same model the strict JSON schema a constrained engine decodes with: every
field required, no extra keys, the narrower form a field is written in where the model says so
(``WithJsonSchema``: a judge may *answer* ``true`` or a label name, but is *decoded* to
``yes``/``no``), and string lengths bounded so that the answer closes within ``max_tokens``
(:func:`string_budget`).

Example:
    >>> from hf_barred.stages.answers import JudgeAnswer, string_budget
    >>> JudgeAnswer.validation_error({"label": True}) is None            # lenient: a bool is a label
    True
    >>> JudgeAnswer.validation_error({"reasoning": "r"})
    "'label' is required"
    >>> grammar = JudgeAnswer.grammar(max_length={"reasoning": 40})
    >>> grammar["required"], grammar["properties"]["label"]["enum"], grammar["additionalProperties"]
    (['reasoning', 'confidence', 'label'], ['yes', 'no'], False)
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Optional, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    WithJsonSchema,
)

from ..policy.rows import EDIT_KINDS

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails

__all__ = [
    "Answer",
    "BelievedSample",
    "BelievedTaskResponseSample",
    "Dimensions",
    "EditAnswer",
    "Instantiation",
    "Instantiations",
    "JudgeAnswer",
    "Sample",
    "TaskResponseSample",
    "sample_answer",
    "string_budget",
]


def string_budget(max_tokens: int, fields: int = 1, overhead_tokens: int = 0) -> int:
    """The ``maxLength`` of each of ``fields`` JSON strings that, with ``overhead_tokens`` of keys
    and punctuation, lets a constrained answer close within ``max_tokens`` (at a conservative 3
    characters per token; English runs at about 4).

    >>> string_budget(128, fields=2, overhead_tokens=10)
    177
    """
    return max(8, (max_tokens - overhead_tokens) * 3 // fields)


class Answer(BaseModel):
    """Base of the answer models: strict types (as JSON has them), extra keys kept."""

    model_config = ConfigDict(strict=True, extra="allow")
    GRAMMAR_EXTRAS: ClassVar[dict[str, dict[str, Any]]] = {}
    """Constraints that only the grammar has, by path (``field``, ``field[]`` for its items,
    ``field[].sub``): what a constrained engine must write, beyond what validation needs."""

    @classmethod
    def validation_error(cls, value: Any) -> Optional[str]:
        """None when ``value`` (parsed JSON) is a usable answer, else one line saying what is wrong."""
        try:
            cls.model_validate(value)
        except ValidationError as err:
            return _error_line(err, value)
        return None

    @classmethod
    def grammar(cls, max_length: Mapping[str, int] = {}, max_items: Mapping[str, int] = {}) -> dict[str, Any]:
        """The strict JSON schema of this answer (see the module doc); ``max_length`` / ``max_items``
        bound strings and arrays by path (as in :attr:`GRAMMAR_EXTRAS`)."""
        schema = copy.deepcopy(_strict_schema(cls))
        for path, extra in cls.GRAMMAR_EXTRAS.items():
            _at(schema, path).update(copy.deepcopy(extra))
        for path, n in max_length.items():
            _at(schema, path)["maxLength"] = n
        for path, n in max_items.items():
            _at(schema, path)["maxItems"] = n
        return schema


# --- the answers --------------------------------------------------------------------------------------
class Dimensions(Answer):
    """Dimension extraction: the dimensions along which inputs vary in ways that matter."""

    dimensions: Annotated[list[StrictStr], Field(min_length=1)]
    GRAMMAR_EXTRAS = {"dimensions[]": {"minLength": 3}}


class Instantiation(Answer):
    """One instantiation of a dimension, its relevance to the label and its probability."""

    value: StrictStr
    applies: Annotated[Any, WithJsonSchema({"type": "string", "enum": ["yes", "no", "both"]})] = None
    probability: Annotated[Any, WithJsonSchema({"type": "number", "minimum": 0, "maximum": 1})] = None


class Instantiations(Answer):
    """Verbalized sampling: all reasonable instantiations of one dimension."""

    values: Annotated[list[Instantiation], Field(min_length=1)]
    GRAMMAR_EXTRAS = {"values[].value": {"minLength": 2}}


class Sample(Answer):
    """A generated input (``input_block``). ``reasoning`` is asked for but optional: a small model
    often stops after the input, and the input is what the debate validates."""

    text: Annotated[StrictStr, Field(min_length=1)]
    reasoning: Annotated[StrictStr, Field(min_length=1)] = ""


class TaskResponseSample(Answer):
    """A generated input (``task_and_response``): the task and the model's response."""

    task: Annotated[StrictStr, Field(min_length=1)]
    response: Annotated[StrictStr, Field(min_length=1)]
    reasoning: Annotated[StrictStr, Field(min_length=1)] = ""


BelievedLabel = Annotated[
    Union[StrictStr, StrictBool, StrictInt], WithJsonSchema({"type": "string", "enum": ["yes", "no"]})
]
"""The label a generator believes its sample gets: yes/no (or a label name, true/false, 1/0); decoded to yes/no."""


class BelievedSample(Sample):
    """A generated input with the label the generator believes it gets (the served prompt set)."""

    label: BelievedLabel = ""


class BelievedTaskResponseSample(TaskResponseSample):
    """A generated task and response with the label the generator believes they get."""

    label: BelievedLabel = ""


def sample_answer(input_type: str, believed_label: bool = False) -> type[Answer]:
    """The sample model of an input type (with ``believed_label``: also the label the generator
    believes, written after the reasoning).

    >>> sample_answer("task_and_response").__name__
    'TaskResponseSample'
    >>> sample_answer("input_block", believed_label=True).grammar()["required"]
    ['text', 'reasoning', 'label']
    """
    if input_type == "task_and_response":
        return BelievedTaskResponseSample if believed_label else TaskResponseSample
    return BelievedSample if believed_label else Sample


class JudgeAnswer(Answer):
    """A judge's verdict: yes/no (or a label name, true/false, 1/0), with reasoning and confidence."""

    reasoning: StrictStr = ""
    confidence: Annotated[
        Union[StrictFloat, StrictInt, StrictStr, None], WithJsonSchema({"type": "number", "minimum": 0, "maximum": 1})
    ] = None
    label: Annotated[Union[StrictStr, StrictBool, StrictInt], WithJsonSchema({"type": "string", "enum": ["yes", "no"]})]


class EditAnswer(Answer):
    """A guideline edit. Flat, every key required, no extra keys (so that OpenAI strict mode, vLLM
    guided decoding and validation all accept it); what depends on the action (a valid code, at
    least one "Should not" line, ...) is checked when the edit is applied."""

    model_config = ConfigDict(strict=True, extra="forbid")
    reasoning: StrictStr
    action: Literal[EDIT_KINDS]  # type: ignore[valid-type]
    category: StrictStr
    name: StrictStr
    should_not: list[StrictStr]
    can: list[StrictStr]
    GRAMMAR_EXTRAS = {
        "category": {"pattern": "^(S[1-9][0-9]?)?$"},
        "name": {"maxLength": 60},  # "" unless edit_existing
        "should_not": {"maxItems": 3},
        "can": {"maxItems": 3},
    }


# --- schema helpers -----------------------------------------------------------------------------------
def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with every ``$ref`` to its ``$defs`` replaced by the definition (engines differ in
    their support of references)."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]]))
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(schema)


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """Every object closed with all its properties required; titles, descriptions (the models'
    docstrings, for people) and defaults dropped."""
    schema = {k: v for k, v in schema.items() if k not in ("title", "description", "default")}
    if "properties" in schema:
        schema["properties"] = {name: _strict(sub) for name, sub in schema["properties"].items()}
        schema["required"] = list(schema["properties"])
        schema["additionalProperties"] = False
    if isinstance(schema.get("items"), dict):
        schema["items"] = _strict(schema["items"])
    if "anyOf" in schema:
        schema["anyOf"] = [_strict(sub) for sub in schema["anyOf"]]
    return schema


def _at(schema: dict[str, Any], path: str) -> dict[str, Any]:
    """The sub-schema at ``path``: ``a`` (property), ``a[]`` (its items), ``a[].b``."""
    node = schema
    for part in path.split("."):
        items = part.endswith("[]")
        node = node["properties"][part.removesuffix("[]")]
        if items:
            node = node["items"]
    return node


def _error_line(err: ValidationError, value: Any) -> str:
    """The first problem of a failed validation as one line: where, and what was expected."""
    errors = err.errors(include_url=False)

    def where(error: ErrorDetails) -> str:
        node, parts = value, []
        for part in error["loc"]:  # the part of the location that names the input (not a union branch)
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and isinstance(part, int) and part < len(node):
                node = node[part]
            elif error["type"] == "missing" and part == error["loc"][-1]:
                parts.append(str(part))
                break
            else:
                break
            parts.append(str(part))
        return "/".join(parts)

    first = errors[0]
    path = where(first)
    if first["type"] == "missing":
        return f"'{path}' is required"
    messages = list(dict.fromkeys(e["msg"] for e in errors if where(e) == path))
    found = repr(first["input"])
    found = found if len(found) <= 60 else found[:57] + "..."
    return (f"at '{path}': " if path else "") + " or ".join(messages) + f" (found {found})"


@functools.cache
def _strict_schema(answer: type[Answer]) -> dict[str, Any]:
    """The strict, inlined JSON schema of an answer model, built once per class (pydantic takes ~1 ms)."""
    return _strict(_inline(answer.model_json_schema()))
