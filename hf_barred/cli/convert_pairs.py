"""``barred convert-pairs FILE --pass-column A --fail-column B --output OUT``: paired responses to labelled rows.

A CSV (or JSON, parquet, Hub id) with a task column (``--task-column``, default ``task_input``) and two
response columns, one that passes and one that fails, becomes a ``task_and_response`` dataset with one row per
response (``task, text, label`` and ``rule`` with ``--criterion``), which ``barred train`` and ``barred
evaluate`` read as is. ``--polarity`` says what the criterion describes (README, "task_and_response"):
``violation`` (default: the FAIL response is label 1) or ``compliance`` (the PASS response is label 1).
``--task-file`` also writes a task file whose seeds are those tasks and responses, unlabelled.

Example:
    $ barred convert-pairs plans.csv --task-column task_input --pass-column good_plan --fail-column bad_plan \\
        --criterion "The plan skips or reorders a step that the task requires." \\
        --output plans_test.jsonl --task-file plan-check/task.yaml
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .output import add_verbose_argument, quiet_unless_verbose

WRITERS = {".jsonl": "to_json", ".csv": "to_csv", ".parquet": "to_parquet"}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "convert-pairs",
        help="Turn a file of (task, PASS response, FAIL response) rows into labelled rows.",
        description=__doc__.split("\n\n")[0] + " " + __doc__.split("\n\n")[1].replace("\n", " "),
    )
    parser.add_argument("source", metavar="FILE", help="CSV/JSON/parquet file, save_to_disk folder or Hub id.")
    parser.add_argument("--output", required=True, help=f"Output file ({', '.join(WRITERS)}).")
    parser.add_argument("--task-column", default="task_input", help="The task column (default: task_input).")
    parser.add_argument("--pass-column", required=True, help="The column of the responses that pass.")
    parser.add_argument("--fail-column", required=True, help="The column of the responses that fail.")
    parser.add_argument("--criterion", help="The rule; written as the rule column and into --task-file.")
    parser.add_argument(
        "--polarity",
        choices=("violation", "compliance"),
        default="violation",
        help="What the criterion describes: the failing response (violation, default) or the passing one (compliance).",
    )
    parser.add_argument("--split", default="train", help="Split of a dataset folder or Hub id (default: train).")
    parser.add_argument(
        "--task-file",
        help="Also write a task file (YAML/JSON) with these tasks and responses as seeds (needs --criterion).",
    )
    parser.add_argument("--max-seeds", type=int, default=30, help="Seeds written to --task-file (default 30).")
    add_verbose_argument(parser)
    parser.set_defaults(run=run)


@quiet_unless_verbose
def run(args: argparse.Namespace) -> int:
    from ..policy.data import response_pairs, seeds_from_pairs
    from ..policy.schemas import seed_parts
    from ..policy.task import GuardrailTask, Seed, TaskFileError

    output = Path(args.output)
    writer = WRITERS.get(output.suffix.lower())
    problem = None
    if writer is None:
        problem = f"--output {output}: expected a file ending in {', '.join(WRITERS)}, found {output.suffix!r}."
    elif args.task_file and not args.criterion:
        problem = '--task-file needs --criterion: the task file\'s rule. Fix: add --criterion "...".'
    if problem or writer is None:  # no writer: problem says so
        print(f"barred convert-pairs: {problem}", file=sys.stderr)
        return 2
    try:
        rows = response_pairs(
            args.source,
            task_column=args.task_column,
            pass_column=args.pass_column,
            fail_column=args.fail_column,
            criterion=args.criterion,
            polarity=args.polarity,
            split=args.split,
        )
        task = None
        if args.task_file:
            labels = ("PASS", "FAIL") if args.polarity == "violation" else ("FAIL", "PASS")
            task = GuardrailTask(
                criterion=args.criterion,
                labels=labels,
                input_type="task_and_response",
                name=Path(args.task_file).parent.name or "task",
                seeds=tuple(Seed(*seed_parts(seed)) for seed in seeds_from_pairs(rows, args.max_seeds)),
            )
    except (FileNotFoundError, ValueError, TaskFileError) as err:
        print(f"barred convert-pairs: {err}", file=sys.stderr)
        return 2
    output.parent.mkdir(parents=True, exist_ok=True)
    kwargs = {"index": False} if writer == "to_csv" else {}
    getattr(rows, writer)(str(output), **kwargs)
    print(f"{len(rows)} rows ({sum(rows['label'])} with label 1) written to {output}")
    if task is not None:
        task.save(args.task_file)
        print(f"Task file with {len(task.seeds)} seeds written to {args.task_file}")
    return 0
