"""``--executor ray`` on a local Ray cluster of 2 CPUs, against OpenAI-protocol servers on loopback.

Opt-in (marker ``ray``; ``.ci/run`` installs the ``ray`` extra and runs them): starting Ray takes seconds.
Every answer depends on its request only (:func:`content_schema_answer`), so runs are comparable.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from datasets import load_dataset

from hf_barred.llm import EngineConfig
from hf_barred.policy.rules import RuleSet
from hf_barred.recipes.barred.run import BarredConfig, run_barred_rules
from tests.utils import REPO_ROOT
from tests.utils.cli_runs import RULES as RULES_FILE
from tests.utils.cli_runs import rule_set_argv
from tests.utils.schema_responder import StageServer, content_schema_answer

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray

RULES = RuleSet.load(RULES_FILE)


@pytest.fixture(scope="module", autouse=True)
def local_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def config_for(executor: str, cache: Path, *urls: str) -> BarredConfig:
    engine = EngineConfig(
        engine="openai",
        model="test-model",
        base_url=urls[0],
        extra_base_urls=urls[1:],
        max_concurrency=4,
        cache_dir=str(cache),
    )
    return BarredConfig.for_engine(engine, max_refinements=1, max_rows_per_round=6, executor=executor)


def outputs(folder: Path) -> dict[str, dict[str, list[dict]]]:
    return {
        config: {split: rows.to_list() for split, rows in load_dataset(str(folder), config).items()}
        for config in ("all", *RULES.names)
    }


def answered(*servers: StageServer) -> list[str]:
    """Every request the servers answered, whole (messages and sampling parameters: what the cache keys on)."""
    return [json.dumps(body, sort_keys=True) for server in servers for body in server.answered]


def cached_answers(cache: Path) -> int:
    with sqlite3.connect(cache / "responses.sqlite") as conn:
        return conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0]


def wait_until_quiet(server: StageServer, quiet: float = 3.0, limit: float = 60.0) -> None:
    """Wait until the server has answered nothing for ``quiet`` seconds."""
    deadline, seen, since = time.monotonic() + limit, len(server.answered), time.monotonic()
    while time.monotonic() - since < quiet and time.monotonic() < deadline:
        time.sleep(0.1)
        if len(server.answered) != seen:
            seen, since = len(server.answered), time.monotonic()


def stop_after(server: StageServer, answers: int) -> None:
    deadline = time.monotonic() + 120
    while len(server.answered) < answers and time.monotonic() < deadline:
        time.sleep(0.01)
    server.stop()


def test_ray_and_local_streaming_write_the_same_outputs_from_the_same_answers(tmp_path):
    with StageServer(latency=0.01) as server:
        server.responder = content_schema_answer
        local = run_barred_rules(
            RULES, 4, config_for("streaming", tmp_path / "local-cache", server.url), tmp_path / "local", progress=False
        )
        local_calls = len(server.answered)
        on_ray = run_barred_rules(
            RULES, 4, config_for("ray", tmp_path / "ray-cache", server.url), tmp_path / "ray", progress=False
        )
    assert outputs(tmp_path / "local") == outputs(tmp_path / "ray")
    assert all(len(result.train) == 4 for result in on_ray.results.values())
    assert {result.stats["executor"] for result in on_ray.results.values()} == {"ray"}
    assert on_ray.stats["engine"]["calls"] == local.stats["engine"]["calls"] == local_calls  # the workers' calls
    assert len(server.answered) == 2 * local_calls


def test_an_endpoint_killed_mid_run_the_other_finishes_it_with_no_finished_call_repeated(tmp_path):
    with StageServer(latency=0.05) as a, StageServer(latency=0.05) as b:
        a.responder = b.responder = content_schema_answer
        threading.Thread(target=stop_after, args=(a, 20), daemon=True).start()  # a dies with requests in flight
        result = run_barred_rules(
            RULES, 4, config_for("ray", tmp_path / "cache", a.url, b.url), tmp_path / "out", progress=False
        )
        calls = answered(a, b)
    assert all(len(rule.train) == 4 for rule in result.results.values())
    assert a.answered and b.answered  # a answered before it died, b took the rest
    assert len(calls) == len(set(calls)) == result.stats["engine"]["calls"]  # each call answered once
    endpoints = result.stats["engine"]["endpoints"]
    assert endpoints[a.url]["failed"] >= 1 and endpoints[b.url]["answered"] == len(b.answered)


def test_the_driver_killed_mid_run_then_rerun_repeats_no_finished_call(tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    argv = rule_set_argv("URL", out, "--executor", "ray", "--max-refinements", "1", "--max-concurrency", "2", n=4)
    argv.remove("--no-progress")  # the per-rule lines of the Ray executor are its progress

    def start(url: str) -> subprocess.Popen:
        command = [sys.executable, "-m", "hf_barred.cli", *[url if arg == "URL" else arg for arg in argv]]
        env = os.environ | {"HF_BARRED_CACHE": str(cache)}
        return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    with StageServer(latency=0.05) as server:
        server.responder = content_schema_answer
        killed = start(server.url)
        deadline = time.monotonic() + 120
        while not any(out.glob("work/*/stream/*/shard-*.parquet")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert killed.poll() is None, "the run ended before it could be killed: slow the server down"
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=60)
        wait_until_quiet(server)  # Ray stops the killed driver's workers within seconds: their last answers first
        cached = cached_answers(cache)
        before = len(server.answered)
        rerun = start(server.url)
        stdout, stderr = rerun.communicate(timeout=300)
        asked_again = answered(server)[before:]
        every_call = set(answered(server))
    assert rerun.returncode == 0, stderr.decode()[-2000:]
    assert "train 4 of 4" in stdout.decode()
    logged = stderr.decode()  # Ray's own lines stay out of the terminal without --verbose; ours are there
    assert "Started a local Ray instance" not in logged and "streaming_executor" not in logged
    assert "[ray] rule health-advice: 4 of 4 accepted" in logged
    assert 0 < cached < len(every_call)
    # the rerun asked exactly what the cache did not hold: no call that had finished was paid for again
    assert len(asked_again) == len(set(asked_again)) == len(every_call) - cached
