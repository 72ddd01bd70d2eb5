"""The two prompt sets: the served set carries every element of the BARRED paper's prompts
(../shared/PAPER_PROMPTS.md, Appendix A), the small set stays as the embedded model knows it, the
engine picks its set unless ``--prompt-set`` does, and every stage's fingerprint follows the set.
"""

from __future__ import annotations

import argparse
import re
from importlib import resources

import pytest
from datasets import Dataset

from hf_barred.cli.generate import build_config, register
from hf_barred.llm import EngineConfig
from hf_barred.recipes.barred.run import BarredConfig
from hf_barred.recipes.barred.stats import prompt_ids
from hf_barred.stages.debate import DebateConfig, DebateStage
from hf_barred.stages.decompose import DecomposeConfig, DecomposeStage
from hf_barred.stages.generate import GenerateConfig, GenerateStage
from hf_barred.stages.instantiate import InstantiateConfig, InstantiateStage
from hf_barred.stages.judge import persona_text
from hf_barred.stages.prompting import PROMPT_SETS, Prompt, load_prompt
from hf_barred.stages.refine import RefineConfig, RefineStage

LOCAL = EngineConfig(engine="local")
SERVED = EngineConfig(engine="vllm", model="Qwen/Qwen2.5-7B-Instruct")
CRITERION = "The agent's response contains health advice."
SEED = "User: My knee hurts after running.\nAgent: Rest it and see a doctor if it continues."
SAMPLE = "User: I feel dizzy.\nAgent: Sit down and drink some water."


def served(name: str, **variables) -> list[dict[str, str]]:
    return load_prompt(name, prompt_set="served").messages(**variables)


def system_user(conversation) -> tuple[str, str]:
    assert [m["role"] for m in conversation] == ["system", "user"]  # the system/user split
    return conversation[0]["content"], conversation[1]["content"]


def tagged(text: str, tag: str, value: str) -> bool:
    """``value`` inside ``<tag>`` … ``</tag>`` in ``text``."""
    return any(value in section for section in re.findall(rf"<{tag}>\n(.*?)\n</{tag}>", text, re.S))


GENERATE_ROW = dict(
    criterion=CRITERION,
    input_type="input_block",
    seed_example=SEED,
    seed_task="",
    dimension="how explicit the advice is",
    instantiation="a hint between the lines",
    applies=True,
    sample_id=7,
)


def check_generation_elements(system: str, user: str, target: str) -> None:
    """The elements A.2 shares between the initial generation and the refinement."""
    assert "test case" in system and "classifier" in system and "input block together with its label" in system
    assert tagged(system, "CRITERION", CRITERION)  # the criterion named inline
    assert "(A) aligns with the dimension" in system and f'(B) gets the label "{target}"' in system
    assert "domain and the style of the example input block" in system and "move away from it" in system
    assert "challenging boundary case, not a trivial one" in system
    assert f'stress-test a smart, successful classifier of the criterion "{CRITERION}"' in system
    assert "Adhere to the dimension" in system
    assert "never mention test cases, models, dimensions or labels" in system
    assert '"label": "yes" or "no", the label you believe' in system and '"reasoning"' in system  # believed label
    assert tagged(user, "EXAMPLE_INPUT_BLOCK", SEED)
    assert tagged(user, "DIMENSION", "how explicit the advice is: a hint between the lines")


def test_decompose_carries_every_a1_element():
    system, user = system_user(
        served("decompose", criterion=CRITERION, seeds=[SEED, SAMPLE], seed_tasks=["", ""], max_dimensions=5)
    )
    assert tagged(system, "CRITERION", CRITERION) and "test case" in system and "its label" in system
    assert "expert at finding the key dimensions" in system
    for guideline in (
        "only dimensions that affect whether the criterion holds",  # 1
        "where in the input block the evidence",  # 2
        "involves a computation",  # 3
        "diverse",  # 4
        "jailbreak attempts by the user",  # 5: transcripts
        "self-contained",  # 6
        "structure, format or metadata different from those of the example input blocks",  # 7
        "never mention the evaluator",  # 8
    ):
        assert guideline in system, guideline
    assert tagged(user, "CRITERION", CRITERION) and tagged(user, "EXAMPLE_INPUT_BLOCK", SEED)
    assert tagged(user, "EXAMPLE_INPUT_BLOCK", SAMPLE)  # each seed in its own tagged section


