"""guardrail_config.json: ``chunk_stride`` is a field of the spec; configs written before it still load."""

from __future__ import annotations

import dataclasses
import json

from hf_barred.guardrails.spec import SPEC_FILE, GuardrailSpec


def _spec(**kwargs) -> GuardrailSpec:
    return GuardrailSpec(kind="classifier", prompt_format="binary", base_model="x", rule="r", **kwargs)


def test_chunk_stride_is_saved_and_loaded(tmp_path):
    _spec(chunk_stride=8).save(tmp_path)
    assert json.loads((tmp_path / SPEC_FILE).read_text())["chunk_stride"] == 8
    assert GuardrailSpec.load(tmp_path).chunk_stride == 8
    assert _spec().chunk_stride == 32


def test_a_config_without_chunk_stride_falls_back_to_the_training_flag_then_32(tmp_path):
    old = dataclasses.asdict(_spec(training={"config": {"chunk_stride": 16}}))
    del old["chunk_stride"]
    (tmp_path / SPEC_FILE).write_text(json.dumps(old))
    assert GuardrailSpec.load(tmp_path).chunk_stride == 16
    del old["training"]
    (tmp_path / SPEC_FILE).write_text(json.dumps(old))
    assert GuardrailSpec.load(tmp_path).chunk_stride == 32
