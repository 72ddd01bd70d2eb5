"""Helpers of the test suite: scripted engines and answers, loopback servers (:mod:`.servers`), CLI runs."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The repository's root (``dataset_scripts/``, ``examples/``, ``benchmarks/`` are under it)."""