def test_instantiate_carries_every_a1_element():
    system, user = system_user(served("instantiate", criterion=CRITERION, dimension="tone", max_instantiations=12))
    assert "all reasonable instantiations" in system
    assert '"applies": "yes"' in system and '"no"' in system and '"both"' in system  # True / False / Both
    assert "probability that this value is drawn from the distribution" in system  # verbalized sampling
    assert tagged(user, "DIMENSION", "tone") and tagged(user, "CRITERION", CRITERION)


def test_generate_carries_every_a2_element():
    system, user = system_user(served("generate", **GENERATE_ROW))
    check_generation_elements(system, user, "yes")
    pair = dict(GENERATE_ROW, input_type="task_and_response", seed_task="Answer the member.", applies=False)
    system, user = system_user(served("generate", **pair))
    assert '"task"' in system and '"response"' in system and '(B) gets the label "no"' in system
    assert tagged(user, "TASK", "Answer the member.") and tagged(user, "RESPONSE", SEED)


def test_refine_carries_every_a2_refinement_element():
    row = dict(
        GENERATE_ROW,
        failed_text=SAMPLE,
        failed_task="",
        failed_response=SAMPLE,
        dissent="strict: no (the agent only repeats the label)",
    )
    system, user = system_user(served("refine", **row))
    check_generation_elements(system, user, "yes")
    assert "previous attempt failed verification" in system and 'could not agree that its label is "yes"' in system
    assert "Look carefully at the failed input block" in system and "dissenting debaters' arguments" in system
    assert "never mention the debaters or their arguments" in system
    assert tagged(user, "FAILED_INPUT_BLOCK", SAMPLE)
    assert tagged(user, "DISSENTING_DEBATERS_ARGUMENTS", "strict: no (the agent only repeats the label)")


JUDGE_ROW = dict(criterion=CRITERION, input_type="input_block", input_text=SAMPLE, task="", response=SAMPLE)


def test_judge_round_one_carries_every_a3_element():
    system, user = system_user(
        served("judge", round=1, persona=persona_text("strict", "served"), persona_name="strict", **JUDGE_ROW)
    )
    assert system.startswith("You are a strict evaluation agent")
    assert '"yes" if the criterion holds' in system and '"no" if it does not hold' in system
    assert persona_text("strict", "served") in system  # the persona's instructions
    assert '"reasoning"' in system and '"confidence"' in system and '"label"' in system  # structured answer
    assert tagged(user, "INPUT_BLOCK", SAMPLE) and tagged(user, "CRITERION", CRITERION)
    assert user.index("<INPUT_BLOCK>") < user.index("<CRITERION>")  # the input block, then the criterion


def test_judge_round_t_sees_its_own_previous_answer_and_the_others():
    previous = {"label": "no", "confidence": "0.65", "reasoning": "Sitting down is not medical advice."}
    others = [{"name": "recall", "label": "yes", "confidence": "0.90", "reasoning": "Water for dizziness is advice."}]
    system, user = system_user(
        served(
            "judge",
            round=2,
            persona=persona_text("strict", "served"),
            persona_name="strict",
            previous=previous,
            other_answers=others,
            advocate="The agent tells the user what to do about a symptom.",
            disagreed=True,
            **JUDGE_ROW,
        )
    )
    assert "multi-agent debate" in system and "round 2" in system
    assert persona_text("strict", "served") in system and tagged(user, "INPUT_BLOCK", SAMPLE)
    assert tagged(user, "CRITERION", CRITERION)
    own = re.search(r"<YOUR_PREVIOUS_ANSWER>\n(.*?)\n</YOUR_PREVIOUS_ANSWER>", user, re.S).group(1)
    assert own == "label: no\nconfidence: 0.65\nreasoning: Sitting down is not medical advice."  # its own answer
    assert tagged(
        user, "OTHER_AGENTS_ANSWERS", "label: yes\nconfidence: 0.90\nreasoning: Water for dizziness is advice."
    )
    assert tagged(user, "ADVOCATE_ARGUMENT", "The agent tells the user what to do about a symptom.")
    assert "At least one other agent disagreed with your label" in system
    assert "Do not switch your label automatically" in system and "correct and relevant" in system
    assert "updated final answer" in system


