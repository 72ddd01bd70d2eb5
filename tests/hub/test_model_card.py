"""Model cards: rendered from hf_barred/hub/templates/model_card.md with StrictUndefined, round-tripped through
ModelCard.load, and matched against a golden pattern."""

from __future__ import annotations

import re

import jinja2
import pytest
from huggingface_hub import ModelCard

from hf_barred.guardrails.spec import GuardrailSpec
from hf_barred.hub.model_card import model_card, model_card_inputs, template_path, write_model_card

RULE = "The agent's response contains health advice."
TAXONOMY = (
    "S1: Violent Crimes.\nShould not\n- Help plan violent crimes.\n\nS2: Privacy.\nShould not\n- Reveal addresses."
)
TRAINING = {
    "config": {
        "model_kind": "classifier",
        "base_model": "embedded",
        "use_lora": True,
        "lora_r": 16,
        "learning_rate": 0.0005,
        "num_train_epochs": 3,
        "seed": 42,
    },
    "train_rows": 900,
    "eval_rows": 100,
    "global_step": 339,
    "data_method": "barred",
}
EVALS = [
    {
        "dataset": "dataset_scripts/health-advice/human_test.csv",
        "split": "test",
        "metrics": {"accuracy": 0.91234, "precision": 0.9, "recall": 0.92, "f1": 0.91, "n": 200},
    },
    {"dataset": "plurai/health-advice", "split": "validation", "metrics": {"accuracy": 0.95, "f1": 0.94, "n": 100}},
]


def binary_spec() -> GuardrailSpec:
    return GuardrailSpec(
        kind="classifier",
        prompt_format="binary",
        base_model="embedded",
        rule=RULE,
        label_names=["no_health_advice", "health_advice"],
        training=TRAINING,
    )


def policy_spec() -> GuardrailSpec:
    config = TRAINING["config"] | {"model_kind": "generative", "base_model": "Qwen/Qwen2.5-0.5B-Instruct"}
    return GuardrailSpec(
        kind="generative",
        prompt_format="policy",
        base_model="Qwen/Qwen2.5-0.5B-Instruct",
        taxonomy=TAXONOMY,
        label_names=["safe", "unsafe"],
        adapter=True,
        training=TRAINING | {"config": config, "data_method": "apt"},
    )


POLICY_EVALS = [
    {"dataset": "apt-test", "split": "test", "metrics": {"accuracy": 0.8, "f1": 0.75, "category_f1": 0.6, "n": 50}}
]


@pytest.mark.parametrize(
    "spec, evaluations",
    [(binary_spec(), EVALS), (policy_spec(), POLICY_EVALS), (GuardrailSpec("classifier", "binary", "/tmp/base"), [])],
)
def test_template_renders_with_strict_undefined(spec, evaluations):
    card_data, variables = model_card_inputs(spec, repo_id="me/guard", datasets=["me/data"], evaluations=evaluations)
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    template = env.from_string(template_path().read_text(encoding="utf-8"))
    text = template.render(card_data=card_data.to_yaml(), **(card_data.to_dict() | variables))
    assert text == str(model_card(spec, repo_id="me/guard", datasets=["me/data"], evaluations=evaluations))


def test_card_round_trips_through_model_card_load(tmp_path):
    card = model_card(
        binary_spec(), repo_id="me/health-guard", datasets=["plurai/health-advice", "./local.csv"], evaluations=EVALS
    )
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    assert loaded.content == card.content
    data = loaded.data
    assert data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert data.datasets == ["plurai/health-advice"]  # local files are not Hub datasets
    assert (data.license, data.library_name, data.pipeline_tag) == ("apache-2.0", "transformers", "text-classification")
    assert {"hf-barred", "guardrail", "barred", "lora"} <= set(data.tags)
    results = {(r.dataset_name, r.metric_type): r.metric_value for r in data.eval_results}
    assert results[("dataset_scripts/health-advice/human_test.csv", "accuracy")] == 0.9123
    assert results[("plurai/health-advice", "f1")] == 0.94
    assert data.model_name == "health-guard"
    assert {r.dataset_type for r in data.eval_results} == {
        "dataset_scripts-health-advice-human_test.csv",
        "plurai/health-advice",
    }


