"""Build (and optionally publish) one ``barred/<name>`` dataset from its folder in dataset_scripts/.

Each folder holds ``task.yaml`` (rule, labels, seeds written for this project), ``human_test.csv``
(a BARRED human-verified test set, Apache-2.0, see DATA_LICENSE.md) and a ``build.py`` that calls
:func:`build`. The result: ``train`` (synthetic, BARRED-verified), ``rejected``, ``test`` (human),
and the ``decomposition`` configuration; every stage's output is published too.

Example:
    $ python dataset_scripts/health-advice/build.py --n 1000 --output outputs/health-advice \\
        --engine openai --base-url http://127.0.0.1:8000/v1 --model Qwen/Qwen2.5-7B-Instruct \\
        --push-to-hub barred/health-advice
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from datasets import Dataset

from hf_barred.hub.push import push_barred_run, require_token
from hf_barred.llm import EngineConfig
from hf_barred.policy.task import GuardrailTask
from hf_barred.recipes.barred.run import BarredConfig, run_barred


def human_test_split(csv_path: Path, task: GuardrailTask) -> Dataset:
    """The human-verified CSV (``predicate``, ``transcript``, ``predicate_label``) as ``text``/``label``
    rows; a clear error if its rule is not the task's."""
    with open(csv_path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    rules = {row["predicate"].strip() for row in rows}
    if rules != {task.criterion.strip()}:
        raise ValueError(
            f"{csv_path}: expected every row's predicate to be the task's rule {task.criterion!r}, "
            f"found {sorted(rules)}. Pass the test set of this task."
        )
    return Dataset.from_dict(
        {
            "text": [row["transcript"] for row in rows],
            "label": [int(row["predicate_label"]) for row in rows],
            "model": ["human"] * len(rows),
        }
    )


def build(folder: Path, argv: Optional[Sequence[str]] = None, engine: Optional[EngineConfig] = None) -> int:
    parser = argparse.ArgumentParser(description=f"Build the barred/{folder.name} dataset.")
    parser.add_argument("--n", type=int, default=1000, help="Accepted samples to generate.")
    parser.add_argument("--output", default=f"outputs/{folder.name}")
    parser.add_argument("--engine", default="local", choices=["local", "openai", "vllm"])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--base-url", default=None)
    parser.add_argument("--api-key-env", default=None)
    parser.add_argument("--human-test", default=str(folder / "human_test.csv"), help="Human test CSV ('' to skip).")
    parser.add_argument("--push-to-hub", default=None, metavar="REPO", help=f"e.g. barred/{folder.name}")
    parser.add_argument("--private", action="store_true")
    args = parser.parse_args(argv)
    if args.push_to_hub:
        require_token()  # fail before the run, not after it
    task = GuardrailTask.load(folder / "task.yaml")
    engine = engine or EngineConfig(
        engine=args.engine, model=args.model, base_url=args.base_url, api_key_env=args.api_key_env
    )
    result = run_barred(task, args.n, BarredConfig.for_engine(engine), args.output)
    splits = {"test": human_test_split(Path(args.human_test), task)} if args.human_test else {}
    print(f"{folder.name}: {result.stats['accepted']} accepted, {result.stats['rejected']} rejected -> {args.output}")
    if args.push_to_hub:
        url = push_barred_run(result.output_dir, args.push_to_hub, private=args.private or None, extra_splits=splits)
        print(f"published {url}")
    return 0


if __name__ == "__main__":
    sys.exit(build(Path(sys.argv[1]), sys.argv[2:]))
