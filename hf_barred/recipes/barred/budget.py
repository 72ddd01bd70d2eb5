"""What a BARRED run has spent: logical requests and tokens from the rows, real calls from the engines.

Budgets count *logical* requests and tokens from the rows' ``usage`` columns (cached or not), so a
resumed run stops exactly where an uninterrupted one would; :func:`engine_usage` reports this
process's real calls and cache hits.

Example:
    >>> from hf_barred.recipes.barred.config import BarredConfig
    >>> from hf_barred.recipes.barred.budget import rows_to_plan
    >>> rows_to_plan(8, 0, 0, BarredConfig())   # nothing planned yet: initial_acceptance 0.5
    16
"""

from __future__ import annotations

import math
from typing import Any, Optional

from datasets import Dataset

from ...llm import built_engine
from .config import BarredConfig

__all__ = ["Budget", "dataset_usage", "engine_usage", "rows_to_plan", "usage_delta", "usage_total"]


def dataset_usage(rows: Any) -> dict[str, int]:
    """The summed ``usage`` column of a Dataset or a list of rows."""
    total = {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0}
    usages = (
        (rows["usage"] if "usage" in rows.column_names else [])
        if isinstance(rows, Dataset)
        else [row["usage"] for row in rows if row.get("usage")]
    )
    for usage in usages:
        for key in total:
            total[key] += usage[key]
    return total


class Budget:
    """Logical requests and tokens spent, from the rows' usage columns, against the run's budget
    (:meth:`BarredConfig.call_budget` for ``n`` samples, ``max_total_tokens``).

    A rule of a rule set keeps its own books in a Budget whose ``pool`` is the run's: what the rule spends
    counts in both, and the run's limit (every rule's budget summed) is the one that stops it.
    """

    def __init__(
        self, config: BarredConfig, n: int = 1, pool: Optional[Budget] = None, max_calls: Optional[int] = None
    ):
        self.config = config
        self.max_calls = config.call_budget(n) if max_calls is None else max_calls
        self.pool = pool
        self.calls = 0
        self.tokens = 0
        self.calls_by_stage: dict[str, int] = {}

    def add(self, after: Any, before: Optional[Any] = None, stage: str = "") -> None:
        """Count what the stage that turned ``before`` into ``after`` spent (a Dataset or a list of rows each;
        the rows carry the usage of every earlier stage, so the difference is this stage's)."""
        out = dataset_usage(after)
        inp = dataset_usage(before) if before is not None else {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0}
        self.count(
            out["calls"] - inp["calls"],
            (out["prompt_tokens"] + out["completion_tokens"]) - (inp["prompt_tokens"] + inp["completion_tokens"]),
            stage,
        )

    def count(self, calls: int, tokens: int, stage: str = "") -> None:
        """Add ``calls`` requests and ``tokens`` tokens of ``stage`` (to the pool too)."""
        self.calls += calls
        self.tokens += tokens
        if stage:
            self.calls_by_stage[stage] = self.calls_by_stage.get(stage, 0) + calls
        if self.pool is not None:
            self.pool.count(calls, tokens, stage)

    @property
    def total_calls(self) -> int:
        """Requests spent against the limit that stops the run (the pool's, for a rule of a rule set)."""
        return self.pool.total_calls if self.pool is not None else self.calls

    @property
    def total_max_calls(self) -> int:
        return self.pool.total_max_calls if self.pool is not None else self.max_calls

    @property
    def spent(self) -> bool:
        if self.pool is not None:
            return self.pool.spent
        c = self.config
        return self.calls >= self.max_calls or (c.max_total_tokens is not None and self.tokens >= c.max_total_tokens)


def rows_to_plan(needed: int, planned: int, accepted: int, config: BarredConfig) -> int:
    """An even number of rows expected to yield ``needed`` accepted samples.

    >>> rows_to_plan(8, 0, 0, BarredConfig())   # nothing planned yet: initial_acceptance 0.5
    16
    >>> rows_to_plan(3, 20, 5, BarredConfig())  # 25% so far
    12
    """
    rate = config.initial_acceptance if planned == 0 else max(accepted / planned, config.min_acceptance)
    k = math.ceil(needed / rate)
    k += k % 2
    return max(2, min(k, config.max_rows_per_round - config.max_rows_per_round % 2))


def engine_usage(config: BarredConfig) -> dict[str, Any]:
    """This process's usage of the engines built for ``config``: real calls, cache hits, tokens (reasoning
    tokens among the completion tokens), errors, the cost, the online cost (what the same tokens cost without
    batch mode) and where the prices come from."""
    total: dict[str, Any] = {
        "calls": 0,
        "cache_hits": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "reasoning_tokens": 0,
        "errors": 0,
        "cost": 0.0,
        "online_cost": 0.0,
    }
    sources: list[str] = []
    endpoints: dict[str, dict[str, int]] = {}
    for engine_config in config.engines():
        engine = built_engine(engine_config)
        if engine is None:
            continue
        if len(engine_config.endpoint_urls) > 1:  # several servers: what each one did
            endpoints = usage_total(endpoints, getattr(engine.backend, "endpoint_counts", dict)())
        u = engine.usage
        total["calls"] += u.calls
        total["cache_hits"] += u.cache_hits
        total["prompt_tokens"] += u.prompt_tokens
        total["completion_tokens"] += u.completion_tokens
        total["reasoning_tokens"] += u.reasoning_tokens
        total["errors"] += u.errors
        total["cost"] += engine_config.cost(u.prompt_tokens, u.completion_tokens)
        total["online_cost"] += engine_config.online_cost(u.prompt_tokens, u.completion_tokens)
        source = engine_config.prices()[2] + (
            f", batch at {engine_config.batch_price_factor:g}x" if engine_config.batch else ""
        )
        sources.append(source)
    total["prices"] = "; ".join(dict.fromkeys(sources))
    if endpoints:
        total["endpoints"] = endpoints
    return total


def usage_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What was spent between two :func:`engine_usage` readings (the price sources are the latest's).

    >>> usage_delta({"calls": 2, "endpoints": {"a": {"sent": 1}}}, {"calls": 5, "endpoints": {"a": {"sent": 3}}})
    {'calls': 3, 'endpoints': {'a': {'sent': 2}}}
    """

    def minus(now: Any, then: Any) -> Any:
        if isinstance(now, dict):
            then = then if isinstance(then, dict) else {}
            return {key: minus(value, then.get(key)) for key, value in now.items()}
        if isinstance(now, (int, float)) and not isinstance(now, bool):
            return now - (then or 0)
        return now

    return minus(after, before)


def usage_total(total: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    """Two :func:`engine_usage` readings (or deltas) added up: numbers and nested counts summed, text (the price
    sources) kept from the latest.

    >>> usage_total({"calls": 2, "endpoints": {"a": {"sent": 1}}}, {"calls": 3, "endpoints": {"b": {"sent": 4}}})
    {'calls': 5, 'endpoints': {'a': {'sent': 1}, 'b': {'sent': 4}}}
    """
    result = dict(total)
    for key, value in more.items():
        if isinstance(value, dict):
            result[key] = usage_total(result.get(key) or {}, value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            result[key] = result.get(key, 0) + value
        elif value:
            result[key] = value
    return result
