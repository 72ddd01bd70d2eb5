"""Answer-length budgets from the seeds' own lengths, so long inputs are not cut to a fixed cap.

The generate and refine stages bound every string of a written sample (``maxLength`` in the grammar of
:func:`hf_barred.stages.generate.sample_grammar`) so that a constrained answer closes within
``max_tokens``. With the small default (128 tokens) a ``task_and_response`` sample gets about 115
characters per field, while the plans and answers users verify run to thousands. :func:`sample_max_tokens`
finds the smallest ``max_tokens`` whose grammar lets each field hold ``headroom`` times the longest seed of
that field, and :func:`fit_sample_budget` raises a BARRED config's generate/refine budgets to it (never
lowers them).

Example:
    >>> from hf_barred.recipes.barred.lengths import seed_field_lengths
    >>> from hf_barred.policy.task import GuardrailTask
    >>> task = GuardrailTask(criterion="c", input_type="task_and_response",
    ...                      seeds=[{"task": "Plan a day in Rome", "response": "x" * 900}])
    >>> seed_field_lengths(task)
    {'task': 18, 'response': 900}
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

from ...policy.task import GuardrailTask

if TYPE_CHECKING:
    from .config import BarredConfig

__all__ = ["fit_sample_budget", "sample_max_tokens", "seed_field_lengths"]

MAX_SAMPLE_TOKENS = 8192
"""The most tokens a seed-derived budget asks for (a seed longer than this is a document, not an input)."""


def seed_field_lengths(task: GuardrailTask) -> dict[str, int]:
    """The longest seed, in characters, of each field a sample of ``task`` has (``text``, or ``task`` and
    ``response``)."""
    if task.input_type == "task_and_response":
        return {
            "task": max((len(s.task or "") for s in task.seeds), default=0),
            "response": max((len(s.text) for s in task.seeds), default=0),
        }
    return {"text": max((len(s.text) for s in task.seeds), default=0)}


def _fits(input_type: str, max_tokens: int, needed: dict[str, int]) -> bool:
    from ...stages.generate import sample_grammar

    properties = sample_grammar(input_type, max_tokens)["properties"]
    return all(properties[key].get("maxLength", math.inf) >= chars for key, chars in needed.items())


def sample_max_tokens(task: GuardrailTask, floor: int = 128, headroom: float = 1.25) -> int:
    """The smallest ``max_tokens`` (at least ``floor``, at most :data:`MAX_SAMPLE_TOKENS`) whose sample
    grammar lets every field hold ``headroom`` x its longest seed.

    >>> long = GuardrailTask(criterion="c", input_type="task_and_response",
    ...                      seeds=[{"task": "Plan a trip", "response": "step. " * 200}])
    >>> budget = sample_max_tokens(long)
    >>> from hf_barred.stages.generate import sample_grammar
    >>> sample_grammar("task_and_response", budget)["properties"]["response"]["maxLength"] >= 1.25 * 1200
    True
    >>> sample_max_tokens(GuardrailTask(criterion="c", seeds=["short"]))
    128
    """
    needed = {key: math.ceil(chars * headroom) for key, chars in seed_field_lengths(task).items()}
    if _fits(task.input_type, floor, needed):
        return floor
    low, high = floor, MAX_SAMPLE_TOKENS
    if not _fits(task.input_type, high, needed):
        return high
    while high - low > 1:  # the grammar's lengths grow with max_tokens: bisect
        middle = (low + high) // 2
        low, high = (low, middle) if _fits(task.input_type, middle, needed) else (middle, high)
    return high


def fit_sample_budget(config: BarredConfig, task: GuardrailTask, headroom: float = 1.25) -> BarredConfig:
    """``config`` with the generate and refine ``max_tokens`` raised to :func:`sample_max_tokens` of the
    task's seeds (a budget already larger stays).

    >>> from hf_barred.llm import EngineConfig
    >>> from hf_barred.recipes.barred.config import BarredConfig
    >>> task = GuardrailTask(criterion="c", seeds=["word " * 400])
    >>> fitted = fit_sample_budget(BarredConfig.for_engine(EngineConfig()), task)
    >>> fitted.generate.max_tokens > 128, fitted.generate.max_tokens == fitted.refine.max_tokens
    (True, True)
    """
    changes: dict[str, Any] = {}
    for name in ("generate", "refine"):
        stage = getattr(config, name)
        budget = sample_max_tokens(task, floor=stage.max_tokens, headroom=headroom)
        if budget > stage.max_tokens:
            changes[name] = dataclasses.replace(stage, max_tokens=budget)
    return dataclasses.replace(config, **changes) if changes else config
