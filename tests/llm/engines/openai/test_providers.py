"""Providers as they really are: OpenAI reasoning models, Azure OpenAI, Anthropic and Gemini profiles, against a
loopback server that rejects what the real API rejects (tests/utils/servers/contracts.py)."""

from __future__ import annotations

import json

import httpx
import pytest
from datasets import load_dataset

from hf_barred.cli.main import main
from hf_barred.llm import EngineConfig, SamplingParams, clear_engines, get_engine
from hf_barred.llm.engines.openai.backend import OpenAICompatBackend
from hf_barred.llm.providers import REASONING_TOKENS, is_reasoning_model
from tests.utils import REPO_ROOT
from tests.utils.cli_runs import provider_argv
from tests.utils.servers.openai_server import OpenAIServer, reply
from tests.utils.servers.strong_model import StrongModel

TASK = REPO_ROOT / "dataset_scripts" / "health-advice" / "task.yaml"


def _post(server: OpenAIServer, body: dict) -> httpx.Response:
    return httpx.post(f"{server.url}/chat/completions", json=body, timeout=10)


# --- the contract server rejects what OpenAI rejects ---------------------------------------------------------
def test_the_reasoning_contract_server_rejects_what_openai_rejects():
    messages = [{"role": "user", "content": "hi"}]
    with OpenAIServer(models=("gpt-5-mini", "gpt-4.1"), contract="openai") as server:
        refused = _post(server, {"model": "gpt-5-mini", "messages": messages, "max_tokens": 8})
        assert refused.status_code == 400
        assert refused.json()["error"] == {
            "message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.",
            "type": "invalid_request_error",
            "param": "max_tokens",
            "code": "unsupported_parameter",
        }
        for name, value in (("temperature", 0.7), ("top_p", 0.9)):
            body = {"model": "gpt-5-mini", "messages": messages, "max_completion_tokens": 64, name: value}
            answer = _post(server, body)
            assert answer.status_code == 400 and answer.json()["error"]["code"] == "unsupported_value", name
        stop = _post(server, {"model": "gpt-5-mini", "messages": messages, "max_completion_tokens": 64, "stop": ["x"]})
        assert stop.status_code == 400
        effort = _post(server, {"model": "gpt-4.1", "messages": messages, "max_tokens": 8, "reasoning_effort": "low"})
        assert effort.status_code == 400 and effort.json()["error"]["param"] == "reasoning_effort"
        ok = _post(
            server,
            {"model": "gpt-5-mini", "messages": messages, "max_completion_tokens": 200, "reasoning_effort": "high"},
        )
        assert ok.status_code == 200
        assert ok.json()["usage"]["completion_tokens_details"]["reasoning_tokens"] > 0
        starved = _post(server, {"model": "gpt-5-mini", "messages": messages, "max_completion_tokens": 4})
        choice = starved.json()["choices"][0]
        assert choice["finish_reason"] == "length" and choice["message"]["content"] == ""  # spent on thinking
        assert _post(server, {"model": "gpt-4.1", "messages": messages, "max_tokens": 8, "temperature": 0.7}).is_success


def test_the_azure_contract_server_wants_deployments_and_an_api_version():
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    with OpenAIServer(models=(), contract="azure", deployments={"judge-deploy": "gpt-4.1"}, api_key="k") as server:
        base = server.url.removesuffix("/v1")
        url = f"{base}/openai/deployments/judge-deploy/chat/completions"
        assert httpx.post(url, json=body, headers={"api-key": "k"}).status_code == 404  # no api-version
        assert httpx.post(url + "?api-version=1999-01-01", json=body, headers={"api-key": "k"}).status_code == 400
        wrong = httpx.post(
            f"{base}/openai/deployments/nope/chat/completions?api-version=2024-10-21",
            json=body,
            headers={"api-key": "k"},
        )
        assert wrong.status_code == 404 and wrong.json()["error"]["code"] == "DeploymentNotFound"
        assert (
            httpx.post(url + "?api-version=2024-10-21", json=body, headers={"Authorization": "Bearer k"}).status_code
            == 401
        )  # Azure's key goes in api-key
        assert httpx.post(url + "?api-version=2024-10-21", json=body, headers={"api-key": "k"}).is_success
        assert _post(server, {"model": "gpt-4.1", **body}).status_code == 404  # no OpenAI routes on Azure


