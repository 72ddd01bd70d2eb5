"""Smoke test of ``benchmarks/bench_apt.py`` and a check of its bootstrap.

The smoke run is the whole script (data, scripted edits, both trainings, three evaluation policies,
metrics, bootstrap CIs, paired differences, results.json) on a tiny random causal LM (``--base-model``
takes a folder): 8 training rows, 1 step, 5 held-out rows. The check: the bootstrap's statistics, which
sum per-row counts, give the same figures as the metrics functions they replace (the CIs of the same
seeds), on random predictions against the real evaluation policies.
"""

from __future__ import annotations

import json
import random

import pytest

from tests.utils.benchmarks import finite, load_benchmark, run_main


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    from hf_barred.train.tiny import make_tiny_causal_lm

    return make_tiny_causal_lm(tmp_path_factory.mktemp("tiny-lm"), corpus=["S1: Violent Crimes."])


def test_bench_apt_tiny_model(tmp_path, tiny_lm):
    out = tmp_path / "out"
    stdout = run_main(
        "bench_apt.py",
        "--base-model", tiny_lm, "--train-rows", "8", "--steps", "1", "--batch-size", "2",
        "--eval-unsafe", "3", "--eval-safe", "2", "--resamples", "50", "--threads", "1", "--output", str(out),
    )  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    assert set(results["policies"]) == {"seen", "deleted", "shuffled"}, stdout[-2000:]
    assert results["augment"]["rows_original"] == 8 and results["augment"]["rows_total"] == 16
    assert {name: e["n"] for name, e in results["eval_rows"].items()} == {"seen": 5, "deleted": 5, "shuffled": 5}
    for name, block in results["policies"].items():
        for system in ("base", "apt"):
            metrics, ci = block[system]["metrics"], block[system]["ci"]
            assert metrics["n"] == 5 and 0 <= metrics["f1"] <= 1 and 0 <= metrics["category_f1"] <= 1
            assert set(ci) == ({"f1", "category_f1"} | ({"deleted_fp_rate"} if name == "deleted" else set()))
            for low, high in ci.values():
                assert finite(low, high) and 0 <= low <= high <= 1, (name, system, ci)
        for diff in block["difference"].values():
            assert finite(diff["value"], *diff["ci"]) and diff["ci"][0] <= diff["ci"][1]
        assert len(block["rows"]) == 5
    assert "| apt | deleted | 5 |" in stdout and finite(*results["seconds"].values())


def reference_statistics(predictions, refs, categories, ref_cats, deleted):
    """The statistics as bench_apt.py computed them before: the metrics functions on every resample."""
    from hf_barred.evaluation.apt import policy_metrics

    def pick(idx, name):
        sub = lambda xs: [xs[i] for i in idx]  # noqa: E731
        m = policy_metrics(
            sub(predictions), sub(refs), sub(categories), sub(ref_cats), sub(deleted) if deleted is not None else None
        )
        if name == "deleted_fp_rate":
            return m["deleted_fp"] / m["deleted_n"] if m["deleted_n"] else 0.0
        return m[name]

    names = ["f1", "category_f1"] + (["deleted_fp_rate"] if deleted is not None else [])
    return {name: (lambda idx, name=name: pick(idx, name)) for name in names}


def random_run(gold, rng: random.Random):
    """Predictions of a guardrail that guesses: a label (sometimes unparseable) and 0-2 codes of its policy."""
    codes = sorted({c for cats in gold["categories"] for c in cats} | {"S1", "S2", "S3", "S12"})
    predictions = [rng.choice([0, 1, 1, None]) for _ in range(len(gold))]
    categories = [rng.sample(codes, rng.randint(0, 2)) if p == 1 else [] for p in predictions]
    return predictions, categories


def test_bench_apt_bootstrap_statistics_match_the_metrics():
    from hf_barred.evaluation.apt import bootstrap_ci, evaluation_policies

    bench = load_benchmark("bench_apt.py")
    train, held = bench.split_rows(bench.load_rows(), 8, 12, 8, seed=0)
    rng = random.Random(0)
    for name, gold in evaluation_policies(held, seed=0).items():
        refs, ref_cats = list(gold["label"]), [list(c) for c in gold["categories"]]
        deleted = list(gold["deleted_to_safe"]) if "deleted_to_safe" in gold.column_names else None
        predictions, categories = random_run(gold, rng)
        fast = bench.statistic_functions(predictions, refs, categories, ref_cats, deleted)
        slow = reference_statistics(predictions, refs, categories, ref_cats, deleted)
        assert set(fast) == set(slow)
        for stat in fast:
            for _ in range(10):
                idx = [rng.randrange(len(refs)) for _ in range(len(refs))]
                assert fast[stat](idx) == slow[stat](idx), (name, stat, idx)
            assert bootstrap_ci(fast[stat], len(refs), 30, seed=1) == bootstrap_ci(slow[stat], len(refs), 30, seed=1)
