"""Policy-conditioned XSTest rows, augmented with APT.

Reads ``../xstest/xstest_prompts.csv`` (XSTest, Röttger et al., NAACL 2024, CC BY 4.0), assigns
each prompt the categories of ``taxonomy.yaml`` it violates (``xstest_categories.yaml``), builds
policy-conditioned rows and runs :func:`hf_barred.recipes.apt.augment`. The output folder holds the
parquet data, ``augment_stats.json``, and the XSTest attribution and licence.

Usage (from the repository root):

    python dataset_scripts/policy-xstest/build.py --output outputs/policy-xstest            # all 450 rows
    python dataset_scripts/policy-xstest/build.py --output outputs/policy-xstest-20 --limit 20 \\
        --engine local --model embedded --max-tokens 256
    python dataset_scripts/policy-xstest/build.py --output outputs/policy-xstest --no-guideline-edit
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
XSTEST = HERE.parent / "xstest"
ATTRIBUTION = """# Attribution

The `text` column of this dataset comes from XSTest, used under CC BY 4.0 (LICENSE-XSTEST):

> Paul Röttger, Hannah Rose Kirk, Bertie Vidgen, Giuseppe Attanasio, Federico Bianchi, Dirk Hovy.
> XSTest: A Test Suite for Identifying Exaggerated Safety Behaviours in Large Language Models. NAACL 2024.
> https://github.com/paul-rottger/exaggerated-safety (xstest_prompts.csv, commit d7bb5bd)

Changes: each prompt was paired with an S-coded hazard policy (taxonomy.yaml of hf_barred,
dataset_scripts/policy-xstest), given violated categories (xstest_categories.yaml), and copied once
with a perturbed policy (APT category deletion / guideline editing by {model}).
"""


def xstest_categories(row: dict[str, Any], mapping: dict[str, Any]) -> list[str]:
    """The categories (names or codes of the taxonomy) that an XSTest row violates."""
    ids = mapping.get("ids") or {}
    if str(row["id"]) in ids:
        return list(ids[str(row["id"])])
    types = mapping["types"]
    if row["type"] not in types:
        raise ValueError(
            f"xstest row {row['id']}: type {row['type']!r} is not in xstest_categories.yaml: "
            f"expected one of {sorted(types)}. Add it to the mapping."
        )
    rule = types[row["type"]]
    if isinstance(rule, list):
        return list(rule)
    focus = (rule.get("focus") or {}).get(row["focus"])
    return list(focus if focus is not None else rule.get("default", []))


def build_rows(limit: int | None = None, seed: int = 0):
    """The 450 XSTest prompts as policy-conditioned rows (or ``limit`` of them, shuffled with ``seed``)."""
    from datasets import load_dataset

    from hf_barred.policy.files import read_structured_file
    from hf_barred.policy.rows import load_policy_rows

    mapping = read_structured_file(HERE / "xstest_categories.yaml")
    raw = load_dataset(
        "csv", data_files=str(XSTEST / "xstest_prompts.csv"), split="train", keep_default_na=False
    )  # empty focus/note stay "" rather than NaN
    raw = raw.map(
        lambda row: {"categories": xstest_categories(row, mapping), "id": f"xstest-{row['id']}"},
        desc="xstest categories",
    )
    rows = load_policy_rows(
        raw,
        HERE / "taxonomy.yaml",
        text_column="prompt",
        label_column="label",
        category_column="categories",
        id_column="id",
    )
    if limit is not None:
        rows = rows.shuffle(seed=seed).select(range(min(limit, len(rows))))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="Output folder.")
    parser.add_argument("--limit", type=int, default=None, help="A random subset of N prompts (seeded).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the subset and of the deletions.")
    parser.add_argument("--no-guideline-edit", action="store_true", help="Deletion only (no LLM).")
    parser.add_argument("--engine", default="local", choices=("local", "openai", "vllm"))
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--base-url", default=None)
    parser.add_argument("--api-key-env", default=None)
    parser.add_argument("--max-tokens", type=int, default=384)
    parser.add_argument("--max-repairs", type=int, default=1, help="Repair rounds for answers that break the schema.")
    parser.add_argument("--batch-size", type=int, default=64, help="Rows per engine call.")
    args = parser.parse_args(argv)

    from hf_barred.llm import EngineConfig, SamplingParams
    from hf_barred.recipes.apt import AugmentConfig, augment, save_augmented
    from hf_barred.stages.category_delete import CategoryDeleteConfig
    from hf_barred.stages.guideline_edit import GuidelineEditConfig

    edit = None
    if not args.no_guideline_edit:
        edit = GuidelineEditConfig(
            engine=EngineConfig(
                engine=args.engine, model=args.model, base_url=args.base_url, api_key_env=args.api_key_env
            ),
            sampling=SamplingParams(max_tokens=args.max_tokens, temperature=0.0),
            max_repairs=args.max_repairs,
        )
    rows = build_rows(args.limit, args.seed)
    start = time.perf_counter()
    augmented, stats = augment(
        rows, AugmentConfig(CategoryDeleteConfig(seed=args.seed), edit), batch_size=args.batch_size
    )
    stats["seconds"] = round(time.perf_counter() - start, 1)
    stats["source"] = "XSTest (Röttger et al., NAACL 2024), CC BY 4.0"
    output = save_augmented(augmented, stats, args.output)
    model = "no LLM" if edit is None else f"{edit.engine.engine}:{edit.engine.model}"
    (output / "ATTRIBUTION.md").write_text(ATTRIBUTION.format(model=model), encoding="utf-8")
    shutil.copyfile(XSTEST / "LICENSE", output / "LICENSE-XSTEST")
    print(json.dumps(stats, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
