"""hf_barred: turn a written policy into a small, fast guardrail model, without labelled data.

BARRED (boundary-case generation validated by debate) and APT (policy perturbations) on the
Hugging Face stack: every stage is a ``Dataset.map`` transform, every artefact goes to the Hub
with a generated card. Heavy modules (pipeline, training, inference) load on first use, so
``import hf_barred`` stays light.

Example:
    >>> import hf_barred
    >>> task = hf_barred.GuardrailTask(criterion="The agent's response contains health advice.")
    >>> task.labels
    ('False', 'True')
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from .llm import EngineConfig, SamplingParams, get_engine
from .task import GuardrailTask, Seed
from .taxonomy import Category, Taxonomy

_LAZY = {
    "BarredConfig": "pipeline",
    "run_barred": "pipeline",
    "AugmentConfig": "apt",
    "augment": "apt",
    "load_policy_rows": "apt",
    "Guardrail": "guardrail",
    "GuardrailConfig": "train", "GuardrailTrainingArguments": "train",
    "train_guardrail": "train",
    "push_dataset": "hub",
    "push_barred_run": "hub",
}

__all__ = [
    "Category", "EngineConfig", "GuardrailTask", "SamplingParams", "Seed", "Taxonomy", "__version__", "get_engine",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'hf_barred' has no attribute {name!r}")
