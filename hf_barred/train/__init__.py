"""Training guardrail models: :class:`GuardrailConfig` and :func:`train_guardrail`.

Example:
    >>> from hf_barred.train import GuardrailConfig
    >>> GuardrailConfig(model_kind="generative", rule="The agent gives health advice.").lora_r
    16
"""

from __future__ import annotations

from typing import Any

from .config import GuardrailConfig
from .spec import GuardrailSpec

__all__ = ["GuardrailConfig", "GuardrailSpec", "TrainResult", "train_guardrail"]


def __getattr__(name: str) -> Any:  # the trainer imports torch: load it on first use
    if name in ("train_guardrail", "TrainResult"):
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(name)
