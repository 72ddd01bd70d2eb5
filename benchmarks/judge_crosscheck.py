"""Cross-check of the logprob judge baseline: the embedded SmolLM2-135M-Instruct on the BARRED healthe test set.

An independent measurement with the paper's A.4 wording found that this model scores "1" above "0" on
every row, so its accuracy is the positive base rate, 0.495. This script prints the figures of
:func:`hf_barred.evaluation.judges.score_with_judge` (mode, accuracy, share of rows scored above 0.5) for
both classification formats::

    OMP_NUM_THREADS=2 python benchmarks/judge_crosscheck.py /work/shared/data/barred/healthe_test.csv
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from hf_barred.evaluation.judges import score_with_judge
from hf_barred.guardrails.formats import CLASSIFICATION_FORMATS, classification_messages
from hf_barred.llm import EngineConfig
from hf_barred.policy.data import load_labelled_data


def crosscheck(path: str, fmt: str, limit: int | None = None) -> dict:
    ds = load_labelled_data(path)
    if limit:
        ds = ds.select(range(limit))
    conversations = [classification_messages(r["predicate"], r["transcript"], format=fmt) for r in ds]
    labels = [int(v) for v in ds["predicate_label"]]
    result = score_with_judge(EngineConfig(engine="local", batch_size=8), conversations, mode="auto")
    correct = sum(p == y for p, y in zip(result.predictions, labels))
    scores = [s for s in result.scores if s is not None]
    return {
        "format": fmt,
        "rows": len(labels),
        "positive_rate": sum(labels) / len(labels),
        "accuracy": correct / len(labels),
        **result.summary(),
        "share_above_half": sum(s > 0.5 for s in scores) / len(labels),
        "score_min": min(scores),
        "score_median": statistics.median(scores),
        "score_max": max(scores),
        "seconds": round(result.seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("csv", help="A BARRED test CSV (predicate, predicate_label, transcript).")
    parser.add_argument("--format", choices=CLASSIFICATION_FORMATS + ("all",), default="all")
    parser.add_argument("--limit", type=int)
    args = parser.parse_args(argv)
    for fmt in CLASSIFICATION_FORMATS if args.format == "all" else (args.format,):
        print(json.dumps(crosscheck(args.csv, fmt, args.limit)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
