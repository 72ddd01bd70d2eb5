"""hf_barred: turn a written policy into a small, fast guardrail model, without labelled data.

BARRED (boundary-case generation validated by debate) and APT (policy perturbations) on the
Hugging Face stack: every stage is a ``Dataset.map`` transform, every artefact goes to the Hub
with a generated card. Heavy modules (recipes, training, inference) load on first use, so
``import hf_barred`` stays light.

The stages (``Dataset -> Dataset`` transforms) and their configs, the recipes, training and
inference are exported here and load on first use; ``dir(hf_barred)`` and type checkers (through
the ``TYPE_CHECKING`` imports below) see them all.

Example:
    >>> import hf_barred
    >>> {"debate", "DebateConfig", "category_delete", "run_barred"} <= set(dir(hf_barred))
    True
    >>> task = hf_barred.GuardrailTask(criterion="The agent's response contains health advice.")
    >>> task.labels
    ('False', 'True')
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from .llm import EngineConfig, SamplingParams, get_engine
from .policy.task import GuardrailTask, Seed
from .policy.taxonomy import Category, Taxonomy

if TYPE_CHECKING:  # what the lazy names below resolve to, for IDEs and type checkers
    from .guardrails import Guardrail
    from .hub import push_barred_run, push_dataset
    from .policy.rows import load_policy_rows, policy_rows
    from .recipes.apt import AugmentConfig, augment
    from .recipes.barred import BarredConfig, run_barred
    from .stages.category_delete import CategoryDeleteConfig, category_delete
    from .stages.category_shuffle import CategoryShuffleConfig, category_shuffle
    from .stages.debate import DebateConfig, debate
    from .stages.decompose import DecomposeConfig, extract_dimensions, task_dataset
    from .stages.generate import GenerateConfig, generate
    from .stages.guideline_edit import GuidelineEditConfig, guideline_edit
    from .stages.instantiate import InstantiateConfig, instantiate
    from .stages.plan import PlanConfig, plan
    from .stages.refine import RefineConfig, refine
    from .train import GuardrailConfig, GuardrailTrainingArguments, train_guardrail

_LAZY = {
    # recipes
    "BarredConfig": "recipes.barred",
    "run_barred": "recipes.barred",
    "AugmentConfig": "recipes.apt",
    "augment": "recipes.apt",
    # stages and their configs (BARRED, then APT)
    "task_dataset": "stages.decompose",
    "DecomposeConfig": "stages.decompose",
    "extract_dimensions": "stages.decompose",
    "InstantiateConfig": "stages.instantiate",
    "instantiate": "stages.instantiate",
    "PlanConfig": "stages.plan",
    "plan": "stages.plan",
    "GenerateConfig": "stages.generate",
    "generate": "stages.generate",
    "DebateConfig": "stages.debate",
    "debate": "stages.debate",
    "RefineConfig": "stages.refine",
    "refine": "stages.refine",
    "CategoryDeleteConfig": "stages.category_delete",
    "category_delete": "stages.category_delete",
    "CategoryShuffleConfig": "stages.category_shuffle",
    "category_shuffle": "stages.category_shuffle",
    "GuidelineEditConfig": "stages.guideline_edit",
    "guideline_edit": "stages.guideline_edit",
    # policy-conditioned rows
    "policy_rows": "policy.rows",
    "load_policy_rows": "policy.rows",
    # training, inference, the Hub
    "Guardrail": "guardrails",
    "GuardrailConfig": "train",
    "GuardrailTrainingArguments": "train",
    "train_guardrail": "train",
    "push_dataset": "hub",
    "push_barred_run": "hub",
}

__all__ = [  # every name of _LAZY too, written out so that tools see the public API
    "Category",
    "EngineConfig",
    "GuardrailTask",
    "SamplingParams",
    "Seed",
    "Taxonomy",
    "__version__",
    "get_engine",
    "BarredConfig",
    "run_barred",
    "AugmentConfig",
    "augment",
    "task_dataset",
    "DecomposeConfig",
    "extract_dimensions",
    "InstantiateConfig",
    "instantiate",
    "PlanConfig",
    "plan",
    "GenerateConfig",
    "generate",
    "DebateConfig",
    "debate",
    "RefineConfig",
    "refine",
    "CategoryDeleteConfig",
    "category_delete",
    "CategoryShuffleConfig",
    "category_shuffle",
    "GuidelineEditConfig",
    "guideline_edit",
    "policy_rows",
    "load_policy_rows",
    "Guardrail",
    "GuardrailConfig",
    "GuardrailTrainingArguments",
    "train_guardrail",
    "push_dataset",
    "push_barred_run",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # resolved once
        return value
    raise AttributeError(f"module 'hf_barred' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
