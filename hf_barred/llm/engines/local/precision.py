"""The ``local`` engine's precision on CPU: bfloat16 where the CPU multiplies bfloat16 natively and it
measures faster, float32 elsewhere.

Answering is a long run of small matrix products, bounded by how fast the weights are read and
multiplied. On x86 CPUs with AMX tiles (Intel Sapphire Rapids and later) or with AVX512-BF16 dot
products (Intel Cooper Lake, AMD Zen 4 and Zen 5), oneDNN multiplies bfloat16 matrices natively, and
bfloat16 weights are half as many bytes to read. ``EngineConfig.dtype="auto"`` therefore picks
bfloat16 on CPU (:func:`auto_cpu_dtype_name`) when

1. the CPU reports ``amx_bf16`` or ``avx512_bf16`` (:func:`cpu_bfloat16_flags`: torch's own cpuinfo
   checks, else ``/proc/cpuinfo``); elsewhere bfloat16 products are emulated and slower, and nothing
   below is tried;
2. this torch's oneDNN packs bfloat16 weights here and the packed layer agrees with ``nn.Linear``
   on a probe (:mod:`hf_barred.llm.engines.local.packed`);
3. packed bfloat16 measures faster: in each phase of :data:`TIMED_PRODUCTS` (the embedded
   SmolLM2-135M's MLP products for a decoding step of 8 rows, and for a 64-token prefill block),
   the packed bfloat16 products take at most :data:`BFLOAT16_MAX_TIME_RATIO` of their float32 time,
   each product's fastest of 5 rounds on one thread
   (:func:`~hf_barred.llm.engines.local.packed.time_linear_products`; tens of milliseconds).

The decision is taken once per process (the first ``auto`` engine on CPU, or the first
:func:`resolved_dtype_name`) and kept; on GPUs ``auto`` is the checkpoint's own dtype.

bfloat16 changes the numbers, so greedy answers can differ from float32 ones: the engine names
its precision in the response cache's key (:attr:`LocalBackend.cache_name`), and answers of one
precision are never served for the other; :func:`resolved_dtype_name` says, without loading a
model, which precision a config answers in on this machine (what a stage fingerprint needs).
``--dtype float32`` reproduces float32 answers anywhere.

Importing this module does not import torch (a fingerprint can ask :func:`resolved_dtype_name`
before the engine's threads are configured; it configures them first, as the engine does).

Example:
    >>> from hf_barred.llm import EngineConfig
    >>> from hf_barred.llm.engines.local.precision import resolve_dtype, resolved_dtype_name
    >>> resolve_dtype("float32", "cpu")
    torch.float32
    >>> resolved_dtype_name(EngineConfig(dtype="bfloat16"))
    'bfloat16'
    >>> resolved_dtype_name(EngineConfig(device="cpu")) in ("float32", "bfloat16")  # this CPU's answer
    True
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    import torch

    from ...config import EngineConfig

logger = logging.getLogger(__name__)

#: The CPU flags (Linux ``/proc/cpuinfo`` names) under which oneDNN multiplies bfloat16 natively.
BFLOAT16_FLAGS = ("amx_bf16", "avx512_bf16")

#: The products ``auto`` times, ``(rows, in_features, out_features)`` by phase: the MLP's up and down
#: projections of the embedded SmolLM2-135M (hidden size 576, MLP 1536), for one decoding step of a full
#: default micro-batch (8 rows) and for a 64-token prefill block. Both phases must be faster: one row
#: alone would mislead (on AMX a packed 576×1536 product takes 84 µs for 1 row against 68 µs in float32,
#: but 77 µs for 16 rows against 336 µs), and on the quickstart's calls decoding and prefill take
#: comparable time.
TIMED_PRODUCTS: dict[str, tuple[tuple[int, int, int], ...]] = {
    "decoding step": ((8, 576, 1536), (8, 1536, 576)),
    "prefill block": ((64, 576, 1536), (64, 1536, 576)),
}

#: ``auto`` picks bfloat16 when its products take at most this fraction of float32's time: bfloat16
#: changes answers, so a tie (or timing noise) keeps float32.
BFLOAT16_MAX_TIME_RATIO = 0.9


def _proc_cpuinfo_flags() -> frozenset[str]:
    """The first CPU's flags in ``/proc/cpuinfo`` (empty where there is no such file)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_bfloat16_flags() -> frozenset[str]:
    """Which of :data:`BFLOAT16_FLAGS` this CPU has: torch's cpuinfo-based checks
    (``torch.cpu.get_capabilities``, else ``torch.cpu._is_amx_tile_supported`` and
    ``_is_avx512_bf16_supported``), else ``/proc/cpuinfo``."""
    import torch

    capabilities = getattr(torch.cpu, "get_capabilities", None)
    if capabilities is not None:
        try:
            found = capabilities()
            return frozenset(flag for flag in BFLOAT16_FLAGS if found.get(flag))
        except (RuntimeError, AttributeError):
            pass
    checks = {"amx_bf16": "_is_amx_tile_supported", "avx512_bf16": "_is_avx512_bf16_supported"}
    try:  # private, but what torch itself checks (AMX tiles come with their bfloat16 products)
        return frozenset(flag for flag, check in checks.items() if getattr(torch.cpu, check)())
    except (AttributeError, RuntimeError):
        return _proc_cpuinfo_flags() & frozenset(BFLOAT16_FLAGS)


