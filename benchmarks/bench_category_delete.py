"""Throughput of category deletion (APT) on 100,000 policy-conditioned rows.

The rows use the 12-category example policy (dataset_scripts/policy-xstest/taxonomy.yaml, about
3.2 kB of policy text per row), half positive with 1-3 violated codes. The dataset is saved to disk
and loaded back, as a real one would be, so the timing includes reading and writing Arrow files.

Usage:
    python benchmarks/bench_category_delete.py [--rows 100000] [--batch-size 1000] [--num-proc N]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import datasets
from datasets import Dataset, load_from_disk

from hf_barred.policy.rows import POLICY_FEATURES
from hf_barred.policy.taxonomy import Taxonomy
from hf_barred.stages.category_delete import CategoryDeleteConfig, category_delete

TAXONOMY = Path(__file__).resolve().parents[1] / "dataset_scripts" / "policy-xstest" / "taxonomy.yaml"


def make_rows(n: int, seed: int = 0) -> Dataset:
    taxonomy = Taxonomy.load(TAXONOMY)
    policy, codes = taxonomy.render(), list(taxonomy.codes)
    rng = random.Random(seed)
    labels = [rng.random() < 0.5 for _ in range(n)]
    records = {name: [] for name in POLICY_FEATURES}
    for i, unsafe in enumerate(labels):
        row = {
            "id": str(i),
            "text": f"User message number {i}: " + "lorem ipsum " * rng.randint(2, 30),
            "taxonomy": policy,
            "label": int(unsafe),
            "categories": sorted(rng.sample(codes, rng.randint(1, 3)), key=lambda c: int(c[1:])) if unsafe else [],
            "perturbation": "none",
            "deleted_codes": [],
            "source_codes": [],
            "edit_kind": "",
            "edited_code": "",
            "edit_raw": "",
            "edit_error": None,
            "edit_model": "",
            "edit_prompt": "",
            "edit_prompt_tokens": 0,
            "edit_completion_tokens": 0,
        }
        for name in POLICY_FEATURES:
            records[name].append(row[name])
    return Dataset.from_dict(records, features=POLICY_FEATURES)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--num-proc", type=int, default=None)
    args = parser.parse_args(argv)
    datasets.disable_progress_bars()

    with tempfile.TemporaryDirectory() as tmp:
        make_rows(args.rows).save_to_disk(str(Path(tmp) / "rows"))
        ds = load_from_disk(str(Path(tmp) / "rows"))
        kwargs = {
            "batch_size": args.batch_size,
            "num_proc": args.num_proc,
            "cache_file_name": str(Path(tmp) / "deleted.arrow"),
        }
        start, cpu_start = time.perf_counter(), time.process_time()
        out = category_delete(ds, CategoryDeleteConfig(seed=0), **kwargs)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        assert len(out) == len(ds) and set(out["perturbation"]) == {"category_delete"}

        in_memory = make_rows(args.rows // 10)
        start = time.perf_counter()
        category_delete(in_memory, CategoryDeleteConfig(seed=0), batch_size=args.batch_size)
        seconds_memory = time.perf_counter() - start

    print(
        f"category_delete: {args.rows:,} rows in {seconds:.2f} s = {args.rows / seconds:,.0f} rows/s "
        f"(on disk, batch_size={args.batch_size}, num_proc={args.num_proc or 1}); "
        f"CPU time of this process {cpu:.2f} s = {args.rows / cpu:,.0f} rows per CPU-second"
    )
    print(
        f"category_delete: {len(in_memory):,} rows in {seconds_memory:.2f} s = {len(in_memory) / seconds_memory:,.0f} "
        "rows/s (in memory)"
    )


if __name__ == "__main__":
    main()
