"""dataset_scripts/<name>/build.py runs BARRED, attaches the human test split and publishes
barred/<name>; `load_dataset("barred/health-advice")` then returns train, rejected and test."""

from __future__ import annotations

import importlib.util

import pytest
from datasets import load_dataset

import hf_barred.llm as llm
from hf_barred.llm import EngineConfig
from hf_barred.policy.task import GuardrailTask
from tests.utils import REPO_ROOT
from tests.utils.barred_script import TargetAwareScript, target_verdict

ROOT = REPO_ROOT


def _build_module():
    spec = importlib.util.spec_from_file_location("dataset_scripts_build", ROOT / "dataset_scripts" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["health-advice", "message-repetition"])
def test_task_files_load_with_enough_seeds(name):
    task = GuardrailTask.load(ROOT / "dataset_scripts" / name / "task.yaml")
    assert 10 <= len(task.seeds) <= 30 and task.name == name
    rows = _build_module().human_test_split(ROOT / "dataset_scripts" / name / "human_test.csv", task)
    assert set(rows["label"]) == {0, 1} and len(rows) > 100


def test_human_test_of_another_rule_is_refused(tmp_path):
    task = GuardrailTask.load(ROOT / "dataset_scripts" / "health-advice" / "task.yaml")
    with pytest.raises(ValueError, match="expected every row's predicate"):
        _build_module().human_test_split(ROOT / "dataset_scripts" / "message-repetition" / "human_test.csv", task)


def test_build_publishes_barred_health_advice(hub_server, monkeypatch, tmp_path):
    script = TargetAwareScript(verdict=target_verdict)  # both labels accepted: train holds exactly n
    monkeypatch.setattr(llm, "build_backend", lambda config: script)
    llm.clear_engines()
    folder = ROOT / "dataset_scripts" / "health-advice"
    engine = EngineConfig(engine="local", cache_dir=str(tmp_path / "cache"))
    argv = ["--n", "4", "--output", str(tmp_path / "out"), "--push-to-hub", "barred/health-advice"]
    assert _build_module().build(folder, argv, engine=engine) == 0
    llm.clear_engines()
    ds = load_dataset("barred/health-advice", cache_dir=str(tmp_path / "c1"))
    assert {"train", "test"} <= set(ds)
    assert len(ds["test"]) == 200 and sum(ds["test"]["label"]) == 99
    assert len(ds["train"]) == 4 and set(ds["test"]["model"]) == {"human"}
    assert ds["train"].features == ds["test"].features
    decomposition = load_dataset("barred/health-advice", "decomposition", split="train", cache_dir=str(tmp_path / "c2"))
    assert len(decomposition) > 0
