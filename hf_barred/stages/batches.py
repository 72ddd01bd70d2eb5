"""The plain side of a stage: a columnar batch as rows, token usage sums, and the fingerprinted
``Dataset.map`` of the non-LLM stages (plan, category deletion and shuffling).

Example:
    >>> from hf_barred.stages.batches import add_usage, rows, zero_usage
    >>> rows({"text": ["a", "b"], "label": [0, 1]})
    [{'text': 'a', 'label': 0}, {'text': 'b', 'label': 1}]
    >>> from hf_barred.llm.base import Completion
    >>> add_usage(zero_usage(), Completion(text="x", prompt_tokens=3, completion_tokens=1))
    {'calls': 1, 'prompt_tokens': 3, 'completion_tokens': 1}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional, Union

import pyarrow as pa
from datasets import Dataset, DatasetInfo, Features
from datasets.fingerprint import generate_random_fingerprint
from datasets.table import InMemoryTable

from ..llm.structured import StructuredResult
from ..policy.rows import check_policy_rows, policy_features
from .fingerprint import stage_fingerprint
from .prompting import Prompt

__all__ = ["add_usage", "map_policy_stage", "map_stage", "rows", "zero_usage"]


# --- the fingerprinted map of non-LLM stages ---------------------------------------------------------------
def map_stage(
    ds: Dataset,
    function: Callable[..., dict[str, list]],
    *,
    stage: str,
    version: str,
    config: Any,
    prompts: tuple[Prompt, ...] = (),
    features: Optional[Features] = None,
    remove_columns: Optional[list[str]] = None,
    map_kwargs: Optional[dict[str, Any]] = None,
) -> Dataset:
    """``ds.map(function, batched=True)`` with the stage's fingerprint and sensible defaults.

    ``function(batch, config, prompts, version)`` gets the prompt texts and version through
    ``fn_kwargs``; ``map_kwargs`` (``num_proc``, ``batch_size``, ``desc``, ...) pass through.
    """
    kwargs: dict[str, Any] = {"batch_size": 64, "desc": stage}
    kwargs.update(map_kwargs or {})
    kwargs.setdefault("new_fingerprint", stage_fingerprint(ds, stage, version, prompts, config, function))
    return ds.map(
        function,
        batched=True,
        fn_kwargs={"config": config, "prompts": prompts, "version": version},
        features=features,
        remove_columns=ds.column_names if remove_columns is None else remove_columns,
        **kwargs,
    )


def map_policy_stage(
    ds: Dataset,
    function: Callable[..., dict[str, list]],
    *,
    stage: str,
    version: str,
    config: Any,
    prompts: tuple[Prompt, ...] = (),
    map_kwargs: Optional[dict[str, Any]] = None,
) -> Dataset:
    """:func:`map_stage` for an APT stage: checks the policy-conditioned columns, keeps every column
    (the stage rewrites some) and declares the policy features."""
    check_policy_rows(ds, stage)
    return map_stage(
        ds,
        function,
        stage=stage,
        version=version,
        config=config,
        prompts=prompts,
        features=policy_features(ds.features),
        remove_columns=[],
        map_kwargs=map_kwargs,
    )


# --- rows and usage -------------------------------------------------------------------------------------
def rows(batch: dict[str, list]) -> list[dict[str, Any]]:
    """A columnar batch as a list of row dicts."""
    if not batch:
        return []
    n = len(next(iter(batch.values())))
    return [{key: values[i] for key, values in batch.items()} for i in range(n)]


def rows_dataset(records: list[dict[str, Any]], features: Features, fingerprint: Optional[str] = None) -> Dataset:
    """``Dataset.from_list(records, features=features)`` (an empty one when there are no records), with
    ``fingerprint`` or a random one: ``Dataset.from_list`` hashes the whole table for its fingerprint (~20 ms for a few
    hundred debated rows), which a dataset that is only saved or handed on does not need.

    >>> from datasets import Value
    >>> ds = rows_dataset([{"x": 1}], Features({"x": Value("int64")}), fingerprint="f")
    >>> ds.to_list(), ds._fingerprint
    ([{'x': 1}], 'f')
    """
    table = pa.Table.from_pylist([features.encode_example(r) for r in records], schema=features.arrow_schema)
    return Dataset(
        InMemoryTable(table),
        info=DatasetInfo(features=features),
        fingerprint=fingerprint or generate_random_fingerprint(),
    )


def zero_usage() -> dict[str, int]:
    return {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0}


def add_usage(
    usage: dict[str, int], result: Union[StructuredResult, Any], calls: Optional[int] = None
) -> dict[str, int]:
    """``usage`` plus one structured result (its attempts are its calls) or one completion."""
    attempts = calls if calls is not None else getattr(result, "attempts", 1)
    return {
        "calls": usage["calls"] + attempts,
        "prompt_tokens": usage["prompt_tokens"] + result.prompt_tokens,
        "completion_tokens": usage["completion_tokens"] + result.completion_tokens,
    }