# --- what the engine sends ---------------------------------------------------------------------------------
def test_the_reasoning_family_table_and_its_override():
    assert is_reasoning_model("openai", "gpt-5-mini") and is_reasoning_model("azure", "o3-mini")
    assert not is_reasoning_model("openai", "gpt-4o") and not is_reasoning_model("generic", "gpt-5-mini")
    deployment = EngineConfig(
        engine="openai",
        provider="azure",
        model="my-deployment",
        base_url="https://x",
        api_key_env="AZURE_OPENAI_API_KEY",
    )
    assert not deployment.is_reasoning
    assert deployment.replace(reasoning_model=True).is_reasoning  # served under another name
    with pytest.raises(ValueError, match="reasoning_effort"):
        EngineConfig(engine="openai", provider="openai", model="gpt-4.1", api_key_env="K", reasoning_effort="low")


def test_reasoning_requests_carry_max_completion_tokens_and_no_temperature(monkeypatch):
    monkeypatch.setenv("HF_BARRED_TEST_KEY", "sk-test")
    config = EngineConfig(
        engine="openai",
        provider="openai",
        model="gpt-5-mini",
        api_key_env="HF_BARRED_TEST_KEY",
        reasoning_effort="medium",
    )
    backend = OpenAICompatBackend.from_config(config)
    params = SamplingParams(max_tokens=256, temperature=0.0, top_p=1.0, seed=3)
    payload = backend.request_payload([{"role": "user", "content": "?"}], params)
    assert payload["max_completion_tokens"] == 256 + REASONING_TOKENS["medium"]
    assert payload["reasoning_effort"] == "medium" and payload["seed"] == 3
    assert not {"max_tokens", "temperature", "top_p", "stop"} & set(payload)
    plain = OpenAICompatBackend.from_config(config.replace(model="gpt-4.1", reasoning_effort=None))
    assert {"max_tokens", "temperature", "top_p"} <= set(
        plain.request_payload([{"role": "user", "content": "?"}], params)
    )
    # the effort and the allowance change answers: the cache keys and the stage fingerprints hold them
    assert backend.cache_name != OpenAICompatBackend.from_config(config.replace(reasoning_effort="high")).cache_name
    assert config.identity()["reasoning_effort"] == "medium"
    assert config.replace(reasoning_tokens=100).identity() != config.identity()


def test_anthropic_and_gemini_profiles_send_what_their_endpoints_honour(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "a")
    monkeypatch.setenv("GEMINI_API_KEY", "g")
    params = SamplingParams(max_tokens=64, temperature=1.5, seed=1, json_schema={"type": "object"})
    claude = OpenAICompatBackend.from_config(
        EngineConfig(engine="openai", provider="anthropic", model="claude-sonnet-4")
    )
    assert claude.config.base_url == "https://api.anthropic.com/v1" and claude.config.api_key_env == "ANTHROPIC_API_KEY"
    body = claude.request_payload([{"role": "user", "content": "?"}], params)
    assert body["temperature"] == 1.0 and "seed" not in body and "response_format" not in body
    assert not claude.supports_json_schema  # answers are validated and repaired instead
    gemini = OpenAICompatBackend.from_config(EngineConfig(engine="openai", provider="gemini", model="gemini-2.5-flash"))
    assert gemini.config.base_url.startswith("https://generativelanguage.googleapis.com/")
    assert "response_format" in gemini.request_payload([{"role": "user", "content": "?"}], params)


def test_prices_come_from_the_dated_table_unless_flags_say_otherwise():
    config = EngineConfig(engine="openai", provider="openai", model="gpt-5-mini", api_key_env="K")
    assert config.prices()[:2] == (0.25, 2.0) and "table" in config.prices()[2]
    assert config.cost(1_000_000, 1_000_000) == pytest.approx(2.25)
    mine = config.replace(price_per_million_input_tokens=1.0, price_per_million_output_tokens=3.0)
    assert mine.cost(1_000_000, 0) == 1.0 and "flags" in mine.prices()[2]
    assert config.replace(batch=True, batch_dir="/tmp/x").cost(1_000_000, 1_000_000) == pytest.approx(1.125)


# --- a run on the paper's generator, against the enforcing server -----------------------------------------
def _generate(server: OpenAIServer, out, model: str, *extra: str) -> int:
    """``barred generate`` on the OpenAI provider (the family table decides what is a reasoning model),
    pointed at the loopback server."""
    clear_engines()
    return main(provider_argv(server.url, out, model, out.parent / "cache", *extra, task=TASK))


