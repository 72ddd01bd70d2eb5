"""Provider profiles: what each OpenAI-compatible provider accepts, and what its known models cost.

The ``openai`` engine talks to every provider through the OpenAI SDK; a :class:`Provider` says how
that provider's contract differs, so that the request is one it accepts:

========== ==================================================== ============ ================ =====
provider   base URL (default)                                   key variable structured output batch
========== ==================================================== ============ ================ =====
openai     https://api.openai.com/v1                            OPENAI_API_KEY    json_schema     yes
azure      https://RESOURCE.openai.azure.com (``--base-url``)   AZURE_OPENAI_API_KEY json_schema  yes
anthropic  https://api.anthropic.com/v1/                        ANTHROPIC_API_KEY prompt only     no
gemini     https://generativelanguage.googleapis.com/v1beta/openai/ GEMINI_API_KEY json_schema   no
vllm       http://127.0.0.1:8000/v1                             (none)            json_schema     no
generic    (``--base-url``)                                     (none)            json_schema     no
========== ==================================================== ============ ================ =====

- **Reasoning models** (OpenAI's o-series and gpt-5 family, on OpenAI and Azure: :data:`REASONING_FAMILIES`)
  take ``max_completion_tokens`` (the answer *and* the hidden reasoning) instead of ``max_tokens``, and
  reject ``temperature``, ``top_p`` and ``stop``; they take ``reasoning_effort``. A deployment or a
  proxy that serves such a model under another name is marked with ``EngineConfig.reasoning_model``.
  A reasoning model served by vLLM (DeepSeek-R1, Qwen3, gpt-oss) takes the usual parameters: it is not
  treated as one unless asked, and its thinking (``reasoning_content`` or ``<think>``) is kept apart.
- **Anthropic** ignores ``response_format`` and ``seed`` and caps ``temperature`` at 1 (its OpenAI SDK
  compatibility page): answers are validated and repaired instead of constrained, and no seed is sent.
- **Gemini** takes ``response_format`` JSON schemas and ``reasoning_effort``; no seed is sent.
- Batch APIs (half price) exist for OpenAI and Azure; Anthropic and Gemini have batch APIs of their own
  shape only, and vLLM runs the same JSONL offline (``python -m vllm.entrypoints.openai.run_batch``).

Example:
    >>> from hf_barred.llm.providers import PROVIDERS, is_reasoning_model, known_prices
    >>> is_reasoning_model("openai", "gpt-5-mini"), is_reasoning_model("openai", "gpt-4.1")
    (True, False)
    >>> is_reasoning_model("vllm", "gpt-5-mini"), PROVIDERS["anthropic"].json_schema
    (False, False)
    >>> known_prices("gpt-5-mini-2025-08-07")
    (0.25, 2.0)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

__all__ = [
    "PRICES",
    "PRICES_DATE",
    "PROVIDERS",
    "REASONING_EFFORTS",
    "REASONING_FAMILIES",
    "REASONING_TOKENS",
    "Provider",
    "is_reasoning_model",
    "known_prices",
]


@dataclass(frozen=True)
class Provider:
    """One provider's OpenAI-compatible contract (see the module docstring)."""

    name: str
    base_url: Optional[str]
    """The default base URL (None: ``--base-url`` is required)."""
    api_key_env: Optional[str]
    """The environment variable that holds its key by default (None: no key, a local server)."""
    json_schema: bool
    """Whether ``response_format`` JSON schemas are honoured (else the answer is validated and repaired)."""
    seed: bool
    """Whether ``seed`` is sent."""
    batch: bool
    """Whether its OpenAI-shaped Batch API (``/files`` + ``/batches``) is available."""
    reasoning_families: bool = False
    """Whether :data:`REASONING_FAMILIES` name its reasoning models."""
    max_temperature: Optional[float] = None
    """A temperature above it is sent as it (Anthropic caps at 1)."""


