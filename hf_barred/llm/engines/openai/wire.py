"""The wire format of the ``openai`` engine: request sizing, backoff, and parsing a chat completion body.

Example:
    >>> from hf_barred.llm.engines.openai.wire import parse_chat_completion
    >>> parse_chat_completion(b'{"choices": [{"message": {"content": "Yes"}}]}', "m").text
    'Yes'
"""

from __future__ import annotations

import email.utils
import json
import math
import random
import time
from typing import Any, Optional

from ...base import Completion, Conversation, SamplingParams
from ...config import EngineConfig
from ...providers import PROVIDERS

__all__ = [
    "chat_payload",
    "DEFAULT_BASE_URL",
    "MAX_BACKOFF",
    "MAX_RETRY_AFTER",
    "NO_KEY",
    "INITIAL_BACKOFF",
    "MalformedResponse",
    "RETRIED_STATUSES",
    "backoff_delay",
    "estimate_tokens",
    "parse_chat_completion",
    "retry_after",
]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
NO_KEY = "EMPTY"  # what local servers (vLLM, llama.cpp, Ollama) accept when no key is configured
INITIAL_BACKOFF = 0.5  # seconds; same schedule as the SDK's own retries
MAX_BACKOFF = 8.0
MAX_RETRY_AFTER = 120.0  # seconds; a longer Retry-After is not waited for (the request fails)
RETRIED_STATUSES = frozenset({408, 409, 429})  # and every 5xx


class MalformedResponse(ValueError):
    """A 200 response whose body is not a chat completion."""


def estimate_tokens(conversation: Conversation, max_tokens: int) -> int:
    """Tokens a request may cost, for the tokens-per-minute limit: prompt characters / 4 + ``max_tokens``.

    >>> estimate_tokens([{"role": "user", "content": "x" * 400}], max_tokens=50)
    150
    """
    chars = sum(len(str(message.get("content", ""))) for message in conversation)
    return chars // 4 + max_tokens


def backoff_delay(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): 0.5 s doubling up to 8 s, minus 0-25 % jitter."""
    return min(INITIAL_BACKOFF * 2.0**attempt, MAX_BACKOFF) * (1 - 0.25 * random.random())


def retry_after(headers: Any) -> Optional[float]:
    """Seconds a ``Retry-After`` / ``retry-after-ms`` header asks to wait (seconds, or an HTTP date),
    None when there is none or it cannot be read.

    >>> retry_after({"retry-after-ms": "250"}), retry_after({"retry-after": "2"}), retry_after({})
    (0.25, 2.0, None)
    """
    if headers is None:
        return None
    for header, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(header)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            try:
                seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
            except (TypeError, ValueError, IndexError, OverflowError):
                return None
        return seconds if math.isfinite(seconds) else None
    return None


def parse_chat_completion(content: bytes, default_model: str) -> Completion:
    """A :class:`Completion` from the raw body of a ``/chat/completions`` response.

    Raises :class:`MalformedResponse` when the body is not JSON or has no ``choices[0].message``.
    A missing ``usage`` (some servers omit it) counts as 0 tokens. The thinking a server returns
    apart from the answer (``reasoning_content``, or ``reasoning`` in newer vLLM) goes to
    :attr:`Completion.reasoning`, never into the answer ``text``.

    >>> body = b'{"choices": [{"message": {"content": "{}", "reasoning_content": "Let me think."}}]}'
    >>> completion = parse_chat_completion(body, "m")
    >>> completion.text, completion.reasoning
    ('{}', 'Let me think.')
    """
    try:
        data = json.loads(content)
    except ValueError:
        raise MalformedResponse(f"the body is not JSON: {content[:120]!r}") from None
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise MalformedResponse(f"expected a chat completion with a non-empty 'choices' list, found {content[:120]!r}")
    message = choices[0].get("message")
    text = message.get("content") if isinstance(message, dict) else None
    if not isinstance(message, dict) or not isinstance(text, (str, type(None))):
        raise MalformedResponse(f"expected choices[0].message.content to be a string, found {content[:120]!r}")
    reasoning = message.get("reasoning_content") or message.get("reasoning") or ""
    usage: dict[str, Any] = data["usage"] if isinstance(data.get("usage"), dict) else {}
    details: dict[str, Any] = usage.get("completion_tokens_details") or {}
    details = details if isinstance(details, dict) else {}
    return Completion(
        text=text or "",  # None: a refusal or a tool call, no text
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        reasoning_tokens=int(details.get("reasoning_tokens") or 0),
        finish_reason=str(choices[0].get("finish_reason") or "stop"),
        model=str(data.get("model") or default_model),
        reasoning=reasoning if isinstance(reasoning, str) else "",
    )


def chat_payload(config: EngineConfig, conversation: Conversation, params: SamplingParams) -> dict[str, Any]:
    """The JSON body of a ``/chat/completions`` request in the contract of ``config``'s provider
    (:mod:`hf_barred.llm.providers`): a reasoning model gets ``max_completion_tokens`` (the answer budget plus
    the reasoning allowance) and no ``temperature``, ``top_p`` or ``stop``; ``reasoning_effort`` when set;
    ``seed`` when set and the provider honours it; ``stop`` only when non-empty; the JSON schema where the
    provider honours it (Anthropic's endpoint ignores it: the answer is validated and repaired instead).

    >>> config = EngineConfig(engine="openai", provider="openai", model="gpt-5-mini", api_key_env="K")
    >>> sorted(chat_payload(config, [], SamplingParams(max_tokens=64, temperature=0.0)))
    ['max_completion_tokens', 'messages', 'model', 'seed']
    """
    profile = PROVIDERS[config.provider or "generic"]
    payload: dict[str, Any] = {"model": config.model, "messages": list(conversation)}
    if config.is_reasoning:  # they sample at temperature 1 and reject the sampling knobs and stop strings
        payload["max_completion_tokens"] = params.max_tokens + config.reasoning_allowance
    else:
        payload["max_tokens"] = params.max_tokens
        cap = profile.max_temperature
        payload["temperature"] = params.temperature if cap is None else min(params.temperature, cap)
        payload["top_p"] = params.top_p
    if config.reasoning_effort is not None:
        payload["reasoning_effort"] = config.reasoning_effort
    if params.seed is not None and profile.seed:
        payload["seed"] = params.seed
    if params.stop and not config.is_reasoning:
        payload["stop"] = list(params.stop)
    if params.json_schema is not None and profile.json_schema:
        payload["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": params.json_schema, "strict": False},
        }
    return payload