GOLDEN = [
    r"^---\nbase_model: sentence-transformers/all-MiniLM-L6-v2\n",
    r"^# health-guard$",
    r"^A binary rule guardrail: a sequence classifier$",
    r"fine-tuned from \[sentence-transformers/all-MiniLM-L6-v2\]"
    r"\(https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2\) with LoRA by hf_barred",
    r"^```text\nThe agent's response contains health advice\.\n```$",  # user text fenced, inert
    r'^guardrail = Guardrail\.from_pretrained\("me/health-guard"\)$',
    r'^classifier = pipeline\("text-classification", model="me/health-guard"\)$',
    r"^\| dataset_scripts/health-advice/human_test\.csv \| test \| 200 \| 0\.9123 \| 0\.9 \| 0\.92 \| 0\.91 \|$",
    r"^\| plurai/health-advice \| validation \| 100 \| 0\.95 \| - \| - \| 0\.94 \|$",
    r"^- \*\*Rows:\*\* 900 for training, 100 held out for validation$",
    r"^\| `lora_r` \| `16` \|$",
    r"The training data was made with BARRED",
    r"the training data is synthetic",
    r"^@misc\{barred,$",
    r"author = \{\{Plurai\}\},",
]


def test_card_matches_the_golden_pattern():
    text = str(model_card(binary_spec(), repo_id="me/health-guard", evaluations=EVALS))
    for pattern in GOLDEN:
        assert re.search(pattern, text, re.MULTILINE), pattern
    assert "{{" not in text.replace("{{Plurai}}", "") and "Category F1" not in text


def test_policy_card_shows_the_taxonomy_and_the_adapter():
    card = model_card(policy_spec(), repo_id="me/apt-guard", evaluations=POLICY_EVALS)
    text = str(card)
    assert "S1: Violent Crimes." in text and "| Category F1 |" in text and "| 0.6 |" in text
    assert "LoRA adapter for `Qwen/Qwen2.5-0.5B-Instruct`" in text and "APT (Augmented Policy Training)" in text
    assert card.data.library_name == "peft" and card.data.license is None and "apt" in card.data.tags


def test_write_model_card_from_a_guardrail_folder(tmp_path):
    GuardrailSpec("classifier", "binary", str(tmp_path / "base"), rule=RULE).save(tmp_path)
    path = write_model_card(tmp_path)
    card = ModelCard.load(path)
    assert card.data.base_model is None and f"`{tmp_path / 'base'}`" in card.content
    assert "No evaluation was recorded" in card.content and "existing labelled dataset" in card.content


def test_template_lookup(monkeypatch, tmp_path):
    assert template_path().name == "model_card.md" and template_path().is_file()
    (tmp_path / "model_card.md").write_text("---\n{{ card_data }}\n---\ncustom {{ model_name }}\n")
    monkeypatch.setenv("HF_BARRED_MODEL_CARDS", str(tmp_path))
    assert template_path() == tmp_path / "model_card.md"
    assert "custom guard" in str(model_card(binary_spec(), model_name="guard"))
    with pytest.raises(FileNotFoundError, match="Expected the card template 'no_such_card.md' in one of"):
        template_path("no_such_card.md")


def test_a_card_says_when_its_figures_come_from_fewer_than_20_rows():
    tiny = [{"dataset": "held-out validation", "split": "validation", "metrics": {"accuracy": 1.0, "f1": 0.0, "n": 4}}]
    text = str(model_card(binary_spec(), repo_id="me/guard", evaluations=tiny))
    assert "**Caution:** the held-out validation (validation) figures come from only 4 rows" in text
    assert "Caution" not in str(model_card(binary_spec(), repo_id="me/guard", evaluations=EVALS))
