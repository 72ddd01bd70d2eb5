"""Smoke test of ``benchmarks/distilabel_peer.py``, the distilabel side of ``bench_barred_vs_distilabel.py``,
run through that script (``--skip-ours``) at N = 10 in both modes. It needs distilabel's own venv
(``python benchmarks/bench_barred_vs_distilabel.py --setup`` makes it); without one the test is skipped."""

from __future__ import annotations

import json

import pytest

from tests.utils.benchmarks import check_workload, finite, load_benchmark, result_lines, run_main

SCRIPT = "bench_barred_vs_distilabel.py"


def test_bench_distilabel_peer_naive_and_early_stop(tmp_path):
    bench = load_benchmark(SCRIPT)
    if not bench.peer_ready(bench.DEFAULT_VENV):
        pytest.skip(
            f"no distilabel venv at {bench.DEFAULT_VENV} (it is not a dependency of hf_barred): "
            "python benchmarks/bench_barred_vs_distilabel.py --setup creates one"
        )
    out = tmp_path / "run.json"
    stdout = run_main(SCRIPT, "--n", "10", "--latency", "0.02", "--skip-ours", "--json", str(out))
    results = result_lines(stdout)
    assert set(results) == {"distilabel_naive", "distilabel_early_stop"}, stdout[-2000:]
    for system, fields in results.items():
        accepted, calls_per_accepted = int(fields["accepted"]), float(fields["calls_per_accepted"])
        assert accepted >= 10 and finite(calls_per_accepted, float(fields["accepted_per_s"])), (system, fields)
        assert 0 < float(fields["span_fraction"]) <= 1, (system, fields)
    # early stop: the advocate and round 2 only for split samples
    naive, early = (float(results[s]["calls_per_accepted"]) for s in ("distilabel_naive", "distilabel_early_stop"))
    assert early < naive
    report = json.loads(out.read_text())
    assert report["void"] == []
    for row in report["rows"]:
        assert set(row["by_role"]) <= {"generate", "judge r1", "advocate", "judge r2"}, row["by_role"]
        check_workload(row, bench.WORKLOAD)