PROVIDERS: dict[str, Provider] = {
    "openai": Provider(
        "openai",
        "https://api.openai.com/v1",
        "OPENAI_API_KEY",
        json_schema=True,
        seed=True,
        batch=True,
        reasoning_families=True,
    ),
    "azure": Provider(
        "azure", None, "AZURE_OPENAI_API_KEY", json_schema=True, seed=True, batch=True, reasoning_families=True
    ),
    "anthropic": Provider(
        "anthropic",
        "https://api.anthropic.com/v1/",
        "ANTHROPIC_API_KEY",
        json_schema=False,
        seed=False,
        batch=False,
        max_temperature=1.0,
    ),
    "gemini": Provider(
        "gemini",
        "https://generativelanguage.googleapis.com/v1beta/openai/",
        "GEMINI_API_KEY",
        json_schema=True,
        seed=False,
        batch=False,
    ),
    "vllm": Provider("vllm", "http://127.0.0.1:8000/v1", None, json_schema=True, seed=True, batch=False),
    "generic": Provider("generic", None, None, json_schema=True, seed=True, batch=False),
}
"""The provider profiles, by the name ``--provider`` takes."""

AZURE_API_VERSION = "2025-04-01-preview"
"""The Azure OpenAI data-plane API version sent by default: it serves reasoning models (``max_completion_tokens``,
``reasoning_effort``), JSON-schema ``response_format`` and the Batch API."""

REASONING_FAMILIES = re.compile(r"^(o\d+(-[a-z]+)*|gpt-5(?!(\.\d+)?-chat)[\w.-]*)$")
"""OpenAI's reasoning models by name: the o-series (``o1``, ``o3-mini``, ``o4-mini``, dated versions too)
and the gpt-5 family (``gpt-5``, ``gpt-5-mini``, ``gpt-5.1``...) except its non-reasoning ``*-chat``
models. Names are matched without a date suffix."""

REASONING_EFFORTS = ("minimal", "low", "medium", "high")
"""The ``reasoning_effort`` values ``--reasoning-effort`` takes (OpenAI's; ``minimal`` is gpt-5's)."""

REASONING_TOKENS = {None: 8192, "minimal": 1024, "low": 4096, "medium": 8192, "high": 16384}
"""The reasoning allowance added to a stage's answer budget, by effort (None: the model's own default,
medium): ``max_completion_tokens`` is the answer budget plus this. It bounds what a call may spend; a
call is billed what it used. ``--reasoning-tokens`` sets it."""

_DATE_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$")


def _base_name(model: str) -> str:
    return _DATE_SUFFIX.sub("", model.strip().lower().rsplit("/", 1)[-1])


def is_reasoning_model(provider: str, model: str) -> bool:
    """Whether ``model`` on ``provider`` is a reasoning model by its name (see :data:`REASONING_FAMILIES`).

    >>> is_reasoning_model("azure", "o4-mini"), is_reasoning_model("openai", "gpt-5-chat-latest")
    (True, False)
    >>> is_reasoning_model("openai", "o3-2025-04-16"), is_reasoning_model("openai", "gpt-4o")
    (True, False)
    """
    profile = PROVIDERS.get(provider)
    return bool(profile and profile.reasoning_families and REASONING_FAMILIES.match(_base_name(model)))


PRICES_DATE = "2025-09-01"
PRICES: dict[str, tuple[float, float]] = {
    # USD per 1M (input, output) tokens, standard tier, as published on the providers' pricing pages on
    # PRICES_DATE: https://openai.com/api/pricing/, https://www.anthropic.com/pricing#api,
    # https://ai.google.dev/gemini-api/docs/pricing (Gemini 2.5 Pro: prompts up to 200k tokens).
    # Reasoning tokens are billed as output tokens. Batch APIs bill half (--batch-price-factor).
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "o3": (2.00, 8.00),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    "claude-opus-4-1": (15.00, 75.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-3-5-haiku": (0.80, 4.00),
    "gemini-2.5-pro": (1.25, 10.00),
    "gemini-2.5-flash": (0.30, 2.50),
    "gemini-2.5-flash-lite": (0.10, 0.40),
}
"""Known models' prices; ``--price-input`` / ``--price-output`` override them (and price any other model)."""


def known_prices(model: str) -> Optional[tuple[float, float]]:
    """``(input, output)`` USD per 1M tokens of a model in :data:`PRICES` (a dated or ``-latest`` name
    counts as its base name), else None.

    >>> known_prices("claude-sonnet-4-20250514"), known_prices("my-model")
    ((3.0, 15.0), None)
    """
    name = _base_name(model)
    if name in PRICES:
        return PRICES[name]
    for suffix in ("-latest", re.compile(r"-\d{8}$")):
        stripped = re.sub(suffix, "", name) if isinstance(suffix, re.Pattern) else name.removesuffix(suffix)
        if stripped in PRICES:
            return PRICES[stripped]
    return None
