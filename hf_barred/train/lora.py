"""Training models: the base model to train, its LoRA config, merging a saved adapter.

Loading for inference and ``"embedded"`` resolution live in :mod:`hf_barred.guardrails.loading`.

Example:
    >>> from hf_barred.train.args import GuardrailTrainingArguments
    >>> from hf_barred.train.lora import lora_config
    >>> lora_config(GuardrailTrainingArguments(lora_r=8)).r
    8
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from ..guardrails.loading import load_tokenizer, resolve_base_model, torch_dtype

if TYPE_CHECKING:
    import torch

    from .args import GuardrailTrainingArguments


def lora_config(config: GuardrailTrainingArguments) -> Any:
    """The peft ``LoraConfig`` for the config's model kind (the classifier head is trained in full,
    through ``modules_to_save``, which peft adds for ``SEQ_CLS``)."""
    from peft import LoraConfig, TaskType

    return LoraConfig(
        task_type=TaskType.SEQ_CLS if config.model_kind == "classifier" else TaskType.CAUSAL_LM,
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules or "all-linear",
    )


def build_model(config: GuardrailTrainingArguments, label_names: list[str], wrap_lora: bool = True) -> tuple[Any, Any]:
    """``(model, tokenizer)`` ready to train: the base model, wrapped in LoRA when ``use_lora`` and
    ``wrap_lora`` (SFTTrainer wraps it itself from ``peft_config``)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    path = resolve_base_model(config.base_model, config.model_kind)
    tokenizer = load_tokenizer(path, config.model_kind)
    dtype = torch_dtype(config.model_dtype)
    if config.model_kind == "classifier":
        model = AutoModelForSequenceClassification.from_pretrained(
            path,
            num_labels=2,
            id2label=dict(enumerate(label_names)),
            label2id={name: i for i, name in enumerate(label_names)},
            dtype=dtype,
        )
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if config.use_lora and wrap_lora:
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(config))
    return model, tokenizer


def merge_adapter_folder(
    adapter_dir: str | Path, out_dir: str | Path, kind: str, base_model: str, label_names: Optional[list[str]] = None
) -> None:
    """Load base + adapter on the CPU, merge the LoRA weights and save a plain transformers model.

    Works the same after any distributed run (DDP, DeepSpeed, FSDP), since it starts from the saved
    adapter rather than the sharded training model.
    """
    from transformers.utils import logging as hf_logging

    path = resolve_base_model(base_model, kind)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the base's head is "newly initialised" here; the adapter replaces it
    try:
        merged = _load_and_merge(path, adapter_dir, kind, label_names)
    finally:
        hf_logging.set_verbosity(verbosity)
    merged.save_pretrained(str(out_dir))


def _load_and_merge(path: str, adapter_dir: str | Path, kind: str, label_names: Optional[list[str]]) -> Any:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if kind == "classifier":
        names = label_names or ["0", "1"]
        base = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=2, id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)}
        )
    else:
        base = AutoModelForCausalLM.from_pretrained(path)
    return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
