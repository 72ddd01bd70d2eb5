"""What the CLI tests share: a fresh cache and engines per test, and a small ``barred generate``
command line against a loopback OpenAI-protocol server."""

from __future__ import annotations

from pathlib import Path

import pytest

import hf_barred.llm as llm
from tests.utils import REPO_ROOT

TASK = Path("dataset_scripts/health-advice/task.yaml")
RULES = REPO_ROOT / "examples" / "support-agent" / "rules.yaml"


@pytest.fixture
def fresh_cli(monkeypatch, tmp_path):
    """A response cache of the test's own, and no engine left from another test."""
    monkeypatch.setenv("HF_BARRED_CACHE", str(tmp_path / "cache"))
    llm.clear_engines()
    yield
    llm.clear_engines()


def openai_argv(target: Path, url: str, output: Path, *more: str, n: int = 2, model: str = "test-model") -> list[str]:
    """``barred generate TARGET --n N --output OUTPUT`` on the openai engine at ``url``, then ``more``."""
    return [
        "generate",
        str(target),
        "--n",
        str(n),
        "--output",
        str(output),
        "--engine",
        "openai",
        "--base-url",
        url,
        "--model",
        model,
        *more,
    ]


def rule_set_argv(url: str, output: Path, *more: str, rules: Path = RULES, n: int = 4) -> list[str]:
    """``barred generate`` on the support-agent rule set at ``url``: no refinement, no progress view, then ``more``."""
    return openai_argv(rules, url, output, "--max-refinements", "0", "--no-progress", *more, n=n)


def generate_argv(url: str, output: Path, *more: str, task: Path = TASK) -> list[str]:
    """``barred generate`` for 2 samples in 1 round, no refinement, no progress view, against ``url``."""
    return openai_argv(
        task,
        url,
        output,
        "--max-rounds",
        "1",
        "--max-rows-per-round",
        "2",
        "--max-refinements",
        "0",
        "--no-progress",
        *more,
    )


def provider_argv(url: str, output: Path, model: str, cache_dir: Path, *more: str, task: Path = TASK) -> list[str]:
    """``barred generate`` for 4 samples on the OpenAI provider's contract (``--provider openai``: the family table
    decides what is a reasoning model) at ``url``: 2 rounds, 2 judges, no retries, its own cache."""
    return openai_argv(
        task,
        url,
        output,
        "--provider",
        "openai",
        "--max-rounds",
        "2",
        "--max-retries",
        "0",
        "--timeout",
        "30",
        "--cache-dir",
        str(cache_dir),
        "--judges",
        "2",
        *more,
        n=4,
        model=model,
    )
