"""What a stage's output depends on, hashed: the fingerprint of a stage's ``Dataset.map``.

A stage's fingerprint (:func:`stage_fingerprint`) covers exactly what changes its output: the input
dataset's fingerprint, the stage's name and version, the prompt texts, the config with every
:class:`~hf_barred.llm.config.EngineConfig` reduced to :meth:`~hf_barred.llm.config.EngineConfig.identity`
(so concurrency, timeouts and rate limits never invalidate a saved output, and no live client is
hashed), and the stage's code (:func:`code_fingerprint`). As datasets' ``fingerprint_transform(version=...)``
owns the hash of ``Dataset.map``, :class:`~hf_barred.stages.base.Stage` owns this one.

Example:
    >>> from hf_barred.llm import EngineConfig
    >>> from hf_barred.stages.fingerprint import config_identity
    >>> config_identity({"engine": EngineConfig(engine="openai", model="m", base_url="http://h/v1", timeout=5)})
    {'engine': {'engine': 'openai', 'model': 'm'}}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from types import CodeType, FunctionType
from typing import Any, Optional, Union

from datasets import Dataset
from datasets.fingerprint import Hasher

from ..llm.config import EngineConfig
from .prompting import Prompt

__all__ = ["code_fingerprint", "config_identity", "resolved_precision", "stage_fingerprint"]

_PACKAGE = __name__.split(".")[0]


def resolved_precision(engine: EngineConfig) -> Optional[str]:
    """``"bfloat16"`` when the local engine's ``auto`` precision resolves to it on this machine (AMX or AVX512-BF16
    CPUs), else None: what an LLM stage's fingerprint adds to :meth:`EngineConfig.identity`, so that a stage
    saved where answers are bfloat16 is not reused where they are float32, nor the reverse."""
    if engine.engine != "local" or engine.dtype != "auto":
        return None
    from ..llm.engines.local.precision import resolved_dtype_name

    return "bfloat16" if resolved_dtype_name(engine) == "bfloat16" else None


def config_identity(value: Any) -> Any:
    """A config as plain data, with every EngineConfig reduced to its identity (engine, model, ...)."""
    if isinstance(value, EngineConfig):
        return value.identity()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: config_identity(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [config_identity(v) for v in value]
    if isinstance(value, dict):
        return {k: config_identity(v) for k, v in value.items()}
    return value


def _functions_of(code: Union[Callable[..., Any], type]) -> list[FunctionType]:
    """``code`` itself, or every function a class of the package defines (methods, static, class methods,
    properties), through its bases."""
    if not isinstance(code, type):
        return [code]  # type: ignore[list-item]
    found: list[FunctionType] = []
    for cls in code.__mro__:
        if cls.__module__.split(".")[0] != _PACKAGE:
            continue
        for value in vars(cls).values():
            if isinstance(value, (staticmethod, classmethod)):
                value = value.__func__
            if isinstance(value, property):
                found += [f for f in (value.fget, value.fset) if isinstance(f, FunctionType)]
            elif isinstance(value, FunctionType):
                found.append(value)
    return found


def code_fingerprint(code: Union[Callable[..., Any], type]) -> str:
    """datasets' :class:`~datasets.fingerprint.Hasher` over the code of ``code`` (a function, or a stage
    class and its package bases) and of every package function it calls, recursively (through globals).

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
    todo = _functions_of(code)
    while todo:
        fn = todo.pop()
        if id(fn) in seen:
            continue
        seen.add(id(fn))
        body = fn.__code__
        codes.append((fn.__module__, fn.__qualname__, body))
        names = set(body.co_names)
        for const in body.co_consts:  # nested functions and comprehensions use globals too
            if isinstance(const, CodeType):
                names.update(const.co_names)
        for name in sorted(names):
            value = fn.__globals__.get(name)
            if isinstance(value, FunctionType) and value.__module__.split(".")[0] == _PACKAGE:
                todo.append(value)
            elif isinstance(value, type) and value.__module__.split(".")[0] == _PACKAGE and id(value) not in seen:
                seen.add(id(value))  # a package class the code uses (a stage piece): its methods count too
                todo += _functions_of(value)
    ordered = sorted(codes, key=lambda c: (c[0], c[1]))
    key = tuple(ordered)  # code objects compare by value (stricter than the Hasher): an edit is a new key
    if key not in _CODE_HASHES:
        _CODE_HASHES[key] = Hasher.hash(ordered)  # ~25 ms of dill: once per code, not once per rule and stage
    return _CODE_HASHES[key]


_CODE_HASHES: dict[tuple[Any, ...], str] = {}


def stage_fingerprint(
    ds: Dataset,
    stage: str,
    version: str,
    prompts: Sequence[Prompt],
    config: Any,
    code: Union[Callable[..., Any], type],
    precision: Optional[str] = None,
) -> str:
    """The fingerprint of a stage's output dataset: the input's fingerprint, the stage name and
    version, the prompt texts, the config's identity (no throughput knobs), the stage's code
    (:func:`code_fingerprint` of its batch function or its class) and, when set, the precision the engine
    resolved to (:func:`resolved_precision`)."""
    fields = {
        "input": ds._fingerprint,
        "stage": stage,
        "version": version,
        "prompts": [(p.id, p.text) for p in prompts],
        "config": config_identity(config),
        "code": code_fingerprint(code),
    }
    if precision is not None:  # only when it says something: float32 fingerprints stay as they were
        fields["precision"] = precision
    return Hasher.hash(fields)
