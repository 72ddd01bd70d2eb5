"""task_and_response, done properly: the example task file, paired responses converted in one command (with the
criterion's polarity), answer budgets from the seeds' lengths, and a BARRED run whose accepted responses are as
long as the seeds (a real OpenAI-protocol server on loopback that, like a constrained engine, never writes past
the ``maxLength`` of the grammar it is sent).
"""

from __future__ import annotations

import json

import pytest
from datasets import Dataset

import hf_barred.llm as llm
from hf_barred.cli.main import main
from hf_barred.guardrails.formats import classification_messages, classifier_text
from hf_barred.llm import EngineConfig
from hf_barred.policy.data import response_pairs
from hf_barred.policy.task import GuardrailTask
from hf_barred.recipes.barred.lengths import fit_sample_budget, sample_max_tokens, seed_field_lengths
from hf_barred.recipes.barred.run import BarredConfig, run_barred
from hf_barred.stages.generate import sample_grammar
from tests.utils import REPO_ROOT
from tests.utils.servers.openai_server import OpenAIServer

ROOT = REPO_ROOT
EXAMPLE = ROOT / "examples" / "plan-verification"
STEP = "Check the current state, write it down, then do the next required step and verify it. "


def test_the_example_task_file_is_a_task_and_response_task_with_pass_fail_labels():
    task = GuardrailTask.load(EXAMPLE / "task.yaml")
    assert task.input_type == "task_and_response" and task.labels == ("PASS", "FAIL")
    assert len(task.seeds) >= 10 and all(s.task and s.text for s in task.seeds)
    assert seed_field_lengths(task)["response"] > 115  # real plans are longer than the old cap


