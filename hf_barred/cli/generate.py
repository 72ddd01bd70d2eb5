"""``barred generate``: run BARRED on a task file and write a Hub-style dataset folder.

The method and budget flags are the fields of the flat arguments dataclasses of
:mod:`hf_barred.cli.generate_arguments`, parsed by ``transformers.HfArgumentParser``; each takes its
default and help from the config field it sets (``BarredConfig``, the stage configs), so both are
written once, there. The engine flags are :mod:`hf_barred.cli.engine_options`' (from ``EngineConfig``'s
fields); the command's own options (``TASK_FILE``, ``--n``, ``--output``, ...) are declared here. The
parser is built when ``barred generate`` is parsed, not for ``barred --help``: it imports transformers
and the stage configs (:func:`~hf_barred.cli.flags.add_lazy_command`). Flags are shown in kebab-case;
their snake_case spelling (``--max_rounds``) is accepted too, as ``barred train``'s are.

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

from .engine_options import add_engine_arguments, engine_config, positive_int
from .flags import EXIT_SHORT, add_lazy_command, kebab_case_flags
from .help_text import examples_epilog

HELP = "Generate verified boundary-case samples for a rule (BARRED)."
DESCRIPTION = (
    "Generate N verified, label-balanced boundary-case samples for the rule of TASK_FILE with BARRED (decompose, "
    "plan, generate, debate, refine), into a folder laid out like a Hub dataset repo. Finished LLM calls are "
    "cached: run the same command again to resume. Every flag also accepts its snake_case spelling (--max_rounds)."
)


def register(subparsers: Any) -> None:
    parser = add_lazy_command(subparsers, "generate", build_parser, help=HELP)
    parser.set_defaults(run=run)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``barred generate``'s arguments (imports transformers and the stage configs).

    >>> parser = build_parser()
    >>> args = parser.parse_args(["task.yaml", "--n", "4", "--output", "out", "--max_rounds", "2"])
    >>> args.n, args.max_rounds, args.judges
    (4, 2, 2)
    """
    from ..policy.task import MAX_SEED_CHARS
    from .generate_arguments import BudgetArguments, FlagParser, MethodArguments

    own = argparse.ArgumentParser(add_help=False)  # a parent: its arguments come before the dataclasses' groups
    own.add_argument(
        "task_file", metavar="TASK_FILE", help="YAML/JSON task file (criterion, labels, input_type, seeds)."
    )
    own.add_argument("--n", type=positive_int, required=True, help="Number of accepted samples to generate.")
    own.add_argument("--output", required=True, metavar="DIR", help="Output folder (a Hub-style dataset repo).")
    own.add_argument(
        "--overwrite",
        action="store_true",
        help="Write into --output even when it holds a README.md that no hf_barred run wrote.",
    )
    own.add_argument(
        "--max-seed-chars",
        type=positive_int,
        default=None,
        metavar="N",
        help=f"Refuse seeds longer than N characters (default: {MAX_SEED_CHARS}): every request carries seeds.",
    )
    add_engine_arguments(own)
    parser = FlagParser(
        (MethodArguments, BudgetArguments),
        parents=[own],
        prog="barred generate",
        description=DESCRIPTION,
        epilog=examples_epilog(__doc__ or ""),
    )
    parser.add_argument(
        "--push-to-hub", default=None, metavar="REPO", help="Push the dataset and its card to this Hub repo."
    )
    parser.add_argument("--private", action="store_true", help="Create the Hub repo as private.")
    parser.add_argument("--no-progress", action="store_true", help="No progress view.")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="Also show the libraries' own bars and logs (dataset saving, weight loading, load reports).",
    )
    kebab_case_flags(parser)
    return parser


