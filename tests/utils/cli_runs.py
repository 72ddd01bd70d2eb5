"""What the CLI tests share: a fresh cache and engines per test, and a small ``barred generate``
command line against a loopback OpenAI-protocol server."""

from __future__ import annotations

from pathlib import Path

import pytest

import hf_barred.llm as llm

TASK = Path("dataset_scripts/health-advice/task.yaml")


@pytest.fixture
def fresh_cli(monkeypatch, tmp_path):
    """A response cache of the test's own, and no engine left from another test."""
    monkeypatch.setenv("HF_BARRED_CACHE", str(tmp_path / "cache"))
    llm.clear_engines()
    yield
    llm.clear_engines()


def generate_argv(url: str, output: Path, *more: str, task: Path = TASK) -> list[str]:
    """``barred generate`` for 2 samples in 1 round, no refinement, no progress view, against ``url``."""
    return [
        "generate",
        str(task),
        "--n",
        "2",
        "--output",
        str(output),
        "--engine",
        "openai",
        "--base-url",
        url,
        "--model",
        "test-model",
        "--max-rounds",
        "1",
        "--max-rows-per-round",
        "2",
        "--max-refinements",
        "0",
        "--no-progress",
        *more,
    ]
