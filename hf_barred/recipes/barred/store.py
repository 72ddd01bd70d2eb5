"""The resume store: every stage output of a run saved with its fingerprint, reused when that matches.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from datasets import Dataset
    >>> from hf_barred.recipes.barred.store import saved_or_run
    >>> folder, reused = Path(tempfile.mkdtemp()) / "plan", []
    >>> ds = Dataset.from_dict({"x": [1]})   # a stage's output: its fingerprint is the one expected
    >>> first = saved_or_run(folder, ds._fingerprint, lambda: ds, reused)
    >>> again = saved_or_run(folder, ds._fingerprint, lambda: Dataset.from_dict({"x": [2]}), reused)
    >>> list(again["x"]), len(reused)
    ([1], 1)
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Optional

from datasets import Dataset, load_from_disk

__all__ = ["load_saved", "reuse_saved", "save_output", "saved_fingerprint", "saved_or_run"]


def saved_fingerprint(path: Path) -> Optional[str]:
    try:
        return json.loads((path / "state.json").read_text(encoding="utf-8")).get("_fingerprint")
    except (OSError, ValueError):
        return None


def load_saved(path: Path) -> Dataset:
    """``load_from_disk`` keeping the stage's fingerprint (``load_from_disk`` derives a new one from
    the files' modification times), so the fingerprints of later stages do not depend on when a
    folder was written."""
    ds = load_from_disk(str(path))
    fingerprint = saved_fingerprint(path)
    if fingerprint:
        ds._fingerprint = fingerprint
    return ds


def reuse_saved(path: Path, fingerprint: str, reused: list[str]) -> Optional[Dataset]:
    """The dataset saved at ``path`` when its fingerprint is ``fingerprint`` (added to ``reused``), else None."""
    if saved_fingerprint(path) == fingerprint:
        try:
            saved = load_saved(path)
            reused.append(str(path))
            return saved
        except (OSError, ValueError):
            pass
    return None


def save_output(path: Path, ds: Dataset) -> Dataset:
    """Save ``ds`` at ``path`` (written to a temporary folder of a unique name, then renamed, so a killed run
    leaves no half folder and two writers never share one) and return it as loaded from there."""
    for stale in path.parent.glob(f"{path.name}.tmp*"):  # left by a killed run (the output folder is locked)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    ds.save_to_disk(str(tmp))
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)
    return load_saved(path)


def saved_or_run(path: Path, fingerprint: str, compute: Callable[[], Dataset], reused: list[str]) -> Dataset:
    """The dataset saved at ``path`` when its fingerprint is ``fingerprint``, else ``compute()`` saved there
    (:func:`save_output`)."""
    saved = reuse_saved(path, fingerprint, reused)
    return saved if saved is not None else save_output(path, compute())
