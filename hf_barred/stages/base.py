"""What every stage shares: the fingerprinted ``Dataset.map``, the LLM stage config, usage counts.

A stage is ``stage(ds, config, **map_kwargs) -> Dataset`` over a private batched row function.
:func:`map_stage` runs that function with ``ds.map(batched=True)`` and a fingerprint computed from
exactly what changes the output: the input dataset's fingerprint, datasets' hash of the code of
the row function and of the package functions it calls (:func:`code_fingerprint`), the stage name and version, the prompt texts, and the config with its engine reduced to
:meth:`EngineConfig.identity` (so concurrency, timeouts and rate limits never invalidate a cached
dataset).

Example:
    >>> from hf_barred.stages.base import LLMStageConfig, config_identity
    >>> config_identity(LLMStageConfig())["engine"]["engine"]
    'local'
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from types import CodeType, FunctionType
from typing import Any, Callable, Optional

from datasets import Dataset, Features
from datasets.fingerprint import Hasher

from ..llm.base import SamplingParams
from ..llm.config import EngineConfig
from ..llm.structured import StructuredResult
from ..policy.rows import check_policy_rows, policy_features
from .prompting import Prompt, check_prompt_set, default_prompt_set

_PACKAGE = __name__.split(".")[0]

__all__ = [
    "LLMStageConfig",
    "add_usage",
    "code_fingerprint",
    "config_identity",
    "engine_for",
    "map_policy_stage",
    "map_stage",
    "rows",
    "stage_fingerprint",
    "zero_usage",
]


@dataclass(frozen=True)
class LLMStageConfig:
    """What every LLM stage of BARRED shares.

    Parameters, by purpose:

    - Who answers: ``engine`` (only its engine and model reach fingerprints).
    - Prompt: ``prompt_set`` (``small`` or ``served``; None: the engine's default,
      :func:`~hf_barred.stages.prompting.default_prompt_set`) and ``prompt_version``
      (``hf_barred/stages/prompts/<set>/<stage>/<version>.jinja``; None: the set's default).
    - Sampling: ``max_tokens``, ``temperature``, ``seed`` (the engine's sampling seed).
    - Parsing: ``max_repairs`` (bounded repair rounds for answers that are not valid JSON).
    """

    engine: EngineConfig = field(default_factory=EngineConfig, metadata={"help": "Engine and model that answer."})
    prompt_set: Optional[str] = field(
        default=None, metadata={"help": "Prompt set: small (embedded model) or served (strong models); None: by engine."}
    )
    prompt_version: Optional[str] = field(
        default=None, metadata={"help": "Version of the stage's prompt template (None: the set's default)."}
    )
    max_tokens: int = field(default=128, metadata={"help": "Maximum tokens of one answer."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature."})
    seed: int = field(default=0, metadata={"help": "Sampling seed of the engine."})
    max_repairs: int = field(default=1, metadata={"help": "Repair rounds for an answer that is not valid JSON."})

    def __post_init__(self) -> None:
        if not isinstance(self.engine, EngineConfig):
            raise TypeError(f"{type(self).__name__}.engine: expected an EngineConfig, found {type(self.engine).__name__}.")
        if self.prompt_set is None:
            object.__setattr__(self, "prompt_set", default_prompt_set(self.engine.engine))
        check_prompt_set(self.prompt_set)
        if self.max_tokens < 1:
            raise ValueError(f"{type(self).__name__}.max_tokens: expected >= 1, found {self.max_tokens}.")
        if self.temperature < 0:
            raise ValueError(f"{type(self).__name__}.temperature: expected >= 0, found {self.temperature}.")
        if self.max_repairs < 0:
            raise ValueError(f"{type(self).__name__}.max_repairs: expected >= 0, found {self.max_repairs}.")

    def sampling(self, **changes: Any) -> SamplingParams:
        return SamplingParams(max_tokens=self.max_tokens, temperature=self.temperature, seed=self.seed).replace(**changes)


def engine_for(config: EngineConfig) -> Any:
    """The cached engine of ``config``, looked up inside the worker process (never a live client
    in ``fn_kwargs``). Goes through :func:`hf_barred.llm.get_engine` at call time, so tests can
    swap the backend with ``monkeypatch.setattr(hf_barred.llm, "build_backend", ...)``."""
    from .. import llm

    return llm.get_engine(config)


def config_identity(value: Any) -> Any:
    """A config as plain data, with every EngineConfig reduced to its identity (engine, model)."""
    if isinstance(value, EngineConfig):
        return value.identity()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: config_identity(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [config_identity(v) for v in value]
    if isinstance(value, dict):
        return {k: config_identity(v) for k, v in value.items()}
    return value


def code_fingerprint(function: Callable[..., Any]) -> str:
    """datasets' :class:`~datasets.fingerprint.Hasher` over the code of ``function`` and of every
    package function it calls, recursively (through its globals).

    ``Hasher.hash(function)`` alone does not do: dill pickles a function that can be imported by
    reference (its name), so an edit to a stage's code would keep its fingerprint and reuse stale
    saved outputs. Code objects are hashed by value, without file path or line numbers, so moving
    a function or checking it out elsewhere keeps the fingerprint.

    >>> def one(batch): return {"y": [x + 1 for x in batch["x"]]}
    >>> def two(batch): return {"y": [x + 2 for x in batch["x"]]}
    >>> code_fingerprint(one) == code_fingerprint(two)
    False
    """
    codes: list[Any] = []
    seen: set[int] = set()
    todo = [function]
    while todo:
        fn = todo.pop()
        if id(fn) in seen:
            continue
        seen.add(id(fn))
        code = fn.__code__
        codes.append((fn.__module__, fn.__qualname__, code))
        names = set(code.co_names)
        for const in code.co_consts:  # nested functions and comprehensions use globals too
            if isinstance(const, CodeType):
                names.update(const.co_names)
        for name in sorted(names):
            value = fn.__globals__.get(name)
            if isinstance(value, FunctionType) and value.__module__.split(".")[0] == _PACKAGE:
                todo.append(value)
    return Hasher.hash(codes)


def stage_fingerprint(ds: Dataset, stage: str, version: str, prompts: tuple[Prompt, ...], config: Any,
                      function: Callable[..., Any]) -> str:
    """The fingerprint of a stage's output dataset: the input's fingerprint, the stage name and
    version, the prompt texts, the config's identity (no throughput knobs) and the code of the
    batch ``function`` (:func:`code_fingerprint`)."""
    return Hasher.hash(
        {
            "input": ds._fingerprint,
            "stage": stage,
            "version": version,
            "prompts": [(p.id, p.text) for p in prompts],
            "config": config_identity(config),
            "code": code_fingerprint(function),
        }
    )


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


def map_policy_stage(ds: Dataset, function: Callable[..., dict[str, list]], *, stage: str, version: str, config: Any,
                     prompts: tuple[Prompt, ...] = (), map_kwargs: Optional[dict[str, Any]] = None) -> Dataset:
    """:func:`map_stage` for an APT stage: checks the policy-conditioned columns, keeps every column
    (the stage rewrites some) and declares the policy features."""
    check_policy_rows(ds, stage)
    return map_stage(ds, function, stage=stage, version=version, config=config, prompts=prompts,
                     features=policy_features(ds.features), remove_columns=[], map_kwargs=map_kwargs)


def rows(batch: dict[str, list]) -> list[dict[str, Any]]:
    """A columnar batch as a list of row dicts."""
    if not batch:
        return []
    n = len(next(iter(batch.values())))
    return [{key: values[i] for key, values in batch.items()} for i in range(n)]


def zero_usage() -> dict[str, int]:
    return {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0}


def add_usage(usage: dict[str, int], result: StructuredResult | Any, calls: Optional[int] = None) -> dict[str, int]:
    """``usage`` plus one structured result (its attempts are its calls) or one completion."""
    attempts = calls if calls is not None else getattr(result, "attempts", 1)
    return {
        "calls": usage["calls"] + attempts,
        "prompt_tokens": usage["prompt_tokens"] + result.prompt_tokens,
        "completion_tokens": usage["completion_tokens"] + result.completion_tokens,
    }