@functools.cache
def auto_cpu_dtype_name() -> str:
    """``"bfloat16"`` or ``"float32"``: what ``dtype="auto"`` runs on this CPU (the module's three
    conditions), decided once per process."""
    flags = cpu_bfloat16_flags()
    if not flags:
        logger.debug("dtype=auto: float32 (the CPU has neither %s).", " nor ".join(BFLOAT16_FLAGS))
        return "float32"
    from . import packed

    if not packed.onednn_packs_bfloat16():
        logger.info("dtype=auto: float32 (%s, but this torch's oneDNN has no bfloat16 path).", ", ".join(sorted(flags)))
        return "float32"
    ratios = {}
    for phase, products in TIMED_PRODUCTS.items():
        try:
            seconds = packed.time_linear_products(products)
        except (RuntimeError, AttributeError) as err:  # a torch without oneDNN's linear ops
            logger.info("dtype=auto: float32 (bfloat16 weights cannot be packed here: %s).", err)
            return "float32"
        if seconds is None:
            logger.warning("dtype=auto: float32 (oneDNN's packed bfloat16 linear disagrees with nn.Linear here).")
            return "float32"
        ratios[phase] = seconds["bfloat16"] / seconds["float32"]
    choice = "bfloat16" if max(ratios.values()) <= BFLOAT16_MAX_TIME_RATIO else "float32"
    logger.info(
        "dtype=auto: %s (%s; packed bfloat16 products take %s of their float32 time).",
        choice,
        ", ".join(sorted(flags)),
        ", ".join(f"{ratio:.2f}× in a {phase}" for phase, ratio in ratios.items()),
    )
    return choice


def resolve_dtype(dtype: str, device: str) -> Union[torch.dtype, str]:
    """The torch dtype to load the model in: ``"auto"`` is :func:`auto_cpu_dtype_name` on CPU and
    ``"auto"`` (the checkpoint's dtype) on other devices (``dtype`` is one of
    :data:`~hf_barred.llm.config.DTYPES`, which ``EngineConfig`` checks)."""
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    if device != "cpu":
        return "auto"
    return getattr(torch, auto_cpu_dtype_name())


def resolved_dtype_name(config: EngineConfig) -> str:
    """The precision ``config``'s local engine answers in on this machine, without loading a model:
    ``config.dtype`` when explicit; for ``"auto"``, ``"float32"`` or ``"bfloat16"`` on CPU
    (:func:`auto_cpu_dtype_name`, cached), ``"auto"`` (the checkpoint's dtype) on a GPU.

    Like ``LocalBackend.from_config``, it configures ``config.threads`` before it imports torch (whose
    OpenMP settings are read once, at that import), and takes ``config.device`` (default: cuda when
    available, else cpu).
    """
    if config.dtype != "auto":
        return config.dtype
    if config.device not in (None, "cpu"):
        return "auto"
    from ...threads import configure_threads

    configure_threads(config.threads)
    import torch

    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return str(resolve_dtype(config.dtype, device)).removeprefix("torch.")
