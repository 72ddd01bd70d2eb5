"""Build the backends of ``barred serve`` and run the app with uvicorn on one host and port.

:func:`build_registry` loads the guardrails, groups them (:func:`~hf_barred.serve.registry.plan_backends`)
and starts what each group needs: an adapter pool, separate models, or one vLLM server per
generative base (a subprocess, or the server at ``vllm_url``). :func:`serve` runs uvicorn until
interrupted and then stops every vLLM subprocess it started.

Example:
    >>> from hf_barred.serve.launch import ServeOptions
    >>> ServeOptions().generative_engine
    'inprocess'
"""

from __future__ import annotations

import contextlib
import logging
import socket
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .adapter_pool import AdapterPool, SeparateModels
from .guards import ServedGuard, parse_source
from .registry import Registry, plan_backends
from .vllm_backend import VLLMBackend, VLLMProcess, vllm_command

logger = logging.getLogger("hf_barred.serve")


@dataclass
class ServeOptions:
    """How the backends run. ``generative_engine``: ``vllm`` (LoRA adapters on a vLLM server) or ``inprocess``."""

    generative_engine: str = "inprocess"
    vllm_url: Optional[str] = None
    vllm_python: Optional[str] = None
    vllm_args: list[str] = field(default_factory=list)
    vllm_max_model_len: int = 2048
    vllm_dtype: str = "auto"
    vllm_timeout: float = 60.0
    vllm_start_timeout: float = 900.0
    log_dir: Optional[str] = None
    dtype: Optional[str] = None
    batch_size: int = 64
    max_wait_ms: float = 5.0
    max_batch_rows: int = 1024


def load_guards(sources: Sequence[str]) -> list[ServedGuard]:
    """``PATH``, ``HUB_ID`` or ``NAME=PATH`` each; names must be distinct."""
    guards = []
    for source in sources:
        name, path = parse_source(source)
        guards.append(ServedGuard.load(path, name=name))
    names = [g.name for g in guards]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"Two guardrails are named {', '.join(duplicates)}. Fix: name them apart, NAME=PATH.")
    return guards


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_registry(guards: Sequence[ServedGuard], options: Optional[ServeOptions] = None) -> Registry:
    """Start one backend per group of guardrails (see the module docstring); ``options`` default to
    :class:`ServeOptions`'s."""
    options = options or ServeOptions()
    backends: list[Any] = []
    started: list[VLLMProcess] = []
    try:
        for plan in plan_backends(guards, options.generative_engine):
            if plan.kind == "adapter-pool":
                backends.append(AdapterPool(plan.guards, dtype=options.dtype, batch_size=options.batch_size))
            elif plan.kind == "in-process":
                backends.append(SeparateModels(plan.guards, dtype=options.dtype))
            else:
                backends.append(_vllm_backend(plan.guards, options, started))
    except BaseException:
        for process in started:
            process.stop()
        raise
    return Registry(guards, backends, max_wait_ms=options.max_wait_ms, max_batch_rows=options.max_batch_rows)


def _vllm_backend(guards: list[ServedGuard], options: ServeOptions, started: list[VLLMProcess]) -> VLLMBackend:
    if options.vllm_url:
        return VLLMBackend(guards, options.vllm_url, timeout=options.vllm_timeout)
    port = free_port()
    log_dir = Path(options.log_dir or tempfile.mkdtemp(prefix="barred-serve-"))
    command = vllm_command(
        guards,
        port,
        python=options.vllm_python,
        max_model_len=options.vllm_max_model_len,
        dtype=options.vllm_dtype,
        extra_args=options.vllm_args,
    )
    process = VLLMProcess(command, log_dir / f"vllm-{port}.log")
    logger.info("starting vLLM for %d adapter(s) on 127.0.0.1:%d (log: %s)", len(guards), port, process.log_path)
    process.start()
    started.append(process)
    url = f"http://127.0.0.1:{port}"
    seconds = process.wait_ready(url, timeout=options.vllm_start_timeout)
    logger.info("vLLM ready in %.0f s", seconds)
    return VLLMBackend(guards, url, process=process, timeout=options.vllm_timeout)


def serve(
    registry: Registry,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    api_key: Optional[str] = None,
    limits: Any = None,
    log_level: str = "info",
) -> None:
    """Run the app with uvicorn until interrupted; stops the backends afterwards (the app's lifespan)."""
    import uvicorn

    from .app import create_app
    from .security import ServeLimits

    app = create_app(registry, limits=limits or ServeLimits(), api_key=api_key)
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level)
    finally:  # also when uvicorn could not start (port taken): no vLLM subprocess outlives the server
        for backend in registry.backends:
            if getattr(backend, "process", None) is not None:
                backend.process.stop()


@contextlib.contextmanager
def serve_in_thread(
    app: Any, host: str = "127.0.0.1", port: Optional[int] = None, log_level: str = "warning"
) -> Iterator[str]:
    """Run ``app`` with uvicorn in a background thread (tests, notebooks, benchmarks); yields its URL and
    stops it (and the app's backends) on exit."""
    import threading
    import time

    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on"))
    thread = threading.Thread(target=server.run, name=f"barred-serve-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"The server on {host}:{port} did not start.")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
