"""What the benchmark smoke tests (``tests/benchmarks``) share: run a script of ``benchmarks/`` at a tiny
size, as a subprocess (:func:`run_benchmark`) or through its ``main(argv)`` in the test process
(:func:`run_main`: the test session's imports of torch, transformers and sentence-transformers are shared,
which saves 5-10 s a script), import one as a module, and read its machine-readable output."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import math
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from tests.utils import REPO_ROOT

BENCHMARKS = REPO_ROOT / "benchmarks"


def bench_env(**extra: str) -> dict[str, str]:
    """The test session's environment (its caches, see tests/conftest.py) for a benchmark subprocess:
    the repository on ``PYTHONPATH``, the Hub offline, one thread (on 2 shared cores, 2-thread OpenMP
    teams wait for each other: a smoke run then takes 3x as long)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = "1"
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.update(extra)
    return env


def run_benchmark(script: str, *args: str, timeout: float = 300, expect_rc: int = 0) -> str:
    """Run ``benchmarks/<script> args`` from the repository root; its stdout (the run must exit with
    ``expect_rc``; otherwise the assertion shows the end of its output). The wall time is printed
    (``pytest -s`` shows it)."""
    start, cpu = time.perf_counter(), _children_cpu()
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        cwd=REPO_ROOT,
        env=bench_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    print(f"{script} {' '.join(args)}: {time.perf_counter() - start:.1f} s, {_children_cpu() - cpu:.1f} CPU-s")
    assert proc.returncode == expect_rc, (
        f"{script} exited with {proc.returncode}, expected {expect_rc}\n--- stdout\n{proc.stdout[-4000:]}"
        f"\n--- stderr\n{proc.stderr[-4000:]}"
    )
    return proc.stdout


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime + _children_cpu()


def run_main(script: str, *args: str, expect_rc: int = 0) -> str:
    """``main(args)`` of ``benchmarks/<script>`` in this process; what it printed. The process's state is
    restored afterwards: environment (one thread while it runs), ``sys.path``, torch's thread count, and
    the engines it left in :mod:`hf_barred.llm`'s registry."""
    import torch

    import hf_barred.llm as llm

    module = load_benchmark(script)
    env, path, threads = dict(os.environ), list(sys.path), torch.get_num_threads()
    os.environ.update({k: v for k, v in bench_env().items() if k not in ("PYTHONPATH",)})
    out = io.StringIO()
    start, cpu = time.perf_counter(), _cpu()
    try:
        with contextlib.redirect_stdout(out):
            rc = module.main(list(args))
    except SystemExit as exit_:
        rc = exit_.code
    finally:
        os.environ.clear()
        os.environ.update(env)
        sys.path[:] = path
        torch.set_num_threads(threads)
        llm.clear_engines()
    print(f"{script} {' '.join(args)} (in-process): {time.perf_counter() - start:.1f} s, {_cpu() - cpu:.1f} CPU-s")
    assert (rc or 0) == expect_rc, f"{script} returned {rc}, expected {expect_rc}\n--- stdout\n{out.getvalue()[-4000:]}"
    return out.getvalue()


def load_benchmark(script: str) -> ModuleType:
    """``benchmarks/<script>`` imported as a module (``benchmarks/`` on ``sys.path``, as when it runs)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    name = Path(script).stem
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def result_lines(stdout: str) -> dict[str, dict[str, str]]:
    """``{system: {key: value}}`` of the ``RESULT system=... key=value ...`` lines of a run."""
    rows = {}
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            fields = dict(part.split("=", 1) for part in line.split()[1:])
            rows[fields["system"]] = fields
    return rows


def number(text: str, pattern: str) -> float:
    """The first number that ``pattern`` (a regex with one group) finds in ``text``."""
    match = re.search(pattern, text)
    assert match, f"expected {pattern!r} in the output:\n{text[-3000:]}"
    return float(match.group(1).replace(",", ""))


def finite(*values: Any) -> bool:
    """Whether every value is a finite number."""
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def check_workload(row: dict[str, Any], workload: dict[str, float]) -> None:
    """A ``bench_barred_vs_distilabel.py`` row: the samples its server judged in round 1 fall into the
    configured categories (``workload``: against, converge, stay; the rest agree) within 4 standard
    deviations of a binomial draw, plus one sample."""
    n = row["round1_samples"]
    assert n > 0, f"{row['system']}: no round-1 judge call reached the server"
    shares = {"agree": 1 - sum(workload.values()), **workload}
    for name, share in shares.items():
        seen = row["round1"].get(name, 0) / n
        assert abs(seen - share) <= 4 * math.sqrt(share * (1 - share) / n) + 1 / n, (row["system"], name, seen, share)
