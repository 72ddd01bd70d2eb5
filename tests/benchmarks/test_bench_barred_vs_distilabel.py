"""Smoke test of ``benchmarks/bench_barred_vs_distilabel.py``: hf_barred's rows at N = 20 against the
scripted loopback server, on the served prompt set (the openai engine's default) and the small set.

The distilabel peer needs its own venv (``--setup``); its smoke test is ``test_distilabel_peer.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

from tests.utils.benchmarks import (
    BENCHMARKS,
    bench_env,
    check_workload,
    finite,
    load_benchmark,
    result_lines,
    run_main,
)

SCRIPT = "bench_barred_vs_distilabel.py"


def test_bench_workload_categories_have_the_configured_shares():
    bench = load_benchmark(SCRIPT)
    keys = [f"{sid}.{level}" for sid in range(5000) for level in range(2)]
    counts: dict[str, int] = {}
    for key in keys:
        kind = bench.category(key)
        counts[kind] = counts.get(kind, 0) + 1
    for name, share in {"agree": 0.65, **bench.WORKLOAD}.items():
        assert abs(counts[name] / len(keys) - share) < 0.015, (name, counts)


def test_bench_barred_vs_distilabel_hf_barred_rows(tmp_path):
    out = tmp_path / "run.json"
    stdout = run_main(SCRIPT, "--n", "20", "--latency", "0.02", "--peer-modes", "", "--json", str(out))
    results = result_lines(stdout)
    expected = {"hf_barred", "hf_barred_warm_cache", "hf_barred_small", "hf_barred_stages", "hf_barred_small_stages"}
    assert set(results) == expected, stdout[-2000:]
    assert stdout.rstrip().splitlines()[-1].startswith("RESULT "), "the run must end with its RESULT lines"
    assert results["hf_barred"]["prompt_set"] == "served" and results["hf_barred_small"]["prompt_set"] == "small"
    assert results["hf_barred"]["executor"] == "streaming" and results["hf_barred_stages"]["executor"] == "stages"
    for system, fields in results.items():
        accepted, calls_per_accepted = int(fields["accepted"]), float(fields["calls_per_accepted"])
        span_fraction, accepted_per_s = float(fields["span_fraction"]), float(fields["accepted_per_s"])
        assert accepted >= 20, (system, fields)
        assert finite(calls_per_accepted, span_fraction, accepted_per_s), (system, fields)
        assert accepted_per_s > 0 and 0 <= span_fraction <= 1, (system, fields)
        if system == "hf_barred_warm_cache":
            assert calls_per_accepted == 0 and int(fields["calls"]) == 0, fields  # every call a cache hit
        else:  # the generate + debate + refine work: more than a generate and two judges per sample
            assert 3 < calls_per_accepted < 12 and span_fraction > 0, (system, fields)

    report = json.loads(out.read_text())
    assert report["void"] == []
    rows = {row["slug"]: row for row in report["rows"]}
    bench = load_benchmark(SCRIPT)
    for slug in ("hf_barred", "hf_barred_small", "hf_barred_stages"):
        row = rows[slug]
        assert not {"other", "repair"} & set(row["by_role"]), row["by_role"]  # the responder knows every prompt
        assert {"decompose", "instantiate", "generate", "judge r1", "advocate", "judge r2"} <= set(row["by_role"])
        assert row["run"]["parse_failures"] in ({}, 0) or not any(row["run"]["parse_failures"].values())
        check_workload(row, bench.WORKLOAD)
    assert rows["hf_barred_warm_cache"]["run"]["cache_hits"] == rows["hf_barred"]["run"]["engine_calls"]


def test_bench_many_rules_in_one_run_against_sequential_runs(tmp_path):
    """``--rules 2``: one run of two rules and two runs of one rule each accept the same samples; the one run
    is not slower (at 20 ms a request the difference is small; the README gives the figure at 20 rules)."""
    out = tmp_path / "rules.json"
    stdout = run_main(
        SCRIPT, "--n", "10", "--rules", "2", "--latency", "0.02", "--executors", "streaming", "--json", str(out)
    )
    results = result_lines(stdout)
    assert {"hf_barred", "hf_barred_sequential"} <= set(results), stdout[-2000:]
    one, sequential = results["hf_barred"], results["hf_barred_sequential"]
    assert one["rules"] == sequential["rules"] == "2"
    assert int(one["accepted"]) == int(sequential["accepted"]) >= 20
    assert one["calls"] == sequential["calls"]  # the same rows planned, debated and refined
    assert 0 <= float(one["span_fraction"]) <= 1
    assert "rules in one run" in stdout


def test_bench_void_run_is_reported():
    """A run whose responder does not know the prompts (the issue's 7,644 'repair' and 'other' requests,
    0 accepted) is void: the script prints VOID lines and exits 1 instead of a table of zeros."""
    bench = load_benchmark(SCRIPT)
    row = {"system": "hf_barred", "accepted": 0, "by_role": {"other": 5, "repair": 5}}
    found = bench.problems([row])
    assert len(found) == 3 and "accepted 0" in found[0] and "'other'" in found[1]


def test_bench_serve_takes_a_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, str(BENCHMARKS / SCRIPT), "serve", "--latency", "0", "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=bench_env())
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url == f"http://127.0.0.1:{port}/v1"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/bench/stats", timeout=30) as response:
            assert json.loads(response.read())["requests"] == 0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
