"""Smoke test of ``benchmarks/bench_ceiling.py``: the first fold of a 2-fold cross-validation (``--run-folds 1``)
of every system on 24 XSTest rows (the repository's copy where the shared data is absent): TF-IDF, MiniLM + LoRA
and fully fine-tuned (1 epoch), SetFit (1 iteration) and the generative LoRA guardrail on a tiny random causal LM
(``--generative-base``); then ``--table-from`` on its JSON. The BARRED sets (health advice) run with TF-IDF
when the shared data is there."""

from __future__ import annotations

import json

import pytest

from tests.utils.benchmarks import finite, load_benchmark, run_main


def check_results(results: list[dict], systems: list[str], dataset: str, rows: int) -> None:
    assert [r["system"] for r in results] == systems
    for r in results:
        assert r["dataset"] == dataset and r["rows"] == rows and r["folds"] == len(r["fold_accuracies"]) >= 1, r
        assert all(0 <= a <= 1 for a in r["fold_accuracies"]), r
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["f1"] <= 1 and finite(r["accuracy_ci95"], r["train_s"], r["p50_ms"])


def test_bench_ceiling_every_system_on_xstest(tmp_path):
    from hf_barred.train.tiny import make_tiny_causal_lm

    tiny = make_tiny_causal_lm(tmp_path / "tiny-lm")
    out = tmp_path / "ceiling.json"
    systems = ["tfidf", "minilm-lora", "minilm-full", "minilm-head", "minilm-multi", "setfit", "smollm2-lora"]
    stdout = run_main(
        "bench_ceiling.py",
        "--datasets", "xstest", "--systems", *systems, "--folds", "2", "--run-folds", "1", "--max-rows", "24",
        "--epochs", "1", "--setfit-iterations", "1", "--generative-epochs", "1", "--generative-base", tiny,
        "--latency-texts", "2", "--out", str(out),
    )  # fmt: skip
    results = json.loads(out.read_text())["results"]
    check_results(results, systems, "xstest", 24)
    assert [r["folds"] for r in results] == [1] * len(systems), stdout[-2000:]
    table = run_main("bench_ceiling.py", "--table-from", str(out))
    assert table.count("| xstest |") == len(systems)


def test_bench_ceiling_barred_set(tmp_path):
    bench = load_benchmark("bench_ceiling.py")
    if not (bench.DATA / bench.DATASETS["healthe"][0]).is_file():
        pytest.skip(f"the BARRED human-labelled sets are not in {bench.DATA} (set HF_BARRED_SHARED_DATA)")
    out = tmp_path / "ceiling.json"
    run_main(
        "bench_ceiling.py", "--datasets", "healthe", "--systems", "tfidf", "--folds", "2", "--max-rows", "40",
        "--run-folds", "1", "--latency-texts", "2", "--out", str(out),
    )  # fmt: skip
    check_results(json.loads(out.read_text())["results"], ["tfidf"], "healthe", 40)
