"""A stage's fingerprint changes exactly when its output would: code, version, prompts, config identity."""

from __future__ import annotations

import dataclasses

from datasets import Dataset

from hf_barred.llm import EngineConfig
from hf_barred.stages import generate as generate_module
from hf_barred.stages.base import map_stage
from hf_barred.stages.fingerprint import stage_fingerprint
from hf_barred.stages.generate import GenerateConfig, GenerateStage
from hf_barred.stages.prompting import load_prompt

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
    before = GenerateStage(config).fingerprint(ds)

    def parse_sample(data, input_type, labels):  # the stage's parser, "edited"
        return None, "edited"

    monkeypatch.setattr(generate_module, "parse_sample", parse_sample)
    assert GenerateStage(config).fingerprint(ds) != before


def test_throughput_settings_do_not_change_the_fingerprint():
    ds = _ds()
    reference = GenerateStage(GenerateConfig(engine=ENGINE)).fingerprint(ds)
    for change in ({"max_concurrency": 64}, {"timeout": 5.0}, {"requests_per_minute": 60.0}, {"max_retries": 0}):
        engine = dataclasses.replace(ENGINE, **change)
        assert GenerateStage(GenerateConfig(engine=engine)).fingerprint(ds) == reference, change
    # what changes the output does change it
    assert GenerateStage(GenerateConfig(engine=dataclasses.replace(ENGINE, model="other"))).fingerprint(ds) != reference
    assert GenerateStage(GenerateConfig(engine=ENGINE, temperature=0.1)).fingerprint(ds) != reference


# --- the Stage runs batched under Dataset.map and row by row from asyncio, with the same answers ----------
def test_a_stage_gives_the_same_rows_batched_and_row_by_row(monkeypatch, cache_dir):
    import asyncio

    import hf_barred.llm as llm
    from hf_barred.llm.async_engine import AsyncEngine
    from hf_barred.policy.task import GuardrailTask
    from hf_barred.stages.debate import DebateConfig, DebateStage
    from hf_barred.stages.decompose import DecomposeConfig, extract_dimensions, task_dataset
    from hf_barred.stages.instantiate import InstantiateConfig, instantiate
    from hf_barred.stages.plan import PlanConfig, plan
    from tests.utils.barred_script import BarredScript

    script = BarredScript(verdict=lambda text, round, judge: "yes" if (judge == 0 or round == 2) else "no")
    monkeypatch.setattr(llm, "build_backend", lambda config: script)
    llm.clear_engines()
    engine = EngineConfig(engine="local", cache_dir=str(cache_dir))
    task = GuardrailTask(
        criterion="The agent gives health advice.",
        labels=("no", "yes"),
        name="t",
        seeds=tuple(f"User: q{i}?\nAgent: a{i}." for i in range(4)),
    )
    inst = instantiate(
        extract_dimensions(task_dataset(task), DecomposeConfig(engine=engine)), InstantiateConfig(engine=engine)
    )
    samples = GenerateStage(GenerateConfig(engine=engine))(plan(inst, task, 6, PlanConfig()))
    stage = DebateStage(DebateConfig(engine=engine, rounds=2))
    batched = stage(samples)
    kinds = script.kinds()
    assert kinds.count("advocate") == 1 and kinds.count("judge") == 2  # one batched call per role and step

    async def row_by_row():
        async_engine = AsyncEngine(llm.get_engine(engine))
        return await asyncio.gather(*(stage.arun(row, async_engine) for row in samples))

    sent = len(script.sent)
    rows = [out for outs in asyncio.run(row_by_row()) for out in outs]
    assert len(script.sent) == sent  # every answer came from the response cache: the same requests
    one_by_one = Dataset.from_list(
        [{name: row[name] for name in batched.features} for row in rows], features=batched.features
    )
    assert one_by_one.to_list() == batched.to_list()
    assert {len(rounds) for rounds in batched["debate"]} == {2}  # every row went through the advocate and round 2
    llm.clear_engines()


def test_the_resolved_precision_of_auto_enters_the_fingerprint(monkeypatch):
    from hf_barred.llm.engines.local import precision

    ds, local = _ds(), EngineConfig(engine="local")
    monkeypatch.setattr(precision, "resolved_dtype_name", lambda config: "float32")
    float32 = GenerateStage(GenerateConfig(engine=local)).fingerprint(ds)
    assert float32 == GenerateStage(GenerateConfig(engine=local)).fingerprint(ds)
    monkeypatch.setattr(precision, "resolved_dtype_name", lambda config: "bfloat16")
    bfloat16 = GenerateStage(GenerateConfig(engine=local)).fingerprint(ds)
    assert bfloat16 != float32  # a stage saved on an AMX or AVX512-BF16 machine is not reused on a float32 one
