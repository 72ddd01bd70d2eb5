"""hf_barred: turn a written policy into a small, fast guardrail model, without labelled data.

BARRED (boundary-case generation validated by debate) and APT (policy perturbations) on the
Hugging Face stack: every stage is a ``Dataset.map`` transform, every artefact goes to the Hub
with a generated card.
"""

__version__ = "0.1.0"

from .llm import EngineConfig, SamplingParams, get_engine
from .task import GuardrailTask, Seed

__all__ = ["EngineConfig", "GuardrailTask", "SamplingParams", "Seed", "__version__", "get_engine"]
