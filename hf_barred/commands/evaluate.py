"""``barred evaluate MODEL DATASET --output DIR``: score a guardrail or an LLM-as-judge baseline.

MODEL is a folder made by ``barred train`` or a Hub repo of one. With ``--engine local|openai|vllm``
MODEL is instead the model that engine serves (``embedded`` for the local SmolLM2), asked the same
classification prompt (:mod:`hf_barred.formats`); ``--model NAME`` may replace the MODEL argument.
Answers that cannot be parsed are counted and scored as wrong. The report folder gets
``report.json``, ``report.md``, ``predictions.jsonl`` and PNG plots.

Example:
    $ barred evaluate outputs/xstest-guard dataset_scripts/xstest/xstest_prompts.csv --output reports/guard \\
        --rule "The request is unsafe."
    $ barred evaluate embedded dataset_scripts/health-advice/human_test.csv --engine local --output reports/smol
    $ barred evaluate dataset.csv --engine openai --model Qwen/Qwen2.5-7B-Instruct \\
        --base-url http://127.0.0.1:8000/v1 --output reports/qwen
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional

ENGINES = ("local", "openai", "vllm")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="Score a trained guardrail or an LLM judge on a labelled dataset.",
        description=__doc__.split("\n\n")[0] + " Writes report.json, report.md and plots.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("sources", nargs="+", metavar="[MODEL] DATASET",
                        help="A guardrail folder or Hub repo (or, with --engine, a model name), then the labelled "
                             "dataset: a CSV/JSON/parquet file, a save_to_disk folder or a Hub id.")
    parser.add_argument("--output", required=True, help="Report folder.")
    parser.add_argument("--engine", choices=ENGINES, help="Evaluate an LLM-as-judge on this engine instead.")
    parser.add_argument("--model", help="The judge's model (instead of the MODEL argument).")
    parser.add_argument("--base-url", help="OpenAI-compatible base URL (engine openai).")
    parser.add_argument("--api-key-env", help="Name of the env var holding the API key (engine openai).")
    parser.add_argument("--split", default="test", help="Split of a dataset folder or Hub id (default: test).")
    parser.add_argument("--limit", type=int, help="Evaluate only the first N rows.")
    parser.add_argument("--rule", help="The rule (default: the dataset's rule column or the guardrail's rule).")
    parser.add_argument("--taxonomy", help="S-coded taxonomy text or file (policy format).")
    parser.add_argument("--format", dest="prompt_format", choices=("auto", "binary", "policy"), default="auto",
                        help="Judge prompt: binary rule or policy taxonomy (auto: policy when a taxonomy is given).")
    parser.add_argument("--threshold", type=float, help="Guardrail threshold (default: the saved one).")
    parser.add_argument("--batch-size", type=int, default=32, help="Rows per forward pass (guardrail).")
    parser.add_argument("--max-tokens", type=int, help="Judge answer length (default: 2 binary, 96 policy).")
    for column in ("text", "label", "rule", "task", "taxonomy", "categories"):
        parser.add_argument(f"--{column}-column", help=f"The {column} column (detected if unset).")
    parser.add_argument("--positive-label", help="The label value meaning 'the rule applies / unsafe'.")
    parser.set_defaults(run=run)


def evaluate_to_report(model: str, dataset: str, output: str | Path, *, engine: Optional[str] = None,
                       base_url: Optional[str] = None, api_key_env: Optional[str] = None, split: str = "test",
                       limit: Optional[int] = None, rule: Optional[str] = None, taxonomy: Optional[str] = None,
                       prompt_format: str = "auto", threshold: Optional[float] = None, batch_size: int = 32,
                       max_tokens: Optional[int] = None, columns: Optional[dict[str, Optional[str]]] = None,
                       positive_label: Optional[str] = None) -> dict[str, Any]:
    """Evaluate a guardrail (``engine=None``) or a judge and write the report folder; returns the report."""
    from ..data import load_labelled_data
    from ..metrics.evaluation import predict_with_guardrail, predict_with_judge, score
    from ..report import write_report
    from ..train.config import GuardrailConfig
    from ..train.data import normalize_dataset

    raw = load_labelled_data(dataset, split)
    if limit:
        raw = raw.select(range(min(limit, len(raw))))
    columns = {f"{k}_column": v for k, v in (columns or {}).items() if v}
    if engine:
        from ..llm import EngineConfig

        engine_config = EngineConfig(engine=engine, model=model, base_url=base_url, api_key_env=api_key_env)
        cfg = GuardrailConfig(rule=rule, taxonomy=taxonomy, prompt_format=prompt_format,
                              positive_label=positive_label, **columns)
        norm, info = normalize_dataset(raw, cfg)
        fmt = cfg.resolved_prompt_format(has_taxonomy_column=info.columns["taxonomy"] is not None)
        predictions = predict_with_judge(engine_config, norm, fmt, max_tokens=max_tokens)
        subject = {"kind": "judge"} | engine_config.identity() | ({"base_url": base_url} if base_url else {})
        label_names = info.label_names
    else:
        from ..guardrail import Guardrail

        guardrail = Guardrail.from_pretrained(model, threshold=threshold)
        spec = guardrail.spec
        fmt = spec.prompt_format
        cfg = GuardrailConfig(rule=rule or spec.rule, taxonomy=taxonomy or spec.taxonomy, prompt_format=fmt,
                              positive_label=positive_label, **columns)
        norm, info = normalize_dataset(raw, cfg, label_names=spec.label_names)
        predictions = predict_with_guardrail(guardrail, norm, batch_size=batch_size)
        subject = {"kind": "guardrail", "model": str(model), "guardrail_kind": spec.kind,
                   "threshold": guardrail.threshold}
        label_names = spec.label_names
    metrics = score(norm, predictions, fmt)
    rows = [{"text": t, "label": y} | p for t, y, p in zip(norm["text"], norm["label"], predictions.rows())]
    timing = {"seconds": round(predictions.seconds, 3),
              "rows_per_second": round(len(norm) / predictions.seconds, 2) if predictions.seconds else None}
    policy = fmt == "policy"
    write_report(
        output, metrics, label_names=label_names, subject=subject,
        dataset={"name": str(dataset), "split": split if not Path(dataset).is_file() else None, "rows": len(norm)},
        rows=rows, timing=timing, references=list(norm["label"]) if policy else None,
        reference_categories=[list(c) for c in norm["categories"]] if policy else None,
        predicted_categories=predictions.categories if policy else None,
        extra={"prompt_format": fmt, "usage": predictions.usage} if predictions.usage else {"prompt_format": fmt},
    )
    return json.loads((Path(output) / "report.json").read_text())


def print_summary(report: dict[str, Any], output: str | Path) -> None:
    metrics = report["metrics"]
    keys = ("accuracy", "precision", "recall", "f1", "unparseable", "n", "category_f1")
    print("  ".join(f"{k}={metrics[k]:.4f}" if isinstance(metrics[k], float) else f"{k}={metrics[k]}"
                    for k in keys if k in metrics))
    print(f"Report written to {Path(output) / 'report.md'}")


def run(args: argparse.Namespace) -> int:
    sources = list(args.sources)
    if args.model:
        if not args.engine:
            print("--model names a judge's model and needs --engine local|openai|vllm. For a trained guardrail, "
                  "pass its folder as MODEL: barred evaluate MODEL DATASET.", file=sys.stderr)
            return 2
        sources = [args.model] + sources
    if len(sources) != 2:
        print(f"Expected MODEL DATASET (or DATASET with --model), found {len(sources)} arguments: {sources}.",
              file=sys.stderr)
        return 2
    model, dataset = sources
    report = evaluate_to_report(
        model, dataset, args.output, engine=args.engine, base_url=args.base_url, api_key_env=args.api_key_env,
        split=args.split, limit=args.limit, rule=args.rule, taxonomy=args.taxonomy, prompt_format=args.prompt_format,
        threshold=args.threshold, batch_size=args.batch_size, max_tokens=args.max_tokens,
        columns={k: getattr(args, f"{k}_column") for k in ("text", "label", "rule", "task", "taxonomy", "categories")},
        positive_label=args.positive_label,
    )
    print_summary(report, args.output)
    return 0
