"""``barred generate``: run BARRED on a rule (a task file) or a rule set, and write a Hub-style dataset folder.

A rule set is a rule-set file (``rules:``), a folder of task files or a taxonomy file (each category a rule,
see :class:`~hf_barred.policy.rules.RuleSet`); its output has one dataset config per rule and the ``all``
config (every rule's samples, policy-conditioned).

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
    $ barred generate examples/support-agent/rules.yaml --n 8 --output outputs/support-agent
    $ barred generate task.yaml --n 1000 --output out --engine openai --base-url http://127.0.0.1:8000/v1 \\
          --model Qwen/Qwen2.5-7B-Instruct --judges 2 --rounds 2 --max-refinements 2 --push-to-hub me/my-guard-data
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from .engine_options import add_engine_arguments, engine_config, positive_int
from .flags import EXIT_SHORT, add_lazy_command, kebab_case_flags
from .help_text import examples_epilog

HELP = "Generate verified boundary-case samples for a rule or a rule set (BARRED)."
DESCRIPTION = (
    "Generate N verified, label-balanced boundary-case samples for the rule of a task file, or for every rule of a "
    "rule set, with BARRED (decompose, plan, generate, debate, refine), into a folder laid out like a Hub dataset "
    "repo: one config per rule of a rule set, and 'all'. Finished LLM calls and finished rows are kept: run the same "
    "command again to resume. Every flag also accepts its snake_case spelling (--max_rounds)."
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
        "task_file",
        metavar="RULES",
        help="A YAML/JSON task file (one rule: criterion, labels, input_type, seeds), a rule-set file (rules: ...), "
        "a folder of task files, or a taxonomy file (categories: ..., seeds: ...).",
    )
    own.add_argument(
        "--n", type=positive_int, required=True, help="Number of accepted samples to generate (per rule of a rule set)."
    )
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
    lines.extend(endpoint_lines(e))
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
    from ..policy.files import read_structured_file
    from ..policy.rules import RuleSet
    from ..policy.task import MAX_SEED_CHARS

    rules = RuleSet.load(args.task_file)
    single = Path(args.task_file).is_file() and "criterion" in (read_structured_file(args.task_file) or {})
    config = build_config(args)
    for task in rules:
        task.require_seeds()
        task.check_seed_sizes(args.max_seed_chars or MAX_SEED_CHARS)
        if args.sample_max_tokens is None:  # long seeds (plans of thousands of characters) get room to be matched
            from ..recipes.barred.lengths import fit_sample_budget

            config = fit_sample_budget(config, task)
    if config.run_executor == "ray":  # fail before the run, not after it
        from ..recipes.barred.ray_executor import require_ray

        require_ray()
    if args.push_to_hub:  # fail before the run, not after it
        from ..hub.push import require_token

        require_token()
    for task in rules:
        warning = task.seed_warning()
        if warning:
            where = f" (rule {task.name!r})" if not single else ""
            print(f"barred generate: warning{where}: {warning}", file=sys.stderr)
    start = time.monotonic()
    options = dict(progress=not args.no_progress, verbose=args.verbose, overwrite=args.overwrite)
    if single:
        from ..recipes.barred.run import run_barred

        result = run_barred(rules[0], args.n, config, args.output, **options)
        print(format_summary(result.stats, time.monotonic() - start, str(result.output_dir)))
    else:
        from ..recipes.barred.run import run_barred_rules

        result = run_barred_rules(rules, args.n, config, args.output, **options)  # type: ignore[assignment]
        print(format_rule_set_summary(result.stats, time.monotonic() - start, str(result.output_dir)))
    if args.push_to_hub:
        from ..hub.push import push_barred_run, push_rule_set_run

        push = push_barred_run if single else push_rule_set_run
        url = push(result.output_dir, args.push_to_hub, private=args.private or None)
        print(f"  pushed to {url}")
    return 0 if result.reached else EXIT_SHORT


def endpoint_lines(engine_usage: dict[str, Any]) -> list[str]:
    """A line per server when the openai engine sent to several: its requests sent, answered and failed.

    >>> for line in endpoint_lines({"endpoints": {"http://a/v1": {"sent": 9, "answered": 9, "failed": 0},
    ...                                           "http://b/v1": {"sent": 4, "answered": 2, "failed": 2}}}):
    ...     print(line)
      server http://a/v1: 9 requests sent, 9 answered, 0 failed
      server http://b/v1: 4 requests sent, 2 answered, 2 failed
    """
    return [
        f"  server {url}: {counts['sent']} requests sent, {counts['answered']} answered, {counts['failed']} failed"
        for url, counts in (engine_usage.get("endpoints") or {}).items()
    ]


def format_rule_set_summary(stats: dict[str, Any], seconds: float, output_dir: str = "") -> str:
    """The closing summary of a rule-set run: a line per rule, the totals, where the data is and what comes next.

    >>> rule = {"accepted": 8, "requested": 8, "extra": 1, "rejected": 3, "acceptance_rate": 0.75, "requests": 70,
    ...         "goal": {"reached": True}, "accepted_by_label": {"no": 4, "yes": 4}}
    >>> stats = {"rule_set": "shop", "rules": {"health-advice": rule}, "requested": 8, "accepted": 8, "extra": 1,
    ...          "rejected": 3, "planned_rows": 12, "requests": 70, "request_tokens": 900,
    ...          "engine": {"calls": 70, "cache_hits": 0, "prompt_tokens": 800, "completion_tokens": 100,
    ...                     "errors": 0, "cost": 0.0}, "goal": {"reached": True, "short": []}}
    >>> print(format_rule_set_summary(stats, 3.0))  # doctest: +NORMALIZE_WHITESPACE
    BARRED summary for the rule set 'shop' (1 rules, 3 s)
      health-advice   train 8 of 8   extra 1   rejected 3   acceptance 75.0%   requests 70
      all rules: train 8 of 8; extra 1; rejected 3; planned rows 12; requests 70 (900 tokens, cached or not)
      this run: 70 engine calls, 0 cache hits, 800 prompt + 100 completion tokens, 0 errors; cost $0.0000
    """
    rules = stats["rules"]
    width = max(len(name) for name in rules)
    lines = [f"BARRED summary for the rule set {stats['rule_set']!r} ({len(rules)} rules, {seconds:.0f} s)"]
    for name, rule in rules.items():
        short = "" if rule["goal"]["reached"] else f"   ended short: {rule['goal']['why']}"
        lines.append(
            f"  {name:<{width}}   train {rule['accepted']} of {rule['requested']}   extra {rule.get('extra', 0)}   "
            f"rejected {rule['rejected']}   acceptance {rule['acceptance_rate']:.1%}   requests {rule['requests']}"
            + short
        )
    lines.append(
        f"  all rules: train {stats['accepted']} of {stats['requested']}; extra {stats['extra']}; rejected "
        f"{stats['rejected']}; planned rows {stats['planned_rows']}; requests {stats['requests']} "
        f"({stats['request_tokens']} tokens, cached or not)"
    )
    e = stats["engine"]
    lines.append(
        f"  this run: {e['calls']} engine calls, {e['cache_hits']} cache hits, {e['prompt_tokens']} prompt + "
        f"{e['completion_tokens']} completion tokens, {e['errors']} errors; cost ${e['cost']:.4f}"
    )
    lines.extend(endpoint_lines(e))
    if not stats["goal"]["reached"]:
        lines.append(
            f"  ended short of the goal for {len(stats['goal']['short'])} rule(s): {', '.join(stats['goal']['short'])} "
            "(the line of each says why; the same command resumes)."
        )
    if output_dir:
        first = next(iter(rules))
        lines.append(
            f"Data: {output_dir}  (datasets.load_dataset({output_dir!r}, {first!r}): one config per rule; "
            f"load_dataset({output_dir!r}, 'all'): every rule, policy-conditioned)"
        )
        trainable = [name for name, rule in rules.items() if all(rule["accepted_by_label"].values())]
        if trainable:
            folder = f"{output_dir.rstrip('/')}/{trainable[0]}"
            lines.append(f"Next: barred train {folder} --output {output_dir.rstrip('/')}-{trainable[0]}-guardrail")
    return "\n".join(lines)
