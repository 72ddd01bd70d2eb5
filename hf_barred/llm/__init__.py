"""LLM engines behind one batch interface, with a response cache around each.

Stages never hold a live client: they carry an :class:`EngineConfig` and call :func:`get_engine`
inside the worker process, which builds the engine once per process and config.

Example:
    >>> from hf_barred.llm import EngineConfig, get_engine, SamplingParams
    >>> engine = get_engine(EngineConfig(engine="local"))          # doctest: +SKIP
    >>> engine.chat([[{"role": "user", "content": "Say hi"}]], SamplingParams(max_tokens=8))  # doctest: +SKIP
"""

from __future__ import annotations

import threading
from typing import Optional

from .base import Backend, Completion, Conversation, EngineError, Message, SamplingParams
from .cache import CachedBackend, ResponseCache, UsageMeter
from .config import EMBEDDED_MODEL, EngineConfig, default_cache_dir

__all__ = [
    "Backend",
    "CachedBackend",
    "Completion",
    "Conversation",
    "EMBEDDED_MODEL",
    "EngineConfig",
    "EngineError",
    "Message",
    "ResponseCache",
    "SamplingParams",
    "UsageMeter",
    "build_backend",
    "built_engine",
    "default_cache_dir",
    "get_engine",
]

_ENGINES: dict[EngineConfig, CachedBackend] = {}
_LOCK = threading.Lock()


def build_backend(config: EngineConfig) -> Backend:
    """A new, uncached engine for ``config`` (imports the engine's module lazily)."""
    if config.engine == "local":
        from .engines.local.engine import LocalBackend

        return LocalBackend.from_config(config)
    if config.engine == "openai":
        from .engines.openai.backend import OpenAICompatBackend

        return OpenAICompatBackend.from_config(config)
    if config.engine == "vllm":
        from .engines.vllm.engine import VLLMBackend

        return VLLMBackend.from_config(config)
    raise EngineError(f"unknown engine {config.engine!r}")  # EngineConfig already validates this


def get_engine(config: EngineConfig) -> CachedBackend:
    """The engine for ``config``, built once per process, wrapped in the response cache."""
    with _LOCK:
        engine = _ENGINES.get(config)
        if engine is None:
            cache = ResponseCache(config.resolved_cache_dir() / "responses.sqlite") if config.cache else None
            engine = CachedBackend(build_backend(config), cache)
            _ENGINES[config] = engine
        return engine


def built_engine(config: EngineConfig) -> Optional[CachedBackend]:
    """The engine :func:`get_engine` has built for ``config`` in this process, or None (builds nothing).

    >>> built_engine(EngineConfig(engine="openai", model="never-built", base_url="http://127.0.0.1:9")) is None
    True
    """
    with _LOCK:
        return _ENGINES.get(config)


def clear_engines() -> None:
    """Forget the engines built in this process (tests; freeing a local model's memory)."""
    with _LOCK:
        _ENGINES.clear()
