"""A streaming run's finished rows: each debate of each row, with what it became, in parquet shards.

A row's :data:`Trajectory` is its debates in order (one per refinement level), each a :class:`Step`: the
debated row, its outcome (:func:`~.rule_run.disposition`) and the usage of the step before it and of the
debate. :class:`Shards` writes finished trajectories to ``shard-NNNNN.parquet`` files (to a temporary name,
then renamed: a killed run leaves whole shards only) and reads them back on a rerun.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from datasets import Features, Value
    >>> from hf_barred.recipes.barred.shards import Shards, Step, shard_features
    >>> features = shard_features(Features({"row_id": Value("int64"), "refinements": Value("int32")}))
    >>> shards = Shards(Path(tempfile.mkdtemp()), features)
    >>> usage = {"calls": 1, "prompt_tokens": 5, "completion_tokens": 2}
    >>> shards.add([Step({"row_id": 7, "refinements": 0}, "accepted", usage, usage)])
    >>> shards.flush()
    >>> [step.outcome for step in shards.load()[7]]
    ['accepted']
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset, Features, Value
from datasets.table import InMemoryTable

from ...stages.features import USAGE

__all__ = ["SHARD_ROWS", "SHARD_SECONDS", "UNFINISHED", "Shards", "Step", "Trajectory", "shard_features"]

UNFINISHED = ("budget", "request_failure")
"""Outcomes a row is not saved with: a budget stop or a request that got no answer is not the row's end, and a
rerun (with more budget, with the endpoint back) takes it further."""
SHARD_SECONDS = 5.0
"""Finished rows are written to a parquet shard at least this often (and at the end of every round)."""
SHARD_ROWS = 256
"""... or as soon as this many wait to be written."""


@dataclass
class Step:
    """One debate of a row's chain: the debated row, what it became, and the usage of the step before it
    (generate or refine) and of the debate itself."""

    judged: dict[str, Any]
    outcome: str
    step_usage: dict[str, int]
    debate_usage: dict[str, int]


Trajectory = list[Step]


def shard_features(debated: Features) -> Features:
    """The columns of a shard: the debated row's, plus its outcome, refinement level and the usage of its steps."""
    return Features(
        dict(debated)
        | {"outcome": Value("string"), "level": Value("int32"), "step_usage": USAGE, "debate_usage": USAGE}
    )


class Shards:
    """Finished rows of one rule as parquet shards in ``folder``: each debate of each finished row, with its
    outcome, refinement level and usage. Written to a temporary name, then renamed: a killed run leaves whole
    shards only."""

    def __init__(self, folder: Path, features: Features):
        self.folder = folder
        self.features = features
        self.pending: list[dict[str, Any]] = []
        self.last_write = time.monotonic()

    def load(self) -> dict[int, Trajectory]:
        """The finished rows of earlier runs, by ``row_id``."""
        found: dict[int, Trajectory] = {}
        levels: dict[int, list[int]] = {}
        for path in sorted(self.folder.glob("shard-*.parquet")):
            for record in Dataset(InMemoryTable(pq.read_table(path))):
                found.setdefault(record["row_id"], []).append(_step_of(record))
                levels.setdefault(record["row_id"], []).append(record["level"])
        return {i: [s for _, s in sorted(zip(levels[i], steps), key=lambda p: p[0])] for i, steps in found.items()}

    def add(self, trajectory: Trajectory) -> None:
        for level, step in enumerate(trajectory):
            self.pending.append(
                step.judged
                | {
                    "outcome": step.outcome,
                    "level": level,
                    "step_usage": step.step_usage,
                    "debate_usage": step.debate_usage,
                }
            )
        if len(self.pending) >= SHARD_ROWS:
            self.flush()

    def flush_if_due(self) -> None:
        if self.pending and time.monotonic() - self.last_write >= SHARD_SECONDS:
            self.flush()

    def flush(self) -> None:
        self.last_write = time.monotonic()
        if not self.pending:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        index = len(list(self.folder.glob("shard-*.parquet")))
        path = self.folder / f"shard-{index:05d}.parquet"
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        rows = [self.features.encode_example(row) for row in self.pending]
        pq.write_table(pa.Table.from_pylist(rows, schema=self.features.arrow_schema), tmp)  # with the features
        os.replace(tmp, path)
        self.pending = []


def _step_of(record: dict[str, Any]) -> Step:
    extra = ("outcome", "level", "step_usage", "debate_usage")
    judged = {key: value for key, value in record.items() if key not in extra}
    return Step(judged, record["outcome"], record["step_usage"], record["debate_usage"])
