"""Provider batch mode (``--batch``): one Batch API job per stage step, the same samples as online, resumed
after ``kill -9`` without submitting anything twice, failed lines retried, the JSONL that vLLM's run_batch reads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from datasets import load_dataset

from hf_barred.cli.main import main
from hf_barred.llm import EngineConfig, SamplingParams, clear_engines, get_engine
from hf_barred.llm.engines.openai.batch import batch_line, custom_id
from tests.utils import REPO_ROOT
from tests.utils.cli_runs import provider_argv
from tests.utils.servers.batches import BatchStore
from tests.utils.servers.openai_server import OpenAIServer
from tests.utils.servers.strong_model import StrongModel

TASK = REPO_ROOT / "dataset_scripts" / "health-advice" / "task.yaml"


def _argv(server: OpenAIServer, out, *extra: str) -> list[str]:
    return provider_argv(server.url, out, "gpt-4.1", out.parent / f"cache-{out.name}", *extra, task=TASK)


@pytest.fixture(autouse=True)
def _openai_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-key")


def _submitted(store: BatchStore) -> list[list[str]]:
    """The custom ids of every job the server was asked to create."""
    files = {b.input_file_id: b for b in store.batches.values()}
    return [
        [json.loads(line)["custom_id"] for line in store.content(fid).splitlines() if line.strip()] for fid in files
    ]


def test_a_batch_run_gives_the_train_split_of_an_online_run(tmp_path, capsys):
    model = StrongModel()
    with OpenAIServer(models=("gpt-4.1",), responder=model, contract="openai") as server:
        clear_engines()
        assert main(_argv(server, tmp_path / "online")) == 0, capsys.readouterr().err
        online_requests = len(server.requests)
        clear_engines()
        assert main(_argv(server, tmp_path / "batch", "--batch", "--batch-poll-interval", "0.01")) == 0
        out = capsys.readouterr().out
        assert server.batches.created >= 4  # decompose, instantiate, generate, judges ...: one job per step
        assert len(server.requests) - online_requests > 0  # the batch lines were answered by the server
    online = load_dataset(str(tmp_path / "online"), split="train")
    batch = load_dataset(str(tmp_path / "batch"), split="train")
    assert batch["text"] == online["text"] and batch["label"] == online["label"]
    jobs = json.loads((tmp_path / "batch" / "work" / "batches" / "jobs.json").read_text())["jobs"]
    assert len(jobs) == server.batches.created and all(job["done"] for job in jobs)
    assert "batch price" in out and "online" in out  # the cost is compared with the online cost
    # batch mode runs stage by stage (one job per step of a round), the online run streams
    summaries = [json.loads((tmp_path / run / "summary.json").read_text()) for run in ("online", "batch")]
    assert [s["executor"] for s in summaries] == ["streaming", "stages"]


def test_kill_9_while_polling_then_the_same_command_resumes_the_same_batch(tmp_path):
    store = BatchStore(answer=lambda body: (200, {}), polls_per_step=40)  # a job that takes a while
    with OpenAIServer(models=("gpt-4.1",), responder=StrongModel(), contract="openai", batches=store) as server:
        argv = _argv(server, tmp_path / "run", "--batch", "--batch-poll-interval", "0.05")
        env = dict(os.environ, OPENAI_API_KEY="sk-test-key", PYTHONPATH=str(REPO_ROOT))
        child = subprocess.Popen(
            [sys.executable, "-m", "hf_barred.cli", *argv],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while not store.batches and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
        time.sleep(0.3)  # polling now
        assert store.batches, "the run never created a batch job"
        first = next(iter(store.batches))
        assert store.batches[first].status != "completed"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        store.polls_per_step = 1
        clear_engines()
        assert main(argv) == 0
        submitted = _submitted(store)
        every = [cid for ids in submitted for cid in ids]
        assert len(every) == len(set(every))  # no request was ever submitted in two jobs
        assert store.batches[first].status == "completed"  # the killed run's job was polled to its end


def test_failed_and_expired_lines_are_retried_in_the_next_job(tmp_path, monkeypatch):
    failures = {"n": 0}

    def fail_once(cid: str, body: dict):
        if failures["n"] < 2:
            failures["n"] += 1
            return {"error": {"message": "upstream overloaded", "type": "server_error", "code": 500}}
        return None

    store = BatchStore(answer=lambda body: (200, {}), fail_line=fail_once, expire_after=None)
    with OpenAIServer(models=("gpt-4.1",), contract="openai", batches=store, responder=lambda b: "hello") as server:
        clear_engines()
        config = EngineConfig(
            engine="openai",
            provider="openai",
            model="gpt-4.1",
            base_url=server.url,
            api_key_env="OPENAI_API_KEY",
            batch=True,
            batch_poll_interval=0.01,
            batch_dir=str(tmp_path / "jobs"),
            cache_dir=str(tmp_path / "cache"),
        )
        conversations = [[{"role": "user", "content": f"q{i}"}] for i in range(5)]
        answers = get_engine(config).chat(conversations, SamplingParams(max_tokens=8))
        assert [a.text for a in answers] == ["hello"] * 5 and all(a.ok for a in answers)
        assert store.created == 2 and len(_submitted(store)[1]) == 2  # the two failed lines, in a second job
        # expired lines too, up to batch_max_retries jobs; then the line is a failed request
        store.expire_after, failures["n"] = 0, 99
        again = get_engine(config.replace(batch_max_retries=1)).chat(
            [[{"role": "user", "content": "late"}]], SamplingParams(max_tokens=8)
        )
        assert not again[0].ok and "batch_expired" in again[0].error and "request failed" in again[0].error
    clear_engines()


def test_batch_mode_needs_a_provider_with_a_batch_api():
    with pytest.raises(ValueError, match="batch"):
        EngineConfig(engine="openai", provider="anthropic", model="claude-sonnet-4", batch=True)
    with pytest.raises(ValueError, match="run_batch"):
        EngineConfig(engine="openai", provider="vllm", model="m", batch=True)


def test_the_batch_file_is_what_vllm_run_batch_reads():
    """Every line follows OpenAI's batch request format (what vLLM's ``BatchRequestInput`` parses: a
    ``custom_id``, ``method`` POST, ``url`` /v1/chat/completions and a chat-completion ``body``); the opt-in
    vLLM test parses a real file with vLLM's own model."""
    from openai.types.chat import completion_create_params
    from pydantic import TypeAdapter

    payload = {
        "model": "Qwen/Qwen2.5-7B-Instruct",
        "messages": [{"role": "user", "content": "Is 7 prime?"}],
        "max_tokens": 16,
        "temperature": 0.0,
        "top_p": 1.0,
        "seed": 0,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": False},
        },
    }
    line = json.loads(json.dumps(batch_line(payload, "/v1/chat/completions")))
    assert set(line) == {"custom_id", "method", "url", "body"} and line["custom_id"] == custom_id(payload)
    TypeAdapter(completion_create_params.CompletionCreateParamsNonStreaming).validate_python(line["body"])
    assert custom_id(payload) == custom_id(json.loads(json.dumps(payload)))  # stable across processes
