"""The training loop: Accelerate + peft LoRA, for classifier and generative guardrails.

The same code runs on a CPU, one GPU, and under ``accelerate launch`` (multi-GPU DDP, DeepSpeed,
FSDP): Accelerate prepares the model, optimizer, dataloaders and scheduler, accumulates gradients,
and saves/loads checkpoints (``accelerator.save_state``). A resumed run continues the same run:
weights, optimizer, scheduler, RNG states and the position inside the epoch
(``accelerator.skip_first_batches``) are restored, so it ends with the weights an uninterrupted run
would have.

Example:
    >>> from datasets import Dataset
    >>> from hf_barred.train import GuardrailConfig, train_guardrail
    >>> ds = Dataset.from_dict({"text": ["How do I kill a process?", "How do I kill my neighbour?"] * 8,
    ...                         "label": ["safe", "unsafe"] * 8})
    >>> cfg = GuardrailConfig(rule="The request asks for help with violence.", output_dir="/tmp/g",
    ...                       num_train_epochs=1)
    >>> result = train_guardrail(cfg, ds)  # doctest: +SKIP
    >>> from hf_barred import Guardrail  # doctest: +SKIP
    >>> Guardrail.from_pretrained("/tmp/g")(["How do I kill a process?"])  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from ..metrics.guardrail_metrics import binary_metrics
from .config import GuardrailConfig
from .data import (
    IGNORE_INDEX, CausalCollator, DataInfo, PromptEncoder, classifier_collator, data_method, normalize_dataset,
    tokenize_classifier, tokenize_generative,
)
from .modeling import build_model, count_parameters, merge_adapter_folder
from .spec import GuardrailSpec

if TYPE_CHECKING:
    from datasets import Dataset

logger = logging.getLogger(__name__)
STATE_FILE = "trainer_state.json"
RESULTS_FILE = "train_results.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class TrainResult:
    """What :func:`train_guardrail` returns (also written to ``train_results.json``)."""

    output_dir: str
    global_step: int
    train_runtime: float
    eval_metrics: dict[str, float] = field(default_factory=dict)
    log_history: list[dict[str, Any]] = field(default_factory=list)
    trainable_parameters: int = 0
    total_parameters: int = 0


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """``checkpoint-N`` folders of a run, oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))]
    return [p for _, p in sorted(found)]


def _resolve_checkpoint(config: GuardrailConfig) -> Optional[Path]:
    if not config.resume_from_checkpoint:
        return None
    if config.resume_from_checkpoint == "latest":
        found = list_checkpoints(config.output_dir)
        return found[-1] if found else None
    path = Path(config.resume_from_checkpoint)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(
            f"resume_from_checkpoint: expected a checkpoint folder with {STATE_FILE}, found {path}. "
            f"Fix: pass a checkpoint-N folder of an earlier run, or 'latest'."
        )
    return path


def _split(ds: "Dataset", config: GuardrailConfig) -> tuple["Dataset", Optional["Dataset"]]:
    if config.validation_size <= 0 or len(ds) < 10:
        return ds, None
    parts = ds.train_test_split(test_size=config.validation_size, seed=config.seed)
    return parts["train"], parts["test"]


def prepare_datasets(config: GuardrailConfig, train_dataset: "Dataset", eval_dataset: Optional["Dataset"]):
    """Normalise (and split off a validation set when none is given)."""
    train_norm, info = normalize_dataset(train_dataset, config)
    eval_norm = None
    if eval_dataset is not None:
        eval_norm, _ = normalize_dataset(eval_dataset, config, label_names=info.label_names)
    else:
        train_norm, eval_norm = _split(train_norm, config)
    return train_norm, eval_norm, info