def build_config(args: argparse.Namespace) -> Any:
    """The :class:`~hf_barred.recipes.barred.config.BarredConfig` of the command line."""
    from .generate_arguments import barred_config

    return barred_config(args, engine_config(args))


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
        "  acceptance by refinement round: "
        + (
            ", ".join(
                f"r{level}: {row['accepted']}/{row['debated']}"
                for level, row in stats["acceptance_by_refinement"].items()
            )
            or "none"
        ),
        "  debate paths (all debates): "
        + (", ".join(f"{k}: {v}" for k, v in sorted(stats["debate_paths"].items())) or "none"),
        f"  decomposition: {stats['dimensions']} dimension(s), {stats['instantiations']} instantiation(s); "
        f"prompt set: {stats.get('prompt_set', '?')}",
        "  parse failures: "
        + ", ".join(f"{k}: {v}" for k, v in stats["parse_failures"].items())
        + f" (of {stats['judge_answers']} judge answers)",
        f"  generator's believed label differs from the target: {believed_summary(stats)}",
        "  failed requests (no answer): "
        + ", ".join(f"{k}: {v}" for k, v in stats.get("request_failures", {}).items()),
        f"  requests: {stats['requests']}"
        + (" = " + " + ".join(f"{v} {k}" for k, v in by_stage.items()) if by_stage else "")
        + f" ({stats['request_tokens']} tokens, cached or not); "
        f"budget spent: {'yes' if stats['budget_spent'] else 'no'}",
    ]
    cut = {k: v for k, v in (stats.get("cut_off") or {}).items() if v}
    if cut:
        raise_it = stats.get("budget_flag") or "--sample-max-tokens / --judge-max-tokens"
        lines.append(
            "  answers cut off by the token budget before any answer: "
            + ", ".join(f"{k}: {v}" for k, v in cut.items())
            + f" (raise {raise_it})"
        )
    e = stats["engine"]
    reasoning = f" ({e['reasoning_tokens']} of them reasoning tokens)" if e.get("reasoning_tokens") else ""
    lines.append(
        f"  this run: {e['calls']} engine calls, {e['cache_hits']} cache hits, {e['prompt_tokens']} prompt + "
        f"{e['completion_tokens']} completion tokens{reasoning}, {e['errors']} errors; "
        f"{stats['stage_outputs_reused']} saved stage outputs reused"
    )
    if "online_cost" in e and e["online_cost"] != e["cost"]:
        saved = e["online_cost"] - e["cost"]
        cost = f"${e['cost']:.4f} at the batch price (online: ${e['online_cost']:.4f}, saved ${saved:.4f})"
    else:
        cost = f"${e['cost']:.4f}"
    lines.append(f"  cost {cost}; prices: {e.get('prices') or 'none given'}")
    goal = stats.get("goal") or {}
    if goal and not goal.get("reached"):
        lines.append(f"  ended short of the goal: {goal['why']}. To go on: {goal['fix']}.")
    if output_dir:
        lines.append(f"Data: {output_dir}  (datasets.load_dataset({output_dir!r}); splits train, extra, rejected)")
        if all(stats["accepted_by_label"].values()):  # a guardrail needs both labels to learn anything
            lines.append(f"Next: barred train {output_dir} --output {output_dir.rstrip('/')}-guardrail")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Errors go up to :func:`hf_barred.cli.main`: one line, exit code 2 for bad input, 1 for a failed run;
    a run that ended with fewer samples than asked returns 3 (:data:`~hf_barred.cli.flags.EXIT_SHORT`)."""
    from ..policy.task import MAX_SEED_CHARS, GuardrailTask
    from ..recipes.barred.run import run_barred

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
    result = run_barred(
        task, args.n, config, args.output, progress=not args.no_progress, verbose=args.verbose, overwrite=args.overwrite
    )
    print(format_summary(result.stats, time.monotonic() - start, str(result.output_dir)))
    if args.push_to_hub:
        from ..hub.push import push_barred_run

        url = push_barred_run(result.output_dir, args.push_to_hub, private=args.private or None)
        print(f"  pushed to {url}")
    return 0 if result.reached else EXIT_SHORT
