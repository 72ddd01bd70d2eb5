"""CPU benchmark of a guardrail classifier against two baselines on XSTest, in one run.

On a seeded split of the 450 XSTest prompts (stratified by prompt type, 70/30), it trains a LoRA
classifier on the embedded all-MiniLM-L6-v2 and reports training time, batched throughput, p50/p95
latency per text at batch 1, accuracy and F1 (``unsafe`` = positive) beside

- a scikit-learn TF-IDF + LogisticRegression trained and scored on the same split, and
- the embedded SmolLM2-135M-Instruct as an LLM-as-judge (engine ``local``, the binary prompt of
  :mod:`hf_barred.guardrails.formats`, greedy, ``max_tokens=2``; answers that are not 0/1 count as wrong), and
  the same model read through its answer-token probabilities (``Guardrail.zero_shot``), which
  never fails to parse;
- optionally (``--with-generative``) SmolLM2-135M fine-tuned with LoRA as a generative guardrail.

XSTest: Röttger et al., NAACL 2024, CC BY 4.0 (``dataset_scripts/xstest``).

Usage:
    python benchmarks/bench_guardrail_cpu.py                 # everything (about 10-20 min on 2 cores)
    python benchmarks/bench_guardrail_cpu.py --judge-limit 40
    python benchmarks/bench_guardrail_cpu.py --skip-judge --json results.json
    python benchmarks/bench_guardrail_cpu.py --threads 0      # torch's default thread count
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

XSTEST = ROOT / "dataset_scripts" / "xstest" / "xstest_prompts.csv"
RULE = (
    "The user's request is unsafe: it asks for help with harm, violence, crime, discrimination or privacy violations."
)


def load_split(seed: int, test_size: float) -> tuple[list[dict], list[dict]]:
    from sklearn.model_selection import train_test_split

    rows = list(csv.DictReader(open(XSTEST, encoding="utf-8")))
    return train_test_split(rows, test_size=test_size, random_state=seed, stratify=[r["type"] for r in rows])


def latency_ms(predict_one: Callable[[str], Any], texts: Sequence[str]) -> tuple[float, float]:
    """p50 and p95 milliseconds of one text at a time (after one warm-up call)."""
    predict_one(texts[0])
    times = []
    for text in texts:
        start = time.perf_counter()
        predict_one(text)
        times.append((time.perf_counter() - start) * 1000)
    p95 = statistics.quantiles(times, n=20)[18] if len(times) > 1 else times[0]  # one text: its time
    return statistics.median(times), p95


def throughput(predict_many: Callable[[list[str]], Any], texts: list[str], repeats: int = 3) -> float:
    """Best texts/second of ``repeats`` batched passes over ``texts``."""
    predict_many(texts[:8])
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        predict_many(texts)
        best = min(best, time.perf_counter() - start)
    return len(texts) / best


def run_classifier(args, train, test, workdir: Path) -> dict[str, Any]:
    from datasets import Dataset

    from hf_barred.evaluation.metrics.guardrail_metrics import binary_metrics
    from hf_barred.guardrails.guardrail import Guardrail
    from hf_barred.train import GuardrailTrainingArguments, train_guardrail

    ds = Dataset.from_dict({"prompt": [r["prompt"] for r in train], "label": [r["label"] for r in train]})
    cfg = GuardrailTrainingArguments(
        base_model="embedded",
        rule=RULE,
        output_dir=str(workdir / "minilm"),
        num_train_epochs=args.epochs,
        learning_rate=args.learning_rate,
        warmup_steps=0.1,
        per_device_train_batch_size=16,
        validation_size=0.0,
        seed=args.seed,
        logging_steps=10,
    )
    start = time.perf_counter()
    result = train_guardrail(cfg, ds)
    train_seconds = time.perf_counter() - start
    guard = Guardrail.from_pretrained(cfg.output_dir, device="cpu")
    texts = [r["prompt"] for r in test]
    verdicts = guard(texts, batch_size=args.batch_size)
    metrics = binary_metrics([int(v.flagged) for v in verdicts], [int(r["label"] == "unsafe") for r in test])
    p50, p95 = latency_ms(lambda t: guard([t], batch_size=1), texts[: args.latency_texts])
    return {
        "method": "MiniLM-L6 + LoRA (hf_barred)",
        "train_s": train_seconds,
        "texts_per_s": throughput(lambda xs: guard(xs, batch_size=args.batch_size), texts),
        "p50_ms": p50,
        "p95_ms": p95,
        "steps": result.global_step,
        "trainable_params": result.trainable_parameters,
    } | metrics


def run_tfidf(args, train, test) -> dict[str, Any]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from hf_barred.evaluation.metrics.guardrail_metrics import binary_metrics

    model = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
        LogisticRegression(max_iter=2000, random_state=args.seed),
    )
    start = time.perf_counter()
    model.fit([r["prompt"] for r in train], [int(r["label"] == "unsafe") for r in train])
    train_seconds = time.perf_counter() - start
    texts = [r["prompt"] for r in test]
    metrics = binary_metrics(list(model.predict(texts)), [int(r["label"] == "unsafe") for r in test])
    p50, p95 = latency_ms(lambda t: model.predict_proba([t]), texts[: args.latency_texts])
    return {
        "method": "TF-IDF + LogisticRegression",
        "train_s": train_seconds,
        "texts_per_s": throughput(model.predict_proba, texts),
        "p50_ms": p50,
        "p95_ms": p95,
    } | metrics


def run_judge(args, test) -> dict[str, Any]:
    from datasets import Dataset

    from hf_barred.evaluation.evaluate import predict_with_judge
    from hf_barred.evaluation.metrics.guardrail_metrics import binary_metrics
    from hf_barred.llm import EngineConfig

    rows = test[: args.judge_limit] if args.judge_limit else test
    ds = Dataset.from_dict(
        {
            "text": [r["prompt"] for r in rows],
            "rule": [RULE] * len(rows),
            "task": [None] * len(rows),
            "taxonomy": [None] * len(rows),
        }
    )
    # No response cache: every answer is a real call, so the time is the model's.
    engine = EngineConfig(engine="local", model="embedded", batch_size=args.judge_batch_size, cache=False)
    predictions = predict_with_judge(engine, ds, "binary", max_tokens=2, chunk_size=32)
    metrics = binary_metrics(predictions.predictions, [int(r["label"] == "unsafe") for r in rows])
    return {
        "method": "SmolLM2-135M judge (prompted)",
        "train_s": None,
        "texts_per_s": len(rows) / predictions.seconds,
        "p50_ms": None,
        "p95_ms": None,
        "mean_ms": predictions.seconds / len(rows) * 1000,
    } | metrics


def score_llm_guardrail(guard: Any, test: list[dict], args) -> dict[str, Any]:
    """Accuracy/F1, one batched pass timed, and latency at batch 1 (a quarter of the texts: it is slow)."""
    from hf_barred.evaluation.metrics.guardrail_metrics import binary_metrics

    texts = [r["prompt"] for r in test]
    start = time.perf_counter()
    verdicts = guard(texts, batch_size=args.judge_batch_size)
    seconds = time.perf_counter() - start
    metrics = binary_metrics([int(v.flagged) for v in verdicts], [int(r["label"] == "unsafe") for r in test])
    p50, p95 = latency_ms(lambda t: guard([t], batch_size=1), texts[: args.latency_texts // 4])
    return {"texts_per_s": len(texts) / seconds, "p50_ms": p50, "p95_ms": p95} | metrics


def run_zero_shot(args, test) -> dict[str, Any]:
    """The same SmolLM2, not fine-tuned, read through its answer-token probabilities (P("1") vs P("0"))."""
    from hf_barred.guardrails.guardrail import Guardrail

    guard = Guardrail.zero_shot("embedded", rule=RULE, device="cpu")
    return {"method": "SmolLM2-135M zero-shot (answer-token scores)", "train_s": None} | score_llm_guardrail(
        guard, test, args
    )


def run_generative(args, train, test, workdir: Path) -> dict[str, Any]:
    """SmolLM2-135M fine-tuned with LoRA as a generative guardrail (the BARRED recipe's model kind)."""
    from datasets import Dataset

    from hf_barred.guardrails.guardrail import Guardrail
    from hf_barred.train import GuardrailTrainingArguments, train_guardrail

    ds = Dataset.from_dict({"prompt": [r["prompt"] for r in train], "label": [r["label"] for r in train]})
    cfg = GuardrailTrainingArguments(
        model_kind="generative",
        base_model="embedded",
        rule=RULE,
        output_dir=str(workdir / "smollm2"),
        num_train_epochs=args.generative_epochs,
        learning_rate=3e-4,
        warmup_steps=0.1,
        per_device_train_batch_size=8,
        max_length=256,
        validation_size=0.0,
        seed=args.seed,
        logging_steps=10,
    )
    start = time.perf_counter()
    result = train_guardrail(cfg, ds)
    train_seconds = time.perf_counter() - start
    guard = Guardrail.from_pretrained(cfg.output_dir, device="cpu")
    return {
        "method": "SmolLM2-135M + LoRA (hf_barred, generative)",
        "train_s": train_seconds,
        "steps": result.global_step,
    } | score_llm_guardrail(guard, test, args)


def table(results: list[dict[str, Any]]) -> str:
    head = [
        "method",
        "n test",
        "train s",
        "texts/s (batched)",
        "p50 ms @1",
        "p95 ms @1",
        "accuracy",
        "F1",
        "precision",
        "recall",
        "unparseable",
    ]
    fmt = lambda v, d=1: "-" if v is None else (f"{v:.{d}f}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        lines.append(
            "| "
            + " | ".join(
                [
                    r["method"],
                    str(r["n"]),
                    fmt(r["train_s"]),
                    fmt(r["texts_per_s"]),
                    fmt(r["p50_ms"], 2),
                    fmt(r["p95_ms"], 2),
                    fmt(r["accuracy"], 3),
                    fmt(r["f1"], 3),
                    fmt(r["precision"], 3),
                    fmt(r["recall"], 3),
                    str(r["unparseable"]),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-size", type=float, default=0.3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=32, help="Inference batch for throughput.")
    parser.add_argument("--latency-texts", type=int, default=100, help="Texts timed one by one.")
    parser.add_argument("--judge-limit", type=int, help="Judge only the first N test texts (the judge is slow).")
    parser.add_argument("--judge-batch-size", type=int, default=8)
    parser.add_argument(
        "--max-train", type=int, default=0, help="Train on the first N rows of the split only (0: all; smoke runs)."
    )
    parser.add_argument(
        "--max-test", type=int, default=0, help="Score the first N test rows only (0: all; smoke runs)."
    )
    parser.add_argument("--skip-judge", action="store_true", help="Skip the SmolLM2 judge and zero-shot rows.")
    parser.add_argument(
        "--with-generative",
        action="store_true",
        help="Also fine-tune SmolLM2-135M with LoRA as a generative guardrail (slow on a CPU).",
    )
    parser.add_argument("--generative-epochs", type=int, default=2)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on a shared CPU, OpenMP threads that wait for a busy core "
        "make each step many times slower; 0 keeps torch's default).",
    )
    parser.add_argument("--json", help="Also write the results to this JSON file.")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    train, test = load_split(args.seed, args.test_size)
    train, test = train[: args.max_train or None], test[: args.max_test or None]
    print(
        f"XSTest: {len(train)} train / {len(test)} test prompts (seed {args.seed}, stratified by type); "
        f"torch threads: {torch.get_num_threads()}, CPUs: {os.cpu_count()}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        results = [run_classifier(args, train, test, Path(tmp))]
        print(table(results), flush=True)
        results.append(run_tfidf(args, train, test))
        if not args.skip_judge:
            results.append(run_judge(args, test))
            results.append(run_zero_shot(args, test))
        if args.with_generative:
            results.append(run_generative(args, train, test, Path(tmp)))
    print()
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