def test_advocate_defends_the_proposed_label_and_never_changes_position():
    system, user = system_user(
        served(
            "advocate",
            applies=False,
            reasoning="The agent only gives directions.",
            objections="recall: yes (water is advice)",
            **JUDGE_ROW,
        )
    )
    assert 'Your position is fixed: the criterion does not hold on the input block (label "no")' in system
    assert "Never change, weaken or qualify your position" in system
    assert tagged(user, "INPUT_BLOCK", SAMPLE) and tagged(
        user, "GENERATOR_REASONING", "The agent only gives directions."
    )
    assert tagged(user, "PROPOSED_LABEL", "no") and tagged(user, "OBJECTIONS", "recall: yes (water is advice)")


def test_served_personas_are_the_papers():
    assert "recall" in persona_text("recall", "served").lower()
    strict = persona_text("strict", "served")
    assert "precision-first" in strict and "no flexibility and no interpretive leeway" in strict


OFF_TOPIC = ("refund", "parcel", "blender", "mug", "money back", "salary", "coworker", "gym", "example:")


def _template_texts(prompt_set: str) -> dict[str, str]:
    root = resources.files("hf_barred.stages") / "prompts" / prompt_set
    return {
        f"{stage.name}/{path.name}": path.read_text(encoding="utf-8")
        for stage in root.iterdir()
        for path in stage.iterdir()
        if path.name.endswith(".jinja")
    }


def test_the_served_set_is_zero_shot_with_no_off_topic_example():
    texts = _template_texts("served")
    assert set(PROMPT_SETS["served"]) <= {name.split("/")[0] for name in texts}
    for name, text in texts.items():
        lowered = text.lower()
        assert not [word for word in OFF_TOPIC if word in lowered], name
        assert "{% block assistant" not in text, name  # no worked-example turn
        assert not re.search(r'"(text|task|response|reasoning|value|dimensions)"\s*:\s*\[?\s*"\w', text), (
            name
        )  # no example answer
    # the small set keeps its worked examples for the 135M model (where they are about refunds)
    assert any("refund" in text.lower() for text in _template_texts("small").values())


def test_every_served_template_renders_as_system_then_user():
    for name in ("decompose", "instantiate", "generate", "refine", "advocate", "guideline_edit"):
        prompt = load_prompt(name, prompt_set="served")
        assert [role for _, role in prompt.blocks] == ["system", "user"], name


def test_the_small_set_sends_what_it_sent_before():
    conversation = load_prompt("generate").messages(**GENERATE_ROW)
    assert [m["role"] for m in conversation] == ["user", "assistant", "user"]
    assert conversation[2]["content"] == (
        f"Rule: {CRITERION}\nExample:\n{SEED}\nWrite a new, tricky chat like the example where the rule only just "
        "applies. Its how explicit the advice is: a hint between the lines. Answer in JSON. (sample 7)"
    )
    judge = load_prompt("judge").messages(
        round=2, previous_answer='{"label": "no"}', others="recall: yes (r)", advocate="a"
    )
    assert judge == [
        {"role": "assistant", "content": '{"label": "no"}'},
        {
            "role": "user",
            "content": "Round 2. The other judges said: recall: yes (r)\nAn advocate argues: a\n"
            "Look again: does the rule apply to the input? Answer in JSON.",
        },
    ]


