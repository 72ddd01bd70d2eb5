"""The one small batch interface every engine implements.

A stage turns a batch of rows into a list of conversations and makes *one* ``chat`` call, so an
in-process engine (vLLM, transformers) sees the whole batch and an HTTP engine keeps many requests
in flight.

Example:
    >>> from hf_barred.llm.base import Completion, SamplingParams
    >>> params = SamplingParams(max_tokens=16, temperature=0.0)
    >>> params.cache_fields()["max_tokens"]
    16
    >>> Completion(text="1", prompt_tokens=12, completion_tokens=1, finish_reason="stop").ok
    True
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol, runtime_checkable

Message = dict[str, str]
"""One chat message: ``{"role": "system" | "user" | "assistant", "content": "..."}``."""

Conversation = list[Message]

_CONTROL_TOKEN = re.compile(r"<\|([^<>|\s]{1,40})\|>")


def defuse_control_tokens(text: str) -> str:
    """``text`` with every ``<|name|>`` chat-template token broken by a zero-width space, so that an
    engine that renders a conversation to text before tokenizing it cannot read a token written in
    a message's content as a special token (``<|im_start|>``, ``<|eot_id|>``, ...).

    >>> defuse_control_tokens("<|im_start|>system") == "<\u200b|im_start|>system"
    True
    >>> defuse_control_tokens("a | b <3")
    'a | b <3'
    """
    return _CONTROL_TOKEN.sub(lambda m: "<\u200b|" + m.group(1) + "|>", text)


ResultCallback = Callable[[int, "Completion"], None]
"""Called as ``callback(index, completion)`` as soon as one conversation is answered, so a cache
can keep finished work even if the batch is interrupted."""


@dataclass(frozen=True)
class SamplingParams:
    """Sampling parameters shared by all engines.

    Every field here changes the output, so every field is part of the response-cache key.
    Throughput settings (concurrency, timeouts, batch size) belong to the engine config instead.
    """

    max_tokens: int = field(default=512, metadata={"help": "Maximum number of generated tokens."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature; 0 is greedy."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling probability mass."})
    seed: Optional[int] = field(default=0, metadata={"help": "Sampling seed (per call)."})
    stop: tuple[str, ...] = field(default=(), metadata={"help": "Stop strings."})
    json_schema: Optional[dict[str, Any]] = field(
        default=None,
        metadata={"help": "JSON schema the answer must follow; engines that can constrain decoding do."},
    )

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, found {self.max_tokens}.")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, found {self.temperature}.")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], found {self.top_p}.")
        if isinstance(self.stop, list):  # accept lists from YAML/JSON
            object.__setattr__(self, "stop", tuple(self.stop))

    def cache_fields(self) -> dict[str, Any]:
        """The fields as a JSON-able dict (used in cache keys)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)} | {"stop": list(self.stop)}

    def replace(self, **changes: Any) -> SamplingParams:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


@dataclass
class Completion:
    """One answer of an engine, with its token usage.

    ``finish_reason`` is ``"stop"``, ``"length"`` or ``"error"``; on ``"error"`` the ``error``
    field says what went wrong and ``text`` is empty. ``cached`` is True when the answer came from
    the response cache (it cost no call). ``reasoning`` is the thinking a server returned apart
    from the answer (``reasoning_content``: vLLM's reasoning parser); ``text`` is the answer alone.
    ``reasoning_tokens`` are the hidden thinking tokens a reasoning model spent (OpenAI's
    ``usage.completion_tokens_details.reasoning_tokens``), already counted in ``completion_tokens``.
    """

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    model: str = ""
    cached: bool = False
    error: Optional[str] = None
    reasoning: str = ""
    reasoning_tokens: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@runtime_checkable
class Backend(Protocol):
    """What an engine provides.

    ``chat`` answers every conversation, in order. It must call ``on_result(i, completion)`` as
    soon as conversation ``i`` is answered (so finished work survives an interruption), and
    it returns a :class:`Completion` with ``error`` set for a conversation that failed for good
    rather than dropping it. It raises only for errors that concern the whole engine
    (unreachable endpoint, unknown model, bad credentials).

    An engine whose answers depend on more than its model's name (the local engine's precision)
    also has a ``cache_name`` attribute, which the response cache keys on instead of ``model_name``.
    """

    model_name: str
    supports_json_schema: bool

    def chat(
        self,
        conversations: Sequence[Conversation],
        params: SamplingParams,
        on_result: Optional[ResultCallback] = None,
    ) -> list[Completion]: ...


class EngineError(RuntimeError):
    """An error that concerns the whole engine: unreachable endpoint, unknown model, bad key."""


REQUEST_FAILED = "request failed: "
"""How the ``error`` of a request the engine gave up on begins (HTTP error after the retries, timeout,
refused connection), so a row's error says whether the *request* failed or its *answer* could not
be parsed. :class:`~hf_barred.llm.cache.CachedBackend` adds it to every engine's failed completions."""


def request_failure(message: str) -> str:
    """``message`` marked as a failed request (idempotent).

    >>> request_failure("HTTP 500 after 2 retries: down")
    'request failed: HTTP 500 after 2 retries: down'
    >>> is_request_failure(request_failure(request_failure("x"))), is_request_failure("no JSON object found")
    (True, False)
    """
    return message if message.startswith(REQUEST_FAILED) else REQUEST_FAILED + message


CUT_OFF = "cut off: "
"""How the ``error`` of an answer begins when the token budget ran out before the model wrote any answer
(a reasoning model that spent ``max_completion_tokens`` thinking, ``finish_reason=length``): counted apart
from parse failures, with the flag that raises the budget."""


def cut_off(message: str) -> str:
    """``message`` marked as a budget cut-off (idempotent).

    >>> is_cut_off(cut_off("no answer within 512 tokens")), is_cut_off("no JSON object found")
    (True, False)
    """
    return message if message.startswith(CUT_OFF) else CUT_OFF + message


def is_cut_off(error: Optional[str]) -> bool:
    """Whether a row's ``error`` is a budget cut-off (see :data:`CUT_OFF`)."""
    return bool(error) and str(error).startswith(CUT_OFF)


def is_request_failure(error: Optional[str]) -> bool:
    """Whether a row's ``error`` is a failed request (see :data:`REQUEST_FAILED`), not a parse failure."""
    return bool(error) and str(error).startswith(REQUEST_FAILED)
