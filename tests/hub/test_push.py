"""Publishing through the real client libraries to the Hub look-alike on 127.0.0.1."""

from __future__ import annotations

import dataclasses

import pytest
from datasets import load_dataset
from huggingface_hub import DatasetCard, HfApi

import hf_barred.llm as llm
import tests.utils.barred_resume_worker as worker
from hf_barred.hub.push import HubAuthError, push_barred_run, push_rule_set_run, require_token
from hf_barred.llm import EngineConfig
from hf_barred.policy.rules import RuleSet
from hf_barred.recipes.barred.run import BarredConfig, run_barred, run_barred_rules
from tests.utils.barred_script import BarredScript


def _scripted_run(root, run, *args, **config_changes):
    script = BarredScript(verdict=worker.verdict)
    original = llm.build_backend
    llm.build_backend = lambda config: script
    llm.clear_engines()
    try:
        engine = EngineConfig(engine="local", cache_dir=str(root / "cache"))
        config = BarredConfig.for_engine(engine, max_refinements=1, **config_changes)
        run(*args, 4, config, root / "out", progress=False)
    finally:
        llm.build_backend = original
        llm.clear_engines()
    return root / "out"


@pytest.fixture(scope="module")
def barred_run(tmp_path_factory):
    """A run by the stage-by-stage executor: every stage's output is saved, and published."""
    return _scripted_run(tmp_path_factory.mktemp("barred_run"), run_barred, worker.TASK, executor="stages")


def test_push_barred_run_publishes_every_configuration(hub_server, barred_run, tmp_path):
    repo_id = hub_server.new_repo_id("barred-data")
    url = push_barred_run(barred_run, repo_id, private=True)
    assert repo_id in url
    local = load_dataset(str(barred_run))
    remote = load_dataset(repo_id, cache_dir=str(tmp_path / "c1"))
    assert set(remote) == set(local) and {"train", "rejected"} <= set(remote)  # and `extra` when the run had some
    assert remote["train"]["text"] == local["train"]["text"]
    assert remote["train"].features["label"].names == list(worker.TASK.labels)
    decomposition = load_dataset(repo_id, "decomposition", split="train", cache_dir=str(tmp_path / "c2"))
    assert len(decomposition) == len(load_dataset(str(barred_run), "decomposition", split="train"))
    debate = load_dataset(repo_id, "stage_debate", split="train", cache_dir=str(tmp_path / "c3"))
    assert {"round", "pass"} <= set(debate.column_names) and len(debate) > 0
    card = DatasetCard.load(repo_id, repo_type="dataset")
    names = [c["config_name"] for c in card.data.configs]
    assert {"default", "decomposition", "stage_plan", "stage_generate", "stage_debate"} <= set(names)
    assert "dataset_info" in card.data.to_dict()
    assert worker.TASK.criterion in card.text and "BARRED" in card.text
    assert HfApi().repo_info(repo_id, repo_type="dataset").private


def test_push_to_a_revision_leaves_main_alone(hub_server, barred_run, tmp_path):
    repo_id = hub_server.new_repo_id("barred-rev")
    push_barred_run(barred_run, repo_id, revision="v2", include_stages=False)
    files_v2 = HfApi().list_repo_files(repo_id, repo_type="dataset", revision="v2")
    files_main = HfApi().list_repo_files(repo_id, repo_type="dataset")
    assert any(f.startswith("data/") for f in files_v2) and not any(f.startswith("data/") for f in files_main)
    ds = load_dataset(repo_id, revision="v2", split="train", cache_dir=str(tmp_path / "c"))
    assert len(ds) == len(load_dataset(str(barred_run), split="train"))


def test_no_token_is_a_clear_error(hub_server, barred_run, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubAuthError, match="needs a token.*HF_TOKEN"):
        require_token()
    with pytest.raises(HubAuthError):
        push_barred_run(barred_run, "someone/anything")


def test_a_streamed_run_publishes_its_debates_from_its_shards(hub_server, tmp_path):
    out = _scripted_run(tmp_path, run_barred, worker.TASK)
    repo_id = hub_server.new_repo_id("barred-streamed")
    push_barred_run(out, repo_id)
    debate = load_dataset(repo_id, "stage_debate", split="train", cache_dir=str(tmp_path / "c"))
    assert {"pass", "outcome", "row_id"} <= set(debate.column_names) and len(debate) > 0
    local = load_dataset(str(out))
    assert {row_id for row_id, outcome in zip(debate["row_id"], debate["outcome"]) if outcome == "accepted"} == set(
        list(local["train"]["row_id"]) + (list(local["extra"]["row_id"]) if "extra" in local else [])
    )


def test_push_rule_set_run_publishes_all_and_one_config_per_rule(hub_server, tmp_path):
    other = dataclasses.replace(worker.TASK, name="repeats", criterion="The agent repeats itself.")
    rules = RuleSet((dataclasses.replace(worker.TASK, name="health-advice"), other))
    out = _scripted_run(tmp_path, run_barred_rules, rules, max_calls=100_000)
    repo_id = hub_server.new_repo_id("barred-rules")
    push_rule_set_run(out, repo_id)
    remote = load_dataset(repo_id, cache_dir=str(tmp_path / "c1"))  # the default config: all
    assert remote["train"]["id"] == load_dataset(str(out), "all")["train"]["id"]
    for name in rules.names:
        pushed = load_dataset(repo_id, name, cache_dir=str(tmp_path / name))
        assert pushed["train"]["text"] == load_dataset(str(out), name)["train"]["text"]
    card = DatasetCard.load(repo_id, repo_type="dataset")
    assert {"all", "health-advice", "repeats", "decomposition"} <= {c["config_name"] for c in card.data.configs}
    assert "## Rule `repeats`" in card.text
