"""``barred coverage DATASET_DIR TEST_FILE --output DIR``: how much of a test set a BARRED decomposition covers.

An LLM rates the relevance (0-1) of every test sample to the instantiations of each dimension saved in
DATASET_DIR (the output folder of ``barred generate``); a sample is covered when some instantiation is
rated at least ``--threshold`` (0.5). Writes coverage.json, coverage.md, coverage.png and coverage.jsonl
(paper, Fig. 3a). Finished calls are cached: the same command again costs no call.

Example:
    $ barred coverage outputs/health-advice /work/shared/data/barred/healthe_test.csv --output reports/coverage \\
        --text-column transcript --engine openai --base-url http://127.0.0.1:8000/v1 --model Qwen/Qwen2.5-7B-Instruct
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Optional

from .engine_options import add_engine_arguments, engine_config, share
from .flags import EXIT_SHORT
from .output import add_verbose_argument, quiet_unless_verbose

TEXT_COLUMNS = ("text", "transcript", "input", "prompt", "response")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "coverage",
        help="Rate how much of a test set the decomposition of a generated dataset covers.",
        description=__doc__.split("\n\n")[0] + " " + __doc__.split("\n\n")[1].replace("\n", " "),
    )
    parser.add_argument("dataset_dir", metavar="DATASET_DIR", help="Output folder of `barred generate`.")
    parser.add_argument(
        "test_file",
        metavar="TEST_FILE",
        help="Test inputs: a CSV/JSON/parquet file, a save_to_disk folder or a Hub id.",
    )
    parser.add_argument("--output", required=True, metavar="DIR", help="Report folder.")
    parser.add_argument("--text-column", help=f"The input column (default: the first of {', '.join(TEXT_COLUMNS)}).")
    parser.add_argument("--task-column", help="The task column of task_and_response inputs (optional).")
    parser.add_argument("--split", default="test", help="Split of a dataset folder or Hub id (default: test).")
    parser.add_argument("--limit", type=int, help="Rate only the first N test samples.")
    parser.add_argument("--threshold", type=float, default=0.5, help="Relevance that covers a sample (default 0.5).")
    parser.add_argument("--max-tokens", type=int, default=160, help="Most tokens of one rating answer.")
    parser.add_argument("--max-repairs", type=int, default=1, help="Repair rounds for answers that are not JSON.")
    parser.add_argument("--batch-size", type=int, default=16, help="Test samples per map batch (one batched call).")
    parser.add_argument(
        "--max-failure-rate",
        type=share,
        default=0.5,
        metavar="SHARE",
        help="Stop (exit code 1, no report) when more than this share of the ratings could not be used (default 0.5).",
    )
    add_engine_arguments(parser)
    add_verbose_argument(parser)
    parser.set_defaults(run=run)


def _pick_text_column(columns: list[str], wanted: Optional[str]) -> str:
    if wanted:
        if wanted not in columns:
            raise ValueError(f"--text-column {wanted!r}: expected one of the test set's columns {columns}.")
        return wanted
    found = next((c for c in TEXT_COLUMNS if c in columns), None)
    if found is None:
        raise ValueError(
            f"expected a text column among {list(TEXT_COLUMNS)}, found the columns {columns}. "
            "Fix: pass --text-column NAME."
        )
    return found


def coverage_to_report(
    dataset_dir: str,
    test_file: str,
    output: str,
    engine: Any,
    *,
    text_column: Optional[str] = None,
    task_column: Optional[str] = None,
    split: str = "test",
    limit: Optional[int] = None,
    threshold: float = 0.5,
    max_tokens: int = 160,
    max_repairs: int = 1,
    batch_size: int = 16,
    max_failure_rate: float = 1.0,
) -> dict[str, Any]:
    """Rate the test set against the decomposition of ``dataset_dir``, write the report; returns the summary.
    More than ``max_failure_rate`` of the ratings unusable (failed calls, answers that do not parse) stops it
    before the report (:class:`~hf_barred.recipes.barred.failures.AnswersUnusable`)."""
    from ..evaluation.coverage import load_decomposition, write_coverage_report
    from ..policy.data import load_labelled_data
    from ..stages.coverage import CoverageConfig, coverage_summary, rate_coverage

    criterion, dimensions = load_decomposition(dataset_dir)
    raw = load_labelled_data(test_file, split)
    if limit:
        raw = raw.select(range(min(limit, len(raw))))
    text = _pick_text_column(raw.column_names, text_column)
    if task_column and task_column not in raw.column_names:
        raise ValueError(f"--task-column {task_column!r}: expected one of the test set's columns {raw.column_names}.")
    keep = [text] + ([task_column] if task_column else [])
    samples = raw.select_columns(keep).rename_columns({text: "text"} | ({task_column: "task"} if task_column else {}))
    config = CoverageConfig(
        engine=engine,
        criterion=criterion,
        dimensions=dimensions,
        threshold=threshold,
        max_tokens=max_tokens,
        max_repairs=max_repairs,
    )
    rated = rate_coverage(samples, config, batch_size=batch_size)
    summary = coverage_summary(rated, config)
    asked = len(rated) * len(dimensions)
    if asked and summary["failed_calls"] / asked > max_failure_rate:
        from ..recipes.barred.failures import AnswersUnusable

        first = next((x for row in rated["dimension_scores"] for x in row if x["error"]), {"raw": "", "error": ""})
        raise AnswersUnusable(
            f"coverage: {summary['failed_calls']} of {asked} ratings could not be used ({first['error']}), more than "
            f"--max-failure-rate {max_failure_rate:g} allows; no report was written. One answer: "
            f"{' '.join((first['raw'] or '').split())[:120]!r}. Fix: check --model, raise --max-tokens (answers are "
            "cached: the same command resumes)."
        )
    meta = {"dataset": str(dataset_dir), "test_file": str(test_file), "text_column": text} | engine.identity()
    write_coverage_report(output, summary, rated.to_list(), meta)
    return meta | summary


@quiet_unless_verbose
def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..evaluation.coverage import markdown_table

    try:
        summary = coverage_to_report(
            args.dataset_dir,
            args.test_file,
            args.output,
            engine_config(args),
            text_column=args.text_column,
            task_column=args.task_column,
            split=args.split,
            limit=args.limit,
            threshold=args.threshold,
            max_tokens=args.max_tokens,
            max_repairs=args.max_repairs,
            batch_size=args.batch_size,
            max_failure_rate=args.max_failure_rate,
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"barred coverage: {err}", file=sys.stderr)
        return 2
    print(markdown_table(summary))
    print(f"Report written to {Path(args.output) / 'coverage.md'}")
    if summary["undetermined"]:  # some samples could not be rated: the share is over the others only
        print(
            f"Ended short: {summary['undetermined']} sample(s) undetermined (failed ratings); the same command "
            "retries them (finished ratings are cached)."
        )
        return EXIT_SHORT
    return 0
