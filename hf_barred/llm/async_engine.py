"""An engine whose ``chat`` is awaited: what a row-by-row (asyncio) executor drives.

:class:`AsyncEngine` wraps the cached engine of a config (:func:`hf_barred.llm.get_engine`), so the
response cache, the usage meter and the engine's own concurrency are the ones the batched path uses;
each call runs in a worker thread, so many rows can wait on their answers at once.

Example:
    >>> import asyncio
    >>> from hf_barred.llm.async_engine import AsyncEngine
    >>> from hf_barred.llm.base import Completion, SamplingParams
    >>> class Echo:
    ...     model_name, supports_json_schema = "echo", False
    ...     def chat(self, conversations, params, on_result=None, stage=""):
    ...         return [Completion(text=c[-1]["content"]) for c in conversations]
    >>> [answer] = asyncio.run(AsyncEngine(Echo()).chat([[{"role": "user", "content": "hi"}]], SamplingParams()))
    >>> answer.text
    'hi'
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from .base import Completion, Conversation, SamplingParams

__all__ = ["AsyncEngine"]


class AsyncEngine:
    """``await engine.chat(conversations, params, stage=...)`` over a synchronous engine."""

    def __init__(self, engine: Any):
        self.engine = engine
        self.model_name: str = engine.model_name
        self.supports_json_schema: bool = engine.supports_json_schema

    async def chat(
        self, conversations: Sequence[Conversation], params: SamplingParams, stage: str = ""
    ) -> list[Completion]:
        """The engine's answers to ``conversations``, in order (see :meth:`CachedBackend.chat`)."""
        return await asyncio.to_thread(self.engine.chat, list(conversations), params, stage=stage)
