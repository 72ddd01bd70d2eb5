"""Smoke test of ``benchmarks/bench_category_delete.py``: 300 rows (saved to disk and loaded back, as in
the 100,000-row run) in batches of 100, as a script (the other smoke tests mostly call ``main`` in-process).
The script asserts every row was perturbed; here its rates must be sane."""

from __future__ import annotations

from tests.utils.benchmarks import finite, number, run_benchmark


def test_bench_category_delete_smoke():
    stdout = run_benchmark("bench_category_delete.py", "--rows", "300", "--batch-size", "100")
    on_disk = number(stdout, r"category_delete: 300 rows in [\d.]+ s = ([\d,]+) rows/s \(on disk")
    per_cpu = number(stdout, r"= ([\d,]+) rows per CPU-second")
    in_memory = number(stdout, r"category_delete: 30 rows in [\d.]+ s = ([\d,]+) rows/s \(in memory\)")
    assert finite(on_disk, per_cpu, in_memory) and min(on_disk, per_cpu, in_memory) > 0