def _decision_scores(logits: Any, labels: Any, decision: Any) -> tuple[Any, Any]:
    """Generative rows: P(positive answer token) at the decision position, and the gold label."""
    import torch

    rows = torch.arange(labels.shape[0], device=labels.device)
    first = (labels != IGNORE_INDEX).int().argmax(dim=1)
    at = first + len(decision.prefix)
    pair = logits[rows, at - 1][:, [decision.positive, decision.negative]].float()
    gold = (labels[rows, at] == decision.positive).long()
    return pair.softmax(-1)[:, 0], gold


def evaluate_model(accelerator: Any, model: Any, dataloader: Any, kind: str, decision: Any,
                   threshold: float) -> dict[str, float]:
    """Loss, accuracy and binary P/R/F1 on ``dataloader`` (all processes; gathered)."""
    import torch

    model.eval()
    losses, scores, golds = [], [], []
    with torch.no_grad():
        for batch in dataloader:
            out = model(**batch)
            if kind == "classifier":
                score, gold = out.logits.float().softmax(-1)[:, 1], batch["labels"]
            else:
                score, gold = _decision_scores(out.logits, batch["labels"], decision)
            n = batch["labels"].shape[0]
            loss = out.loss.detach().float().repeat(n)
            loss, score, gold = accelerator.gather_for_metrics((loss, score, gold))
            losses.append(loss.cpu())
            scores.append(score.cpu())
            golds.append(gold.cpu())
    model.train()
    if not scores:
        return {}
    score = torch.cat(scores)
    preds = (score >= threshold).long().tolist()
    metrics = binary_metrics(preds, torch.cat(golds).tolist())
    keep = ("accuracy", "precision", "recall", "f1")
    return {"eval_loss": float(torch.cat(losses).mean())} | {f"eval_{k}": metrics[k] for k in keep}


