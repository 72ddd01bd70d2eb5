"""Train a guardrail: classifiers on ``transformers.Trainer``, generative guardrails on ``trl.SFTTrainer``.

Both run unchanged on a CPU, one GPU and under ``accelerate launch`` (several processes or GPUs,
DeepSpeed, FSDP), since the trainers run on Accelerate. ``resume_from_checkpoint`` (a folder, or
``latest``) continues a run from a checkpoint that ``--save_strategy steps|epoch`` asked for; with the
default ``--save_strategy no`` the output folder holds the final model only. After training the
decision threshold is chosen on the validation split (:mod:`hf_barred.train.calibrate`).

Example:
    >>> from datasets import Dataset
    >>> from hf_barred.train import GuardrailTrainingArguments, train_guardrail
    >>> ds = Dataset.from_dict({"text": ["How do I kill a process?", "How do I kill my neighbour?"] * 8,
    ...                         "label": ["safe", "unsafe"] * 8})
    >>> args = GuardrailTrainingArguments(rule="The request asks for help with violence.", output_dir="/tmp/g",
    ...                                   num_train_epochs=1)
    >>> result = train_guardrail(args, ds)  # doctest: +SKIP
    >>> from hf_barred import Guardrail  # doctest: +SKIP
    >>> Guardrail.from_pretrained("/tmp/g")(["How do I kill a process?"])  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, cast

from ..guardrails.columns import DataInfo, data_method, normalize_dataset
from ..guardrails.spec import GuardrailSpec
from ..policy.data import require_two_classes
from .args import GuardrailTrainingArguments
from .calibrate import validation_report
from .lora import build_model, count_parameters, lora_config, merge_adapter_folder
from .rows import classifier_rows, prompt_completion_rows, split_validation, truncated_count

if TYPE_CHECKING:
    from datasets import Dataset

logger = logging.getLogger(__name__)
RESULTS_FILE = "train_results.json"


@dataclass
class TrainResult:
    """What :func:`train_guardrail` returns (also written to ``train_results.json``)."""

    output_dir: str
    global_step: int
    train_runtime: float
    eval_metrics: dict[str, Any] = field(default_factory=dict)
    log_history: list[dict[str, Any]] = field(default_factory=list)
    trainable_parameters: int = 0
    total_parameters: int = 0
    train_rows: int = 0
    eval_rows: int = 0
    truncated_train_rows: int = 0
    threshold: float = 0.5
    threshold_source: str = "fixed"


@dataclass
class Prepared:
    """Normalised data: the training rows, the validation rows (or None), and what was found."""

    train: Dataset
    eval: Optional[Dataset]
    info: DataInfo
    fmt: str
    split_note: str
    source_columns: list[str] = field(default_factory=list)


def prepare_data(
    args: GuardrailTrainingArguments, train_dataset: Dataset, eval_dataset: Optional[Dataset] = None
) -> Prepared:
    """Normalise both sets; hold out a stratified validation split when none is given and each class
    can spare ``MIN_VALIDATION_PER_CLASS`` rows."""
    mapping = args.columns()
    train, info = normalize_dataset(train_dataset, mapping)
    if eval_dataset is not None:
        val, _ = normalize_dataset(eval_dataset, mapping, label_names=info.label_names)
        note = f"{len(val)} validation rows given"
    else:
        train, val, note = split_validation(train, args.validation_size, args.seed)
    fmt = args.resolved_prompt_format(has_taxonomy_column=info.columns.get("taxonomy") is not None)
    if args.model_kind == "classifier" and fmt == "policy":
        raise ValueError(
            "A classifier guardrail predicts one binary label; the policy (taxonomy -> categories) "
            "format needs model_kind='generative'. Fix: pass --model_kind generative."
        )
    return Prepared(train, val, info, fmt, note, list(train_dataset.column_names))


def _trainer_args(args: GuardrailTrainingArguments, has_eval: bool, quiet: bool = False) -> GuardrailTrainingArguments:
    """The arguments the trainer sees: no Hub pushes of its own (the finished guardrail folder is pushed
    instead), no evaluation without a validation split, and no progress bar when ``quiet``."""
    changes: dict[str, Any] = {"push_to_hub": False}
    if quiet:
        changes["disable_tqdm"] = True
    if not has_eval:
        changes["eval_strategy"] = "no"
    if args.model_kind == "generative":
        changes["completion_only_loss"] = True
    else:  # a per-row mean loss: scaling it by the process count (meant for token sums) would double eval_loss
        changes["average_tokens_across_devices"] = False
    return dataclasses.replace(args, **changes)


def classifier_metrics(eval_prediction: Any) -> dict[str, float]:
    """``compute_metrics`` of the classifier Trainer: accuracy and P/R/F1 at 0.5 (calibration comes later)."""
    import numpy as np

    from ..evaluation.metrics.guardrail_metrics import binary_metrics

    logits = np.asarray(eval_prediction.predictions, dtype=float)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    scores = probs[:, 1] / probs.sum(-1)
    metrics = binary_metrics((scores >= 0.5).astype(int).tolist(), np.asarray(eval_prediction.label_ids).tolist())
    return {k: metrics[k] for k in ("accuracy", "precision", "recall", "f1")}


def _epoch_lines() -> Any:
    """A ``TrainerCallback`` that logs one line per finished epoch (on the main process) to this module's
    logger: what a quiet run shows instead of the Trainer's bar and logged dicts."""
    from transformers import TrainerCallback

    class EpochLines(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.started = time.perf_counter()

        def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero:
                losses = [entry["loss"] for entry in state.log_history if "loss" in entry]
                loss = f", loss {losses[-1]:.4f}" if losses else ""
                epochs = f"/{args.num_train_epochs:g}" if args.max_steps <= 0 else ""
                logger.info(
                    "epoch %.0f%s: step %d/%d%s (%.0f s)",
                    state.epoch,
                    epochs,
                    state.global_step,
                    state.max_steps,
                    loss,
                    time.perf_counter() - self.started,
                )

    return EpochLines()


def build_trainer(
    args: GuardrailTrainingArguments, data: Prepared, callbacks: Sequence[Any] = (), quiet: bool = False
) -> Any:
    """The ``Trainer`` (classifier) or ``SFTTrainer`` (generative) for prepared data, not yet trained.

    ``quiet``: no progress bar and no printed dict of logged metrics (the Trainer's ``disable_tqdm``, and
    without the ``PrinterCallback`` it adds instead); the logs still go to ``log_history`` and
    ``report_to``, and one line per epoch to this module's logger."""
    trainer = _build_trainer(args, data, list(callbacks) + ([_epoch_lines()] if quiet else []), quiet)
    if quiet:
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    return trainer


def _build_trainer(args: GuardrailTrainingArguments, data: Prepared, callbacks: Sequence[Any], quiet: bool) -> Any:
    from transformers import set_seed

    targs = _trainer_args(args, data.eval is not None and len(data.eval) > 0, quiet)
    max_length = cast(int, args.max_length)  # GuardrailTrainingArguments.__post_init__ rejects None
    set_seed(args.seed)  # before the model is built: the LoRA and head initialisation depend on it
    if args.model_kind == "classifier":
        from transformers import DataCollatorWithPadding, Trainer

        model, tokenizer = build_model(args, data.info.label_names)
        pair_rule = args.pair_rule if args.pair_rule is not None else len(data.info.rules) > 1
        with args.main_process_first(desc="tokenising"):
            train_rows = classifier_rows(data.train, tokenizer, pair_rule, max_length)
            eval_rows = classifier_rows(data.eval, tokenizer, pair_rule, max_length) if data.eval else None
        return Trainer(
            model=model,
            args=targs,
            train_dataset=train_rows,
            eval_dataset=eval_rows,
            data_collator=DataCollatorWithPadding(tokenizer),
            processing_class=tokenizer,
            compute_metrics=classifier_metrics,
            callbacks=list(callbacks),
        )
    from trl import SFTTrainer

    model, tokenizer = build_model(args, data.info.label_names, wrap_lora=False)
    with args.main_process_first(desc="prompt/completion rows"):
        train_rows = prompt_completion_rows(data.train, tokenizer, data.fmt, max_length)
        eval_rows = prompt_completion_rows(data.eval, tokenizer, data.fmt, max_length) if data.eval else None
    drop = lambda rows: rows.remove_columns("truncated") if rows is not None else None  # noqa: E731
    trainer: Any = SFTTrainer(  # Any: it gets the extra attribute truncated_rows below
        model=model,
        args=targs,
        train_dataset=drop(train_rows),
        eval_dataset=drop(eval_rows),
        processing_class=tokenizer,
        peft_config=lora_config(args) if args.use_lora else None,
        callbacks=list(callbacks),
    )
    trainer.truncated_rows = sum(train_rows["truncated"])
    return trainer


def resolve_checkpoint(args: GuardrailTrainingArguments) -> Optional[str]:
    """``resume_from_checkpoint`` as a folder: ``latest`` is the newest ``checkpoint-N`` in ``output_dir``
    (None when there is none yet: a fresh start)."""
    wanted = args.resume_from_checkpoint
    if not wanted:
        return None
    if wanted in ("latest", "True", "true"):
        from transformers.trainer_utils import get_last_checkpoint

        return get_last_checkpoint(args.output_dir) if Path(args.output_dir).is_dir() else None
    if not (Path(wanted) / "trainer_state.json").is_file():
        raise FileNotFoundError(
            f"resume_from_checkpoint: expected a checkpoint folder with trainer_state.json, found {wanted}. "
            "Fix: pass a checkpoint-N folder of an earlier run (made with --save_strategy steps|epoch), or 'latest'."
        )
    return wanted


def train_guardrail(
    args: GuardrailTrainingArguments,
    train_dataset: Dataset,
    eval_dataset: Optional[Dataset] = None,
    callbacks: Sequence[Any] = (),
    quiet: bool = False,
) -> TrainResult:
    """Train a guardrail and save it (weights or adapter, tokenizer, ``guardrail_config.json``) to
    ``args.output_dir``. ``callbacks``: ``transformers.TrainerCallback`` objects; ``quiet``: no progress
    bar and no printed metrics (:func:`build_trainer`). See the module docstring."""
    started = time.perf_counter()
    with args.main_process_first(desc="normalising"):
        data = prepare_data(args, train_dataset, eval_dataset)
    # one class only: a model trained on it flags everything or nothing, and its card would not say so
    require_two_classes(
        list(data.train["label"]) + (list(data.eval["label"]) if data.eval is not None else []),
        data.info.label_names,
        source="the training set",
    )
    logger.info(
        "Training a %s guardrail (%s) on %d rows; %s.", args.model_kind, data.fmt, len(data.train), data.split_note
    )
    trainer = build_trainer(args, data, callbacks, quiet=quiet)
    truncated = getattr(trainer, "truncated_rows", None)
    if truncated is None:
        truncated = truncated_count(trainer.train_dataset, cast(int, args.max_length))  # None is rejected
    trainer.train(resume_from_checkpoint=resolve_checkpoint(args))
    eval_metrics = trainer.evaluate() if trainer.eval_dataset is not None else {}
    trainable, total = count_parameters(trainer.model)
    spec = _spec(args, data, trainer, truncated)
    calibrated = validation_report(trainer.model, trainer.processing_class, spec, data.eval, args)
    spec.threshold, spec.threshold_source = calibrated["threshold"], calibrated["source"]
    noise = ("runtime", "per_second", "epoch", "num_tokens")
    eval_metrics = {k: v for k, v in eval_metrics.items() if isinstance(v, (int, float)) and not k.endswith(noise)}
    eval_metrics |= {f"eval_{k}": v for k, v in calibrated["metrics"].items()}
    spec.training["eval_metrics"] = eval_metrics
    save_guardrail(trainer, spec, args)
    result = TrainResult(
        str(args.output_dir),
        trainer.state.global_step,
        round(time.perf_counter() - started, 3),
        eval_metrics,
        list(trainer.state.log_history),
        trainable,
        total,
        len(data.train),
        len(data.eval) if data.eval is not None else 0,
        truncated,
        spec.threshold,
        spec.threshold_source,
    )
    if trainer.is_world_process_zero():
        (Path(args.output_dir) / RESULTS_FILE).write_text(json.dumps(dataclasses.asdict(result), indent=2, default=str))
    return result


def _spec(args: GuardrailTrainingArguments, data: Prepared, trainer: Any, truncated: int) -> GuardrailSpec:
    rules = data.info.rules
    taxonomies = set(data.train["taxonomy"]) - {None}
    pair_rule = args.pair_rule if args.pair_rule is not None else len(rules) > 1
    return GuardrailSpec(
        kind=args.model_kind,
        prompt_format=data.fmt,
        base_model=args.base_model,
        rule=args.rule or (rules[0] if len(rules) == 1 else None),
        taxonomy=args.taxonomy or (taxonomies.pop() if len(taxonomies) == 1 else None),
        label_names=data.info.label_names,
        threshold=args.threshold,
        pair_rule=pair_rule and args.model_kind == "classifier",
        max_length=cast(int, args.max_length),  # GuardrailTrainingArguments.__post_init__ rejects None
        long_inputs=args.long_inputs,
        chunk_stride=args.chunk_stride,
        adapter=args.use_lora and (not args.merge_adapter if args.model_kind == "generative" else args.keep_adapter),
        training={
            "config": args.guardrail_dict(),
            "train_rows": len(data.train),
            "eval_rows": len(data.eval) if data.eval is not None else 0,
            "validation": data.split_note,
            "columns": data.info.columns,
            "global_step": trainer.state.global_step,
            "truncated_train_rows": truncated,
            "processes": trainer.args.world_size,
            "data_method": data_method(data.source_columns),
        },
    )


def save_guardrail(trainer: Any, spec: GuardrailSpec, args: GuardrailTrainingArguments) -> None:
    """Write the final model: a LoRA adapter (generative), or full weights (classifiers are merged so
    the folder loads with ``transformers.pipeline``), plus tokenizer and ``guardrail_config.json``.
    Saving goes through ``trainer.save_model``, which gathers sharded (DeepSpeed/FSDP) weights."""
    output_dir = Path(args.output_dir)
    merge = args.use_lora and not spec.adapter
    target = output_dir / "adapter.tmp" if merge else output_dir
    had_card = (output_dir / "README.md").exists()
    trainer.save_model(str(target))
    if trainer.is_world_process_zero():
        if not had_card:  # trl's generic card; `barred train` writes the guardrail's own (hf_barred.hub.model_card)
            (output_dir / "README.md").unlink(missing_ok=True)
        if merge:
            merge_adapter_folder(target, output_dir, args.model_kind, args.base_model, spec.label_names)
            shutil.rmtree(target, ignore_errors=True)
        trainer.processing_class.save_pretrained(str(output_dir))
        spec.save(output_dir)
    trainer.accelerator.wait_for_everyone()
