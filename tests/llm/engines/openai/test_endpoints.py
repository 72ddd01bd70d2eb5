"""The ``openai`` engine over several servers of one model: the least busy first, a failing server out of
the rotation while the others take its requests, an error only when every server is down.

Every server is a real OpenAI-protocol HTTP server on loopback (tests/utils/servers).
"""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from hf_barred.cli.main import main
from hf_barred.llm import EngineConfig, EngineError, SamplingParams
from hf_barred.llm.engines.openai.backend import OpenAICompatBackend
from tests.utils.cli_runs import fresh_cli, generate_argv  # noqa: F401  (fresh_cli: a fixture)
from tests.utils.schema_responder import StageServer
from tests.utils.servers.openai_server import OpenAIServer, error, reply

PARAMS = SamplingParams(max_tokens=16, temperature=0.0)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def free_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


def backend_for(*urls: str, **kwargs) -> OpenAICompatBackend:
    kwargs.setdefault("max_retries", 2)
    kwargs.setdefault("timeout", 10.0)
    config = EngineConfig(engine="openai", model="test-model", base_url=urls[0], extra_base_urls=urls[1:], **kwargs)
    return OpenAICompatBackend.from_config(config)


def answered_prompts(*servers: OpenAIServer) -> list[str]:
    return [json.dumps(body["messages"]) for server in servers for body in server.answered]


@pytest.fixture
def two_servers():
    with OpenAIServer(latency=0.05) as a, OpenAIServer(latency=0.05) as b:
        yield a, b


def test_requests_go_to_the_least_busy_server_each_with_its_own_bound(two_servers):
    a, b = two_servers
    backend = backend_for(a.url, b.url, max_concurrency=4)
    try:
        answers = backend.chat([user(f"q {i}") for i in range(40)], PARAMS)
    finally:
        backend.close()
    assert [x.text for x in answers] == [f"echo: q {i}" for i in range(40)]
    assert backend.max_concurrency == 8  # 4 per server
    assert a.peak_in_flight == b.peak_in_flight == 4
    assert 15 <= len(a.answered) <= 25 and len(a.answered) + len(b.answered) == 40
    counts = backend.endpoint_counts()
    assert counts[a.url] == {"sent": len(a.answered), "answered": len(a.answered), "failed": 0}
    assert sum(c["answered"] for c in counts.values()) == 40


def test_a_server_that_refuses_leaves_the_rotation_and_the_other_answers_everything(two_servers):
    a, _ = two_servers
    down = free_url()
    backend = backend_for(down, a.url, max_concurrency=4)
    start = time.monotonic()
    try:
        answers = backend.chat([user(f"r {i}") for i in range(20)], PARAMS)
    finally:
        backend.close()
    assert all(x.ok for x in answers) and len(a.answered) == 20
    counts = backend.endpoint_counts()
    assert counts[down]["answered"] == 0 and 1 <= counts[down]["failed"] <= 4  # tried once per request in flight
    assert time.monotonic() - start < 2.0  # no retry back-off: the other server took the requests at once


def test_a_server_answering_5xx_sits_out_a_back_off(two_servers):
    a, b = two_servers
    a.script(error(503, "overloaded"), forever=True)
    backend = backend_for(a.url, b.url, max_concurrency=2)
    try:
        answers = backend.chat([user(f"s {i}") for i in range(12)], PARAMS)
    finally:
        backend.close()
    assert all(x.ok for x in answers) and len(b.answered) == 12
    assert backend.endpoint_counts()[a.url]["failed"] <= 2  # the first tries only: then a was out


def test_a_server_killed_mid_batch_loses_and_repeats_no_finished_call():
    a, b = OpenAIServer(latency=0.1).start(), OpenAIServer(latency=0.1).start()
    backend = backend_for(a.url, b.url, max_concurrency=4)
    threading.Timer(0.35, a.stop).start()  # a dies with requests in flight
    try:
        answers = backend.chat([user(f"k {i}") for i in range(40)], PARAMS)
    finally:
        backend.close()
        b.stop()
    assert [x.text for x in answers] == [f"echo: k {i}" for i in range(40)]
    answered = answered_prompts(a, b)
    assert sorted(answered) == sorted(json.dumps(user(f"k {i}")) for i in range(40))  # each once, none lost
    assert 0 < len(a.answered) < 40 and backend.endpoint_counts()[a.url]["failed"] >= 1


def test_every_server_down_is_one_engine_error_naming_them_all():
    urls = (free_url(), free_url())
    backend = backend_for(*urls, max_retries=1)
    try:
        with pytest.raises(EngineError) as caught:
            backend.chat([user("anyone?")], PARAMS)
    finally:
        backend.close()
    message = str(caught.value)
    assert f"could not reach any of the 2 OpenAI-compatible servers ({urls[0]}, {urls[1]})" in message
    assert "--base-url" in message


def test_one_server_keeps_its_retry_back_off(two_servers):
    a, _ = two_servers
    a.script(error(500, "boom"), reply("fine"), match="only")
    backend = backend_for(a.url, max_retries=2)
    start = time.monotonic()
    try:
        (answer,) = backend.chat([user("only one")], PARAMS)
    finally:
        backend.close()
    assert answer.text == "fine" and len(a.requests_for("only")) == 2
    assert time.monotonic() - start >= 0.3  # the retry waited its back-off: no other server to move to


@pytest.mark.usefixtures("fresh_cli")
def test_generate_on_two_servers_reports_each_and_reads_a_file_of_urls(tmp_path, capsys):
    with StageServer(latency=0.01) as a, StageServer(latency=0.01) as b:
        urls = tmp_path / "servers.txt"
        urls.write_text(f"# two replicas\n{b.url}\n")
        code = main(generate_argv(a.url, tmp_path / "out", "--servers-file", str(urls), "--max-concurrency", "2"))
        out = capsys.readouterr().out
    assert code == 0, out
    assert len(a.answered) > 0 and len(b.answered) > 0
    assert f"server {a.url}: {len(a.answered)} requests sent, {len(a.answered)} answered, 0 failed" in out
    assert f"server {b.url}: {len(b.answered)} requests sent" in out


def test_a_bad_file_of_urls_is_a_one_line_error(tmp_path, capsys):
    urls = tmp_path / "servers.txt"
    urls.write_text("localhost:8000\n")
    code = main(generate_argv("http://127.0.0.1:9/v1", tmp_path / "out", "--servers-file", str(urls)))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "expected one http(s) base URL per line" in err and "'localhost:8000'" in err
    assert not (tmp_path / "out").exists()
