"""Smoke test of ``benchmarks/bench_precision.py``: float32 against bfloat16 of the local engine (the
embedded SmolLM2-135M) on the first 32 tokens of one recorded quickstart conversation, teacher-forced."""

from __future__ import annotations

from tests.utils.benchmarks import finite, number, run_main


def test_bench_precision_one_conversation():
    stdout = run_main("bench_precision.py", "--max-prompts", "1", "--max-positions", "32", "--threads", "1")
    positions = number(stdout, r"1 conversations, (\d+) positions")
    assert positions == 32
    same = number(stdout, r"same next token: ([\d.]+)%")
    kl = number(stdout, r"mean KL\(float32 \|\| bfloat16\): ([-\d.e]+) nats")
    assert finite(same, kl)
    assert 50 <= same <= 100 and 0 <= kl < 1  # bfloat16 mostly agrees with float32 (97.9% in the README's run)
