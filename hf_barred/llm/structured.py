"""JSON-schema answers: constrained where the engine can, else validate and repair (bounded).

Engines that support constrained decoding (vLLM guided JSON, OpenAI ``response_format``, the local
engine with ``xgrammar``) get the schema with the request — or a stricter ``constrained_schema``
(closed enums, bounded string lengths so that the answer ends within ``max_tokens``) that the
answer must then follow. Every answer is then parsed (exact JSON first; else ``json-repair``
mends single quotes, trailing commas, unquoted keys and the like, but never a truncated answer)
and validated with ``jsonschema``; an answer that fails is sent back once per repair round, in one
batched call, with the validation error, at most ``max_repairs`` times. A row that still fails keeps
its raw text and its error: it is
counted, never dropped or silently replaced by ``None``.

Reasoning models think before they answer: a ``<think>…</think>`` block in the text (DeepSeek-R1,
Qwen3), or the server's ``reasoning_content`` (:attr:`~hf_barred.llm.base.Completion.reasoning`).
The answer is read after the thinking (:func:`answer_text`), so no JSON draft inside the thinking
is taken for the answer and no repair call is spent on it; the thinking is kept in the result's
``raw`` text (:func:`raw_text`), never in its ``data``.

Example:
    >>> from hf_barred.llm.structured import parse_json_answer
    >>> schema = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}
    >>> parse_json_answer('Sure! ```json\\n{"label": "True"}\\n```', schema)
    ({'label': 'True'}, None)
    >>> parse_json_answer('{"lable": "True"}', schema)[1]
    "'label' is a required property"
    >>> parse_json_answer("{'label': 'True',}", schema)   # mended by json-repair
    ({'label': 'True'}, None)
    >>> parse_json_answer('<think>Maybe {"label": "no"}? No.</think>{"label": "yes"} Done.', schema)
    ({'label': 'yes'}, None)
"""

from __future__ import annotations

import json
import re
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Protocol, Union

import json_repair
import jsonschema

from .base import Completion, Conversation, SamplingParams, cut_off, defuse_control_tokens

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)
_THINK_BLOCK = re.compile(r"<(think|thinking)>.*?</\1>", re.DOTALL | re.IGNORECASE)
_THINK_OPEN = re.compile(r"<(?:think|thinking)>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</(?:think|thinking)>", re.IGNORECASE)

REPAIR_MESSAGE = (
    "Your previous answer could not be used: {error}\n"
    "Reply again with only one JSON object that follows this schema, and nothing else:\n{schema}"
)


class AnswerSchema(Protocol):
    """What :func:`structured_chat` needs of an answer model (:class:`hf_barred.stages.answers.Answer`)."""

    def validation_error(self, value: Any) -> Optional[str]: ...

    def grammar(self) -> dict[str, Any]: ...


Schema = Union[dict[str, Any], AnswerSchema]
"""A JSON schema (validated with ``jsonschema``) or an answer model (validated by the model)."""


@dataclass
class StructuredResult:
    """A parsed answer. ``data`` is None exactly when ``error`` is set; ``raw`` is the last answer."""

    data: Optional[dict[str, Any]]
    raw: str
    error: Optional[str]
    attempts: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = True

    @property
    def ok(self) -> bool:
        return self.error is None


def answer_text(text: str) -> str:
    """The answer in a reasoning model's output, without its thinking.

    ``<think>…</think>`` blocks are removed; a closing tag alone (the chat template opened the
    block) drops everything before it; an opening tag never closed (the model was cut off while
    thinking) drops everything after it.

    >>> answer_text("<think>\\nhmm {draft}\\n</think>\\n\\n{\\"a\\": 1}")
    '{"a": 1}'
    >>> answer_text("so the label is yes.</think>{}"), answer_text("<think>still thinking"), answer_text("plain")
    ('{}', '', 'plain')
    """
    text = _THINK_BLOCK.sub("", text)
    closes = list(_THINK_CLOSE.finditer(text))
    if closes:
        text = text[closes[-1].end() :]
    opened = _THINK_OPEN.search(text)
    if opened:
        text = text[: opened.start()]
    return text.strip()


