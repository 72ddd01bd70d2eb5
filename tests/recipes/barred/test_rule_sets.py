"""Rule sets in one run: the streaming executor, the per-rule and ``all`` configs, resume after kill -9, and the
same accepted rows from both executors."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from datasets import load_dataset

import hf_barred.llm as llm
import tests.utils.barred_resume_worker as worker
from hf_barred.cli.main import main
from hf_barred.llm import EngineConfig
from hf_barred.policy.rules import RuleSet
from hf_barred.policy.task import GuardrailTask
from hf_barred.recipes.barred.run import BarredConfig, run_barred_rules
from tests.utils import REPO_ROOT
from tests.utils.barred_script import BarredScript
from tests.utils.cli_runs import (
    RULES,
    fresh_cli,  # noqa: F401  (a fixture)
    rule_set_argv,
)
from tests.utils.schema_responder import StageServer, content_schema_answer


def rule_of(body: dict) -> str:
    """Which support-agent rule a request is for, from the criterion its prompt quotes."""
    text = json.dumps(body.get("messages", []))
    for name, needle in (("health-advice", "health advice"), ("employee-location", "identifiable employee")):
        if needle in text:
            return name
    return "repetition"


@pytest.mark.usefixtures("fresh_cli")
def test_a_three_rule_set_runs_end_to_end_on_the_loopback_server(tmp_path, capsys):
    out, rules = tmp_path / "out", RuleSet.load(RULES)
    with StageServer(latency=0.02) as server:
        code = main(rule_set_argv(server.url, out))
        requests = list(server.requests)
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "BARRED summary for the rule set 'support-agent' (3 rules" in printed
    for name in rules.names:
        train = load_dataset(str(out), name)["train"]
        assert len(train) == 4 and sorted(train["label"]) == [0, 0, 1, 1]
        assert train.features["label"].names == list(rules[name].labels)
        assert GuardrailTask.load(out / name / "task.yaml").criterion == rules[name].criterion
        assert f"  {name}" in printed
    everything = load_dataset(str(out), "all")["train"]
    assert len(everything) == 12 and Counter(everything["rule"]) == {name: 4 for name in rules.names}
    assert everything.features["label"].names == ["safe", "unsafe"]
    codes = {"health-advice": "S1", "employee-location": "S2", "repetition": "S3"}
    for row in everything:
        assert row["categories"] == ([codes[row["rule"]]] if row["label"] == 1 else [])
        assert row["taxonomy"].startswith("S1: health-advice.")
    assert load_dataset(str(out))["train"]["id"] == everything["id"]  # `all` is the default config
    card = (out / "README.md").read_text()
    for name in rules.names:
        assert f"## Rule `{name}`" in card and f"config_name: {name}" in card
    assert "config_name: all" in card and "default: true" in card
    # no barrier between rules: they are all at work at once
    spans: dict[str, list[float]] = {}
    for request in requests:
        spans.setdefault(rule_of(request.body), []).append(request.time)
    assert len(spans) == 3 and max(min(times) for times in spans.values()) < min(max(t) for t in spans.values())


@pytest.mark.usefixtures("fresh_cli")
def test_a_taxonomy_file_becomes_a_rule_set_whose_all_config_apt_reads_as_is(tmp_path):
    taxonomy = tmp_path / "policy.yaml"
    seeds = [f"User: question {i} about my order?\nAgent: answer {i}." for i in range(6)]
    categories = [
        {"name": "Medical Advice", "should_not": ["Recommend a medicine or a dose."], "can": ["Suggest a doctor."]},
        {"name": "Staff Location", "should_not": ["Say where an employee is."]},
    ]
    taxonomy.write_text(yaml.safe_dump({"name": "shop", "categories": categories, "seeds": seeds}))
    rules = RuleSet.load(taxonomy)
    assert rules.names == ("medical-advice", "staff-location") and rules.codes == {
        "medical-advice": "S1",
        "staff-location": "S2",
    }
    assert "Recommend a medicine or a dose." in rules["medical-advice"].criterion
    out = tmp_path / "out"
    with StageServer() as server:
        assert main(rule_set_argv(server.url, out, rules=taxonomy, n=2)) == 0
    everything = load_dataset(str(out), "all")["train"]
    assert sorted(c for row in everything["categories"] for c in row) == ["S1", "S2"]
    assert everything[0]["taxonomy"] == rules.policy()[0].render()  # the taxonomy's own text, codes kept
    assert main(["augment", str(out), "--output", str(tmp_path / "apt"), "--no-guideline-edit"]) == 0
    augmented = load_dataset(str(tmp_path / "apt"))["train"]
    assert "category_delete" in set(augmented["perturbation"]) and len(augmented) > len(everything)


def test_a_reserved_rule_name_is_refused_before_any_call(tmp_path):
    seeds = ("User: hi",)
    rules = RuleSet((GuardrailTask("Says hi.", seeds=seeds, name="all"),))
    with pytest.raises(ValueError, match="expected rule names other than all"):
        run_barred_rules(rules, 2, BarredConfig(), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


@pytest.fixture
def two_rules() -> RuleSet:
    other = dataclasses.replace(worker.TASK, name="repeats", criterion="The agent repeats itself.")
    return RuleSet((dataclasses.replace(worker.TASK, name="health-advice"), other))


def test_the_streaming_and_stage_by_stage_executors_accept_the_same_rows(monkeypatch, tmp_path, two_rules):
    outputs, n, speculated = {}, 5, {}
    for name in ("stages", "streaming", "streaming in-process"):
        executor = name.split()[0]
        script = BarredScript(verdict=worker.verdict)  # split judges, refinements, rejections: every path
        # served as an HTTP engine is (overlapping calls, speculative rows), or as the local engine is
        script.concurrent_calls = name == "streaming"
        monkeypatch.setattr(llm, "build_backend", lambda config, script=script: script)
        llm.clear_engines()
        engine = EngineConfig(engine="local", cache_dir=str(tmp_path / name / "cache"))
        config = BarredConfig.for_engine(
            engine, max_refinements=1, max_calls=100_000, max_rows_per_round=8, executor=executor
        )
        result = run_barred_rules(two_rules, n, config, tmp_path / name / "out", progress=False)
        outputs[name] = {
            name: {
                split: [(r["row_id"], r["text"], r["rejection_reason"], r["debate_path"]) for r in getattr(res, split)]
                for split in ("train", "extra", "rejected")
            }
            | {"requests": res.stats["requests_by_stage"], "planned": res.stats["planned_rows"]}
            for name, res in result.results.items()
        }
        assert len(result.all) == sum(len(res.train) for res in result.results.values())
        if executor == "streaming":
            speculated[name] = sum(res.stats["speculative_rows"]["started"] for res in result.results.values())
    assert outputs["stages"] == outputs["streaming"] == outputs["streaming in-process"]
    assert speculated["streaming"] > 0  # rows started before their round planned them, and the outputs are the same
    assert speculated["streaming in-process"] == 0  # an in-process engine has no idle slots to fill
    assert all(rule["rejected"] and rule["train"] for rule in outputs["streaming"].values())  # a real comparison


def _answered_keys(cache: Path) -> set[str]:
    with sqlite3.connect(cache / "responses.sqlite") as conn:
        return {key for (key,) in conn.execute("SELECT key FROM responses")}


def test_kill_9_mid_run_then_rerun_repeats_no_finished_call_and_writes_the_same_outputs(tmp_path):
    def command(out: Path, url: str) -> list[str]:
        return [sys.executable, "-m", "hf_barred.cli"] + rule_set_argv(
            url, out, "--max-refinements", "1", "--max-rows-per-round", "4", "--max-concurrency", "4", n=6
        )

    def run(out: Path, cache: Path, url: str, kill_when=None) -> subprocess.Popen:
        env = os.environ | {"HF_BARRED_CACHE": str(cache)}
        process = subprocess.Popen(command(out, url), cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True)
        if kill_when is not None:
            deadline = time.monotonic() + 120
            while not kill_when() and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert process.poll() is None, "the run ended before it could be killed: slow the server down"
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=300)
        return process

    with StageServer(latency=0.03) as server:
        server.responder = content_schema_answer  # answers depend on the request only: runs are comparable
        # the uninterrupted run: every call it needs
        whole = run(tmp_path / "whole", tmp_path / "whole-cache", server.url)
        assert whole.returncode == 0
        needed = len(server.requests)
        server.requests.clear()
        # killed once some rows have finished (a shard is written), then rerun
        out, cache = tmp_path / "out", tmp_path / "cache"
        killed = run(out, cache, server.url, kill_when=lambda: any(out.glob("work/*/stream/*/shard-*.parquet")))
        assert killed.returncode == -signal.SIGKILL
        answered = _answered_keys(cache)
        sent_before = len(server.requests)
        server.requests.clear()
        rerun = run(out, cache, server.url)
        assert rerun.returncode == 0
        resent = len(server.requests)
    assert 0 < len(answered) < needed and sent_before < needed
    assert len(answered) + resent == needed  # every call made once: none answered before the kill was repeated
    for config in ("all", *RuleSet.load(RULES).names):
        expected, got = load_dataset(str(tmp_path / "whole"), config), load_dataset(str(out), config)
        for split in expected:
            assert got[split].to_list() == expected[split].to_list(), (config, split)
