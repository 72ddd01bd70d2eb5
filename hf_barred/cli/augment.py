"""``barred augment``: the APT recipe on a labelled dataset, saved as a Hub-style folder.

Example:
    $ barred augment xstest.csv --taxonomy taxonomy.yaml --output outputs/apt \\
        --text-column prompt --category-column categories --engine local --model embedded

writes ``outputs/apt/data/train-00000-of-00001.parquet`` (``datasets.load_dataset("outputs/apt")``
works) and ``outputs/apt/augment_stats.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .engine_options import add_engine_arguments, add_prompt_set_argument, engine_config, share
from .output import add_verbose_argument, quiet_unless_verbose


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "augment",
        help="APT: add one policy-perturbed copy of every row (category deletion, guideline editing).",
        description=(
            "Build policy-conditioned rows from DATASET and a taxonomy file, then add one perturbed copy of each row: "
            "positives get a category deletion, negatives an LLM guideline edit (else a deletion). "
            "DATASET is a csv/tsv/json/jsonl/parquet file, a saved dataset folder or a Hub id; if it already has "
            "policy-conditioned columns (text, taxonomy, label, categories), --taxonomy can be left out."
        ),
    )
    parser.add_argument("dataset", metavar="DATASET", help="Labelled dataset: a file, a folder or a Hub id.")
    parser.add_argument("--taxonomy", metavar="FILE", help="Taxonomy YAML/JSON file (S1..Sn categories).")
    parser.add_argument("--output", metavar="DIR", required=True, help="Output folder (parquet data + stats JSON).")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="Write into --output even when it holds a README.md that no hf_barred run wrote.",
    )
    parser.add_argument("--split", default="train", help="Split of DATASET to read (default: train).")
    parser.add_argument("--limit", type=int, default=None, help="Use only the first N rows (after --shuffle-seed).")
    parser.add_argument(
        "--shuffle-seed", type=int, default=None, help="Shuffle the rows with this seed before --limit."
    )

    columns = parser.add_argument_group("columns and values of DATASET")
    columns.add_argument("--text-column", default="text")
    columns.add_argument("--label-column", default="label")
    columns.add_argument(
        "--category-column",
        default="categories",
        help="Column of violated categories (codes, names or category-map keys).",
    )
    columns.add_argument("--id-column", default=None, help="Column of row ids (default: the row index).")
    columns.add_argument(
        "--safe-label", action="append", default=None, help="Label value of safe rows (repeatable; default: safe)."
    )
    columns.add_argument(
        "--unsafe-label",
        action="append",
        default=None,
        help="Label value of unsafe rows (repeatable; default: unsafe).",
    )
    columns.add_argument(
        "--category-map", metavar="FILE", help="YAML/JSON mapping: category value -> code(s) or name(s)."
    )

    recipe = parser.add_argument_group("perturbations")
    recipe.add_argument("--seed", type=int, default=0, help="Seed of the category deletions.")
    recipe.add_argument("--max-deleted", type=int, default=5, help="Delete k ~ U{1..min(MAX, n-1)} categories.")
    recipe.add_argument("--no-guideline-edit", action="store_true", help="Deletion only: call no LLM.")
    recipe.add_argument("--prompt-version", default="v1", help="guideline_edit prompt version.")
    add_prompt_set_argument(recipe)
    recipe.add_argument("--max-tokens", type=int, default=512, help="Maximum tokens of an edit answer.")
    recipe.add_argument("--temperature", type=float, default=0.0)
    recipe.add_argument("--max-repairs", type=int, default=1, help="Repair rounds for answers that break the schema.")
    recipe.add_argument(
        "--max-failure-rate",
        type=share,
        default=0.5,
        metavar="SHARE",
        help="Stop (exit code 1, nothing written) when more than this share of the edits could not be used "
        "(default: 0.5).",
    )

    add_engine_arguments(parser, title="LLM engine (guideline editing)")

    speed = parser.add_argument_group("throughput")
    speed.add_argument(
        "--batch-size", type=int, default=None, help="Rows per Dataset.map batch (one engine call each)."
    )
    speed.add_argument("--num-proc", type=int, default=None, help="Processes for Dataset.map.")
    add_verbose_argument(parser)
    parser.set_defaults(run=run)


@quiet_unless_verbose
def run(args: argparse.Namespace) -> int:
    from ..hub.dataset_card import add_dataset_info, make_augment_card
    from ..llm import EngineError, SamplingParams
    from ..policy.data import load_labelled_data
    from ..policy.files import TaskFileError, read_structured_file
    from ..policy.rows import POLICY_FEATURES, load_policy_rows
    from ..recipes.apt import AugmentConfig, augment, save_augmented
    from ..recipes.barred.output import check_output_folder, locked_output
    from ..stages.category_delete import CategoryDeleteConfig
    from ..stages.guideline_edit import GuidelineEditConfig

    try:
        edit = None
        if not args.no_guideline_edit:
            engine = engine_config(args)
            edit = GuidelineEditConfig(
                engine=engine,
                prompt_version=args.prompt_version,
                prompt_set=args.prompt_set,
                max_repairs=args.max_repairs,
                sampling=SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature),
            )
        config = AugmentConfig(
            CategoryDeleteConfig(seed=args.seed, max_deleted=args.max_deleted), edit, args.max_failure_rate
        )
        map_kwargs = {k: v for k, v in (("batch_size", args.batch_size), ("num_proc", args.num_proc)) if v}
        check_output_folder(Path(args.output), args.overwrite)  # before any LLM call; locked below

        data = load_labelled_data(args.dataset, split=args.split)
        if args.taxonomy:
            category_map = read_structured_file(args.category_map) if args.category_map else None
            if category_map is not None and not isinstance(category_map, dict):
                raise TaskFileError(
                    f"{args.category_map}: expected a mapping value -> code(s) or name(s), "
                    f"found {type(category_map).__name__}."
                )
            rows = load_policy_rows(
                data,
                args.taxonomy,
                text_column=args.text_column,
                label_column=args.label_column,
                category_column=args.category_column,
                id_column=args.id_column,
                safe_labels=args.safe_label or ["safe"],
                unsafe_labels=args.unsafe_label or ["unsafe"],
                category_map=category_map,
            )
        elif "taxonomy" in data.column_names:
            rows = (
                data
                if data.features.get("label") == POLICY_FEATURES["label"]
                else data.cast_column("label", POLICY_FEATURES["label"])
            )
        else:
            raise ValueError(
                f"{args.dataset}: expected --taxonomy FILE, or a dataset with a 'taxonomy' column of S-coded "
                f"policy text; found the columns {data.column_names}. Pass --taxonomy."
            )
        if args.shuffle_seed is not None:
            rows = rows.shuffle(seed=args.shuffle_seed)
        if args.limit is not None:
            rows = rows.select(range(min(args.limit, len(rows))))
        with locked_output(args.output, overwrite=args.overwrite) as out:
            augmented, stats = augment(rows, config, **map_kwargs)
            output = save_augmented(augmented, stats, out)
            card = make_augment_card(stats, source=str(args.dataset))
            add_dataset_info(card, output, {"default": {"train": "data/train-00000-of-00001.parquet"}})
            card.save(str(output / "README.md"))
    except (ValueError, TypeError, TaskFileError, FileNotFoundError, EngineError) as err:
        print(f"barred augment: error: {err}", file=sys.stderr)
        return 2
    summary = {
        k: stats[k]
        for k in (
            "rows_original",
            "rows_total",
            "deleted_from",
            "edited_existing",
            "new_category",
            "kept_safe",
            "edit_failures",
            "unperturbed",
        )
    }
    print(json.dumps(summary, indent=2))
    print(f"Saved {len(augmented)} rows to {output} (datasets.load_dataset({str(output)!r}))")
    return 0
