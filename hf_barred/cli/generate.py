"""``barred generate``: run BARRED on a task file and write a Hub-style dataset folder.

Example:
    $ barred generate dataset_scripts/health-advice/task.yaml --n 8 --output outputs/health-advice
    $ barred generate task.yaml --n 1000 --output out --engine openai --base-url http://127.0.0.1:8000/v1 \\
          --model Qwen/Qwen2.5-7B-Instruct --judges 2 --rounds 2 --max-refinements 2 --push-to-hub me/my-guard-data
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from .engine_options import add_engine_arguments, add_prompt_set_argument, engine_config, positive_int, share


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="Generate verified boundary-case samples for a rule (BARRED).",
        description="Generate N verified, label-balanced boundary-case samples for the rule of TASK_FILE with "
        "BARRED (decompose, plan, generate, debate, refine), into a folder laid out like a Hub dataset repo. "
        "Finished LLM calls are cached: run the same command again to resume.",
    )
    parser.add_argument("task_file", metavar="TASK_FILE", help="YAML/JSON task file (criterion, labels, input_type, seeds).")
    parser.add_argument("--n", type=positive_int, required=True, help="Number of accepted samples to generate.")
    parser.add_argument("--output", required=True, metavar="DIR", help="Output folder (a Hub-style dataset repo).")
    parser.add_argument("--overwrite", action="store_true",
                        help="Write into --output even when it holds a README.md that no hf_barred run wrote.")
    parser.add_argument("--max-seed-chars", type=positive_int, default=None, metavar="N",
                        help="Refuse seeds longer than N characters (default 32000): every request carries seeds.")
    add_engine_arguments(parser)
    method = parser.add_argument_group("method")
    add_prompt_set_argument(method)
    method.add_argument("--judges", type=positive_int, default=2, metavar="K", help="Number of judges (default 2).")
    method.add_argument("--rounds", type=positive_int, default=2, metavar="T", help="Maximum debate rounds (default 2).")
    method.add_argument("--max-refinements", type=int, default=2, metavar="R", help="R_max (default 2).")
    method.add_argument("--seed", type=int, default=0, help="Seed of the plan and the sampling.")
    method.add_argument("--sample-max-tokens", type=int, default=None, metavar="N",
                        help="Most tokens of a written sample (default: 128 on the local engine, 512 on served ones).")
    method.add_argument("--judge-max-tokens", type=int, default=None, metavar="N",
                        help="Most tokens of a judge's answer (default: 64 on the local engine, 256 on served ones).")
    method.add_argument("--max-repairs", type=int, default=1,
                        help="Repair rounds for answers that are not valid JSON (default 1; 0 suits tiny models).")
    budget = parser.add_argument_group("budget")
    budget.add_argument("--max-calls", type=int, default=None, help="Budget of LLM requests (cached ones count).")
    budget.add_argument("--max-total-tokens", type=int, default=None, help="Budget of tokens.")
    budget.add_argument("--max-rounds", type=int, default=4, help="Maximum planning rounds (default 4).")
    budget.add_argument("--max-rows-per-round", type=int, default=64, help="Most rows planned per round (default 64).")
    budget.add_argument("--batch-size", type=int, default=64, help="Rows per map batch, i.e. per batched call.")
    budget.add_argument("--max-failure-rate", type=share, default=0.5, metavar="SHARE",
                        help="Stop the run (exit code 1) when more than this share of a stage's requests failed: "
                             "HTTP errors after the retries, timeouts, refused connections (default 0.5).")
    parser.add_argument("--push-to-hub", default=None, metavar="REPO", help="Push the dataset and its card to this Hub repo.")
    parser.add_argument("--private", action="store_true", help="Create the Hub repo as private.")
    parser.add_argument("--no-progress", action="store_true", help="No progress view.")
    parser.add_argument("--verbose", action="store_true",
                        help="Also show the libraries' own bars and logs (dataset saving, weight loading, load reports).")
    parser.set_defaults(run=run)


def build_config(args: argparse.Namespace) -> Any:
    """The :class:`~hf_barred.recipes.barred.run.BarredConfig` of the command line."""
    import dataclasses

    from ..recipes.barred.run import BarredConfig
    from ..stages.plan import PlanConfig

    engine = engine_config(args)
    config = BarredConfig.for_engine(
        engine, judges=args.judges, rounds=args.rounds, sample_max_tokens=args.sample_max_tokens,
        judge_max_tokens=args.judge_max_tokens, prompt_set=args.prompt_set, max_refinements=args.max_refinements,
        max_calls=args.max_calls, max_total_tokens=args.max_total_tokens, max_rounds=args.max_rounds,
        max_rows_per_round=args.max_rows_per_round, batch_size=args.batch_size, plan=PlanConfig(seed=args.seed),
        max_failure_rate=args.max_failure_rate,
    )
    stage_changes = {"seed": args.seed, "max_repairs": args.max_repairs}
    return dataclasses.replace(
        config, **{name: dataclasses.replace(getattr(config, name), **stage_changes)
                   for name in ("decompose", "instantiate", "generate", "debate", "refine")}
    )


def believed_summary(stats: dict[str, Any]) -> str:
    """How often the generator's believed label differed from the target, in words.

    >>> believed_summary({"believed_label": {"given": 9, "mismatches": 2}, "prompt_set": "served"})
    '2 of 9 samples'
    >>> believed_summary({"believed_label": {"given": 0, "mismatches": 0}, "prompt_set": "small"})
    'not asked (small prompt set)'
    """
    believed = stats.get("believed_label") or {}
    if believed.get("given"):
        return f"{believed['mismatches']} of {believed['given']} samples"
    if stats.get("prompt_set") == "small":
        return "not asked (small prompt set)"
    return "no sample said which label it believes"


def format_summary(stats: dict[str, Any], seconds: float, output_dir: str = "") -> str:
    """The closing summary of a run: the counts add up (planned rows = train + extra + rejected;
    requests = the sum over stages), then where the data is and the next command."""
    by_label = ", ".join(f"{k}: {v}" for k, v in stats["accepted_by_label"].items())
    reasons = ", ".join(f"{k}: {v}" for k, v in stats["rejection_reasons"].items()) or "none"
    by_stage = stats.get("requests_by_stage") or {}
    lines = [
        f"BARRED summary for {stats['task']!r} ({seconds:.0f} s)",
        f"  train: {stats['accepted']} of {stats['requested']} requested ({by_label}); "
        f"extra accepted: {stats.get('extra', 0)}; rejected: {stats['rejected']} ({reasons})",
        f"  planned rows: {stats['planned_rows']} = {stats['accepted']} train + {stats.get('extra', 0)} extra + "
        f"{stats['rejected']} rejected, in {stats['rounds']} round(s); acceptance rate: {stats['acceptance_rate']:.1%}",
        "  acceptance by refinement round: " + (", ".join(
            f"r{level}: {row['accepted']}/{row['debated']}" for level, row in stats["acceptance_by_refinement"].items()
        ) or "none"),
        "  debate paths (all debates): " + (", ".join(f"{k}: {v}" for k, v in sorted(stats["debate_paths"].items())) or "none"),
        f"  decomposition: {stats['dimensions']} dimension(s), {stats['instantiations']} instantiation(s); "
        f"prompt set: {stats.get('prompt_set', '?')}",
        "  parse failures: " + ", ".join(f"{k}: {v}" for k, v in stats["parse_failures"].items())
        + f" (of {stats['judge_answers']} judge answers)",
        f"  generator's believed label differs from the target: {believed_summary(stats)}",
        "  failed requests (no answer): " + ", ".join(f"{k}: {v}" for k, v in stats.get("request_failures", {}).items()),
        f"  requests: {stats['requests']}" + (" = " + " + ".join(f"{v} {k}" for k, v in by_stage.items()) if by_stage else "")
        + f" ({stats['request_tokens']} tokens, cached or not); budget spent: {'yes' if stats['budget_spent'] else 'no'}",
    ]
    e = stats["engine"]
    lines.append(
        f"  this run: {e['calls']} engine calls, {e['cache_hits']} cache hits, {e['prompt_tokens']} prompt + "
        f"{e['completion_tokens']} completion tokens, {e['errors']} errors, cost ${e['cost']:.4f}; "
        f"{stats['stage_outputs_reused']} saved stage outputs reused"
    )
    if output_dir:
        lines.append(f"Data: {output_dir}  (datasets.load_dataset({output_dir!r}); splits train, extra, rejected)")
        lines.append(f"Next: barred train {output_dir} --output {output_dir.rstrip('/')}-guardrail")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Errors go up to :func:`hf_barred.cli.main`: one line, exit code 2 for bad input, 1 for a failed run."""
    from ..recipes.barred.run import run_barred
    from ..policy.task import MAX_SEED_CHARS, GuardrailTask

    task = GuardrailTask.load(args.task_file)
    task.require_seeds()
    task.check_seed_sizes(args.max_seed_chars or MAX_SEED_CHARS)
    config = build_config(args)
    if args.sample_max_tokens is None:  # long seeds (plans of thousands of characters) get room to be matched
        from ..recipes.barred.lengths import fit_sample_budget

        config = fit_sample_budget(config, task)
    if args.push_to_hub:  # fail before the run, not after it
        from ..hub.push import require_token

        require_token()
    warning = task.seed_warning()
    if warning:
        print(f"barred generate: warning: {warning}", file=sys.stderr)
    start = time.monotonic()
    result = run_barred(task, args.n, config, args.output, progress=not args.no_progress, verbose=args.verbose,
                        overwrite=args.overwrite)
    print(format_summary(result.stats, time.monotonic() - start, str(result.output_dir)))
    if args.push_to_hub:
        from ..hub.push import push_barred_run

        url = push_barred_run(result.output_dir, args.push_to_hub, private=args.private or None)
        print(f"  pushed to {url}")
    return 0
