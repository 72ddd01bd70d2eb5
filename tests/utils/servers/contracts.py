"""The request contracts the loopback OpenAI server enforces: what the real providers reject, they reject.

- ``generic`` (a vLLM-like server): any OpenAI-shaped chat request.
- ``openai``: OpenAI's chat-completions contract. Reasoning models (the o-series, the gpt-5 family but its
  ``*-chat`` models; the names in ``REASONING``) reject ``max_tokens`` ("Use 'max_completion_tokens'
  instead"), any ``temperature`` or ``top_p`` other than 1, and ``stop``; other models reject
  ``reasoning_effort``. ``reasoning_effort`` must be one of minimal/low/medium/high. The error bodies are
  OpenAI's (``invalid_request_error``, ``unsupported_parameter`` / ``unsupported_value``), HTTP 400.
- ``azure``: the same rules, keyed on the *deployment's* model, on Azure's URL shape
  (``/openai/deployments/{deployment}/chat/completions?api-version=...``, the key in ``api-key``): a missing
  ``api-version`` is a 404, an unknown one a 400, an unknown deployment a 404 ``DeploymentNotFound``.

A reasoning model "thinks" before it answers: :func:`reasoning_tokens` gives how many tokens, by effort;
they count against ``max_completion_tokens`` and are reported in ``usage.completion_tokens_details``.

Example:
    >>> check_chat("openai", "gpt-5-mini", {"max_tokens": 8, "messages": []})["param"]
    'max_tokens'
    >>> check_chat("openai", "gpt-5-mini", {"max_completion_tokens": 8, "temperature": 1}) is None
    True
    >>> check_chat("openai", "gpt-4.1", {"max_tokens": 8, "temperature": 0.7}) is None
    True
"""

from __future__ import annotations

import re
from typing import Any, Optional

REASONING = re.compile(r"^(o\d+(-[a-z]+)*|gpt-5(?!(\.\d+)?-chat)[\w.-]*)$")
EFFORTS = ("minimal", "low", "medium", "high")
AZURE_API_VERSIONS = ("2024-10-21", "2024-12-01-preview", "2025-03-01-preview", "2025-04-01-preview")
THINKING = {None: 48, "minimal": 0, "low": 16, "medium": 48, "high": 160}
"""Reasoning tokens a reasoning model spends on one answer, by effort (None: its default, medium)."""


def is_reasoning(model: str) -> bool:
    return bool(REASONING.match(model))


def reasoning_tokens(body: dict[str, Any]) -> int:
    return THINKING.get(body.get("reasoning_effort"), THINKING[None])


def _unsupported(param: str, message: str, code: str = "unsupported_parameter") -> dict[str, Any]:
    return {"status": 400, "message": message, "type": "invalid_request_error", "param": param, "code": code}


def check_chat(contract: str, model: str, body: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The error a provider answers a chat request with (``status``, ``message``, ``type``, ``param``,
    ``code``), or None when it accepts it. ``model``: the model behind the request (Azure: the deployment's)."""
    if contract == "generic":
        return None
    effort = body.get("reasoning_effort")
    if is_reasoning(model):
        if "max_tokens" in body:
            return _unsupported(
                "max_tokens",
                "Unsupported parameter: 'max_tokens' is not supported with this model. "
                "Use 'max_completion_tokens' instead.",
            )
        for name in ("temperature", "top_p"):
            if name in body and body[name] != 1:
                return _unsupported(
                    name,
                    f"Unsupported value: '{name}' does not support {body[name]} with this "
                    "model. Only the default (1) value is supported.",
                    "unsupported_value",
                )
        if "stop" in body:
            return _unsupported("stop", "Unsupported parameter: 'stop' is not supported with this model.")
        if effort is not None and effort not in EFFORTS:
            return _unsupported(
                "reasoning_effort",
                f"Invalid value: '{effort}'. Supported values are: {', '.join(repr(e) for e in EFFORTS)}.",
                "invalid_value",
            )
    elif effort is not None:
        return _unsupported(
            "reasoning_effort", "Unsupported parameter: 'reasoning_effort' is not supported with this model."
        )
    return None


def check_azure_url(path: str, query: dict[str, str], deployments: dict[str, str]) -> Optional[dict[str, Any]]:
    """Azure's answer to a request on ``path`` (``/openai/...``) with ``query``, or None when the URL is valid."""
    version = query.get("api-version")
    if version is None:
        return {
            "status": 404,
            "message": "Resource not found",
            "type": "invalid_request_error",
            "param": None,
            "code": "404",
        }
    if version not in AZURE_API_VERSIONS:
        return {
            "status": 400,
            "message": f"API version not supported: {version}",
            "type": "invalid_request_error",
            "param": None,
            "code": "BadRequest",
        }
    match = re.match(r"^/openai/deployments/([^/]+)/", path)
    if match and match.group(1) not in deployments:
        return {
            "status": 404,
            "message": "The API deployment for this resource does not exist. If you created the "
            "deployment within the last 5 minutes, please wait a moment and try again.",
            "type": "invalid_request_error",
            "param": None,
            "code": "DeploymentNotFound",
        }
    return None