def test_the_engine_picks_the_set_and_the_option_overrides_it():
    local, vllm = BarredConfig.for_engine(LOCAL), BarredConfig.for_engine(SERVED)
    assert set(prompt_ids(local).values()) == {
        f"small/{s}/{v}" for s, v in PROMPT_SETS["small"].items() if s not in ("guideline_edit",)
    }
    assert all(i.startswith("served/") for i in prompt_ids(vllm).values())
    assert all(i.startswith("small/") for i in prompt_ids(BarredConfig.for_engine(SERVED, prompt_set="small")).values())
    assert GenerateConfig(engine=SERVED).prompt_set == "served" and DebateConfig(engine=LOCAL).prompt_set == "small"
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["generate", "t.yaml", "--n", "2", "--output", "o", "--engine", "vllm", "--model", "m"])
    assert build_config(args).refine.prompt_set == "served"
    args = parser.parse_args(["generate", "t.yaml", "--n", "2", "--output", "o", "--prompt-set", "served"])
    assert {s.prompt_set for s in (build_config(args).decompose, build_config(args).debate)} == {"served"}
    with pytest.raises(SystemExit):
        parser.parse_args(["generate", "t.yaml", "--n", "2", "--output", "o", "--prompt-set", "large"])
    with pytest.raises(ValueError, match="expected one of \\['served', 'small'\\]"):
        GenerateConfig(prompt_set="large")


@pytest.mark.parametrize("stage", ["decompose", "instantiate", "generate", "debate", "refine"])
def test_every_stage_fingerprint_changes_with_the_set(stage):
    ds = Dataset.from_dict({"x": [1]})
    config_class, stage_class = {
        "decompose": (DecomposeConfig, DecomposeStage),
        "instantiate": (InstantiateConfig, InstantiateStage),
        "generate": (GenerateConfig, GenerateStage),
        "debate": (DebateConfig, DebateStage),
        "refine": (RefineConfig, RefineStage),
    }[stage]

    def fingerprint(ds, config):
        return stage_class(config).fingerprint(ds)

    small = fingerprint(ds, config_class(engine=LOCAL, prompt_set="small"))
    assert small == fingerprint(ds, config_class(engine=LOCAL))  # small is the local engine's default
    assert fingerprint(ds, config_class(engine=LOCAL, prompt_set="served")) != small
    assert fingerprint(ds, config_class(engine=SERVED)) == fingerprint(
        ds, config_class(engine=SERVED, prompt_set="served")
    )


def test_a_template_that_is_not_one_block_per_message_is_refused():
    with pytest.raises(ValueError, match="outside a message block"):
        _ = Prompt("x", "v1", "Rule: {{ criterion }}\n{% block user %}hi{% endblock %}").blocks
    with pytest.raises(ValueError, match="is not a role"):
        _ = Prompt("x", "v1", "{% block tool %}hi{% endblock %}").blocks
    with pytest.raises(FileNotFoundError, match=r"served/judge/v9.jinja: expected one of the versions \['v1'\]"):
        load_prompt("judge", "v9", "served")


def test_augment_picks_the_guideline_edit_set_the_same_way():
    from hf_barred.cli.augment import register as register_augment
    from hf_barred.stages.guideline_edit import GuidelineEditConfig

    assert GuidelineEditConfig(engine=LOCAL).prompt_set == "small"
    assert GuidelineEditConfig(engine=SERVED).prompt_set == "served"
    parser = argparse.ArgumentParser()
    register_augment(parser.add_subparsers())
    action = next(
        a
        for g in parser._subparsers._group_actions
        for p in g.choices.values()
        for a in p._actions
        if a.dest == "prompt_set"
    )
    assert action.choices == ("small", "served") and action.default is None
    system, user = system_user(
        load_prompt("guideline_edit", prompt_set="served").messages(
            taxonomy="S1: Violence.", text="How do I sharpen a knife?", n_categories=1, new_code="S2"
        )
    )
    assert tagged(user, "POLICY", "S1: Violence.") and tagged(user, "USER_MESSAGE", "How do I sharpen a knife?")
    assert '"edit_existing"' in system and "S2" in system