@pytest.fixture(autouse=True)
def _openai_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-key")


def test_a_reasoning_model_run_goes_through_every_stage_with_no_rejected_request(tmp_path, capsys):
    with OpenAIServer(models=("gpt-5-mini",), responder=StrongModel(), contract="openai") as server:
        code = _generate(server, tmp_path / "out", "gpt-5-mini", "--reasoning-effort", "medium")
        out = capsys.readouterr()
        assert code == 0, out.err
        bodies = [r.body for r in server.requests]
        assert bodies and all(b.get("reasoning_effort") == "medium" for b in bodies)
        assert all("max_completion_tokens" in b and "temperature" not in b and "max_tokens" not in b for b in bodies)
        assert {"decompose", "instantiate", "generate", "judge"} <= {_stage(b) for b in bodies}
    assert len(load_dataset(str(tmp_path / "out"), split="train")) == 4
    assert "reasoning tokens" in out.out  # read from usage.completion_tokens_details, shown in the summary
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["engine"]["reasoning_tokens"] > 0 and summary["cut_off"]["generate"] == 0


def test_a_reasoning_budget_too_small_is_counted_apart_and_names_its_flag(tmp_path, capsys):
    with OpenAIServer(models=("gpt-5-mini",), responder=StrongModel(), contract="openai") as server:
        code = _generate(
            server,
            tmp_path / "out",
            "gpt-5-mini",
            "--reasoning-effort",
            "high",
            "--reasoning-tokens",
            "1",
            "--sample-max-tokens",
            "8",
            "--judge-max-tokens",
            "8",
        )
        out = capsys.readouterr()
    assert code != 0  # nothing parses: the run cannot reach its goal
    assert "cut off" in out.out + out.err and "--reasoning-tokens" in out.out + out.err


def test_a_non_reasoning_model_still_sends_temperature(tmp_path, capsys):
    with OpenAIServer(models=("gpt-4.1",), responder=StrongModel(), contract="openai") as server:
        assert _generate(server, tmp_path / "out", "gpt-4.1") == 0, capsys.readouterr().err
        temperatures = {r.body.get("temperature") for r in server.requests}
        assert all("max_tokens" in r.body and "reasoning_effort" not in r.body for r in server.requests)
    assert temperatures >= {0.0, 0.8}  # the judges greedy, the generator sampling, as before


def test_an_azure_deployment_answers_on_azures_url_shape(tmp_path, monkeypatch):
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "azure-key")
    with OpenAIServer(
        models=(),
        contract="azure",
        deployments={"gpt5-mini-prod": "gpt-5-mini"},
        api_key="azure-key",
        responder=lambda body: "ok",
    ) as server:
        config = EngineConfig(
            engine="openai",
            provider="azure",
            model="gpt5-mini-prod",
            base_url=server.url.removesuffix("/v1"),
            api_version="2025-04-01-preview",
            reasoning_model=True,
            cache=False,
        )
        clear_engines()
        [answer] = get_engine(config).chat([[{"role": "user", "content": "hi"}]], SamplingParams(max_tokens=8))
        assert answer.ok and answer.text == "ok" and answer.reasoning_tokens > 0
        request = server.requests[-1]
        assert request.headers["api-key"] == "azure-key" and "authorization" not in request.headers
        assert "max_completion_tokens" in request.body and "temperature" not in request.body
    clear_engines()


def _stage(body: dict) -> str:
    from tests.utils.servers.strong_model import stage_of

    return stage_of(body)


def test_the_cli_has_the_provider_flags(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = capsys.readouterr().out
    for flag in (
        "--provider",
        "--reasoning-effort",
        "--reasoning-tokens",
        "--reasoning-model",
        "--api-version",
        "--batch",
        "--batch-price-factor",
    ):
        assert flag in text, flag


def test_a_scripted_reply_passes_through_the_profile_unchanged():
    with OpenAIServer(models=("gpt-4.1",), contract="openai") as server:
        server.script(reply("fine"))
        clear_engines()
        config = EngineConfig(engine="openai", provider="generic", model="gpt-4.1", base_url=server.url, cache=False)
        [answer] = get_engine(config).chat([[{"role": "user", "content": "x"}]], SamplingParams(max_tokens=4))
        assert answer.text == "fine" and server.requests[-1].body["max_tokens"] == 4
    clear_engines()
