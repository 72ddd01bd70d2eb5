"""``barred evaluate MODEL DATASET --output DIR``: score a guardrail or an LLM-as-judge baseline.

MODEL is a folder made by ``barred train``, a Hub repo of one, or ``URL#NAME``: the guardrail NAME that
``barred serve`` serves at URL. With ``--engine local|openai|vllm``
MODEL is instead the model that engine serves (``embedded`` for the local SmolLM2), asked the same
classification prompt (the paper's A.4 prompt by default, ``--format``), scored by P("1") / (P("1") +
P("0")) where the engine gives log-probabilities (``--scoring``); ``--model NAME`` may replace MODEL.
Answers that cannot be parsed are counted and scored as wrong. The report folder gets
``report.json``, ``report.md``, ``predictions.jsonl`` and PNG plots: the confusion matrix and, for a
trained guardrail, a reliability diagram (with the ECE), per-class score histograms and a
precision-recall curve. Flags take dashes or underscores (``--batch-size`` or ``--batch_size``).

Example:
    $ barred evaluate outputs/xstest-guard dataset_scripts/xstest/xstest_prompts.csv --output reports/guard \\
        --rule "The request is unsafe."
    $ barred evaluate embedded dataset_scripts/health-advice/human_test.csv --engine local --output reports/smol
    $ barred evaluate dataset.csv --engine openai --model Qwen/Qwen2.5-7B-Instruct \\
        --base-url http://127.0.0.1:8000/v1 --output reports/qwen
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .engine_options import add_engine_arguments, engine_config
from .output import add_verbose_argument, quiet_unless_verbose


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="Score a trained guardrail or an LLM judge on a labelled dataset.",
        description=__doc__.split("\n\n")[0] + " Writes report.json, report.md and plots.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "sources",
        nargs="+",
        metavar="[MODEL] DATASET",
        help="A guardrail folder or Hub repo (or, with --engine, a model name), then the labelled "
        "dataset: a CSV/JSON/parquet file, a save_to_disk folder or a Hub id.",
    )
    parser.add_argument("--output", required=True, help="Report folder.")
    add_engine_arguments(parser, default_engine=None, title="LLM-as-judge (instead of a trained guardrail)")
    parser.add_argument("--split", default="test", help="Split of a dataset folder or Hub id (default: test).")
    parser.add_argument("--limit", type=int, help="Evaluate only the first N rows.")
    parser.add_argument("--rule", help="The rule (default: the dataset's rule column or the guardrail's rule).")
    parser.add_argument("--taxonomy", help="S-coded taxonomy text or file (policy format).")
    parser.add_argument(
        "--format",
        dest="prompt_format",
        choices=("auto", "a4", "binary", "policy"),
        default="auto",
        help="Judge prompt: a4 (the paper's classification prompt), binary (the earlier one) or policy "
        "(auto: policy when a taxonomy is given, else a4).",
    )
    parser.add_argument(
        "--scoring",
        choices=("auto", "logprob", "generation"),
        default="auto",
        help="How a judge of a binary rule is scored: P('1')/(P('1')+P('0')) from log-probabilities "
        "(local logits; max_tokens=1 + logprobs on vllm/openai) or a generated, parsed answer "
        "(auto: log-probabilities where the engine gives them). The report names the mode.",
    )
    parser.add_argument("--threshold", type=float, help="Guardrail threshold (default: the saved, calibrated one).")
    parser.add_argument("--batch-size", "--batch_size", type=int, default=32, help="Rows per forward pass (guardrail).")
    parser.add_argument(
        "--max-tokens", "--max_tokens", type=int, help="Judge answer length (default: 2 binary, 96 policy)."
    )
    for column in ("text", "label", "rule", "task", "taxonomy", "categories"):
        parser.add_argument(
            f"--{column}-column", f"--{column}_column", help=f"The {column} column (detected if unset)."
        )
    parser.add_argument(
        "--positive-label", "--positive_label", help="The label value meaning 'the rule applies / unsafe'."
    )
    add_verbose_argument(parser)
    parser.set_defaults(run=run)


def print_summary(report: dict[str, Any], output: str | Path) -> None:
    metrics = report["metrics"]
    keys = ("accuracy", "precision", "recall", "f1", "unparseable", "n", "category_f1", "ece")
    print(
        "  ".join(
            f"{k}={metrics[k]:.4f}" if isinstance(metrics[k], float) else f"{k}={metrics[k]}"
            for k in keys
            if k in metrics
        )
    )
    print(f"Report written to {Path(output) / 'report.md'}")


@quiet_unless_verbose
def run(args: argparse.Namespace) -> int:
    sources = list(args.sources)
    if args.model:
        if not args.engine:
            print(
                "--model names a judge's model and needs --engine local|openai|vllm. For a trained guardrail, "
                "pass its folder as MODEL: barred evaluate MODEL DATASET.",
                file=sys.stderr,
            )
            return 2
        sources = [args.model] + sources
    if len(sources) != 2:
        print(
            f"Expected MODEL DATASET (or DATASET with --model), found {len(sources)} arguments: {sources}.",
            file=sys.stderr,
        )
        return 2
    model, dataset = sources
    from ..evaluation.evaluate import evaluate_to_report

    judge = engine_config(args, model=model) if args.engine else None
    report = evaluate_to_report(
        model,
        dataset,
        args.output,
        engine=judge,
        split=args.split,
        limit=args.limit,
        rule=args.rule,
        taxonomy=args.taxonomy,
        prompt_format=args.prompt_format,
        threshold=args.threshold,
        batch_size=args.batch_size,
        max_tokens=args.max_tokens,
        columns={k: getattr(args, f"{k}_column") for k in ("text", "label", "rule", "task", "taxonomy", "categories")},
        positive_label=args.positive_label,
        scoring=args.scoring,
        progress=args.verbose or sys.stderr.isatty(),  # a judge's bar on a terminal, not in a log
    )
    print_summary(report, args.output)
    return 0