def raw_text(completion: Completion) -> str:
    """What a row keeps as its ``raw`` answer: the text, after the server's separate thinking
    (``reasoning_content``) in a ``<think>`` block when there is one.

    >>> raw_text(Completion(text='{"a": 1}', reasoning="Let me see."))
    '<think>\\nLet me see.\\n</think>\\n{"a": 1}'
    """
    if not completion.reasoning:
        return completion.text
    return f"<think>\n{completion.reasoning}\n</think>\n{completion.text}"


def _candidates(text: str) -> list[str]:
    """Texts that may hold the JSON object: code fences first, then each ``{`` onwards."""
    found = [m.group(1) for m in _FENCE.finditer(text)]
    found.append(text)
    return found


def extract_json_object(text: str, repair: bool = True) -> Optional[Any]:
    """The first JSON object in ``text`` (inside code fences, or surrounded by prose), else None.

    Exact JSON is looked for first; with ``repair`` an answer with none is handed to
    ``json_repair`` (single quotes, trailing commas, unquoted keys, missing closing brackets).
    """
    decoder = json.JSONDecoder()
    for candidate in _candidates(text):
        candidate = candidate.strip()
        for start in [m.start() for m in re.finditer(r"\{", candidate)]:
            try:
                value, _ = decoder.raw_decode(candidate, start)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    if repair and "{" in text:
        mended = json_repair.loads(text)
        for value in mended if isinstance(mended, list) else [mended]:
            if isinstance(value, dict) and value:
                return value
    return None


def parse_json_answer(text: str, schema: Schema, repair: bool = True) -> tuple[Optional[dict[str, Any]], Optional[str]]:
    """``(data, None)`` when ``text`` holds a JSON object valid under ``schema``, else ``(None, error)``.
    ``data`` is the object as the model wrote it; an answer model only validates it.

    ``repair=False`` accepts exact JSON only (for an answer cut off at ``max_tokens``, which
    json-repair would close into a shorter, wrong answer). The answer is read after any thinking
    (:func:`answer_text`)."""
    answer = answer_text(text)
    if not answer and text.strip():
        return None, "the answer holds only thinking, with no answer after it (cut off at max_tokens?)"
    value = extract_json_object(answer, repair=repair)
    if value is None:
        snippet = answer.replace("\n", " ")[:80]
        return None, f"no JSON object found in the answer (it starts: {snippet!r})"
    if not isinstance(schema, dict):
        problem = schema.validation_error(value)
        return (None, problem) if problem else (value, None)
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path)
        return None, (f"at '{where}': " if where else "") + error.message
    return value, None


StructuredSteps = Generator[tuple[list[Conversation], SamplingParams], list[Completion], list[StructuredResult]]
"""The repair loop of :func:`structured_steps`: it yields the conversations to send (with their sampling
parameters), is sent their completions, and returns the results."""


