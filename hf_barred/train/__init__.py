"""Training guardrail models: :class:`GuardrailTrainingArguments` and :func:`train_guardrail`.

Classifiers train on ``transformers.Trainer``, generative guardrails on ``trl.SFTTrainer`` (LoRA via
peft); both run unchanged under ``accelerate launch`` (several processes or GPUs, DeepSpeed, FSDP).

Example:
    >>> from hf_barred.train import GuardrailTrainingArguments
    >>> GuardrailTrainingArguments(model_kind="generative", rule="The agent gives health advice.").lora_r
    16
"""

from __future__ import annotations

from typing import Any

__all__ = ["GuardrailConfig", "GuardrailTrainingArguments", "TrainResult", "train_guardrail"]

_LAZY = {
    "GuardrailTrainingArguments": "args",
    "GuardrailConfig": "args",
    "train_guardrail": "trainer",
    "TrainResult": "trainer",
}


def __getattr__(name: str) -> Any:  # transformers and trl load on first use
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(name)


def __dir__() -> list[str]:
    return sorted(__all__)
