"""Smoke test of ``benchmarks/bench_guardrail_cpu.py``: every row of its table at the smallest size that
runs it: the MiniLM + LoRA classifier trained for one epoch on 32 XSTest rows, TF-IDF + logistic regression,
the SmolLM2 judge on 4 test rows and SmolLM2 zero-shot on the 16 test rows. ``--with-generative`` (SmolLM2 +
LoRA) is the generative training path that ``test_bench_ceiling.py`` runs on a tiny model."""

from __future__ import annotations

import json

from tests.utils.benchmarks import finite, run_main


def test_bench_guardrail_cpu_every_row(tmp_path):
    out = tmp_path / "results.json"
    run_main(
        "bench_guardrail_cpu.py",
        "--max-train", "32", "--max-test", "16", "--epochs", "1", "--latency-texts", "4",
        "--judge-limit", "4", "--threads", "1", "--json", str(out),
    )  # fmt: skip
    results = {r["method"].split(" (")[0]: r for r in json.loads(out.read_text())}
    assert set(results) == {
        "MiniLM-L6 + LoRA",
        "TF-IDF + LogisticRegression",
        "SmolLM2-135M judge",
        "SmolLM2-135M zero-shot",
    }, list(results)
    for method, r in results.items():
        assert r["n"] == (4 if method == "SmolLM2-135M judge" else 16), r
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["f1"] <= 1 and finite(r["texts_per_s"]) and r["texts_per_s"] > 0, r
    for method in ("MiniLM-L6 + LoRA", "TF-IDF + LogisticRegression"):
        r = results[method]
        assert finite(r["train_s"], r["p50_ms"], r["p95_ms"]) and 0 < r["p50_ms"] <= r["p95_ms"], r
    assert results["MiniLM-L6 + LoRA"]["steps"] >= 1 and results["SmolLM2-135M zero-shot"]["unparseable"] == 0
