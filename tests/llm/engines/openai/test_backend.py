"""The ``openai`` engine against a real OpenAI-protocol HTTP server on loopback (tests/utils/servers).

Every test is offline: the server runs in a thread of this process (or the engine in a subprocess),
answers with scripted replies, and records each request it receives.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import openai
import pytest

from hf_barred.llm import EngineConfig, EngineError, ResponseCache, SamplingParams, clear_engines, get_engine
from hf_barred.llm.engines.openai.backend import MalformedResponse, OpenAICompatBackend, parse_chat_completion
from tests.utils import REPO_ROOT
from tests.utils.servers.openai_server import OpenAIServer, error, hang, malformed, rate_limited, reply

ROOT = REPO_ROOT
PARAMS = SamplingParams(max_tokens=16, temperature=0.0)
try:
    openai.DefaultAioHttpClient()  # raises where the SDK's aiohttp extra is missing
    HAS_AIOHTTP = True
except (AttributeError, RuntimeError):
    HAS_AIOHTTP = False
TRANSPORTS = [pytest.param("aiohttp", marks=pytest.mark.skipif(not HAS_AIOHTTP, reason="openai[aiohttp]")), "httpx"]


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def server():
    with OpenAIServer(models=("test-model", "other-model")) as running:
        yield running


@pytest.fixture
def srv(server):
    server.reset()
    return server


@pytest.fixture
def make_backend(srv):
    made: list[OpenAICompatBackend] = []

    def make(model: str = "test-model", transport: str = "auto", **kwargs) -> OpenAICompatBackend:
        kwargs.setdefault("base_url", srv.url)
        kwargs.setdefault("max_retries", 2)
        kwargs.setdefault("timeout", 10.0)
        backend = OpenAICompatBackend(model, **kwargs)
        backend.http_transport = transport
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def subprocess_env() -> dict[str, str]:
    return os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


# ---------------------------------------------------------------------------------------- answers
def test_batch_answered_in_order_with_usage_and_callbacks(make_backend, srv):
    srv.script(reply("slow answer", delay=0.3), match="first")
    backend = make_backend()
    seen: list[int] = []
    answers = backend.chat(
        [user("first"), user("second question"), user("third"), user("fourth")],
        PARAMS,
        on_result=lambda i, completion: seen.append(i),
    )
    assert [a.text for a in answers] == ["slow answer", "echo: second question", "echo: third", "echo: fourth"]
    assert (answers[1].prompt_tokens, answers[1].completion_tokens) == (2, 3)
    assert all(a.ok and a.finish_reason == "stop" and a.model == "test-model" and not a.cached for a in answers)
    assert sorted(seen) == [0, 1, 2, 3] and seen[-1] == 0  # each reported as it arrived; the slow one last
    assert len(srv.requests) == 4
    assert backend.chat([], PARAMS) == []


def test_concurrency_is_bounded(make_backend, srv):
    srv.script(reply("ok", delay=0.2), match="wave", forever=True)
    backend = make_backend(max_concurrency=3)
    start = time.monotonic()
    answers = backend.chat([user(f"wave {i}") for i in range(9)], PARAMS)
    assert all(a.text == "ok" for a in answers)
    assert srv.peak_in_flight == 3
    assert time.monotonic() - start >= 0.55  # three waves of 0.2 s


def test_requests_per_minute_limit_spreads_requests(make_backend, srv):
    backend = make_backend(requests_per_minute=300)  # 5 a second, no burst of a whole minute
    start = time.monotonic()
    answers = backend.chat([user(f"rpm {i}") for i in range(10)], PARAMS)
    assert all(a.ok for a in answers)
    assert time.monotonic() - start >= 0.8


def test_tokens_per_minute_request_larger_than_budget_still_runs(make_backend, srv):
    backend = make_backend(tokens_per_minute=10)  # one request is estimated at 16+ tokens
    assert backend.chat([user("tpm")], PARAMS)[0].ok


def test_json_schema_and_sampling_fields_are_sent(make_backend, srv):
    backend = make_backend()
    assert backend.supports_json_schema
    schema = {"type": "object", "properties": {"label": {"type": "integer"}}, "required": ["label"]}
    params = SamplingParams(max_tokens=7, temperature=0.3, top_p=0.9, seed=42, stop=("END",), json_schema=schema)
    srv.script(reply('{"label": 1}'))
    assert backend.chat([user("structured")], params)[0].text == '{"label": 1}'
    body = srv.requests[-1].body
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": schema, "strict": False},
    }
    assert (body["model"], body["messages"]) == ("test-model", user("structured"))
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["seed"], body["stop"]) == (
        7,
        0.3,
        0.9,
        42,
        ["END"],
    )
    backend.chat([user("plain")], SamplingParams(seed=None))
    assert not {"seed", "stop", "response_format"} & set(srv.requests[-1].body)
    assert srv.requests[-1].headers["authorization"] == "Bearer EMPTY"  # no api_key_env: a dummy key


def test_parse_tolerates_missing_usage_and_null_content():
    body = b'{"choices": [{"message": {"role": "assistant", "content": null}, "finish_reason": "length"}]}'
    completion = parse_chat_completion(body, "m")
    assert (completion.text, completion.prompt_tokens, completion.finish_reason, completion.model) == (
        "",
        0,
        "length",
        "m",
    )
    with pytest.raises(MalformedResponse, match="not JSON"):
        parse_chat_completion(b"<html>", "m")


# ---------------------------------------------------------------------------------------- retries
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_429_waits_what_retry_after_asks(make_backend, srv, transport):
    srv.script(rate_limited(retry_after=1), match="limited")
    answer = make_backend(transport=transport).chat([user("limited")], PARAMS)[0]
    assert answer.text == "echo: limited"
    first, second = srv.requests_for("limited")
    # the SDK's own first backoff is 0.375-0.5 s: a gap of >= 1 s is the header's doing
    assert 1.0 <= second.time - first.time < 3.0


def test_server_errors_then_success_with_exponential_backoff(make_backend, srv):
    srv.script(error(500), error(503), match="flaky")
    answer = make_backend(max_retries=3).chat([user("flaky")], PARAMS)[0]
    assert answer.text == "echo: flaky"
    times = [r.time for r in srv.requests_for("flaky")]
    assert len(times) == 3
    assert times[1] - times[0] >= 0.375 and times[2] - times[1] >= 0.75  # 0.5 s then 1 s, minus <= 25 % jitter


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_timeout_then_success(make_backend, srv, transport):
    srv.script(hang(2.0), match="sluggish")
    answer = make_backend(transport=transport, timeout=0.5).chat([user("sluggish")], PARAMS)[0]
    assert answer.text == "echo: sluggish"
    assert len(srv.requests_for("sluggish")) == 2


@pytest.mark.parametrize("kind", ["not-json", "html", "wrong-shape", "no-choices", "no-message"])
def test_malformed_body_then_success(make_backend, srv, kind):
    srv.script(malformed(kind), match="garbled")
    answer = make_backend().chat([user("garbled")], PARAMS)[0]
    assert answer.ok and answer.text == "echo: garbled"
    assert len(srv.requests_for("garbled")) == 2


def test_failures_of_one_conversation_do_not_stop_the_others(make_backend, srv):
    srv.script(error(500, headers={"retry-after-ms": "20"}), match="doomed", forever=True)
    srv.script(error(400, "This model's maximum context length is 4096 tokens."), match="too long", forever=True)
    srv.script(malformed("html"), match="garbled", forever=True)
    reported: dict[int, str] = {}
    answers = make_backend(max_retries=1).chat(
        [user("fine 1"), user("doomed"), user("too long"), user("garbled"), user("fine 2")],
        PARAMS,
        on_result=lambda i, c: reported.__setitem__(i, c.finish_reason),
    )
    assert [a.text for a in answers] == ["echo: fine 1", "", "", "", "echo: fine 2"]
    assert [a.finish_reason for a in answers] == ["stop", "error", "error", "error", "stop"]
    assert answers[1].error.startswith("HTTP 500 after 1 retry")
    assert "maximum context length" in answers[2].error and answers[2].error.startswith("HTTP 400:")
    assert answers[3].error.startswith("malformed response after 1 retry")
    assert len(srv.requests_for("doomed")) == 2 and len(srv.requests_for("too long")) == 1  # 400: not retried
    assert reported == {0: "stop", 1: "error", 2: "error", 3: "error", 4: "stop"}


# ---------------------------------------------------------------------------------------- engine-wide errors
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_unreachable_endpoint_raises_engine_error(make_backend, transport):
    url = f"http://127.0.0.1:{free_port()}/v1"
    backend = make_backend(transport=transport, base_url=url, max_retries=1)
    with pytest.raises(EngineError) as caught:
        backend.chat([user("anyone there?")] * 2, PARAMS)
    message = str(caught.value)
    assert f"could not reach the OpenAI-compatible server at {url} after 1 retry (connection refused)" in message
    assert "vllm serve test-model" in message and "--base-url" in message


def test_unknown_model_raises_engine_error_listing_served_models(make_backend, srv):
    with pytest.raises(EngineError) as caught:
        make_backend(model="no-such-model").chat([user("hello")], PARAMS)
    message = str(caught.value)
    assert "does not know the model 'no-such-model'" in message and "HTTP 404" in message
    assert "['other-model', 'test-model']" in message and "--model" in message
    assert len(srv.requests) == 1  # a 404 is not retried


def test_api_key_comes_from_the_named_env_var_and_never_leaks(monkeypatch):
    secret, wrong = "sk-test-0123456789abcdef", "sk-wrong-9876543210fedcba"
    with OpenAIServer(api_key=secret) as keyed:
        monkeypatch.setenv("HF_BARRED_TEST_KEY", secret)
        backend = OpenAICompatBackend("test-model", base_url=keyed.url, api_key_env="HF_BARRED_TEST_KEY")
        try:
            assert backend.chat([user("with key")], PARAMS)[0].ok
            assert keyed.requests[-1].headers["authorization"] == f"Bearer {secret}"
            assert secret not in repr(backend) and secret not in str(backend)
            assert secret.encode() not in pickle.dumps(backend)
            assert repr(pickle.loads(pickle.dumps(backend))) == repr(backend)
        finally:
            backend.close()

        monkeypatch.setenv("HF_BARRED_TEST_KEY", wrong)  # the server echoes the key it got, as some do
        rejected = OpenAICompatBackend("test-model", base_url=keyed.url, api_key_env="HF_BARRED_TEST_KEY")
        with pytest.raises(EngineError) as caught:
            rejected.chat([user("wrong key")], PARAMS)
        rejected.close()
        message = str(caught.value)
        assert "HTTP 401" in message and "Set HF_BARRED_TEST_KEY to a valid key" in message
        assert wrong not in message and "***" in message

        keyless = OpenAICompatBackend("test-model", base_url=keyed.url)
        with pytest.raises(EngineError, match="--api-key-env"):
            keyless.chat([user("no key")], PARAMS)
        keyless.close()

    monkeypatch.delenv("HF_BARRED_TEST_KEY")
    with pytest.raises(EngineError, match=r"HF_BARRED_TEST_KEY \(api_key_env\), but HF_BARRED_TEST_KEY is not set"):
        OpenAICompatBackend.from_config(
            EngineConfig(
                engine="openai", model="test-model", base_url="http://127.0.0.1:1/v1", api_key_env="HF_BARRED_TEST_KEY"
            )
        )


# ---------------------------------------------------------------------------------------- cache, processes
def test_get_engine_second_identical_call_is_a_cache_hit(srv, tmp_path):
    config = EngineConfig(engine="openai", base_url=srv.url, model="test-model", cache_dir=str(tmp_path))
    clear_engines()
    engine = get_engine(config)
    try:
        convs = [user(f"cached {i}") for i in range(3)]
        first = engine.chat(convs, PARAMS)
        assert len(srv.requests) == 3 and not any(a.cached for a in first)
        second = engine.chat(convs, PARAMS)
        assert len(srv.requests) == 3  # no new request reached the server
        assert all(a.cached for a in second) and [a.text for a in second] == [a.text for a in first]
        assert engine.cache.stats("test-model") == {"hits": 3, "misses": 3, "prompt_tokens": 6, "completion_tokens": 9}
    finally:
        engine.backend.close()
        clear_engines()


CHILD = textwrap.dedent(
    """
    import json, sys
    from hf_barred.llm import EngineConfig, SamplingParams, get_engine
    engine = get_engine(EngineConfig(engine="openai", base_url=sys.argv[1], model="test-model",
                                     cache_dir=sys.argv[2], max_retries=0))
    convs = [[{"role": "user", "content": f"{sys.argv[3]} {i}"}] for i in range(int(sys.argv[4]))]
    print("started", flush=True)
    answers = engine.chat(convs, SamplingParams(max_tokens=8, temperature=0.0))
    print(json.dumps({"cached": [a.cached for a in answers], "texts": [a.text for a in answers],
                      "stats": engine.cache.stats()}))
    """
)


def run_child(url: str, cache_dir: Path, tag: str, n: int) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, url, str(cache_dir), tag, str(n)],
        capture_output=True,
        text=True,
        timeout=60,
        env=subprocess_env(),
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_cache_is_shared_across_processes(srv, tmp_path):
    first = run_child(srv.url, tmp_path, "cross-process", 4)
    assert first["cached"] == [False] * 4 and len(srv.requests_for("cross-process")) == 4
    second = run_child(srv.url, tmp_path, "cross-process", 4)
    assert second["cached"] == [True] * 4 and second["texts"] == first["texts"]
    assert len(srv.requests_for("cross-process")) == 4  # the second process sent nothing
    assert second["stats"]["hits"] == 4 and second["stats"]["misses"] == 4
    assert ResponseCache(tmp_path / "responses.sqlite").stats()["hits"] == 4


def _rows(db: Path) -> int:
    """Answers in the child's cache, read through one short-lived read-only connection (no schema write,
    nothing left open while the child shuts down)."""
    import sqlite3

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    except sqlite3.OperationalError:  # the table is not created yet
        return 0
    finally:
        conn.close()


@pytest.mark.isolated  # quarantined: its child hangs at exit after the main suite ran (see scripts/test.sh)
def test_ctrl_c_keeps_the_answers_that_already_arrived(srv, tmp_path):
    srv.script(hang(20), match="stuck", forever=True)
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import faulthandler, signal; faulthandler.register(signal.SIGUSR1, all_threads=True)\n"
            + CHILD.replace("{sys.argv[3]} {i}", "{'stuck' if i % 2 else 'quick'} {i}"),
            srv.url,
            str(tmp_path),
            "unused",
            "6",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
        cwd=ROOT,
    )
    try:
        assert child.stdout.readline().strip() == "started"
        deadline = time.monotonic() + 30
        db = tmp_path / "responses.sqlite"
        while not db.exists() or len(srv.requests) < 6 or _rows(db) < 3:  # 3 answered, 3 stuck in flight
            assert time.monotonic() < deadline and child.poll() is None
            time.sleep(0.05)
        child.send_signal(signal.SIGINT)
        try:
            _, stderr = child.communicate(timeout=20)
        except subprocess.TimeoutExpired:  # say where it hangs: the child dumps its threads' stacks on SIGUSR1
            child.send_signal(signal.SIGUSR1)
            time.sleep(1)
            child.kill()
            pytest.fail(f"the child did not stop within 20 s of Ctrl-C; its stacks:\n{child.communicate()[1][-6000:]}")
    finally:
        child.kill()
    assert child.returncode != 0 and "KeyboardInterrupt" in stderr
    assert len(ResponseCache(tmp_path / "responses.sqlite")) == 3


_FORKED: list[OpenAICompatBackend] = []


def _chat_in_forked_child(results) -> None:
    results.put(_FORKED[0].chat([user("from the child")], PARAMS)[0].text)


@pytest.mark.skipif(sys.platform == "win32", reason="fork")
def test_backend_works_after_fork(make_backend, srv):
    backend = make_backend()
    assert backend.chat([user("from the parent")], PARAMS)[0].ok  # the parent's loop thread now runs
    _FORKED[:] = [backend]
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    child = ctx.Process(target=_chat_in_forked_child, args=(results,))
    child.start()
    try:
        assert results.get(timeout=30) == "echo: from the child"
    finally:
        child.join(timeout=10)
        _FORKED.clear()
    assert backend.chat([user("parent again")], PARAMS)[0].text == "echo: parent again"
