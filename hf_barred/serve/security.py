"""Limits and the optional bearer key of ``barred serve``, and the error body every failure returns.

Errors use OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, so OpenAI clients
raise their usual exceptions (401, 404, 413, 422, 503). A malformed body's 422 lists what is wrong
(field, reason) but never echoes the submitted text, and nothing here logs request text.

Example:
    >>> from hf_barred.serve.security import ServeLimits, bearer_ok
    >>> ServeLimits().max_input_chars
    20000
    >>> bearer_ok("Bearer s3cret", "s3cret"), bearer_ok("Bearer nope", "s3cret"), bearer_ok(None, None)
    (True, False, True)
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from typing import Any, Optional


@dataclass(frozen=True)
class ServeLimits:
    """``max_input_chars`` per text, ``max_inputs`` texts per request, ``max_body_bytes`` per body (all 413)."""

    max_input_chars: int = 20_000
    max_inputs: int = 256
    max_body_bytes: int = 8 * 1024 * 1024


def read_api_key(env_var: Optional[str]) -> Optional[str]:
    """The key in ``$env_var`` (None when no variable is named); a named but empty variable is an error."""
    if not env_var:
        return None
    key = os.environ.get(env_var, "")
    if not key:
        raise ValueError(
            f"--api-key-env {env_var}: expected the environment variable {env_var} to hold the key, "
            f"found it unset or empty. Fix: export {env_var}=... before `barred serve`."
        )
    return key


def bearer_ok(header: Optional[str], key: Optional[str]) -> bool:
    """Whether an ``Authorization`` header carries ``key`` (constant-time); always true without a key."""
    if key is None:
        return True
    scheme, _, token = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())


def error_body(
    message: str, type_: str, code: Optional[str] = None, param: Optional[str] = None, **extra: Any
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code, **extra}}


def validation_summary(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """pydantic errors without their ``input`` (the submitted text) or ``ctx`` values."""
    return [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", ""), "type": e.get("type", "")} for e in errors
    ]
