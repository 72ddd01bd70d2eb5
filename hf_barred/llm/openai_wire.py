"""The wire format of the ``openai`` engine: request sizing, backoff, and parsing a chat completion body.

Example:
    >>> from hf_barred.llm.openai_wire import parse_chat_completion
    >>> parse_chat_completion(b'{"choices": [{"message": {"content": "Yes"}}]}', "m").text
    'Yes'
"""

from __future__ import annotations

import json
import random

from .base import Completion, Conversation

__all__ = ["DEFAULT_BASE_URL", "MAX_BACKOFF", "NO_KEY", "INITIAL_BACKOFF", "MalformedResponse", "backoff_delay",
           "estimate_tokens", "parse_chat_completion"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
NO_KEY = "EMPTY"  # what local servers (vLLM, llama.cpp, Ollama) accept when no key is configured
INITIAL_BACKOFF = 0.5  # seconds; same schedule as the SDK's own retries
MAX_BACKOFF = 8.0


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


def parse_chat_completion(content: bytes, default_model: str) -> Completion:
    """A :class:`Completion` from the raw body of a ``/chat/completions`` response.

    Raises :class:`MalformedResponse` when the body is not JSON or has no ``choices[0].message``.
    A missing ``usage`` (some servers omit it) counts as 0 tokens.
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
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return Completion(
        text=text or "",  # None: a refusal or a tool call, no text
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        finish_reason=str(choices[0].get("finish_reason") or "stop"),
        model=str(data.get("model") or default_model),
    )
