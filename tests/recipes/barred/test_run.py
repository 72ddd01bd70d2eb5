"""The BARRED loop with a scripted engine: outputs, budgets, refinement bound, resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from datasets import load_dataset

import hf_barred.llm as llm
import tests.utils.barred_resume_worker as worker
from hf_barred.cli.main import main as cli_main
from hf_barred.llm import EngineConfig, ResponseCache
from hf_barred.recipes.barred.run import BarredConfig, rows_to_plan, run_barred
from tests.utils import REPO_ROOT
from tests.utils.barred_script import BarredScript, TargetAwareScript, target_verdict

TASK = worker.TASK
LABELS = TASK.labels


@pytest.fixture
def scripted(monkeypatch, cache_dir):
    script = BarredScript(verdict=worker.verdict)
    monkeypatch.setattr(llm, "build_backend", lambda config: script)
    llm.clear_engines()
    yield EngineConfig(engine="local", cache_dir=str(cache_dir)), script
    llm.clear_engines()


def test_run_writes_a_loadable_hub_style_folder(scripted, tmp_path):
    engine, script = scripted
    out = tmp_path / "out"
    config = BarredConfig.for_engine(engine, max_refinements=1, max_calls=10_000)  # a budget that does not bind
    result = run_barred(TASK, 4, config, out, progress=False)
    stats = result.stats
    assert stats["accepted"] == len(result.train) and stats["accepted"] + stats["extra"] >= 4
    assert all(result.train["label"].count(y) <= 2 for y in (0, 1))  # never more than n/2 of a label
    assert stats["rejected"] == len(result.rejected) > 0
    default = load_dataset(str(out))
    assert set(default) == {"train", "rejected"} | ({"extra"} if stats["extra"] else set())
    assert default["train"].features["label"].names == list(LABELS)
    decomposition = load_dataset(str(out), "decomposition")["train"]
    assert decomposition[0]["instantiations"][0]["relevance"] in ("positive", "negative", "both")
    # lineage of accepted samples
    for row in default["train"]:
        assert row["text"] and row["reasoning"] and row["dimension"] and row["instantiation"]
        assert row["debate_path"] in ("agreement", "persuasion") and row["rejection_reason"] == ""
        assert row["debate"][-1]["judges"][0]["label"] == LABELS[row["label"]]
        assert row["model"] == "scripted" and row["prompt_version"].startswith(("small/generate/v1", "small/refine/v1"))
        assert row["usage"]["calls"] >= 3 and row["usage"]["prompt_tokens"] > 0
        assert row["refinements"] == len(row["previous_texts"]) == len(row["debate_history"])
    # rejected samples are kept, with their dissent
    for row in default["rejected"]:
        assert row["rejection_reason"] == "debate" and row["dissent"] and row["refinements"] == 1
        assert row["debate_path"] in ("consensus_breaking", "disagreement")
    card = (out / "README.md").read_text()
    assert "config_name: decomposition" in card and TASK.criterion in card
    assert list((out / "work" / "stream").glob("*/shard-*.parquet"))  # the streaming executor's finished rows
    # acceptance by refinement round and paths are reported
    assert set(stats["acceptance_by_refinement"]) == {"0", "1"}
    assert sum(stats["debate_paths"].values()) == sum(r["debated"] for r in stats["acceptance_by_refinement"].values())


def test_a_new_run_into_the_same_folder_is_what_load_dataset_returns(scripted, tmp_path):
    # datasets keys its cache for a folder with YAML `configs` on the card's dataset_info, not on
    # the files: without dataset_info in the card, the second load would return the first run.
    engine, _ = scripted
    out, hf_cache = tmp_path / "out", str(tmp_path / "hf_datasets")
    run_barred(TASK, 2, BarredConfig.for_engine(engine, max_refinements=1), out, progress=False)
    first = load_dataset(str(out), cache_dir=hf_cache)["train"]
    second_run = run_barred(TASK, 6, BarredConfig.for_engine(engine, max_refinements=1), out, progress=False)
    second = load_dataset(str(out), cache_dir=hf_cache)["train"]
    assert len(second) == len(second_run.train) > len(first)
    card = (out / "README.md").read_text()
    assert f"num_examples: {len(second)}" in card and "dataset_info:" in card


def test_refinement_bound_and_rejection(scripted, tmp_path):
    engine, script = scripted
    script.verdict = lambda text, round_, judge: ("yes", "no")[judge]  # the judges never agree
    # stage by stage: one batched refine call per level is that executor's promise (the streaming one batches
    # whatever rows are ready when the engine frees up, which depends on timing)
    config = BarredConfig.for_engine(engine, max_refinements=2, max_rounds=1, initial_acceptance=1.0, executor="stages")
    result = run_barred(TASK, 2, config, tmp_path / "out", progress=False)
    assert len(result.train) == 0 and len(result.rejected) == 2
    assert result.rejected["refinements"] == [2, 2]
    assert result.rejected["rejection_reason"] == ["debate", "debate"]
    assert [len(h) for h in result.rejected["debate_history"]] == [2, 2]
    assert [kind for kind in script.kinds() if kind == "refine"] == ["refine", "refine"]  # one batched call per level
    assert result.stats["final_debate_paths"] == {"disagreement": 2}


def test_parse_failures_are_counted_and_kept(scripted, tmp_path):
    engine, script = scripted
    script.write = lambda sample_id, refinement: (
        "garbage" if int(sample_id) % 2 else f"User: question {sample_id}\nAgent: ok"
    )
    config = BarredConfig.for_engine(engine, max_refinements=0, max_rounds=1, max_failure_rate=1.0)  # kept, not stopped
    result = run_barred(TASK, 4, config, tmp_path / "out", progress=False)
    failures = [r for r in result.rejected if r["rejection_reason"] == "parse_failure"]
    assert failures and all(r["raw"] and "no JSON object" in r["error"] for r in failures)
    assert result.stats["parse_failures"]["generate"] == len(failures)
    assert result.stats["planned_rows"] == len(result.train) + len(result.extra) + len(result.rejected)


def test_budget_stops_the_loop(scripted, tmp_path):
    engine, _ = scripted
    config = BarredConfig.for_engine(engine, max_calls=10, max_refinements=2)
    result = run_barred(TASK, 50, config, tmp_path / "out", progress=False)
    assert result.stats["budget_spent"] and result.stats["rounds"] == 1
    assert len(result.train) < 50


def test_rows_to_plan_uses_the_acceptance_rate():
    config = BarredConfig(max_rows_per_round=40)
    assert rows_to_plan(8, 0, 0, config) == 16
    assert rows_to_plan(4, 16, 4, config) == 16
    assert rows_to_plan(4, 16, 0, config) == 40  # nothing accepted yet: min_acceptance, capped
    assert rows_to_plan(1, 10, 10, config) == 2  # even, at least 2


def test_rerun_makes_no_engine_calls_and_reuses_saved_outputs(scripted, tmp_path):
    engine, script = scripted
    config = BarredConfig.for_engine(engine, max_refinements=1)
    first = run_barred(TASK, 4, config, tmp_path / "out", progress=False)
    sent = len(script.sent)
    llm.clear_engines()
    again = run_barred(TASK, 4, config, tmp_path / "out", progress=False)
    assert len(script.sent) == sent and again.stats["engine"]["calls"] == 0
    assert again.stats["stage_outputs_reused"] > 0
    assert again.train["text"] == first.train["text"]
    # a new output folder: every stage recomputed, every call answered by the cache
    llm.clear_engines()
    fresh = run_barred(TASK, 4, config, tmp_path / "other", progress=False)
    assert len(script.sent) == sent and fresh.stats["engine"]["calls"] == 0 and fresh.stats["engine"]["cache_hits"] > 0
    assert fresh.train["text"] == first.train["text"]


def test_resume_after_sigkill_repeats_no_finished_call(monkeypatch, tmp_path):
    out, cache_dir = tmp_path / "out", tmp_path / "cache"
    cache_path = cache_dir / "responses.sqlite"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(
        [
            sys.executable,
            str(REPO_ROOT / "tests" / "utils" / "barred_resume_worker.py"),
            str(out),
            str(cache_dir),
            "0.05",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:  # wait until the run is well into generation and debate
            if cache_path.exists() and len(ResponseCache(cache_path)) >= 20:
                break
            assert proc.poll() is None, "the worker ended before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("the worker cached no responses in time")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    cache = ResponseCache(cache_path)
    done_before = cache.stats()
    cached_keys = {row[0] for row in cache._connect().execute("SELECT key FROM responses")}
    assert done_before["misses"] == len(cached_keys) >= 20

    script = BarredScript(verdict=worker.verdict)
    monkeypatch.setattr(llm, "build_backend", lambda config: script)
    llm.clear_engines()
    engine = EngineConfig(engine="local", cache_dir=str(cache_dir))
    config = BarredConfig.for_engine(engine, max_refinements=1, batch_size=8)
    result = run_barred(TASK, 6, config, out, progress=False)
    # nothing that had finished before the kill was asked again
    sent_keys = {
        ResponseCache.key("scripted", conversation, params) for conversation, params in _sent_with_params(script)
    }
    assert not sent_keys & cached_keys
    after = cache.stats()
    assert after["misses"] - done_before["misses"] == len(script.sent)
    assert result.stats["engine"]["cache_hits"] > 0 or result.stats["stage_outputs_reused"] > 0

    # and a second rerun is free
    llm.clear_engines()
    script.sent.clear()
    again = run_barred(TASK, 6, config, out, progress=False)
    assert script.sent == [] and cache.stats()["misses"] == after["misses"]
    assert again.train["text"] == result.train["text"]


def _sent_with_params(script):
    return script.sent_with_params


def test_cli_generate_prints_the_summary(scripted, monkeypatch, tmp_path, capsys):
    engine, _ = scripted
    script = TargetAwareScript(verdict=target_verdict)  # both labels accepted: the run reaches its goal
    monkeypatch.setattr(llm, "build_backend", lambda config: script)
    llm.clear_engines()
    code = cli_main(
        [
            "generate",
            str(tmp_path / "task.yaml"),
            "--n",
            "2",
            "--output",
            str(tmp_path / "out"),
            "--no-progress",
        ]
    )
    assert code == 2 and "file not found" in capsys.readouterr().err
    TASK.save(tmp_path / "task.yaml")
    code = cli_main(
        [
            "generate",
            str(tmp_path / "task.yaml"),
            "--n",
            "2",
            "--output",
            str(tmp_path / "out"),
            "--no-progress",
            "--cache-dir",
            engine.cache_dir,
            "--judges",
            "2",
            "--rounds",
            "2",
            "--max-refinements",
            "1",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    for needle in (
        "accepted:",
        "acceptance by refinement round: r0:",
        "debate paths",
        "parse failures:",
        "engine calls",
        "cache hits",
        "cost $",
    ):
        assert needle in printed


def test_dataset_card_template_renders_strictly(scripted, tmp_path):
    import jinja2

    from hf_barred.hub.dataset_card import card_variables
    from hf_barred.hub.model_card import template_path

    engine, _ = scripted
    config = BarredConfig.for_engine(engine, max_refinements=1)
    result = run_barred(TASK, 2, config, tmp_path / "out", progress=False)
    template = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(
        template_path("dataset_card.md").read_text()
    )
    text = template.render(card_data="license: apache-2.0", **card_variables(TASK, config, result.stats))
    assert "## Citation" in text and "mazza2026barred" in text and "| 0 |" in text
    readme = (tmp_path / "out" / "README.md").read_text()
    assert f"Accepted: {result.stats['accepted']} of 2 requested" in readme


def test_answer_budgets_fit_the_engine_and_the_command_line_overrides_them():
    import argparse

    from hf_barred.cli import generate as generate_command

    parser = argparse.ArgumentParser()
    generate_command.register(parser.add_subparsers())

    def config(*flags):
        return generate_command.build_config(
            parser.parse_args(["generate", "task.yaml", "--n", "4", "--output", "o", *flags])
        )

    local = config()
    assert (local.generate.max_tokens, local.refine.max_tokens, local.debate.max_tokens) == (128, 128, 64)
    served = config("--engine", "openai", "--base-url", "http://127.0.0.1:1/v1", "--model", "m", "--judges", "3")
    assert (served.generate.max_tokens, served.refine.max_tokens, served.debate.max_tokens) == (512, 512, 256)
    assert served.debate.judges == ("recall", "strict", "literal")  # distinct personas
    mine = config("--sample-max-tokens", "200", "--judge-max-tokens", "90")
    assert (mine.generate.max_tokens, mine.refine.max_tokens, mine.debate.max_tokens) == (200, 200, 90)


def test_a_run_into_the_task_files_folder_keeps_the_task_file(scripted, tmp_path):
    engine, _ = scripted
    out = tmp_path / "out"
    out.mkdir()
    (out / "task.yaml").write_text("# my notes\n" + (REPO_ROOT / "dataset_scripts/health-advice/task.yaml").read_text())
    from hf_barred.policy.task import GuardrailTask

    task = GuardrailTask.load(out / "task.yaml")
    run_barred(task, 2, BarredConfig.for_engine(engine, max_refinements=1), out, progress=False)
    assert (out / "task.yaml").read_text().startswith("# my notes\n")


@pytest.mark.parametrize("n", [3, 8])
def test_train_holds_exactly_n_balanced_and_the_rest_goes_to_extra(monkeypatch, cache_dir, tmp_path, n):
    script = TargetAwareScript(verdict=target_verdict)
    monkeypatch.setattr(llm, "build_backend", lambda config: script)
    llm.clear_engines()
    engine = EngineConfig(engine="local", cache_dir=str(cache_dir))
    out = tmp_path / "out"
    # initial_acceptance 0.25 plans four times what is needed: every sample is accepted, so n go to
    # train, balanced as planned, and the rest to extra
    config = BarredConfig.for_engine(engine, max_refinements=1, initial_acceptance=0.25, max_rows_per_round=64)
    result = run_barred(TASK, n, config, out, progress=False)
    labels = result.train["label"]
    assert len(result.train) == n == result.stats["accepted"]
    assert sorted([labels.count(0), labels.count(1)]) == [n // 2, n - n // 2]
    assert len(result.extra) > 0 and result.stats["extra"] == len(result.extra)
    assert result.stats["planned_rows"] == len(result.train) + len(result.extra) + len(result.rejected)
    assert not set(result.train["row_id"]) & set(result.extra["row_id"])
    assert max(result.train["row_id"]) < min(result.extra["row_id"]) or n % 2  # lowest row ids first
    assert len(load_dataset(str(out))["extra"]) == len(result.extra)
    assert sum(result.stats["requests_by_stage"].values()) == result.stats["requests"]
    llm.clear_engines()