def test_paired_responses_convert_in_one_command_with_the_polarity(tmp_path, capsys):
    out = tmp_path / "plans.jsonl"
    code = main(
        [
            "convert-pairs",
            str(EXAMPLE / "pairs.csv"),
            "--task-column",
            "task_input",
            "--pass-column",
            "good_plan",
            "--fail-column",
            "bad_plan",
            "--criterion",
            "The plan skips a required step.",
            "--output",
            str(out),
            "--task-file",
            str(tmp_path / "plan" / "task.yaml"),
        ]
    )
    assert code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6 and [r["label"] for r in rows] == [0, 1] * 3  # violation: the FAIL response is 1
    assert set(rows[0]) == {"task", "text", "label", "rule"} and rows[0]["task"].startswith("Plan the steps")
    task = GuardrailTask.load(tmp_path / "plan" / "task.yaml")
    assert task.input_type == "task_and_response" and task.labels == ("PASS", "FAIL") and len(task.seeds) == 6
    compliance = response_pairs(
        str(EXAMPLE / "pairs.csv"), pass_column="good_plan", fail_column="bad_plan", polarity="compliance"
    )
    assert list(compliance["label"]) == [1, 0] * 3
    capsys.readouterr()
    code = main(
        [
            "convert-pairs",
            str(EXAMPLE / "pairs.csv"),
            "--pass-column",
            "good",
            "--fail-column",
            "bad_plan",
            "--output",
            str(out),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "['good'] were not found" in err and len(err.splitlines()) == 1


def test_budgets_follow_the_longest_seed_of_each_field():
    seeds = [{"task": "Plan a move.", "response": STEP * 20}, {"task": "Plan a trip.", "response": "Go."}]
    task = GuardrailTask(criterion="The plan skips a step.", input_type="task_and_response", seeds=seeds)
    budget = sample_max_tokens(task)
    lengths = sample_grammar("task_and_response", budget)["properties"]
    assert lengths["response"]["maxLength"] >= 1.25 * len(STEP * 20)
    assert sample_grammar("task_and_response", budget - 1)["properties"]["response"]["maxLength"] < 1.25 * len(
        STEP * 20
    )
    fitted = fit_sample_budget(BarredConfig.for_engine(EngineConfig()), task)
    assert fitted.generate.max_tokens == fitted.refine.max_tokens == budget > 128
    large = BarredConfig.for_engine(EngineConfig(), sample_max_tokens=10_000)
    assert fit_sample_budget(large, task).generate.max_tokens == 10_000  # never lowered


def test_the_classification_input_holds_the_task():
    messages = classification_messages("The plan skips a step.", "1. Pack. 2. Drive.", task="Plan a move.")
    assert "<TASK>\nPlan a move.\n</TASK>" in messages[1]["content"] and "RESPONSE" in messages[0]["content"]
    assert classifier_text("1. Pack.", task="Plan a move.").startswith("<TASK>\nPlan a move.\n</TASK>\n<RESPONSE>")


# --- a BARRED run on loopback -----------------------------------------------------------------------------
def _fill(schema: dict) -> dict:
    """An answer to any stage's grammar, cut to its maxLength as constrained decoding would."""
    props = schema.get("properties", {})
    if "dimensions" in props:
        return {"dimensions": ["order of the steps", "a constraint of the task"]}
    if "values" in props:
        return {
            "values": [
                {"value": "a skipped step", "applies": "yes", "probability": 0.5},
                {"value": "every step kept", "applies": "no", "probability": 0.5},
            ]
        }
    answer = {}
    for key, spec in props.items():
        if "enum" in spec:
            answer[key] = "yes" if "yes" in spec["enum"] else spec["enum"][0]
        elif spec.get("type") in ("number", "integer"):
            answer[key] = 0.9
        else:
            text = {
                "task": "Plan the move of a family of four to a new flat, with the utilities switched over.",
                "response": STEP * 40,
            }.get(key, "The steps follow the task's order.")
            answer[key] = text[: spec.get("maxLength", len(text))]
    return answer


def strong_model(body: dict) -> str:
    fmt = body.get("response_format")
    if not fmt:  # the advocate: free text
        return "The response keeps every required step in order, so the proposed label stands."
    return json.dumps(_fill(fmt["json_schema"]["schema"]))


@pytest.fixture
def fresh_engines():
    llm.clear_engines()
    yield
    llm.clear_engines()


def test_accepted_responses_are_as_long_as_the_seeds_not_115_characters(tmp_path, cache_dir, fresh_engines):
    seeds = [
        {"task": f"Plan task {k}: move house with every utility switched.", "response": STEP * 16} for k in range(3)
    ]
    task = GuardrailTask(
        criterion="The plan skips, reorders or contradicts a required step.",
        labels=("PASS", "FAIL"),
        input_type="task_and_response",
        seeds=seeds,
        name="plans",
    )
    with OpenAIServer(responder=strong_model) as server:
        engine = EngineConfig(engine="openai", model="test-model", base_url=server.url, cache_dir=str(cache_dir))
        config = BarredConfig.for_engine(
            engine, max_rounds=1, max_refinements=0, initial_acceptance=1.0, max_rows_per_round=2
        )
        config = fit_sample_budget(config, task)
        result = run_barred(task, 1, config, tmp_path / "out", progress=False)
    # every accepted sample counts here, those beyond n (the `extra` split) too: the point is their length
    accepted = [len(r) for r in list(result.train["text"]) + list(result.extra["text"])]
    assert accepted and all(t for t in list(result.train["task"]) + list(result.extra["task"]))
    cap_before = sample_grammar("task_and_response", 512)["properties"]["response"]["maxLength"]  # served default
    assert max(accepted) > max(115, cap_before) and max(accepted) > len(STEP * 16)  # longer than the longest seed


# --- end to end: generate, debate, train and evaluate a classifier that sees the task -------------------
def _target_aware_model(body: dict) -> str:
    """Writes a response that skips a step when asked for a "yes" sample and keeps every step for a "no"
    one; the judges read which one it is, so both labels are accepted."""
    fmt = body.get("response_format")
    if not fmt:
        return "The response is as the proposed label says."
    schema = fmt["json_schema"]["schema"]
    props = schema.get("properties", {})
    prompt = "\n".join(str(m.get("content", "")) for m in body["messages"])
    if "response" in props:  # a sample: generate or refine
        wanted = "no" if '"no": the criterion does not hold' in prompt else "yes"
        answer = _fill(schema) | {
            "response": ("It skips the meter reading step. " if wanted == "yes" else "Every step is kept in order. ")
            + STEP * 3
        }
        if "label" in props:
            answer["label"] = wanted
        return json.dumps(answer)
    if "label" in props and "dimensions" not in props:  # a judge
        verdict = "yes" if "skips the meter reading" in prompt.split("<INPUT_BLOCK>")[-1] else "no"
        return json.dumps(_fill(schema) | {"label": verdict})
    return json.dumps(_fill(schema))


def test_task_and_response_end_to_end_the_classifier_sees_the_task(tmp_path, cache_dir, fresh_engines, monkeypatch):
    import hf_barred.guardrails.scoring as scoring_module
    import hf_barred.train.rows as rows_module
    from hf_barred.train.tiny import make_tiny_classifier

    seeds = [
        {"task": f"Plan task {k}: move house with every utility switched.", "response": STEP * 2} for k in range(10)
    ]
    task = GuardrailTask(
        criterion="The plan skips, reorders or contradicts a required step.",
        labels=("PASS", "FAIL"),
        input_type="task_and_response",
        seeds=seeds,
        name="plans",
    )
    out = tmp_path / "data"
    with OpenAIServer(responder=_target_aware_model) as server:
        engine = EngineConfig(engine="openai", model="test-model", base_url=server.url, cache_dir=str(cache_dir))
        config = BarredConfig.for_engine(engine, max_rounds=2, max_refinements=0, max_rows_per_round=8)
        result = run_barred(task, 4, config, out, progress=False)
    assert len(result.train) == 4 and sorted(result.train["label"]) == [0, 0, 1, 1]
    assert all(t for t in result.train["task"])

    seen: dict[str, list[str]] = {"train": [], "inference": []}

    def spy(where, original):
        def wrapper(tokenizer, texts, *args, **kwargs):
            seen[where].extend(texts)
            return original(tokenizer, texts, *args, **kwargs)

        return wrapper

    monkeypatch.setattr(rows_module, "classifier_inputs", spy("train", rows_module.classifier_inputs))
    monkeypatch.setattr(scoring_module, "classifier_inputs", spy("inference", scoring_module.classifier_inputs))
    base = make_tiny_classifier(tmp_path / "base", corpus=[STEP, "skips the meter reading", "Plan task"])
    model = tmp_path / "guard"
    assert (
        main(
            [
                "train",
                str(out),
                "--base_model",
                base,
                "--output_dir",
                str(model),
                "--max_steps",
                "3",
                "--per_device_train_batch_size",
                "4",
                "--logging_steps",
                "1",
            ]
        )
        == 0
    )
    test_csv = tmp_path / "test.csv"
    Dataset.from_dict(
        {
            "task": ["Plan the move of the office."] * 2,
            "text": ["It skips the meter reading step. " + STEP, "Every step is kept in order. " + STEP],
            "label": [1, 0],
        }
    ).to_csv(str(test_csv))
    assert main(["evaluate", str(model), str(test_csv), "--output", str(tmp_path / "report")]) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["metrics"]["n"] == 2
    # the classifier's input holds the task beside the response, in training and at inference
    tasks = set(result.train["task"])
    assert seen["train"] and all(
        t.startswith("<TASK>\n") and t.split("\n")[1] in tasks and "<RESPONSE>" in t for t in seen["train"]
    )
    assert any("<TASK>\nPlan the move of the office.\n</TASK>" in t for t in seen["inference"])
