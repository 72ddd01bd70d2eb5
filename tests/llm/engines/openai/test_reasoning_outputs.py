"""Reasoning models' outputs through the ``openai`` engine and a real loopback OpenAI-protocol server.

``<think>…</think>`` blocks (DeepSeek-R1, Qwen3), a closing ``</think>`` alone (the chat template
opened the block), the server's ``reasoning_content`` (vLLM's reasoning parser), answers in
```json fences or followed by prose: every one parses with no repair call; the thinking stays in
the ``raw`` column and never reaches a sample's text (the training text).
"""

from __future__ import annotations

import json

import pytest
from datasets import load_dataset

from hf_barred.cli.main import main
from hf_barred.llm import EngineConfig, SamplingParams, clear_engines, get_engine
from hf_barred.llm.structured import structured_chat
from tests.utils import REPO_ROOT
from tests.utils.servers.openai_server import OpenAIServer, reply
from tests.utils.servers.strong_model import THINKING, StrongModel, stages

TASK = REPO_ROOT / "dataset_scripts" / "health-advice" / "task.yaml"
SCHEMA = {
    "type": "object",
    "properties": {"label": {"type": "string"}, "reasoning": {"type": "string"}},
    "required": ["label"],
}
ANSWER = {"reasoning": "The agent tells the user to rest.", "label": "yes"}
DRAFT = json.dumps({"reasoning": "first draft", "label": "no"})  # a JSON draft inside the thinking

SHAPES = {
    "think block then fence then prose": (
        f"<think>\nMaybe {DRAFT}? No.\n</think>\n\n```json\n{json.dumps(ANSWER)}\n```\nThat is my answer.",
        None,
    ),
    "closing tag only (template opened it)": (f"Let me think. {DRAFT} is wrong.\n</think>\n{json.dumps(ANSWER)}", None),
    "reasoning_content, fence, prose": (
        f"```json\n{json.dumps(ANSWER)}\n```\nHope this helps!",
        f"Draft: {DRAFT}. Revise.",
    ),
    "json then prose": (json.dumps(ANSWER) + "\n\nI chose yes because the agent gives advice {like this}.", None),
    "prose then fence": ("Here is the verdict you asked for:\n```json\n" + json.dumps(ANSWER) + "\n```", None),
    "thinking tag named thinking": (f"<thinking>{DRAFT}</thinking>{json.dumps(ANSWER)}", None),
}


@pytest.fixture
def server():
    with OpenAIServer(models=("strong",)) as running:
        yield running


def engine_on(server, tmp_path):
    clear_engines()
    return get_engine(
        EngineConfig(
            engine="openai",
            model="strong",
            base_url=server.url,
            cache_dir=str(tmp_path / "cache"),
            max_retries=0,
            timeout=10.0,
        )
    )


def test_every_reasoning_shape_parses_without_a_repair_call(server, tmp_path):
    for text, reasoning in SHAPES.values():
        server.script(reply(text, reasoning=reasoning))
    conversations = [[{"role": "user", "content": f"case {name}"}] for name in SHAPES]
    results = structured_chat(
        engine_on(server, tmp_path), conversations, SCHEMA, SamplingParams(max_tokens=64), max_repairs=2
    )
    assert len(server.requests) == len(SHAPES)  # one request each: no repair round
    for name, result in zip(SHAPES, results):
        assert result.ok and result.attempts == 1, (name, result.error)
        assert result.data == ANSWER, name
    by_name = dict(zip(SHAPES, results))
    raw = by_name["reasoning_content, fence, prose"].raw
    assert raw.startswith("<think>\nDraft:") and "</think>" in raw and "Hope this helps!" in raw  # thinking kept
    assert "first draft" in by_name["think block then fence then prose"].raw


def test_an_answer_cut_off_while_thinking_is_a_counted_failure_not_a_draft(server, tmp_path):
    server.script(reply(f"<think>\nI will answer {DRAFT} unless", finish_reason="length"))
    server.script(reply(f"<think>\nstill thinking about {DRAFT}", finish_reason="length"))
    (result,) = structured_chat(
        engine_on(server, tmp_path),
        [[{"role": "user", "content": "cut"}]],
        SCHEMA,
        SamplingParams(max_tokens=8),
        max_repairs=1,
    )
    assert not result.ok and result.data is None  # the draft inside the thinking is never taken
    assert "only thinking" in result.error and "cut off at max_tokens" in result.error
    repair = server.requests[1].body["messages"]
    assert [m["role"] for m in repair] == ["user", "assistant", "user"] and repair[1]["content"] == ""


@pytest.mark.parametrize("style", ["think", "reasoning_content", "open_think"])
def test_barred_run_on_a_reasoning_model_keeps_thinking_out_of_the_samples(style, tmp_path, capsys):
    model = StrongModel(style=style, believed_flip=lambda sample_id: sample_id % 2 == 0)
    with OpenAIServer(models=("strong",), responder=model) as server:
        out = tmp_path / "out"
        code = main(
            [
                "generate",
                str(TASK),
                "--n",
                "4",
                "--output",
                str(out),
                "--engine",
                "openai",
                "--model",
                "strong",
                "--base-url",
                server.url,
                "--cache-dir",
                str(tmp_path / "cache"),
                "--no-progress",
                "--max-rounds",
                "2",
            ]
        )
        requests = list(server.requests)
    assert code == 0, capsys.readouterr().err
    assert not stages(requests, "repair") and not stages(requests, "unknown")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["prompt_set"] == "served" and summary["accepted"] >= 4
    assert all(v == 0 for v in summary["parse_failures"].values()), summary["parse_failures"]
    assert summary["debate_paths"].get("persuasion") and summary["acceptance_by_refinement"].get("1")
    debated = sum(level["debated"] for level in summary["acceptance_by_refinement"].values())
    believed = summary["believed_label"]  # the generator's believed label, counted against the target
    assert believed["given"] == debated and 0 < believed["mismatches"] < debated
    data = load_dataset(str(out))
    rows = list(data["train"]) + (list(data["rejected"]) if "rejected" in data else [])
    thinking = THINKING.split(".")[0]
    for row in rows:
        target = data["train"].features["label"].names[row["label"]]
        assert (row["believed_label"] == target) == (row["seed"] % 2 != 0)  # recorded in the lineage, as said
        assert "<think" not in row["text"] and thinking not in row["text"] and thinking not in row["reasoning"]
        assert "</think>" in row["raw"] and thinking in row["raw"]  # the thinking stays in the raw column
        for debate_round in row["debate"]:
            assert all(thinking not in j["reasoning"] for j in debate_round["judges"])
            assert thinking not in debate_round["advocate"] and "</think>" not in debate_round["advocate"]
    assert any(r["debate"][-1]["advocate"].startswith("The agent tells the user") for r in rows if len(r["debate"]) > 1)
