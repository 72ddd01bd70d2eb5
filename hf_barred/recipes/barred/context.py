"""What every rule of a BARRED run shares: the config, the failure guard, the live view, the resume store.

Example:
    >>> from hf_barred.recipes.barred.context import map_arguments
    >>> from hf_barred.recipes.barred.config import BarredConfig
    >>> map_arguments(BarredConfig(batch_size=32))
    {'batch_size': 32, 'load_from_cache_file': False}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset

from ...progress import RunView
from ...stages.base import Stage
from .config import BarredConfig
from .failures import FailureGuard
from .store import saved_or_run

__all__ = ["RunContext", "map_arguments"]


def map_arguments(config: BarredConfig) -> dict[str, Any]:
    """The ``Dataset.map`` arguments of a stage-by-stage run."""
    # The resume store (not datasets' map cache) decides what is reused: a stage stopped by failed
    # requests must be recomputed on the rerun, not read back from the map cache it left behind.
    kwargs: dict[str, Any] = {"batch_size": config.batch_size, "load_from_cache_file": False}
    if any(engine.batch for engine in config.engines()):
        kwargs["batch_size"] = None  # provider batch mode: a whole stage step in one job
    if config.num_proc:
        kwargs["num_proc"] = config.num_proc
    return kwargs


@dataclass
class RunContext:
    """The run's shared machinery: ``guard`` stops a stage whose requests fail or whose answers are unusable,
    ``view`` draws the progress, ``reused`` lists the saved stage outputs the run read back."""

    config: BarredConfig
    guard: FailureGuard
    view: RunView
    reused: list[str] = field(default_factory=list)

    def run_stage(self, folder: Path, stage: Stage, ds: Dataset, what: str) -> Dataset:
        """The stage's saved output in ``folder`` when its fingerprint matches, else ``stage(ds)`` (saved there),
        stopped by the failure guard when its requests failed or its answers were unusable, mostly."""
        subsets = self.config.decompose.num_subsets
        kwargs = map_arguments(self.config)
        return saved_or_run(
            folder,
            stage.fingerprint(ds),
            lambda: self.guard.run(what, lambda: stage(ds, **kwargs), subsets=subsets),
            self.reused,
        )
