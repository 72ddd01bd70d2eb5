"""BARRED stages with a scripted engine behind the real response cache."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from datasets import Dataset

import hf_barred.llm as llm
from hf_barred.llm import EngineConfig
from hf_barred.policy.task import GuardrailTask
from hf_barred.stages import debate as debate_module
from hf_barred.stages.debate import DebateConfig, DebateStage, debate, debate_outcome
from hf_barred.stages.decompose import DecomposeConfig, extract_dimensions, task_dataset
from hf_barred.stages.embedding import embed, merge_near_duplicates
from hf_barred.stages.features import debated_features, generated_features, instantiation_features, plan_features
from hf_barred.stages.generate import GenerateConfig, GenerateStage, generate
from hf_barred.stages.instantiate import InstantiateConfig, instantiate
from hf_barred.stages.labels import forbidden_mention, normalize_label
from hf_barred.stages.plan import PlanConfig, plan
from hf_barred.stages.prompting import Prompt
from hf_barred.stages.refine import RefineConfig, refine
from tests.utils.barred_script import BarredScript

LABELS = ("no_health_advice", "health_advice")
TASK = GuardrailTask(
    criterion="The agent's response contains health advice.",
    labels=LABELS,
    name="health",
    seeds=tuple(f"User: question {i}?\nAgent: answer {i}." for i in range(6)),
)


@pytest.fixture
def engine(monkeypatch, cache_dir):
    """An EngineConfig whose backend is a BarredScript (``engine.script``), behind the real cache."""
    script = BarredScript()
    monkeypatch.setattr(llm, "build_backend", lambda config: script)
    llm.clear_engines()
    config = EngineConfig(engine="local", cache_dir=str(cache_dir))
    yield config, script
    llm.clear_engines()


def _decomposition(config: EngineConfig) -> Dataset:
    dims = extract_dimensions(task_dataset(TASK), DecomposeConfig(engine=config, num_subsets=2))
    return instantiate(dims, InstantiateConfig(engine=config))


def _generated(config: EngineConfig, n: int = 4) -> Dataset:
    return generate(plan(_decomposition(config), TASK, n, PlanConfig(seed=0)), GenerateConfig(engine=config))


# --- decomposition ------------------------------------------------------------------------------
def test_dimensions_are_pooled_and_near_duplicates_merged(engine):
    config, script = engine
    script.dimensions = ("topic of the question", "Topic of the question", "tone")
    dims = extract_dimensions(
        task_dataset(TASK), DecomposeConfig(engine=config, num_subsets=3, similarity_threshold=0.99)
    )
    assert dims["dimension"] == ["topic of the question", "tone"]
    assert len(dims[0]["merged"]) == 5  # its case variant, and the two other subsets' copies of both
    assert sum(u["calls"] for u in dims["usage"]) == 3  # one call per subset, counted once
    assert script.kinds() == ["decompose"]  # the three subsets in one batched call


def test_embedded_embedder_finds_near_duplicates():
    vectors = embed(["topic of the user's question", "the subject of the user's question", "length of the reply"])
    assert vectors.shape[0] == 3 and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    merged = merge_near_duplicates(["a", "b", "c"], lambda texts: np.array([[1, 0], [0.99, 0.141], [0, 1]]), 0.9)
    assert merged == [("a", ["b"]), ("c", [])]


def test_instantiations_carry_relevance_and_probability(engine):
    config, _ = engine
    inst = _decomposition(config)
    assert inst.features == instantiation_features()
    values = inst[0]["instantiations"]
    assert [(v["relevance"], round(v["probability"], 2)) for v in values] == [
        ("positive", 0.5),
        ("negative", 0.3),
        ("both", 0.2),
    ]


def test_decomposition_parse_failures_keep_raw_text(engine):
    config, script = engine
    script.reply = lambda conversation: "no idea"
    dims = extract_dimensions(task_dataset(TASK), DecomposeConfig(engine=config, num_subsets=2, max_repairs=0))
    assert len(dims) == 2 and dims["dimension"] == ["", ""]
    assert all("no JSON object" in e for e in dims["error"]) and dims["raw"] == ["no idea", "no idea"]
    inst = instantiate(dims, InstantiateConfig(engine=config))
    assert len(script.sent) == 2 and inst["instantiations"] == [[], []]  # failed rows are not sent on


# --- plan -------------------------------------------------------------------------------------------
def test_plan_is_balanced_deterministic_and_relevant(engine):
    config, _ = engine
    inst = _decomposition(config)
    rows = plan(inst, TASK, 10, PlanConfig(seed=3))
    assert rows.features == plan_features(LABELS)
    assert sorted(rows["target"]).count(0) == 5 and sorted(rows["target"]).count(1) == 5
    for row in rows:
        wanted = ("negative", "positive")[row["target"]]
        assert row["relevance"] in (wanted, "both")
        assert row["seed_example"] in [s.text for s in TASK.seeds]
    later = plan(inst, TASK, 4, PlanConfig(seed=3), start=3)
    assert later.to_list() == rows.select(range(3, 7)).to_list()
    assert plan(inst, TASK, 10, PlanConfig(seed=3))._fingerprint == rows._fingerprint
    assert len(set(rows["seed"])) == 10


def test_plan_without_relevant_instantiations(engine):
    config, _ = engine
    inst = _decomposition(config).map(lambda row: {"instantiations": [], "error": "none"})
    assert set(plan(inst, TASK, 2, PlanConfig())["dimension"]) == {""}
    with pytest.raises(ValueError, match="expected at least one instantiation relevant"):
        plan(inst, TASK, 2, PlanConfig(allow_unconstrained=False))


# --- generate -----------------------------------------------------------------------------------------
def test_generate_lineage_and_forbidden_mentions(engine):
    config, script = engine
    script.write = lambda sample_id, refinement: (
        "User: is this a test case?\nAgent: yes" if int(sample_id) % 2 else f"User: hi {sample_id}\nAgent: rest well"
    )
    rows = _generated(config, n=6)
    assert rows.features == generated_features(LABELS)
    bad = [r for r in rows if r["error"]]
    good = [r for r in rows if not r["error"]]
    assert bad and good and len(bad) + len(good) == 6
    assert all("must not mention" in r["error"] and r["raw"] and r["error_stage"] == "generate" for r in bad)
    for r in good:
        assert r["text"].startswith("User: hi") and r["reasoning"] and r["model"] == "scripted"
        assert r["prompt_version"] == "small/generate/v1" and r["usage"]["calls"] == 1 and r["refinements"] == 0
    assert forbidden_mention("User: hi\nAgent: no_health_advice here", LABELS) == "'no_health_advice'"
    assert forbidden_mention("User: is it true?\nAgent: false alarm", ("False", "True")) is None


# --- debate -------------------------------------------------------------------------------------------
def test_consensus_rule():
    assert debate_outcome([["a", "a"]], "a", 2) == (True, "agreement")
    assert debate_outcome([["a", "b"], ["a", "a"]], "a", 2) == (True, "persuasion")
    assert debate_outcome([["b", "b"]], "a", 2) == (False, "consensus_breaking")
    assert debate_outcome([["a", "b"], ["b", "b"]], "a", 2) == (False, "consensus_breaking")
    assert debate_outcome([["a", "b"], ["a", "b"]], "a", 2) == (False, "disagreement")
    assert debate_outcome([["a", None]], "a", 1) == (False, "disagreement")
    assert debate_outcome([["a", "b"]], "a", 3) == (None, None)
    assert normalize_label("YES", LABELS) == "health_advice" and normalize_label("maybe", LABELS) is None


def test_unanimous_round_one_makes_no_round_two_and_no_advocate_call(engine):
    config, script = engine
    rows = _generated(config, n=4)
    script.calls.clear()
    script.verdict = lambda text, round_, judge: "yes" if "Agent: answer" in text else "no"
    judged = debate(rows, DebateConfig(engine=config))
    assert judged.features == debated_features(LABELS)
    assert script.calls == [("judge", 8)]  # 4 rows x 2 judges, one batched call, nothing else
    for row in judged:
        assert len(row["debate"]) == 1 and row["debate"][0]["advocate"] == ""
        target = LABELS[row["target"]]
        assert row["accepted"] == (target == "health_advice")
        assert row["debate_path"] == ("agreement" if row["accepted"] else "consensus_breaking")
        if not row["accepted"]:
            assert "judge says yes" in row["dissent"]  # the judges said yes to a negative target


def test_split_judges_debate_with_the_advocate_in_one_call_per_role(engine):
    config, script = engine
    rows = _generated(config, n=4)
    script.calls.clear()
    # the strict judge disagrees in round 1 and is persuaded in round 2; the recall judge always says yes
    script.verdict = lambda text, round_, judge: "yes" if judge == 0 or round_ == 2 else "no"
    judged = debate(rows, DebateConfig(engine=config, rounds=2))
    assert script.calls == [("judge", 8), ("advocate", 4), ("judge", 8)]
    for row in judged:
        assert [r["round"] for r in row["debate"]] == [1, 2]
        assert row["debate"][1]["advocate"].startswith("The verdict holds")
        judges = row["debate"][1]["judges"]
        assert [j["judge"] for j in judges] == ["recall", "strict"]
        assert all(j["reasoning"] and 0 <= j["confidence"] <= 1 for j in judges)
        if row["target"] == 1:
            assert row["accepted"] and row["debate_path"] == "persuasion"
        else:  # split in round 1, then both judges say yes to a negative target: consensus broken
            assert not row["accepted"] and row["debate_path"] == "consensus_breaking"
    # round 2 shows each judge its own answer, the other judges' and the advocate's argument
    round_two = [c for c in script.sent if "Look again" in c[-1]["content"]]
    assert round_two and round_two[0][-2]["role"] == "assistant"
    assert "An advocate argues: The verdict holds" in round_two[0][-1]["content"]


def test_unparseable_judge_answers_are_counted_not_dropped(engine):
    config, script = engine
    rows = _generated(config, n=2)
    script.verdict = lambda text, round_, judge: "garbage" if judge == 1 else "yes"
    judged = debate(rows, DebateConfig(engine=config, rounds=1, max_repairs=0))
    for row in judged:
        strict = row["debate"][0]["judges"][1]
        assert strict["label"] == "" and strict["raw"] == "hmm" and "no JSON object" in strict["error"]
        assert not row["accepted"] and row["debate_path"] == "disagreement"


def test_rows_with_a_generation_error_are_not_debated(engine):
    config, script = engine
    script.write = lambda sample_id, refinement: "garbage"
    rows = generate(plan(_decomposition(config), TASK, 2, PlanConfig()), GenerateConfig(engine=config, max_repairs=0))
    script.calls.clear()
    judged = debate(rows, DebateConfig(engine=config))
    assert script.calls == [] and judged["debate_path"] == ["", ""] and judged["accepted"] == [False, False]


# --- refine -------------------------------------------------------------------------------------------
def test_refine_rewrites_with_the_dissent(engine):
    config, script = engine
    rows = _generated(config, n=2)
    script.verdict = lambda text, round_, judge: "no"
    judged = debate(rows, DebateConfig(engine=config))
    judged = judged.select([i for i, accepted in enumerate(judged["accepted"]) if not accepted])
    assert len(judged) == 1  # the positive target, which both judges reject
    rewritten = refine(judged, RefineConfig(engine=config))
    assert rewritten.features == generated_features(LABELS)
    for before, after in zip(judged, rewritten):
        assert after["refinements"] == 1 and after["previous_texts"] == [before["text"]]
        assert after["dissents"] == [before["dissent"]] and after["debate_history"] == [before["debate"]]
        assert after["prompt_version"] == "small/refine/v1" and after["usage"]["calls"] > before["usage"]["calls"]
        assert (after["dimension"], after["instantiation"], after["target"]) == (
            before["dimension"],
            before["instantiation"],
            before["target"],
        )
    refine_prompts = [c[-1]["content"] for c in script.sent if "Rewrite it so" in c[-1]["content"]]
    assert len(refine_prompts) == 1 and "judge says no" in refine_prompts[0]


# --- fingerprints -----------------------------------------------------------------------------------
def test_fingerprints_change_exactly_with_the_output(engine, monkeypatch):
    config, _ = engine
    rows = _generated(config, n=2)
    base = DebateConfig(engine=config)
    fingerprint = DebateStage(base).fingerprint(rows)
    assert debate(rows, base)._fingerprint == fingerprint
    assert DebateStage(DebateConfig.with_judges(3, engine=config)).fingerprint(rows) != fingerprint
    assert DebateStage(dataclasses.replace(base, rounds=3)).fingerprint(rows) != fingerprint
    faster = base.engine.replace(max_concurrency=base.engine.max_concurrency * 4, timeout=5.0)
    assert DebateStage(dataclasses.replace(base, engine=faster)).fingerprint(rows) == fingerprint
    assert DebateStage(dataclasses.replace(base, engine=config.replace(model="other"))).fingerprint(rows) != fingerprint

    real = debate_module.load_prompt

    def edited(name, version, prompt_set="small"):
        prompt = real(name, version, prompt_set)
        return (
            Prompt(prompt.name, prompt.version, prompt.text + "\n{# Be brief. #}", prompt.prompt_set)
            if name == "judge"
            else prompt
        )

    monkeypatch.setattr(debate_module, "load_prompt", edited)
    assert DebateStage(base).fingerprint(rows) != fingerprint
    plan_rows = plan(_decomposition(config), TASK, 2, PlanConfig())
    fast = GenerateStage(GenerateConfig(engine=config.replace(max_concurrency=1)))
    assert GenerateStage(GenerateConfig(engine=config)).fingerprint(plan_rows) == fast.fingerprint(plan_rows)


def test_config_validation_says_what_was_expected():
    with pytest.raises(ValueError, match="expected T >= 1"):
        DebateConfig(rounds=0)
    with pytest.raises(ValueError, match="expected at least one persona"):
        DebateConfig(judges=())
    with pytest.raises(ValueError, match="similarity_threshold"):
        DecomposeConfig(similarity_threshold=1.5)
    assert DebateConfig(judges=["recall"]).judges == ("recall",)
    assert json.dumps(dataclasses.asdict(DebateConfig.with_judges(3)))  # plain data (YAML / CLI friendly)
