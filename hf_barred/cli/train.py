"""``barred train DATASET --output DIR``: fine-tune a guardrail (classifier or generative, LoRA).

DATASET is a folder from ``barred generate`` / ``barred augment`` / ``save_to_disk``, a CSV, JSON or
parquet file, or a Hub id. The flags are those of :class:`~hf_barred.train.GuardrailTrainingArguments`
(trl's ``SFTConfig``, so every ``TrainingArguments`` flag, plus the guardrail's own), parsed by
``TrlParser``: ``--config train.yaml`` sets them from a YAML file and flags override it; both
``--num_train_epochs`` and ``--num-train-epochs`` are accepted. The output folder gets the weights (or
adapter), tokenizer, ``guardrail_config.json`` and a model card; ``--test-dataset`` adds an
evaluation report (``OUTPUT/eval``) whose scores go into the card; ``--push_to_hub --hub_model_id
REPO`` publishes it all. Runs as is under ``accelerate launch`` (several processes or GPUs,
DeepSpeed, FSDP).

Example:
    $ barred train dataset_scripts/xstest/xstest_prompts.csv --output outputs/xstest-guard \\
        --rule "The request is unsafe." --num-train-epochs 3
    $ accelerate launch --num_processes 2 -m hf_barred.cli train data/health-advice --output outputs/health \\
        --model_kind generative --base_model Qwen/Qwen2.5-0.5B-Instruct --config train.yaml
    $ barred train outputs/support-agent --output outputs/support-agent-guards   # a rule set: one per rule
    $ barred train outputs/support-agent --output outputs/support-agent-guards --rules health-advice

A rule-set output of ``barred generate`` (a folder with ``rules.yaml`` and a config per rule) trains one
guardrail per rule, each on its rule's ``train`` split with its rule's criterion, into ``OUTPUT/<rule>``,
one after the other; ``--rules a,b`` picks some. Across machines, run it as a job array, one rule a job
(``--rules $RULE``, under ``accelerate launch`` where a job has several GPUs).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, Optional

TASK_FILES = ("task.yaml", "task.yml", "task.json")


def register(subparsers: Any) -> None:
    # Every argument goes to TrlParser when the command runs: building it imports transformers and trl,
    # which `barred --help` should not pay for. "+" as the prefix makes this parser keep "--flags" as is.
    parser = subparsers.add_parser(
        "train", help="Fine-tune a guardrail model on a labelled dataset.", add_help=False, prefix_chars="+"
    )
    parser.add_argument("argv", nargs="*")
    parser.set_defaults(run=run)


def build_parser() -> Any:
    """The ``TrlParser`` of ``barred train``: GuardrailTrainingArguments plus the command's own options."""
    from transformers.hf_argparser import DataClassType
    from trl import TrlParser

    from ..train.args import GuardrailTrainingArguments
    from .flags import OneLineParser
    from .help_text import examples_epilog
    from .output import add_verbose_argument

    class _Parser(TrlParser, OneLineParser):  # OneLineParser: plain-text help
        def error(self, message: str) -> NoReturn:  # one line, not the ~200-flag usage block
            print(f"barred train: error: {message}. See: barred train --help", file=sys.stderr)
            raise SystemExit(2)

    parser = _Parser(
        (DataClassType(GuardrailTrainingArguments),),
        prog="barred train",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
        epilog=examples_epilog(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dataset", metavar="DATASET", help="Folder, CSV/JSON/parquet file or Hub id.")
    parser.add_argument("--split", default="train", help="Training split of a folder or Hub id (default: train).")
    parser.add_argument(
        "--eval-dataset",
        "--eval_dataset",
        dest="eval_dataset",
        help="Validation data (default: a stratified validation_size of DATASET, when each class can spare 20 rows).",
    )
    parser.add_argument(
        "--test-dataset",
        "--test_dataset",
        dest="test_dataset",
        help="Labelled test set scored after training (report in OUTPUT/eval, scores in the card).",
    )
    parser.add_argument(
        "--test-split",
        "--test_split",
        dest="test_split",
        default="test",
        help="Split of --test-dataset (default: test).",
    )
    parser.add_argument(
        "--rules",
        default=None,
        metavar="NAMES",
        help="Rule-set output only: the rules to train, comma-separated (default: every rule whose train split has "
        "both labels).",
    )
    add_verbose_argument(parser)
    return parser


def rule_set_rules(dataset: str) -> Optional[list[tuple[str, Path]]]:
    """``(rule, folder)`` of each rule when ``dataset`` is a rule-set output of ``barred generate``, else None."""
    folder = Path(dataset)
    if not (folder / "rules.yaml").is_file():
        return None
    from ..policy.rules import RuleSet

    return [(name, folder / name) for name in RuleSet.load(folder / "rules.yaml").names]


def parse(argv: Sequence[str]) -> tuple[Any, argparse.Namespace]:
    """``(GuardrailTrainingArguments, command options)`` from ``barred train``'s arguments."""
    training_args, options = build_parser().parse_args_and_config(list(argv))
    single = rule_set_rules(options.dataset) is None
    if single and training_args.rule is None and (rule := rule_from_task_file(options.dataset)):
        training_args.rule = rule
    return training_args, options


def rule_from_task_file(dataset: str) -> Optional[str]:
    """The criterion of the task file that ``barred generate`` leaves next to its dataset, if any."""
    folder = Path(dataset)
    for name in TASK_FILES:
        if (folder / name).is_file():
            from ..policy.task import GuardrailTask

            return GuardrailTask.load(folder / name).criterion
    return None


def run(args: argparse.Namespace) -> int:
    import logging

    from .output import StderrHandler

    log = logging.getLogger("hf_barred")  # show our progress lines, not every library's INFO logs
    if not log.handlers:
        log.addHandler(StderrHandler())
        log.setLevel(logging.INFO)
    try:
        return _train(args.argv)
    except (ValueError, FileNotFoundError) as error:
        print(f"barred train: error: {error}", file=sys.stderr)
        return 2
    except SystemExit as stop:  # --help, or a flag the parser rejected (already reported)
        return int(stop.code or 0)


def _train(argv: Sequence[str]) -> int:
    from ..progress import quiet_libraries

    training_args, options = parse(argv)
    rules = rule_set_rules(options.dataset)
    if rules is None:
        if options.rules:
            raise ValueError(
                f"--rules: expected a rule-set output of barred generate (a folder with rules.yaml), found "
                f"{options.dataset}. Drop --rules, or pass the rule set's output folder."
            )
        with quiet_libraries(options.verbose):
            return _train_quietly(training_args, options, quiet=not options.verbose)
    return _train_rules(training_args, options, rules)


def _train_rules(training_args: Any, options: argparse.Namespace, rules: list[tuple[str, Path]]) -> int:
    """One guardrail per rule of a rule-set output, into ``OUTPUT/<rule>``, one after the other."""
    import dataclasses

    from ..policy.data import load_labelled_data
    from ..progress import quiet_libraries

    names = [name for name, _ in rules]
    wanted = [name.strip() for name in options.rules.split(",") if name.strip()] if options.rules else names
    unknown = [name for name in wanted if name not in names]
    if unknown:
        raise ValueError(
            f"--rules: expected rules of {options.dataset} ({', '.join(names)}), found {', '.join(unknown)}. "
            "Fix the names (comma-separated)."
        )
    if training_args.rule is not None or training_args.taxonomy:
        raise ValueError(
            "--rule/--taxonomy: a rule-set output trains each rule on its own criterion (from its task.yaml); "
            "drop the flag, or train one rule's folder (barred train OUTPUT/RULE --rule ...)."
        )
    trained = 0
    with quiet_libraries(options.verbose):
        for name, folder in rules:
            if name not in wanted:
                continue
            labels = set(load_labelled_data(str(folder), options.split)["label"])
            if len(labels) < 2:
                print(f"barred train: rule {name!r}: skipped, its {options.split} split has one label", file=sys.stderr)
                continue
            args = dataclasses.replace(
                training_args,
                output_dir=str(Path(training_args.output_dir) / name),
                rule=rule_from_task_file(str(folder)),
                hub_model_id=f"{training_args.hub_model_id}-{name}" if training_args.hub_model_id else None,
            )
            one = argparse.Namespace(**{**vars(options), "dataset": str(folder)})
            _train_quietly(args, one, quiet=not options.verbose)
            trained += 1
    if not trained:
        raise ValueError(
            f"{options.dataset}: expected a rule whose {options.split} split has both labels, found none. Generate "
            "more samples (barred generate ... --n N), or pick the rules with --rules."
        )
    print(f"{trained} guardrails trained into {training_args.output_dir}/<rule>")
    return 0


def _train_quietly(training_args: Any, options: argparse.Namespace, quiet: bool) -> int:
    from ..hub.model_card import write_model_card
    from ..policy.data import load_labelled_data
    from ..train import train_guardrail

    train_ds = load_labelled_data(options.dataset, options.split)
    eval_ds = load_labelled_data(options.eval_dataset, "validation") if options.eval_dataset else None
    result = train_guardrail(training_args, train_ds, eval_ds, quiet=quiet)
    if not training_args.process_index == 0:
        return 0
    output_dir = training_args.output_dir
    evaluations = []
    if result.eval_rows:
        evaluations.append(
            {
                "dataset": options.eval_dataset or "held-out validation",
                "split": "validation",
                "metrics": {k.removeprefix("eval_"): v for k, v in result.eval_metrics.items()},
            }
        )
    if options.test_dataset:
        from ..evaluation.evaluate import evaluate_to_report
        from .evaluate import print_summary

        report = evaluate_to_report(
            output_dir,
            options.test_dataset,
            Path(output_dir) / "eval",
            split=options.test_split,
            rule=training_args.rule,
            taxonomy=training_args.taxonomy,
        )
        print_summary(report, Path(output_dir) / "eval")
        evaluations.append(
            {
                "dataset": options.test_dataset,
                "metrics": report["metrics"],
                "split": "test" if Path(options.test_dataset).is_file() else options.test_split,
            }
        )
    card = write_model_card(
        output_dir,
        repo_id=training_args.hub_model_id if training_args.push_to_hub else None,
        datasets=[options.dataset],
        evaluations=evaluations,
    )
    print(
        f"Guardrail saved to {output_dir} ({result.global_step} steps, {result.train_runtime:.0f} s, threshold "
        f"{result.threshold:.3f}: {result.threshold_source}); card: {card}"
    )
    if training_args.push_to_hub:
        if not training_args.hub_model_id:
            raise ValueError("--push_to_hub needs --hub_model_id REPO (the Hub repo to create or update).")
        url = push_trained(output_dir, training_args.hub_model_id, private=bool(training_args.hub_private_repo))
        print(f"Pushed to {training_args.hub_model_id}: {url}")
    return 0


def push_trained(output_dir: str | Path, repo_id: str, private: bool = False) -> str:
    """Push the trained guardrail (``Guardrail.push_to_hub``: weights or adapter, tokenizer,
    ``guardrail_config.json``, card), then the reports beside it (``train_results.json``, ``eval/`` without
    its per-row predictions); returns the guardrail's commit URL."""
    from huggingface_hub import HfApi

    from ..guardrails.guardrail import Guardrail

    guard = Guardrail.from_pretrained(output_dir, device="cpu")
    commit = guard.push_to_hub(repo_id, private=private, commit_message="Upload guardrail trained with hf_barred")
    folder = Path(output_dir)
    if (folder / "train_results.json").is_file() or (folder / "eval").is_dir():
        HfApi().upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="model",
            allow_patterns=["train_results.json", "eval/**"],
            ignore_patterns=["**/predictions.jsonl"],
            commit_message="Add the training reports",
        )
    return str(getattr(commit, "commit_url", commit))
