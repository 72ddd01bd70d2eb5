"""BARRED end to end through the real local engine (transformers generate on CPU).

The default test uses a tiny random model made here (2 layers, 32 hidden; the tokenizer of the
packaged all-MiniLM-L6-v2 with a chat template): its answers are noise, so every stage's parse
failures are exercised and the run must still complete and report them. The slow test runs the
embedded SmolLM2-135M-Instruct at tiny N.
"""

from __future__ import annotations

import dataclasses

import pytest

import hf_barred.llm as llm
from hf_barred.llm import EngineConfig, ResponseCache
from hf_barred.policy.task import GuardrailTask
from hf_barred.recipes.barred.failures import AnswersUnusable
from hf_barred.recipes.barred.run import BarredConfig, run_barred
from hf_barred.stages.embedding import embedder_path

TASK = GuardrailTask.load("dataset_scripts/health-advice/task.yaml")
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


@pytest.fixture
def tiny_model(tmp_path):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(embedder_path("embedded"))
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.eos_token = tokenizer.sep_token
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
    )
    torch.manual_seed(0)
    folder = tmp_path / "tiny-llama"
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    llm.clear_engines()
    yield str(folder)
    llm.clear_engines()


def _small_config(engine: EngineConfig, max_tokens: int = 0, **kwargs) -> BarredConfig:
    config = BarredConfig.for_engine(engine, max_rounds=1, max_refinements=1, initial_acceptance=1.0, **kwargs)
    if max_tokens:  # short answers, no repair rounds: the noise of a random model never parses anyway
        short = {"max_tokens": max_tokens, "max_repairs": 0}
        config = dataclasses.replace(
            config,
            **{
                name: dataclasses.replace(getattr(config, name), **short)
                for name in ("decompose", "instantiate", "generate", "debate", "refine")
            },
        )
    return config


def test_end_to_end_on_a_tiny_local_model(tiny_model, tmp_path, cache_dir):
    engine = EngineConfig(engine="local", model=tiny_model, cache_dir=str(cache_dir), batch_size=8)
    out = tmp_path / "out"
    # noise never parses: the run stops at the decomposition, naming the stage, one raw answer and the fix
    with pytest.raises(AnswersUnusable, match=r"decompose: 2 of 2 answers \(100%\) could not be used"):
        run_barred(TASK, 2, _small_config(engine, max_tokens=8), out, progress=False)
    # told to let unusable answers through, it still writes nothing about nothing (no dimension, no generation)
    with pytest.raises(AnswersUnusable, match="decomposition: .* before any generation"):
        run_barred(TASK, 2, _small_config(engine, max_tokens=8, max_failure_rate=1.0), out, progress=False)
    calls = ResponseCache(cache_dir / "responses.sqlite").stats()["misses"]
    assert calls > 0 and not (out / "README.md").exists()
    # the rerun pays for nothing: every answer of the real (tiny) model is in the cache
    llm.clear_engines()
    with pytest.raises(AnswersUnusable):
        run_barred(TASK, 2, _small_config(engine, max_tokens=8, max_failure_rate=1.0), out, progress=False)
    assert ResponseCache(cache_dir / "responses.sqlite").stats()["misses"] == calls


@pytest.mark.slow
def test_end_to_end_on_the_embedded_model(tmp_path, cache_dir):
    llm.clear_engines()
    engine = EngineConfig(engine="local", cache_dir=str(cache_dir), batch_size=8)
    config = _small_config(engine, max_rows_per_round=2)
    result = run_barred(TASK, 2, config, tmp_path / "out", progress=False)
    stats = result.stats
    assert stats["planned_rows"] == 2
    assert stats["accepted"] + stats["rejected"] == 2
    assert stats["engine"]["calls"] > 0 and stats["requests"] >= stats["engine"]["calls"]
    assert result.train.features["label"].names == list(TASK.labels)
    llm.clear_engines()
