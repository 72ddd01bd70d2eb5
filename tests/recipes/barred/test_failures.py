"""A run whose requests fail says so and stops, and every wait is bounded.

Each test runs ``barred generate`` (``hf_barred.cli.main``) against the real OpenAI-protocol server
on loopback and asserts the exit code, the one-line message, and what is (not) left on disk.
"""

from __future__ import annotations

import json
import socket
import time

import pytest

import hf_barred.llm as llm
from hf_barred.cli.main import main
from tests.utils.cli_runs import TASK, fresh_cli, generate_argv  # noqa: F401 (fixture)
from tests.utils.schema_responder import StageServer, schema_answer
from tests.utils.servers.openai_server import OpenAIServer, error, hang, malformed

pytestmark = pytest.mark.usefixtures("fresh_cli")
generate = generate_argv


def error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("barred")]


@pytest.mark.parametrize(
    "failure, shown", [(error(500, "upstream down"), "HTTP 500"), (malformed("not-json"), "malformed response")]
)
def test_a_run_whose_requests_all_fail_stops_with_exit_1(tmp_path, capsys, failure, shown):
    out = tmp_path / "out"
    with OpenAIServer() as server:
        server.script(failure, forever=True)
        code = main(generate(server.url, out, "--max-retries", "1"))
        sent = len(server.requests)
    [line] = error_lines(capsys)
    assert code == 1
    assert line.startswith("barred generate: error: decompose: ") and shown in line and server.url in line
    assert "--max-failure-rate 0.5" in line and "run the same command again to resume" in line
    assert sent == 2 * 2  # the decompose requests and their one retry: no later stage, no further round
    assert not out.exists()  # nothing half-written: the folder this run created is gone


def test_a_failing_stage_stops_unsaved_and_the_rerun_resumes(tmp_path, capsys):
    out = tmp_path / "out"
    with StageServer() as server:
        server.failing, server.failure = {"generate"}, error(503, "overloaded")
        assert main(generate(server.url, out, "--max-retries", "0")) == 1
        [line] = error_lines(capsys)
        assert line.startswith("barred generate: error: generate: 2 of 2 requests to ") and "HTTP 503" in line
        assert (out / "work" / "decomposition" / "instantiations" / "state.json").is_file()  # done so far: kept
        assert not (out / "work" / "round_000" / "generate").exists()  # the failed stage is not saved
        assert not (out / "README.md").exists() and not (out / "summary.json").exists()
        before = {stage: server.stage_requests(stage) for stage in ("decompose", "instantiate", "generate")}

        server.failure = None
        llm.clear_engines()
        assert main(generate(server.url, out, "--max-retries", "0")) == 0
        assert {stage: server.stage_requests(stage) for stage in ("decompose", "instantiate")} == {
            stage: before[stage] for stage in ("decompose", "instantiate")
        }  # nothing repeated
        assert server.stage_requests("generate") == before["generate"] + 2
    stats = json.loads((out / "summary.json").read_text())
    assert stats["stage_outputs_reused"] >= 2 and sum(stats["request_failures"].values()) == 0


def test_failed_requests_are_counted_apart_from_parse_failures(tmp_path, capsys):
    out = tmp_path / "out"
    with StageServer() as server:
        server.failing, server.failure = {"generate"}, error(500, "down")
        # every generation failed: the run ends with no sample, short of its goal (exit 3, never 0)
        assert main(generate(server.url, out, "--max-retries", "0", "--max-failure-rate", "1")) == 3
    stats = json.loads((out / "summary.json").read_text())
    assert stats["request_failures"]["generate"] == 2 and stats["parse_failures"]["generate"] == 0
    assert stats["rejection_reasons"] == {"request_failure": 2}
    summary = capsys.readouterr().out
    assert "failed requests (no answer): decompose: 0, instantiate: 0, generate: 2" in summary
    card = (out / "README.md").read_text()
    assert "Failed requests (no answer" in card and "generate: 2" in card
    assert "Parse failures (an answer came but could not be used; kept, counted): decompose: 0" in card


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_endpoint_is_one_line_within_10_s(tmp_path, capsys):
    url = f"http://127.0.0.1:{free_port()}/v1"
    out = tmp_path / "out"
    start = time.monotonic()
    code = main(generate(url, out))
    elapsed = time.monotonic() - start
    err = capsys.readouterr().err
    [line] = [line for line in err.splitlines() if line.startswith("barred")]
    assert code == 2 and elapsed < 10
    assert f"could not reach the OpenAI-compatible server at {url} after 2 retries (connection refused)" in line
    assert "Traceback" not in err and not out.exists()


