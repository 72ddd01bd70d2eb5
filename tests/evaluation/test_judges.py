"""The logprob LLM-judge baseline: P("1") / (P("1") + P("0")) per row, on every engine that can give it.

- ``openai``: a real OpenAI-protocol server on loopback (tests/utils/servers) returning ``top_logprobs``; a server
  without logprobs, and one that refuses the parameter, fall back to generation with unparseable rows counted.
- ``local``: a tiny causal LM built in the test; batched, left-padded scores equal one-by-one forward passes.
- slow: the cross-check with the embedded SmolLM2 on the BARRED healthe test set (accuracy 0.495).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from hf_barred.evaluation.judges import score_with_judge
from hf_barred.guardrails.formats import classification_messages
from hf_barred.llm import EngineConfig
from tests.utils.servers.openai_server import OpenAIServer

RULE = "The agent's response contains health advice."
TEXTS = ["User: my head hurts\nAgent: take a painkiller", "User: hi\nAgent: hello", "User: opening hours?\nAgent: 9-5"]
HEALTHE = Path("/work/shared/data/barred/healthe_test.csv")


def conversations() -> list[list[dict[str, str]]]:
    return [classification_messages(RULE, text) for text in TEXTS]


def by_content(body: dict) -> dict[str, float]:
    """The first-token alternatives of a judge that flags painkillers only."""
    flagged = "painkiller" in body["messages"][-1]["content"]
    return (
        {"1": math.log(0.8), "0": math.log(0.1), " 1": math.log(0.05)}
        if flagged
        else {"0": math.log(0.6), "1": math.log(0.2), "The": math.log(0.1)}
    )


def openai_config(server: OpenAIServer, tmp_path: Path) -> EngineConfig:
    return EngineConfig(
        engine="openai", model="test-model", base_url=server.url, cache_dir=str(tmp_path), max_retries=0
    )


def test_openai_logprob_path_scores_every_row_from_top_logprobs(tmp_path):
    with OpenAIServer(logprob_responder=by_content) as server:
        result = score_with_judge(openai_config(server, tmp_path), conversations())
        sent = [r.body for r in server.requests]
    assert result.mode == "logprob" and result.summary()["rows_logprob"] == 3
    assert result.scores[0] == pytest.approx(0.85 / 0.95)  # "1" and " 1" both count
    assert result.scores[1] == pytest.approx(0.2 / 0.8)
    assert result.predictions == [1, 0, 0]
    assert all(b["max_tokens"] == 1 and b["logprobs"] is True and b["top_logprobs"] == 20 for b in sent)
    assert [m["role"] for m in sent[0]["messages"]] == ["system", "user"]
    assert sent[0]["messages"][1]["content"].startswith("<INPUT>\n")


def test_scores_come_from_the_cache_on_a_rerun(tmp_path):
    with OpenAIServer(logprob_responder=by_content) as server:
        first = score_with_judge(openai_config(server, tmp_path), conversations())
        calls = len(server.requests)
        second = score_with_judge(openai_config(server, tmp_path), conversations())
        assert len(server.requests) == calls == 3
    assert second.scores == first.scores and second.mode == "logprob"


def test_a_server_without_logprobs_is_scored_by_generation_and_unparseable_rows_are_counted(tmp_path):
    answers = {"painkiller": "1", "hello": "0", "9-5": "I cannot say."}
    responder = lambda body: next(a for k, a in answers.items() if k in body["messages"][-1]["content"])  # noqa: E731
    with OpenAIServer(responder=responder) as server:
        result = score_with_judge(openai_config(server, tmp_path), conversations())
        generated = [r.body for r in server.requests if not r.body.get("logprobs")]
    assert result.mode == "generation"
    assert result.predictions == [1, 0, -1] and result.scores == [None, None, None]
    assert result.summary()["unparseable"] == 1 and "no 0/1 answer" in result.errors[2]
    assert result.raw[2] == "I cannot say." and len(generated) == 3


def test_a_server_that_refuses_logprobs_falls_back_to_generation(tmp_path):
    with OpenAIServer(responder=lambda body: "<think>It is advice.</think>1", reject_logprobs=True) as server:
        result = score_with_judge(openai_config(server, tmp_path), conversations()[:1])
    assert result.mode == "generation" and result.predictions == [1]


def test_mixed_rows_name_both_modes(tmp_path):
    top = lambda body: by_content(body) if "painkiller" in body["messages"][-1]["content"] else None  # noqa: E731
    with OpenAIServer(logprob_responder=top, responder=lambda body: "0") as server:
        result = score_with_judge(openai_config(server, tmp_path), conversations())
    assert result.mode == "logprob+generation" and result.modes == ["logprob", "generation", "generation"]
    assert result.predictions == [1, 0, 0]


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="mode must be one of"):
        score_with_judge(EngineConfig(), [], mode="sampled")


# --- local: a tiny causal LM built in the test ------------------------------------------------------------
def test_local_scores_are_the_next_token_probabilities_of_the_loaded_model(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_barred.llm import clear_engines
    from hf_barred.train.tiny import make_tiny_causal_lm

    folder = make_tiny_causal_lm(tmp_path / "tiny", corpus=TEXTS + [RULE])
    config = EngineConfig(
        engine="local", model=folder, batch_size=2, cache_dir=str(tmp_path / "cache"), dtype="float32"
    )
    convs = conversations() + [classification_messages(RULE, "User: a much longer question " * 5 + "\nAgent: ok")]
    try:
        result = score_with_judge(config, convs)
    finally:
        clear_engines()
    assert result.mode == "logprob" and all(0 < s < 1 for s in result.scores)

    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder).eval()
    vocab = tokenizer.get_vocab()
    ids = {d: [i for t, i in vocab.items() if tokenizer.convert_tokens_to_string([t]).strip() == d] for d in "10"}
    for conv, score in zip(convs, result.scores):  # one by one, no padding
        prompt = tokenizer.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
        input_ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            probs = torch.softmax(model(input_ids=input_ids).logits[0, -1].float(), -1)
        one, zero = probs[ids["1"]].sum().item(), probs[ids["0"]].sum().item()
        assert score == pytest.approx(one / (one + zero), rel=1e-4)


# --- the cross-check (slow: 200 forward passes of the embedded model) -------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(not HEALTHE.is_file(), reason="needs the BARRED healthe test set in /work/shared/data")
def test_embedded_smollm2_scores_one_above_zero_on_every_healthe_row(tmp_path):
    from hf_barred.policy.data import load_labelled_data

    ds = load_labelled_data(str(HEALTHE))
    convs = [classification_messages(r["predicate"], r["transcript"]) for r in ds]
    result = score_with_judge(EngineConfig(engine="local"), convs)
    labels = [int(v) for v in ds["predicate_label"]]
    accuracy = sum(p == y for p, y in zip(result.predictions, labels)) / len(labels)
    assert result.mode == "logprob"
    assert sum(s > 0.5 for s in result.scores) == len(labels)  # "1" above "0" on every row
    assert accuracy == pytest.approx(0.495)


def test_judge_dataset_sends_the_task_and_the_response_in_one_user_message(tmp_path):
    from datasets import Dataset

    from hf_barred.evaluation.judges import judge_dataset

    rows = Dataset.from_dict(
        {
            "text": ["1. Pack. 2. Drive."],
            "rule": ["The plan skips a step."],
            "task": ["Plan a move: book the van first."],
        }
    )
    with OpenAIServer(logprob_responder=lambda body: {"1": -0.1, "0": -3.0}) as server:
        result = judge_dataset(openai_config(server, tmp_path), rows)
        (sent,) = [r.body["messages"] for r in server.requests]
    assert result.predictions == [1] and result.mode == "logprob"
    assert sent[1]["content"] == (
        "<INPUT>\n<TASK>\nPlan a move: book the van first.\n</TASK>\n<RESPONSE>\n"
        "1. Pack. 2. Drive.\n</RESPONSE>\n</INPUT>"
    )
