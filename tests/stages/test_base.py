"""A stage's fingerprint changes exactly when its output would: code, version, prompts, config identity."""

from __future__ import annotations

import dataclasses

from datasets import Dataset

from hf_barred.llm import EngineConfig
from hf_barred.stages.prompting import load_prompt
from hf_barred.stages import generate as generate_module
from hf_barred.stages.base import map_stage, stage_fingerprint
from hf_barred.stages.generate import GenerateConfig, generate_fingerprint

ENGINE = EngineConfig(engine="openai", model="m", base_url="http://127.0.0.1:9/v1", max_concurrency=4)


def add_one(batch, config, prompts, version):
    return {"y": [x + 1 for x in batch["x"]]}


def add_two(batch, config, prompts, version):
    return {"y": [x + 2 for x in batch["x"]]}


def _ds() -> Dataset:
    return Dataset.from_dict({"x": [1, 2, 3]})


def test_a_changed_batch_function_changes_the_fingerprint():
    ds, config, prompts = _ds(), GenerateConfig(engine=ENGINE), (load_prompt("generate", "v1"),)
    one = stage_fingerprint(ds, "toy", "1", prompts, config, add_one)
    assert one == stage_fingerprint(ds, "toy", "1", prompts, config, add_one)
    assert one != stage_fingerprint(ds, "toy", "1", prompts, config, add_two)
    # map_stage gives the output that fingerprint, so a saved output of the old code is not reused
    out_one = map_stage(ds, add_one, stage="toy", version="1", config=config, prompts=prompts)
    out_two = map_stage(ds, add_two, stage="toy", version="1", config=config, prompts=prompts)
    assert out_one._fingerprint == one != out_two._fingerprint
    assert list(out_two["y"]) == [3, 4, 5]


def test_an_edited_helper_of_the_batch_function_changes_a_real_stage_fingerprint(monkeypatch):
    ds, config = _ds(), GenerateConfig(engine=ENGINE)
    before = generate_fingerprint(ds, config)

    def parse_sample(data, input_type, labels):  # the stage's parser, "edited"
        return None, "edited"

    monkeypatch.setattr(generate_module, "parse_sample", parse_sample)
    assert generate_fingerprint(ds, config) != before


def test_throughput_settings_do_not_change_the_fingerprint():
    ds = _ds()
    reference = generate_fingerprint(ds, GenerateConfig(engine=ENGINE))
    for change in ({"max_concurrency": 64}, {"timeout": 5.0}, {"requests_per_minute": 60.0}, {"max_retries": 0}):
        engine = dataclasses.replace(ENGINE, **change)
        assert generate_fingerprint(ds, GenerateConfig(engine=engine)) == reference, change
    # what changes the output does change it
    assert generate_fingerprint(ds, GenerateConfig(engine=dataclasses.replace(ENGINE, model="other"))) != reference
    assert generate_fingerprint(ds, GenerateConfig(engine=ENGINE, temperature=0.1)) != reference
