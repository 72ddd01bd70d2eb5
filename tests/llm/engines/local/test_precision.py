"""The local engine's precision: bfloat16 with packed weights on CPUs with AMX or AVX512-BF16 where it measures
faster, float32 elsewhere or on request."""

from __future__ import annotations

import pytest
import torch

from hf_barred.llm import CachedBackend, Completion, EngineConfig, ResponseCache, SamplingParams
from hf_barred.llm.engines.local import packed, precision
from hf_barred.llm.engines.local.engine import LocalBackend
from hf_barred.llm.engines.local.packed import PackedLinear, onednn_packs_bfloat16, pack_linear_weights
from hf_barred.llm.engines.local.precision import (
    BFLOAT16_FLAGS,
    auto_cpu_dtype_name,
    cpu_bfloat16_flags,
    resolve_dtype,
    resolved_dtype_name,
)

GREEDY = SamplingParams(max_tokens=6, temperature=0)

needs_bfloat16_packing = pytest.mark.skipif(
    not onednn_packs_bfloat16(),
    reason="oneDNN has no bfloat16 path on this CPU (bf16 path needs the cpu support avx_ne_convert or avx512bw, "
    "avx512vl and avx512dq)",
)


@pytest.fixture(autouse=True)
def fresh_auto_decision():
    """Every test decides ``auto`` anew (the decision is cached per process) and leaves no faked one behind."""
    auto_cpu_dtype_name.cache_clear()
    yield
    auto_cpu_dtype_name.cache_clear()


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> str:
    from hf_barred.train.tiny import make_tiny_causal_lm

    return make_tiny_causal_lm(tmp_path_factory.mktemp("tiny_lm"), corpus=["the cat sat on the mat"] * 4)


def conversations() -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": text}] for text in ("the cat", "a mat sat on the cat", "sat", "on the mat")]


def fake_cpu(monkeypatch, flags=(), packs=True, seconds=None, timings=None):
    """A CPU with ``flags``, whose oneDNN packs bfloat16 when ``packs``, where each phase's timed products take
    ``seconds`` ({"float32": s, "bfloat16": s}; by phase: {phase: {...}}; None: a probe disagreed; an exception:
    raised); ``timings`` collects the timed phases."""
    phases = {products: phase for phase, products in precision.TIMED_PRODUCTS.items()}

    def time_products(products, rounds=5):
        phase = phases[products]
        if timings is not None:
            timings.append(phase)
        if isinstance(seconds, Exception):
            raise seconds
        return seconds[phase] if seconds is not None and phase in seconds else seconds

    monkeypatch.setattr(precision, "cpu_bfloat16_flags", lambda: frozenset(flags))
    monkeypatch.setattr(packed, "onednn_packs_bfloat16", lambda: packs)
    monkeypatch.setattr(packed, "time_linear_products", time_products)


def never(*args, **kwargs):
    raise AssertionError("not to be tried on this CPU")


@pytest.mark.parametrize("flag", BFLOAT16_FLAGS)
def test_auto_is_bfloat16_on_cpus_with_amx_or_avx512_bf16_where_it_measures_faster(monkeypatch, flag):
    timings: list = []
    fake_cpu(monkeypatch, flags=[flag], seconds={"float32": 2e-3, "bfloat16": 1e-3}, timings=timings)
    assert auto_cpu_dtype_name() == "bfloat16"
    assert resolve_dtype("auto", "cpu") is torch.bfloat16
    assert resolve_dtype("auto", "cuda") == "auto"  # the checkpoint's dtype
    assert timings == ["decoding step", "prefill block"]  # measured once per process, then kept


@pytest.mark.parametrize("bfloat16_seconds", [0.95e-3, 1e-3, 1.5e-3])
def test_auto_keeps_float32_where_bfloat16_is_not_clearly_faster(monkeypatch, bfloat16_seconds):
    fake_cpu(monkeypatch, flags=["avx512_bf16"], seconds={"float32": 1e-3, "bfloat16": bfloat16_seconds})
    assert precision.BFLOAT16_MAX_TIME_RATIO == 0.9
    assert auto_cpu_dtype_name() == "float32" and resolve_dtype("auto", "cpu") is torch.float32


def test_auto_keeps_float32_unless_bfloat16_is_faster_in_both_phases(monkeypatch):
    fast, slow = {"float32": 2e-3, "bfloat16": 1e-3}, {"float32": 1e-3, "bfloat16": 1.1e-3}
    fake_cpu(monkeypatch, flags=["amx_bf16"], seconds={"decoding step": slow, "prefill block": fast})
    assert auto_cpu_dtype_name() == "float32"
    auto_cpu_dtype_name.cache_clear()
    fake_cpu(monkeypatch, flags=["amx_bf16"], seconds={"decoding step": fast, "prefill block": slow})
    assert auto_cpu_dtype_name() == "float32"