def structured_steps(
    conversations: Sequence[Conversation],
    schema: Schema,
    params: SamplingParams,
    *,
    supports_json_schema: bool,
    max_repairs: int = 2,
    constrained_schema: Optional[dict[str, Any]] = None,
) -> StructuredSteps:
    """Ask every conversation for a JSON object following ``schema``: the loop, without the engine.

    Each round yields the conversations that still need an answer, in one batch; an answer that fails
    goes back once per repair round with the validation error, at most ``max_repairs`` times. Driven by
    :func:`structured_chat` (one batched engine call per round) or :func:`astructured_chat` (awaited).

    ``schema`` is a JSON schema or an answer model (:mod:`hf_barred.stages.answers`). ``constrained_schema``
    (default: ``schema``, or the model's grammar) is what an engine with constrained decoding decodes
    with, and what a repair round shows; it should accept only answers that ``schema`` accepts.

    >>> steps = structured_steps([[{"role": "user", "content": "?"}]], {"type": "object", "required": ["a"]},
    ...                          SamplingParams(), supports_json_schema=False, max_repairs=1)
    >>> conversations, _ = next(steps)
    >>> repair, _ = steps.send([Completion(text="no JSON")])          # a repair round for the one answer
    >>> repair[0][-1]["content"].startswith("Your previous answer could not be used")
    True
    >>> try:
    ...     steps.send([Completion(text='{"a": 1}')])
    ... except StopIteration as done:
    ...     print(done.value[0].data, done.value[0].attempts)
    {'a': 1} 2
    """
    decoded = constrained_schema or (schema if isinstance(schema, dict) else schema.grammar())
    if supports_json_schema:
        params = params.replace(json_schema=decoded)
    schema_text = json.dumps(schema if isinstance(schema, dict) else decoded, ensure_ascii=False)
    current = [list(conv) for conv in conversations]
    results: list[Optional[StructuredResult]] = [None] * len(conversations)
    pending = list(range(len(conversations)))
    for attempt in range(1, max_repairs + 2):
        if not pending:
            break
        completions = yield [current[i] for i in pending], params
        still_failing: list[int] = []
        for i, completion in zip(pending, completions):
            previous = results[i]
            prompt_tokens = (previous.prompt_tokens if previous else 0) + completion.prompt_tokens
            completion_tokens = (previous.completion_tokens if previous else 0) + completion.completion_tokens
            cached = (previous.cached if previous else True) and completion.cached
            if not completion.ok:  # the engine gave up on this request; a repair would not help
                results[i] = StructuredResult(
                    None, "", completion.error, attempt, prompt_tokens, completion_tokens, cached
                )
                continue
            # a truncated answer is never mended: closing its brackets would keep a cut-off text
            data, error = parse_json_answer(completion.text, schema, repair=completion.finish_reason != "length")
            if error is not None and completion.finish_reason == "length":
                error += " (the answer was cut off at max_tokens)"
                if not answer_text(completion.text):  # the budget went on thinking: counted apart, with its flag
                    spent = f"{completion.completion_tokens} completion tokens, {completion.reasoning_tokens} reasoning"
                    error = cut_off(f"{error}; no answer within the token budget ({spent})")
            raw = raw_text(completion)
            results[i] = StructuredResult(data, raw, error, attempt, prompt_tokens, completion_tokens, cached)
            if error is not None:
                still_failing.append(i)
                repair = REPAIR_MESSAGE.format(error=error, schema=schema_text)  # the error may quote the answer
                current[i] = current[i] + [  # the answer goes back without its thinking, as one message
                    {"role": "assistant", "content": defuse_control_tokens(answer_text(completion.text))},
                    {"role": "user", "content": defuse_control_tokens(repair)},
                ]
        pending = still_failing
    return results  # type: ignore[return-value]


def structured_chat(
    engine: Any,
    conversations: Sequence[Conversation],
    schema: Schema,
    params: SamplingParams,
    stage: str = "",
    max_repairs: int = 2,
    constrained_schema: Optional[dict[str, Any]] = None,
) -> list[StructuredResult]:
    """:func:`structured_steps` on ``engine`` (a :class:`~hf_barred.llm.cache.CachedBackend`, from
    ``get_engine``): one batched ``chat`` call per round, its usage tagged ``stage``."""
    steps = structured_steps(
        conversations,
        schema,
        params,
        supports_json_schema=engine.supports_json_schema,
        max_repairs=max_repairs,
        constrained_schema=constrained_schema,
    )
    try:
        batch, round_params = next(steps)
        while True:
            batch, round_params = steps.send(engine.chat(batch, round_params, stage=stage))
    except StopIteration as done:
        return done.value


async def astructured_chat(
    engine: Any,
    conversations: Sequence[Conversation],
    schema: Schema,
    params: SamplingParams,
    stage: str = "",
    max_repairs: int = 2,
    constrained_schema: Optional[dict[str, Any]] = None,
) -> list[StructuredResult]:
    """:func:`structured_steps` on an engine whose ``chat`` is awaited
    (:class:`~hf_barred.llm.async_engine.AsyncEngine`)."""
    steps = structured_steps(
        conversations,
        schema,
        params,
        supports_json_schema=engine.supports_json_schema,
        max_repairs=max_repairs,
        constrained_schema=constrained_schema,
    )
    try:
        batch, round_params = next(steps)
        while True:
            batch, round_params = steps.send(await engine.chat(batch, round_params, stage=stage))
    except StopIteration as done:
        return done.value
