"""Request and response bodies of ``barred serve``: the OpenAI Moderation API shape, validated by pydantic.

``categories`` / ``category_scores`` are keyed by guardrail name; a policy guardrail adds one key per
violated S-code, ``"<name>/S<i>"``. ``guardrails`` (an extension OpenAI clients ignore) carries each
guardrail's full verdict: label, score, flagged, categories, and the parse error if any.

Example:
    >>> from hf_barred.serve.schemas import ModerationRequest
    >>> ModerationRequest.model_validate({"input": "hi"}).texts()
    ['hi']
    >>> ModerationRequest.model_validate({"input": ["a", "b"], "model": "crime"}).names()
    ['crime']
"""

from __future__ import annotations

from typing import Optional, Union

from pydantic import BaseModel, ConfigDict, Field


class ModerationRequest(BaseModel):
    """``POST /v1/moderations``: ``input`` one text or a list; ``model`` a guardrail, a list, or omitted (all)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    input: Union[str, list[str]] = Field(description="The text, or a list of texts, to check.")
    model: Union[str, list[str], None] = Field(default=None, description="Guardrail name(s); omitted: all of them.")

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)

    def names(self) -> Optional[list[str]]:
        if self.model is None:
            return None
        return [self.model] if isinstance(self.model, str) else list(self.model)


class GuardVerdict(BaseModel):
    """One guardrail's verdict on one text (the fields of :class:`hf_barred.guardrails.guardrail.Verdict`)."""

    label: str
    flagged: bool
    score: float
    categories: list[str] = Field(default_factory=list)
    error: Optional[str] = None


class ModerationResult(BaseModel):
    flagged: bool
    categories: dict[str, bool]
    category_scores: dict[str, float]
    category_applied_input_types: dict[str, list[str]]
    guardrails: dict[str, GuardVerdict]


class ModerationResponse(BaseModel):
    id: str
    model: str
    results: list[ModerationResult]


class ModelCard(BaseModel):
    """A ``GET /v1/models`` entry: a guardrail, with its rule or taxonomy, kind and base model."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: str = "model"
    owned_by: str = "hf_barred"
    kind: str
    base_model: str
    backend: str


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelCard]


class BackendHealth(BaseModel):
    backend: str
    guardrails: list[str]
    ok: bool
    detail: str


class Health(BaseModel):
    status: str
    backends: list[BackendHealth]
