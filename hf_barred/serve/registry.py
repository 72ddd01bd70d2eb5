"""The served guardrails and the backends that run them; one check fans out to all backends at once.

:func:`plan_backends` groups guardrails: LoRA adapters that share a base and kind go together (one
:class:`~hf_barred.serve.adapter_pool.AdapterPool`, or one vLLM server for generative adapters when
vLLM is asked for); full-weight folders run as separate in-process models. :class:`Registry` routes a
``(names, texts)`` check to the backends, in-process ones through a micro-batcher.

Example:
    >>> from hf_barred.serve.registry import plan_backends
    >>> plan_backends([], generative_engine="inprocess")
    []
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from ..guardrails.guardrail import Verdict
from .batching import MicroBatcher
from .guards import ServedGuard


class UnknownGuardrail(KeyError):
    """A request named guardrails the server does not serve."""

    def __init__(self, unknown: Sequence[str], known: Sequence[str]):
        super().__init__(", ".join(unknown))
        self.unknown, self.known = list(unknown), list(known)

    def __str__(self) -> str:
        return (
            f"Unknown guardrail(s): {', '.join(self.unknown)}. This server serves: {', '.join(self.known)}. "
            "Fix: pass one of these as `model`, a list of them, or omit `model` for all."
        )


@dataclass
class BackendPlan:
    """Which guardrails one backend runs: ``kind`` is ``adapter-pool``, ``vllm`` or ``in-process``."""

    kind: str
    guards: list[ServedGuard] = field(default_factory=list)


def plan_backends(guards: Sequence[ServedGuard], generative_engine: str = "inprocess") -> list[BackendPlan]:
    """Group guardrails into backends (see the module docstring); ``generative_engine``: ``vllm`` or ``inprocess``."""
    plans: dict[tuple, BackendPlan] = {}
    for guard in guards:
        if guard.adapter:
            kind = "vllm" if guard.kind == "generative" and generative_engine == "vllm" else "adapter-pool"
            key: tuple = (kind, guard.kind, guard.base_path)
        else:
            kind, key = "in-process", ("in-process",)
        plans.setdefault(key, BackendPlan(kind)).guards.append(guard)
    return list(plans.values())


class Registry:
    """Routes checks to backends. A backend has ``names``, ``check(rows)`` (sync or async) and ``health()``."""

    def __init__(
        self,
        guards: Sequence[ServedGuard],
        backends: Sequence[Any],
        *,
        max_wait_ms: float = 5.0,
        max_batch_rows: int = 1024,
    ):
        self.guards = {g.name: g for g in guards}
        self.backends = list(backends)
        self.route: dict[str, Any] = {name: b for b in self.backends for name in b.names}
        missing = set(self.guards) - set(self.route)
        if missing:
            raise ValueError(f"No backend runs the guardrails {sorted(missing)}.")
        self.batchers = {
            id(b): MicroBatcher(b.check, max_wait_ms=max_wait_ms, max_rows=max_batch_rows)
            for b in self.backends
            if not inspect.iscoroutinefunction(b.check)
        }

    @property
    def names(self) -> list[str]:
        return list(self.guards)

    def resolve(self, names: Optional[Sequence[str]]) -> list[str]:
        """The guardrails a request asks for (all when ``names`` is None); unknown names raise
        :class:`UnknownGuardrail`."""
        if names is None:
            return self.names
        unknown = [n for n in names if n not in self.guards]
        if unknown:
            raise UnknownGuardrail(unknown, self.names)
        return list(dict.fromkeys(names))

    async def check(self, names: Sequence[str], texts: Sequence[str]) -> list[dict[str, Verdict]]:
        """``results[i][name]``: the verdict of guardrail ``name`` on ``texts[i]``; backends run concurrently."""
        per_backend: dict[int, list[tuple[str, str]]] = {}
        positions: dict[int, list[tuple[int, str]]] = {}
        backends = {}
        for i, text in enumerate(texts):
            for name in names:
                backend = self.route[name]
                backends[id(backend)] = backend
                per_backend.setdefault(id(backend), []).append((name, text))
                positions.setdefault(id(backend), []).append((i, name))

        async def run(key: int) -> list[Verdict]:
            if key in self.batchers:
                return await self.batchers[key].submit(per_backend[key])
            return await backends[key].check(per_backend[key])

        keys = list(per_backend)
        outputs = await asyncio.gather(*(run(k) for k in keys))
        results: list[dict[str, Verdict]] = [{} for _ in texts]
        for key, verdicts in zip(keys, outputs):
            for (i, name), verdict in zip(positions[key], verdicts):
                results[i][name] = verdict
        return [{name: r[name] for name in names} for r in results]

    async def health(self) -> list[dict[str, Any]]:
        out = []
        for backend in self.backends:
            state = backend.health()
            ok, detail = (await state) if inspect.isawaitable(state) else state
            out.append({"backend": backend.backend, "guardrails": list(backend.names), "ok": ok, "detail": detail})
        return out

    async def aclose(self) -> None:
        for batcher in self.batchers.values():
            await batcher.close()
        for backend in self.backends:
            if hasattr(backend, "aclose"):
                await backend.aclose()
            process = getattr(backend, "process", None)
            if process is not None:
                process.stop()
