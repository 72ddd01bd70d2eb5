"""``barred train DATASET --output DIR``: fine-tune a guardrail (classifier or generative, LoRA).

DATASET is a folder from ``barred generate`` / ``barred augment`` / ``save_to_disk``, a CSV, JSON or
parquet file, or a Hub id. Every :class:`~hf_barred.train.GuardrailConfig` field is a flag
(``--learning_rate 1e-4``) and a key of the ``--config`` YAML file; flags win over the file. The
output folder gets the weights (or adapter), tokenizer, ``guardrail_config.json`` and a model card;
``--test-dataset`` adds an evaluation report (``OUTPUT/eval``) whose scores go into the card;
``--push-to-hub REPO`` publishes it all. Runs as is under ``accelerate launch`` (multi-GPU,
DeepSpeed, FSDP).

Example:
    $ barred train dataset_scripts/xstest/xstest_prompts.csv --output outputs/xstest-guard \\
        --rule "The request is unsafe." --num_train_epochs 3
    $ accelerate launch -m hf_barred.cli train data/health-advice --output outputs/health \\
        --model_kind generative --base_model Qwen/Qwen2.5-0.5B-Instruct --config train.yaml
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, Optional

from ..train.config import GuardrailConfig, add_config_arguments

TASK_FILES = ("task.yaml", "task.yml", "task.json")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train", help="Fine-tune a guardrail model on a labelled dataset.",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dataset", metavar="DATASET", help="Folder, CSV/JSON/parquet file or Hub id.")
    parser.add_argument("--output", dest="output_dir", default=argparse.SUPPRESS,
                        help="Output folder (GuardrailConfig.output_dir).")
    parser.add_argument("--config", help="YAML file of GuardrailConfig fields; command-line flags override it.")
    parser.add_argument("--split", default="train", help="Training split of a folder or Hub id (default: train).")
    parser.add_argument("--eval-dataset", help="Validation data for periodic evaluation (default: validation_size "
                                               "of DATASET is held out).")
    parser.add_argument("--test-dataset", help="Labelled test set scored after training (report in OUTPUT/eval, "
                                               "scores in the model card).")
    parser.add_argument("--test-split", default="test", help="Split of --test-dataset (default: test).")
    parser.add_argument("--push-to-hub", dest="push_to_hub", metavar="REPO", default=argparse.SUPPRESS,
                        help="Publish the guardrail (weights or adapter, tokenizer, card) to this Hub repo.")
    add_config_arguments(parser, GuardrailConfig, skip=("output_dir", "push_to_hub"))
    parser.set_defaults(run=run)


def rule_from_task_file(dataset: str) -> Optional[str]:
    """The criterion of the task file that ``barred generate`` leaves next to its dataset, if any."""
    folder = Path(dataset)
    for name in TASK_FILES:
        if (folder / name).is_file():
            from ..task import GuardrailTask

            return GuardrailTask.load(folder / name).criterion
    return None


def run(args: argparse.Namespace) -> int:
    import logging

    from accelerate import PartialState

    from ..data import load_labelled_data
    from ..cards import write_model_card
    from ..train import train_guardrail
    from ..train.config import config_from_sources

    log = logging.getLogger("hf_barred")  # show the trainer's progress lines, not every library's INFO logs
    if not log.handlers:
        log.addHandler(logging.StreamHandler())
        log.setLevel(logging.INFO)
    config = config_from_sources(args.config, vars(args))
    if config.rule is None and (rule := rule_from_task_file(args.dataset)):
        config = dataclasses.replace(config, rule=rule)
    train_ds = load_labelled_data(args.dataset, args.split)
    eval_ds = load_labelled_data(args.eval_dataset, "validation") if args.eval_dataset else None
    result = train_guardrail(config, train_ds, eval_ds)
    if not PartialState().is_main_process:
        return 0
    evaluations = []
    if result.eval_metrics:
        evaluations.append({"dataset": "held-out validation" if not args.eval_dataset else args.eval_dataset,
                            "split": "validation",
                            "metrics": {k.removeprefix("eval_"): v for k, v in result.eval_metrics.items()}})
    if args.test_dataset:
        from .evaluate import evaluate_to_report, print_summary

        report = evaluate_to_report(config.output_dir, args.test_dataset, Path(config.output_dir) / "eval",
                                    split=args.test_split, rule=config.rule, taxonomy=config.taxonomy)
        print_summary(report, Path(config.output_dir) / "eval")
        evaluations.append({"dataset": args.test_dataset, "split": args.test_split if not Path(args.test_dataset).is_file()
                            else "test", "metrics": report["metrics"]})
    card = write_model_card(config.output_dir, repo_id=config.push_to_hub, datasets=[args.dataset],
                            evaluations=evaluations)
    print(f"Guardrail saved to {config.output_dir} ({result.global_step} steps, {result.train_runtime:.0f} s); "
          f"card: {card}")
    if config.push_to_hub:
        from ..train.publish import push_guardrail

        url = push_guardrail(config.output_dir, config.push_to_hub, private=config.hub_private_repo)
        print(f"Pushed to {config.push_to_hub}: {url}")
    return 0