def test_timeouts_are_retried_twice_with_a_warning_line(tmp_path, capsys):
    out = tmp_path / "out"
    with OpenAIServer() as server:
        server.script(hang(30), forever=True)
        start = time.monotonic()
        code = main(generate(server.url, out, "--timeout", "1", "--max-retries", "5"))
        elapsed = time.monotonic() - start
        sent = len(server.requests)
    lines = error_lines(capsys)
    assert code == 1 and elapsed < 25
    assert sent == 2 * 3  # two decompose requests, each sent once and retried twice, not 5 times
    warnings = [line for line in lines if line.startswith("barred: warning: no answer from")]
    assert warnings and "within the 1 s timeout: retrying (retry 1 of 2" in warnings[0]
    assert lines[-1].startswith("barred generate: error: decompose: 2 of 2 requests") and "timeout" in lines[-1]


def test_timeout_and_max_retries_reach_the_engine_config():
    import argparse

    from hf_barred.cli.engine_options import add_engine_arguments, engine_config

    parser = argparse.ArgumentParser()
    add_engine_arguments(parser)
    args = parser.parse_args(
        [
            "--engine",
            "openai",
            "--base-url",
            "http://127.0.0.1:1/v1",
            "--model",
            "m",
            "--timeout",
            "7.5",
            "--max-retries",
            "1",
        ]
    )
    config = engine_config(args)
    assert (config.timeout, config.max_retries) == (7.5, 1)
    assert config.identity() == {"engine": "openai", "model": "m"}  # throughput: not in fingerprints
    with pytest.raises(ValueError, match="expected timeout > 0 seconds and max_retries >= 0"):
        llm.EngineConfig(engine="openai", model="m", base_url="http://x/v1", timeout=0)


# --- unusable answers count too: a run that cannot reach its goal stops, and never exits 0 short of it -----
def test_a_model_that_only_answers_plain_text_stops_within_30_requests(tmp_path, capsys):
    out = tmp_path / "out"
    with OpenAIServer(responder=lambda body: "I am happy to help! Here is what you asked for.") as server:
        argv = generate(server.url, out, "--max-rounds", "4", "--max-rows-per-round", "64")
        argv[argv.index("--n") + 1] = "20"
        code = main(argv)
        sent = len(server.requests)
    err = capsys.readouterr()
    [line] = [line for line in err.err.splitlines() if line.startswith("barred")]
    assert code == 1 and sent <= 30
    assert line.startswith("barred generate: error: decompose: ") and "could not be used" in line
    assert "I am happy to help" in line and "--prompt-set" in line and "--model test-model" in line
    assert "Next: barred train" not in err.out
    assert not (out / "data" / "train-00000-of-00001.parquet").exists()


def test_a_decomposition_with_no_usable_instantiation_stops_before_generating(tmp_path, capsys):
    out = tmp_path / "out"
    with StageServer() as server:
        server.failing, server.failure = {"instantiate"}, malformed("wrong-shape")
        code = main(generate(server.url, out, "--max-retries", "0", "--max-failure-rate", "1"))
        assert server.stage_requests("generate") == 0  # nothing was written about nothing
    [line] = error_lines(capsys)
    assert code == 1 and line.startswith("barred generate: error: decomposition: ") and "before any generation" in line


def test_a_round_that_accepts_nothing_is_not_followed_by_a_bigger_one(tmp_path, capsys):
    out = tmp_path / "out"

    def judge_no(body):  # every judge gives the other label: the debate rejects every sample
        answer = json.loads(schema_answer(body))
        if _stage(body) == "judge":
            answer["label"] = "yes" if answer["label"] == "no" else "no"
        return json.dumps(answer)

    with OpenAIServer(responder=judge_no) as server:
        argv = generate(server.url, out, "--max-rounds", "4", "--max-rows-per-round", "64", "--max-refinements", "1")
        code = main(argv)
        generated = sum(1 for r in server.requests if _stage(r.body) == "generate")
    captured = capsys.readouterr()
    assert code == 3  # short of the goal: not 0, not 2 (bad input)
    assert "ended short of the goal: round 1 accepted none of its 4 planned rows" in captured.out
    assert generated == 4 + 4  # round 1's 4 samples and their 4 rewrites: no larger round 2 after no evidence
    assert "Next: barred train" not in captured.out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["goal"]["reached"] is False and summary["rounds"] == 1 and summary["planned_rows"] == 4


def test_every_run_has_a_request_budget_that_scales_with_n():
    from hf_barred.recipes.barred.config import BarredConfig

    assert BarredConfig().call_budget(20) == 40 * 20 + 100
    assert BarredConfig(max_calls_per_sample=10).call_budget(100) == 1100
    assert BarredConfig(max_calls=7).call_budget(10_000) == 7


def _stage(body):
    from tests.utils.schema_responder import stage_of

    return stage_of(body)
