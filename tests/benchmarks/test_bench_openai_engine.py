"""Smoke test of ``benchmarks/bench_openai_engine.py``: 64 requests at L = 10 ms, C = 8, one throughput run,
then the cache-hit overhead. The script itself asserts that every answer came back and every repeat was a hit;
here its printed figures must be sane (not its targets: the test machine is shared)."""

from __future__ import annotations

import re

from tests.utils.benchmarks import finite, number, run_main


def number_list(stdout: str, pattern: str) -> list[str]:
    found = re.search(pattern, stdout)
    assert found, pattern
    return [x.strip() for x in found.group(1).split(",")]


def test_bench_openai_engine_smoke():
    stdout = run_main(
        "bench_openai_engine.py", "--requests", "64", "--repeat", "1", "--latency", "0.01", "--concurrency", "8"
    )
    rate = number(stdout, r"throughput: 64 requests, .*?, ([\d.]+) requests/s")
    fraction = number(stdout, r"fraction = ([\d.]+) \(target")
    bare = number(stdout, r"bare aiohttp client \(no SDK, no engine\): ([\d.]+) requests/s")
    engine_cpu = number(stdout, r"client CPU per request: engine ([\d.]+) ms")
    single_hit = number(stdout, r"cache hit overhead: ([\d.]+) ms per single-conversation call")
    batched_hit = number(stdout, r"([\d.]+) ms per conversation in one batch")
    assert finite(rate, fraction, bare, engine_cpu, single_hit, batched_hit)
    assert rate > 0 and bare > 0 and 0 < fraction <= 1.05  # C / L is the ceiling
    assert 0 < single_hit < 100 and 0 < batched_hit < 100  # ms; the target (< 1 ms) is for a quiet machine


def test_bench_openai_engine_two_servers_smoke():
    stdout = run_main(
        "bench_openai_engine.py",
        "--requests",
        "64",
        "--repeat",
        "1",
        "--latency",
        "0.01",
        "--concurrency",
        "4",
        "--servers",
        "2",
    )
    fraction = number(stdout, r"fraction = ([\d.]+) \(target")
    split = [int(x) for x in number_list(stdout, r"answered per server: ([\d, ]+)")]
    assert finite(fraction) and 0 < fraction <= 1.05  # 2 C / L is the ceiling
    assert len(split) == 2 and all(split) and sum(split) >= 64  # both servers answered (warm-up included)
    assert "RESULT servers=2 requests=64" in stdout