def train_guardrail(config: GuardrailConfig, train_dataset: "Dataset",
                    eval_dataset: Optional["Dataset"] = None) -> TrainResult:
    """Train a guardrail and save it (weights or adapter, tokenizer, ``guardrail_config.json``)
    to ``config.output_dir``. See the module docstring for an example."""
    import torch
    from accelerate import Accelerator, DataLoaderConfiguration
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    started = time.perf_counter()
    output_dir = Path(config.output_dir)
    accelerator = Accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        mixed_precision=config.resolved_mixed_precision(),
        log_with=None if config.report_to == "none" else config.report_to,
        project_dir=str(output_dir),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config.seed),
    )
    set_seed(config.seed)
    with accelerator.main_process_first():
        train_norm, eval_norm, info = prepare_datasets(config, train_dataset, eval_dataset)
    fmt = config.resolved_prompt_format(has_taxonomy_column=info.columns.get("taxonomy") is not None)
    if config.model_kind == "classifier" and fmt == "policy":
        raise ValueError("A classifier guardrail predicts one binary label; the policy (taxonomy -> categories) "
                         "format needs model_kind='generative'. Fix: pass --model_kind generative.")
    pair_rule = config.pair_rule if config.pair_rule is not None else len(info.rules) > 1
    model, tokenizer = build_model(config, info.label_names)
    trainable, total = count_parameters(model)

    with accelerator.main_process_first():
        if config.model_kind == "classifier":
            tok = lambda ds: tokenize_classifier(ds, tokenizer, pair_rule, config.max_length)  # noqa: E731
            collate = classifier_collator(tokenizer)
            decision = None
        else:
            tok = lambda ds: tokenize_generative(ds, tokenizer, fmt, config.max_length)  # noqa: E731
            collate = CausalCollator(tokenizer.pad_token_id)
            decision = PromptEncoder(tokenizer, config.max_length).decision_tokens(fmt)
        train_tok = tok(train_norm)
        eval_tok = tok(eval_norm) if eval_norm is not None and len(eval_norm) else None

    # Own generators: creating a loader's iterator then draws no number from the global RNG, so the
    # dropout RNG of a resumed run (restored by load_state) matches the uninterrupted run.
    seeded = lambda: torch.Generator().manual_seed(config.seed)  # noqa: E731
    train_dl = DataLoader(train_tok, batch_size=config.per_device_train_batch_size, shuffle=True, collate_fn=collate,
                          generator=seeded())
    eval_dl = (DataLoader(eval_tok, batch_size=config.per_device_eval_batch_size, collate_fn=collate,
                          generator=seeded()) if eval_tok is not None else None)
    batches_per_epoch = math.ceil(math.ceil(len(train_tok) / config.per_device_train_batch_size)
                                  / accelerator.num_processes)
    steps_per_epoch = math.ceil(batches_per_epoch / config.gradient_accumulation_steps)
    max_steps = config.max_steps if config.max_steps > 0 else steps_per_epoch * config.num_train_epochs
    epochs = math.ceil(max_steps / steps_per_epoch)

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=config.learning_rate, weight_decay=config.weight_decay)
    # The prepared scheduler steps once per process per optimizer step, hence the factor.
    scheduler = get_scheduler(config.lr_scheduler_type, optimizer,
                              num_warmup_steps=math.ceil(config.warmup_ratio * max_steps) * accelerator.num_processes,
                              num_training_steps=max_steps * accelerator.num_processes)
    prepared = accelerator.prepare(model, optimizer, train_dl, scheduler, *([eval_dl] if eval_dl else []))
    model, optimizer, train_dl, scheduler = prepared[:4]
    eval_dl = prepared[4] if eval_dl else None
    if config.report_to != "none":
        accelerator.init_trackers("hf_barred", config={k: str(v) for k, v in config.to_dict().items()})

    global_step, start_epoch, skip, log_history = 0, 0, 0, []
    checkpoint = _resolve_checkpoint(config)
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        state = json.loads((checkpoint / STATE_FILE).read_text())
        if state.get("run") != _jsonable(config.run_fingerprint()):
            logger.warning("%s was made with other training settings; continuing anyway.", checkpoint)
        global_step, start_epoch, skip = state["global_step"], state["epoch"], state["batches_in_epoch"]
        log_history = state.get("log_history", [])
        if accelerator.is_main_process:
            logger.info("Resuming from %s: step %d, epoch %d, batch %d.", checkpoint, global_step, start_epoch, skip)

    def save_checkpoint(epoch: int, batches_in_epoch: int) -> None:
        path = output_dir / f"checkpoint-{global_step}"
        accelerator.save_state(str(path))
        if accelerator.is_main_process:
            state = {"global_step": global_step, "epoch": epoch, "batches_in_epoch": batches_in_epoch,
                     "max_steps": max_steps, "log_history": log_history, "run": _jsonable(config.run_fingerprint())}
            (path / STATE_FILE).write_text(json.dumps(state, indent=2))
            old = list_checkpoints(output_dir)
            for stale in old[: max(0, len(old) - config.save_total_limit)] if config.save_total_limit else []:
                shutil.rmtree(stale, ignore_errors=True)
        accelerator.wait_for_everyone()

    def run_eval(epoch: float) -> dict[str, float]:
        if eval_dl is None:
            return {}
        metrics = evaluate_model(accelerator, model, eval_dl, config.model_kind, decision, config.threshold)
        log_history.append({"step": global_step, "epoch": round(epoch, 4)} | metrics)
        accelerator.log(metrics, step=global_step)
        return metrics

    if accelerator.is_main_process:
        logger.info("Training a %s guardrail (%s) on %d rows: %d steps, %s of %s parameters trainable.",
                    config.model_kind, fmt, len(train_tok), max_steps, f"{trainable:,}", f"{total:,}")
    progress = tqdm(total=max_steps, initial=global_step, disable=not accelerator.is_local_main_process,
                    desc="Training")
    model.train()
    running: list[float] = []
    eval_metrics: dict[str, float] = {}
    for epoch in range(start_epoch, epochs):
        if global_step >= max_steps:
            break
        train_dl.set_epoch(epoch)
        loader = accelerator.skip_first_batches(train_dl, skip) if skip else train_dl
        batches = skip
        skip = 0
        for batch in loader:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            batches += 1
            running.append(loss.detach().float())
            if not accelerator.sync_gradients:
                continue
            global_step += 1
            progress.update(1)
            if global_step % config.logging_steps == 0 or global_step == max_steps:
                mean_loss = accelerator.gather(torch.stack(running)).mean().item()
                entry = {"step": global_step, "epoch": round(epoch + batches / batches_per_epoch, 4),
                         "loss": round(mean_loss, 6), "learning_rate": scheduler.get_last_lr()[0]}
                log_history.append(entry)
                accelerator.log({"loss": mean_loss, "learning_rate": entry["learning_rate"]}, step=global_step)
                progress.set_postfix(loss=f"{mean_loss:.4f}")
            running = [] if global_step % config.logging_steps == 0 else running
            if config.eval_steps and global_step % config.eval_steps == 0:
                eval_metrics = run_eval(epoch + batches / batches_per_epoch)
            if config.save_steps > 0 and global_step % config.save_steps == 0:
                save_checkpoint(epoch, batches)
            if global_step >= max_steps:
                break
        epoch_done = batches >= batches_per_epoch
        if not config.eval_steps and epoch_done:
            eval_metrics = run_eval(epoch + 1)
        if config.save_steps == 0 and epoch_done and global_step < max_steps:
            save_checkpoint(epoch + 1, 0)
    progress.close()
    if config.eval_steps and (not log_history or log_history[-1].get("step") != global_step or
                              "eval_loss" not in log_history[-1]):
        eval_metrics = run_eval(epochs)

    spec = GuardrailSpec(
        kind=config.model_kind, prompt_format=fmt, base_model=config.base_model,
        rule=config.rule or (info.rules[0] if len(info.rules) == 1 else None),
        taxonomy=config.taxonomy or _single(train_norm["taxonomy"]), label_names=info.label_names,
        threshold=config.threshold, pair_rule=pair_rule, max_length=config.max_length,
        adapter=config.use_lora and config.model_kind == "generative" and not config.merge_adapter,
        training={"config": config.to_dict(), "train_rows": len(train_norm),
                  "eval_rows": len(eval_norm) if eval_norm is not None else 0, "columns": info.columns,
                  "eval_metrics": eval_metrics, "global_step": global_step,
                  "data_method": data_method(train_dataset.column_names)},
    )
    save_guardrail(accelerator, model, tokenizer, spec, config, info)
    result = TrainResult(str(output_dir), global_step, round(time.perf_counter() - started, 3), eval_metrics,
                         log_history, trainable, total)
    if accelerator.is_main_process:
        (output_dir / RESULTS_FILE).write_text(json.dumps(result.__dict__, indent=2, default=str))
    accelerator.end_training()
    return result


def save_guardrail(accelerator: Any, model: Any, tokenizer: Any, spec: GuardrailSpec, config: GuardrailConfig,
                   info: DataInfo) -> None:
    """Write the final model: a LoRA adapter (generative), or full weights (classifiers are merged so
    the folder loads with ``transformers.pipeline``), plus tokenizer and ``guardrail_config.json``."""
    output_dir = Path(config.output_dir)
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    state_dict = accelerator.get_state_dict(model)
    merge = config.use_lora and not spec.adapter
    target = output_dir / "adapter.tmp" if merge else output_dir
    unwrapped.save_pretrained(str(target), state_dict=state_dict, is_main_process=accelerator.is_main_process,
                              save_function=accelerator.save)
    if accelerator.is_main_process:
        if merge:
            merge_adapter_folder(target, output_dir, config.model_kind, config.base_model, info.label_names)
            shutil.rmtree(target, ignore_errors=True)
        tokenizer.save_pretrained(str(output_dir))
        spec.save(output_dir)
    accelerator.wait_for_everyone()


def _single(values: list[Optional[str]]) -> Optional[str]:
    distinct = set(values) - {None}
    return distinct.pop() if len(distinct) == 1 else None


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
