"""Answers that follow the JSON schema a request asks for, for runs against the loopback OpenAI server.

:func:`schema_answer` writes the smallest valid instance of a request's ``response_format`` schema,
with distinct, plain-word strings (so dimensions are not merged as duplicates and samples mention no
forbidden word); :class:`StageServer` is an :class:`~tests.utils.servers.openai_server.OpenAIServer` that
can fail the requests of chosen stages, recognised by their schema.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from typing import Any, Optional

from tests.utils.servers.openai_server import Action, OpenAIServer

WORDS = (
    "amber",
    "birch",
    "cedar",
    "delta",
    "ember",
    "fjord",
    "grove",
    "harbor",
    "island",
    "juniper",
    "kestrel",
    "lagoon",
    "meadow",
    "nectar",
    "orchid",
    "prairie",
    "quartz",
    "river",
    "summit",
    "tundra",
)


def stage_of(body: dict[str, Any]) -> str:
    """The stage a request belongs to, from its schema's properties."""
    schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema") or {}
    props = set(schema.get("properties") or {})
    if "dimensions" in props:
        return "decompose"
    if "values" in props:
        return "instantiate"
    if "text" in props or "response" in props:  # a sample (the served set's also carries a believed label)
        return "generate"
    if "label" in props:
        return "judge"
    return "other"


class _Writer:
    def __init__(self) -> None:
        self.counter = itertools.count()

    def value(self, schema: dict[str, Any]) -> Any:
        kind = schema.get("type", "object")
        kind = kind[0] if isinstance(kind, list) else kind
        if "enum" in schema:
            return schema["enum"][0]
        if kind == "object":
            return {name: self.value(sub) for name, sub in (schema.get("properties") or {}).items()}
        if kind == "array":
            return [
                self.value(schema.get("items") or {"type": "string"})
                for _ in range(max(schema.get("minItems", 1), min(schema.get("maxItems", 3), 3)))
            ]
        if kind in ("number", "integer"):
            low, high = schema.get("minimum", 0), schema.get("maximum", 1)
            return low if kind == "integer" else (low + high) / 2
        if kind == "boolean":
            return True
        n = next(self.counter)
        text = f"{WORDS[n % len(WORDS)]} {WORDS[(n // len(WORDS)) % len(WORDS)]} {n}"
        text = text.ljust(schema.get("minLength", 0), "x")
        return text[: schema.get("maxLength", len(text))]


_WRITER = _Writer()


NEGATIVE = "(calm)"
"""The mark of a sample written for the negative label: the judges read it and say ``no``."""
_NEGATIVE_TARGET = ('"no": the criterion does not hold', "only just does not apply")  # served, small prompt sets


def schema_answer(body: dict[str, Any], writer: Optional[_Writer] = None) -> str:
    """A JSON answer valid under the request's ``response_format`` schema. A sample written for the negative
    label carries :data:`NEGATIVE`, and a judge says ``no`` to it and ``yes`` otherwise, so the debate
    accepts what the plan asked for."""
    schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema")
    if not schema:
        return "plain answer"
    answer = (writer or _WRITER).value(schema)
    text = " ".join(str(m.get("content", "")) for m in body.get("messages", []))
    stage = stage_of(body)
    if stage == "generate" and any(mark in text for mark in _NEGATIVE_TARGET):
        for key in ("text", "response"):
            if key in answer:
                answer[key] = f"{answer[key]} {NEGATIVE}"
    elif stage == "judge" and NEGATIVE in text and "label" in answer:
        answer["label"] = "no"
    return json.dumps(answer)


class StageServer(OpenAIServer):
    """The loopback server answering by schema, failing every request of the stages in ``failing``
    with ``failure`` (set both attributes at any time)."""

    def __init__(self, **kwargs: Any):
        super().__init__(responder=schema_answer, **kwargs)
        self.failing: set[str] = set()
        self.failure: Optional[Action] = None

    def _next_action(self, body: dict[str, Any]) -> Action:
        if self.failure is not None and stage_of(body) in self.failing:
            return self.failure
        return super()._next_action(body)

    def stage_requests(self, stage: str) -> int:
        return sum(1 for r in list(self.requests) if stage_of(r.body) == stage)


def content_schema_answer(body: dict[str, Any]) -> str:
    """:func:`schema_answer` whose strings depend on the request's messages only, not on the order requests
    arrive in: two runs that ask the same things get the same answers (resume and executor comparisons)."""
    digest = hashlib.sha256(json.dumps(body.get("messages", []), sort_keys=True).encode()).digest()
    writer = _Writer()
    writer.counter = itertools.count(int.from_bytes(digest[:3], "big"))
    return schema_answer(body, writer)
