"""Failed requests of a run: stop early when a stage's requests mostly failed, count them apart.

A request the engine gave up on (an HTTP error after the retries, a timeout, a refused connection)
is not a parse failure: the model never answered. :class:`FailureGuard` runs a stage and compares
its failed requests (from the engines' :class:`~hf_barred.llm.UsageMeter`) with the requests it
made; when the share is over ``max_failure_rate`` it raises :class:`RequestsFailed` *before* the
stage's output is saved, so a rerun retries the failed requests (every answer that arrived is in
the response cache) and repeats no finished work.

Example:
    >>> from hf_barred.recipes.barred.failures import failure_message
    >>> failure_message("generate", 16, 16, "http://127.0.0.1:8000/v1",
    ...                 "request failed: HTTP 500 after 2 retries: upstream down", 0.5)[:93]
    'generate: 16 of 16 requests to http://127.0.0.1:8000/v1 failed (HTTP 500 after 2 retries: ups'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional, TypeVar

from ...llm import EngineConfig, built_engine
from ...llm.base import REQUEST_FAILED

__all__ = ["FailureGuard", "RequestsFailed", "failure_message"]

T = TypeVar("T")


class RequestsFailed(RuntimeError):
    """A stage ended with more failed requests than ``max_failure_rate`` allows (exit code 1)."""


def endpoint_of(config: EngineConfig) -> str:
    """Where an engine's requests go: the base URL (openai), else the engine and model."""
    if config.engine == "openai":
        return config.base_url or "https://api.openai.com/v1"
    return f"the {config.engine} engine ({config.model})"


def failure_message(stage: str, failed: int, total: int, endpoint: str, last_error: str, limit: float) -> str:
    """The one-line message of :class:`RequestsFailed`."""
    reason = last_error[len(REQUEST_FAILED) :] if last_error.startswith(REQUEST_FAILED) else last_error
    return (
        f"{stage}: {failed} of {total} requests to {endpoint} failed "
        f"({reason.splitlines()[0][:300] if reason else 'no answer'}), "
        f"more than --max-failure-rate {limit:g} allows; the run stopped. Every answer that arrived is cached: fix the "
        "endpoint and run the same command again to resume."
    )


class FailureGuard:
    """Run stages on ``engines`` and stop the run when one's failed requests are over ``max_failure_rate``."""

    def __init__(self, engines: list[EngineConfig], max_failure_rate: float):
        self.engines = engines
        self.max_failure_rate = max_failure_rate

    def _usage(self) -> dict[EngineConfig, tuple[int, int, str]]:
        found: dict[EngineConfig, tuple[int, int, str]] = {}
        for config in self.engines:
            engine = built_engine(config)
            if engine is not None:
                u = engine.usage
                found[config] = (u.calls + u.cache_hits + u.errors, u.errors, u.last_error)
        return found

    def run(self, stage: str, compute: Callable[[], T]) -> T:
        """``compute()``, unless its requests failed more than allowed (then :class:`RequestsFailed`)."""
        before = self._usage()
        result = compute()
        failed = total = 0
        worst: Optional[tuple[EngineConfig, str]] = None
        for config, (requests, errors, last_error) in self._usage().items():
            requests_before, errors_before, _ = before.get(config, (0, 0, ""))
            total += requests - requests_before
            if errors > errors_before:
                failed += errors - errors_before
                worst = (config, last_error)
        if worst is not None and total and failed / total > self.max_failure_rate:
            raise RequestsFailed(
                failure_message(stage, failed, total, endpoint_of(worst[0]), worst[1], self.max_failure_rate)
            )
        return result
