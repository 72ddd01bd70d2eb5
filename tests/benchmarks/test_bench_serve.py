"""Smoke test of ``benchmarks/bench_serve.py``: one tiny MiniLM LoRA classifier guardrail served by
``barred serve`` against the same guardrail loaded separately, then a 20-request load test over 8 distinct
texts. The generative rows (``--generative vllm|inprocess``) train SmolLM2 adapters and start vLLM: minutes,
not run here."""

from __future__ import annotations

import json

from tests.utils.benchmarks import finite, run_main


def test_bench_serve_one_classifier_and_load_test(tmp_path):
    out = tmp_path / "serve.json"
    stdout = run_main(
        "bench_serve.py",
        "--classifiers", "1", "--requests", "8", "--separate-requests", "4", "--latency-runs", "4",
        "--load-requests", "20", "--load-n", "1", "--load-unique", "8", "--work", str(tmp_path / "work"),
        "--output", str(out),
    )  # fmt: skip
    report = json.loads(out.read_text())
    (row,) = report["rows"]
    assert row["kind"] == "classifier" and row["n"] == 1, stdout[-2000:]
    for side in ("server", "separate"):
        figures = row[side]
        assert finite(*figures.values()) and figures["rss_mb"] > 0 and figures["checks_per_s"] > 0, figures
        assert 0 < figures["p50_ms"] <= figures["p95_ms"], figures
    assert row["server"]["errors"] == 0
    load = report["load_test"]
    assert load["requests"] == 20 and load["errors"] == 0 and load["mismatched"] == 0, load
    assert load["requests_per_s"] > 0 and len(load["rss_mb_per_tenth"]) == 10
    assert "| classifier | 1 |" in stdout
