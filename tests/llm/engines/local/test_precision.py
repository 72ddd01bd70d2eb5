"""The local engine's precision: bfloat16 with packed weights on AMX CPUs, float32 elsewhere or on request."""

from __future__ import annotations

import pytest
import torch

from hf_barred.llm import CachedBackend, Completion, EngineConfig, ResponseCache, SamplingParams
from hf_barred.llm.engines.local import precision
from hf_barred.llm.engines.local.engine import LocalBackend
from hf_barred.llm.engines.local.precision import PackedLinear, pack_linear_weights, resolve_dtype

GREEDY = SamplingParams(max_tokens=6, temperature=0)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> str:
    from hf_barred.train.tiny import make_tiny_causal_lm

    return make_tiny_causal_lm(tmp_path_factory.mktemp("tiny_lm"), corpus=["the cat sat on the mat"] * 4)


def conversations() -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": text}] for text in ("the cat", "a mat sat on the cat", "sat", "on the mat")]


def test_auto_is_bfloat16_only_on_cpus_with_amx(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_amx_bf16", lambda: True)
    assert resolve_dtype("auto", "cpu") is torch.bfloat16
    monkeypatch.setattr(precision, "cpu_has_amx_bf16", lambda: False)
    assert resolve_dtype("auto", "cpu") is torch.float32
    assert resolve_dtype("auto", "cuda") == "auto"  # the checkpoint's dtype
    assert resolve_dtype("bfloat16", "cpu") is torch.bfloat16 and resolve_dtype("float32", "cuda") is torch.float32


def test_a_dtype_outside_the_choices_is_refused_by_the_config_and_the_cli():
    with pytest.raises(ValueError, match="EngineConfig.dtype: expected one of auto, float32, bfloat16, found 'fp8'"):
        EngineConfig(dtype="fp8")
    from hf_barred.cli import engine_options
    from hf_barred.llm import config

    assert engine_options.DTYPES == config.DTYPES and engine_options.ENGINES == config.ENGINES


def test_an_explicit_dtype_is_part_of_the_identity_of_local_runs():
    assert EngineConfig().identity() == {"engine": "local", "model": "embedded"}
    assert EngineConfig(dtype="float32").identity() == {"engine": "local", "model": "embedded", "dtype": "float32"}
    served = EngineConfig(engine="openai", model="m", base_url="http://127.0.0.1:1/v1", dtype="float32")
    assert served.identity() == {"engine": "openai", "model": "m"}  # a server's precision is its own


def test_the_dtype_flag_reaches_the_engine_config(tmp_path):
    import argparse

    from hf_barred.cli.engine_options import add_engine_arguments, engine_config

    parser = argparse.ArgumentParser()
    add_engine_arguments(parser)
    args = parser.parse_args(["--dtype", "float32", "--cache-dir", str(tmp_path)])
    assert engine_config(args).dtype == "float32"
    assert engine_config(parser.parse_args(["--cache-dir", str(tmp_path)])).dtype == "auto"
    with pytest.raises(SystemExit):
        parser.parse_args(["--dtype", "half"])


def test_packed_layers_compute_what_the_bfloat16_layers_compute(tiny_folder):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_folder, dtype=torch.bfloat16).eval()
    linears = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    batches = [torch.randint(0, 300, (1, 1)), torch.randint(0, 300, (3, 17))]  # one decoding row, a prefill batch
    with torch.inference_mode():
        expected = [model(input_ids=ids).logits for ids in batches]
        assert pack_linear_weights(model) == linears > 0
        assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())
        for ids, logits in zip(batches, expected):
            assert torch.allclose(model(input_ids=ids).logits.float(), logits.float(), rtol=1e-2, atol=1e-2)


def test_float32_and_gpu_layers_are_left_alone():
    model = torch.nn.Sequential(torch.nn.Linear(8, 4))
    assert pack_linear_weights(model) == 0 and isinstance(model[0], torch.nn.Linear)


def test_a_torch_without_the_onednn_ops_keeps_plain_layers(monkeypatch):
    model = torch.nn.Sequential(torch.nn.Linear(8, 4)).to(torch.bfloat16)

    def missing(*args, **kwargs):
        raise RuntimeError("no such op")

    monkeypatch.setattr(PackedLinear, "__init__", missing)
    assert pack_linear_weights(model) == 0 and isinstance(model[0], torch.nn.Linear)


def test_a_bfloat16_engine_answers_like_transformers_in_bfloat16(tiny_folder):
    """Same first tokens as stock ``generate`` on the same bfloat16 weights (packed or not)."""
    from transformers import AutoModelForCausalLM

    engine = LocalBackend.from_config(
        EngineConfig(engine="local", model=tiny_folder, device="cpu", dtype="bfloat16"),
        progress=False,
        prefix_reuse=False,
    )
    assert engine.model.dtype == torch.bfloat16
    stock = AutoModelForCausalLM.from_pretrained(tiny_folder, dtype=torch.bfloat16).eval()
    for conversation, answer in zip(conversations(), engine.chat(conversations(), GREEDY)):
        ids = engine._encode(conversation)
        with torch.inference_mode():
            out = stock.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=2,
                do_sample=False,
                pad_token_id=engine.tokenizer.pad_token_id,
            )
        first = engine.tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)
        assert answer.text.startswith(first)


def test_each_precision_has_its_own_cache_entries(tiny_folder, tmp_path):
    bf16 = LocalBackend.from_config(
        EngineConfig(engine="local", model=tiny_folder, device="cpu", dtype="bfloat16"), progress=False
    )
    fp32 = LocalBackend(bf16.model.float(), bf16.tokenizer, bf16.model_name, progress=False)
    assert bf16.cache_name == f"{tiny_folder}@bfloat16" and fp32.cache_name == fp32.model_name == tiny_folder

    class Scripted:
        supports_json_schema = False

        def __init__(self, name: str, cache_name: str):
            self.model_name, self.cache_name, self.calls = name, cache_name, 0

        def chat(self, conversations, params, on_result=None):
            self.calls += 1
            return [Completion(text=self.cache_name, prompt_tokens=1, completion_tokens=1) for _ in conversations]

    cache = ResponseCache(tmp_path / "cache.sqlite")
    first, second, again = Scripted("m", "m@bfloat16"), Scripted("m", "m"), Scripted("m", "m@bfloat16")
    conversation = conversations()[:1]
    assert CachedBackend(first, cache).chat(conversation, GREEDY)[0].text == "m@bfloat16"
    assert CachedBackend(second, cache).chat(conversation, GREEDY)[0].text == "m"  # not the bfloat16 answer
    assert CachedBackend(again, cache).chat(conversation, GREEDY)[0].text == "m@bfloat16"
    assert (first.calls, second.calls, again.calls) == (1, 1, 0)