def test_auto_is_float32_without_the_flags_and_tries_nothing_else(monkeypatch):
    monkeypatch.setattr(precision, "cpu_bfloat16_flags", lambda: frozenset())
    monkeypatch.setattr(packed, "onednn_packs_bfloat16", never)
    monkeypatch.setattr(packed, "time_linear_products", never)
    assert auto_cpu_dtype_name() == "float32" and resolve_dtype("auto", "cpu") is torch.float32


def test_auto_is_float32_where_onednn_cannot_pack_or_the_packed_layer_disagrees(monkeypatch):
    fake_cpu(monkeypatch, flags=["amx_bf16"], packs=False)
    monkeypatch.setattr(packed, "time_linear_products", never)
    assert auto_cpu_dtype_name() == "float32"
    for failure in (None, RuntimeError("no such op")):  # a probe disagreed; a torch without the ops
        auto_cpu_dtype_name.cache_clear()
        fake_cpu(monkeypatch, flags=["amx_bf16", "avx512_bf16"], seconds=failure)
        assert auto_cpu_dtype_name() == "float32"


def test_the_flags_come_from_torch_else_from_proc_cpuinfo(monkeypatch):
    assert cpu_bfloat16_flags() <= set(BFLOAT16_FLAGS)
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": True, "amx_bf16": False}, raising=False)
    assert cpu_bfloat16_flags() == {"avx512_bf16"}
    monkeypatch.delattr(torch.cpu, "get_capabilities", raising=False)  # an older torch: its private checks
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert cpu_bfloat16_flags() == {"amx_bf16"}
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)  # none: /proc/cpuinfo
    monkeypatch.setattr(precision, "_proc_cpuinfo_flags", lambda: frozenset({"avx2", "avx512_bf16", "avx512f"}))
    assert cpu_bfloat16_flags() == {"avx512_bf16"}


def test_this_cpu_without_the_flags_runs_float32():
    if cpu_bfloat16_flags():
        assert auto_cpu_dtype_name() in ("float32", "bfloat16")  # measured here
    else:
        assert auto_cpu_dtype_name() == "float32"


def test_the_resolved_precision_of_a_config_needs_no_model(monkeypatch):
    import hf_barred.llm.threads

    configured = []
    monkeypatch.setattr(hf_barred.llm.threads, "configure_threads", configured.append)
    fake_cpu(monkeypatch, flags=["avx512_bf16"], seconds={"float32": 2e-3, "bfloat16": 1e-3})
    assert resolved_dtype_name(EngineConfig(device="cpu", threads=3)) == "bfloat16"
    assert configured == [3]  # the engine's threads, before the timing (as LocalBackend.from_config)
    assert resolved_dtype_name(EngineConfig(device="cpu", dtype="float32")) == "float32"
    assert resolved_dtype_name(EngineConfig(device="cuda")) == "auto"  # the checkpoint's dtype
    assert resolved_dtype_name(EngineConfig(device="cuda", dtype="bfloat16")) == "bfloat16"
    auto_cpu_dtype_name.cache_clear()
    fake_cpu(monkeypatch, flags=[])
    assert resolved_dtype_name(EngineConfig(device="cpu")) == "float32"
    assert resolve_dtype("bfloat16", "cpu") is torch.bfloat16 and resolve_dtype("float32", "cuda") is torch.float32


def test_importing_the_precision_module_does_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys; import hf_barred.llm.engines.local.precision as p; "
        "assert 'torch' not in sys.modules, 'torch imported'; print(p.BFLOAT16_FLAGS)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


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


@needs_bfloat16_packing
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

    monkeypatch.setattr(packed, "onednn_packs_bfloat16", lambda: True)
    monkeypatch.setattr(PackedLinear, "__init__", missing)
    assert pack_linear_weights(model) == 0 and isinstance(model[0], torch.nn.Linear)


def test_a_cpu_without_onednn_bfloat16_keeps_plain_layers_without_trying(monkeypatch):
    model = torch.nn.Sequential(torch.nn.Linear(8, 4)).to(torch.bfloat16)
    monkeypatch.setattr(packed, "onednn_packs_bfloat16", lambda: False)
    monkeypatch.setattr(PackedLinear, "__init__", never)
    assert pack_linear_weights(model) == 0 and isinstance(model[0], torch.nn.Linear)


@needs_bfloat16_packing
def test_the_timing_measures_both_precisions_on_this_cpu():
    state = torch.random.get_rng_state()
    seconds = packed.time_linear_products([(8, 64, 96), (2, 96, 64)], rounds=2)
    assert seconds is not None and set(seconds) == {"float32", "bfloat16"} and min(seconds.values()) > 0
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is left alone


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
