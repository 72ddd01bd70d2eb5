"""How many CPU threads a local model job uses, set once and deliberately.

The default is the number of *physical* cores this process may run on (hyper-threads share one
core's matrix units, so they only add contention). :func:`configure_threads` sets torch's intra-op
threads, one inter-op thread, and, before torch is first imported, ``OMP_NUM_THREADS``,
``MKL_NUM_THREADS`` and ``OMP_WAIT_POLICY=PASSIVE``: an OpenMP thread that waits at a barrier
then sleeps instead of spinning, so two jobs sharing the cores both keep moving (with spinning
waiters they can stall each other for minutes). Variables the user already set are left alone.

Example:
    >>> from hf_barred.llm.threads import default_threads
    >>> default_threads() >= 1
    True
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Optional

logger = logging.getLogger(__name__)

_ENV_BEFORE_TORCH = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _usable_cpus() -> int:
    """Logical CPUs this process may run on (its affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def physical_cores() -> int:
    """Physical cores of the machine (psutil when installed, else the logical count)."""
    try:
        import psutil

        return psutil.cpu_count(logical=False) or os.cpu_count() or 1
    except ImportError:
        return os.cpu_count() or 1


def default_threads() -> int:
    """Physical cores, capped by the CPUs this process may use (a container's or taskset's share)."""
    logical = os.cpu_count() or 1
    usable = _usable_cpus()
    per_core = max(1, logical // physical_cores())  # hyper-threads per core
    return max(1, min(physical_cores(), usable // per_core or 1))


def resolve_threads(threads: Optional[int]) -> int:
    """``threads`` when given (>= 1), else ``$OMP_NUM_THREADS`` when set, else :func:`default_threads`."""
    if threads is not None:
        if threads < 1:
            raise ValueError(
                f"threads: expected >= 1, found {threads}. Fix: pass --threads 1 or more, or leave it out."
            )
        return threads
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) >= 1:
        return int(env)
    return default_threads()


def configure_threads(threads: Optional[int] = None) -> int:
    """Use ``resolve_threads(threads)`` threads for torch in this process; returns that number.

    Before torch is imported it also exports the OpenMP/MKL variables (unless already set), so the
    thread pools start at that size and wait passively; after, only torch's own setting changes.
    """
    n = resolve_threads(threads)
    if "torch" not in sys.modules:
        for name in _ENV_BEFORE_TORCH:
            os.environ.setdefault(name, str(n))
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)  # allowed once, before any inter-op work
    except RuntimeError:
        pass
    logger.debug("local engine: %d torch threads (%d usable CPUs)", n, _usable_cpus())
    return n
