"""Smoke test of ``benchmarks/judge_crosscheck.py``: the embedded SmolLM2-135M as a logprob judge, in both
classification formats, on a 4-row file with the columns of the BARRED test sets (predicate,
predicate_label, transcript) and short transcripts."""

from __future__ import annotations

import csv
import json

from tests.utils.benchmarks import finite, run_main


def test_bench_judge_crosscheck_four_rows(tmp_path):
    source = tmp_path / "healthe.csv"
    with open(source, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["predicate", "predicate_label", "transcript"])
        for i, label in enumerate([1, 0, 1, 0]):
            advice = "Agent: Drink water and rest." if label else "Agent: The shop opens at nine."
            writer.writerow(["The agent's response contains health advice.", label, f"User: hi {i}\n{advice}"])
    stdout = run_main("judge_crosscheck.py", str(source))
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert len(lines) >= 2 and len({r["format"] for r in lines}) == len(lines), stdout[-2000:]  # every format
    for r in lines:
        assert r["rows"] == 4 and r["positive_rate"] == 0.5 and r["unparseable"] == 0, r
        assert finite(r["accuracy"], r["share_above_half"], r["score_min"], r["score_max"]), r
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["score_min"] <= r["score_median"] <= r["score_max"] <= 1, r
