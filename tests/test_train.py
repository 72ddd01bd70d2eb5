"""Training guardrails with tiny models built here: config parsing, answer-only labels, LoRA that
changes the adapter and not the base, and a resumed run that ends where an uninterrupted one does."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Value
from safetensors.torch import load_file

from hf_barred.train import GuardrailConfig, train_guardrail
from hf_barred.train.config import add_config_arguments, config_from_sources
from hf_barred.train.data import IGNORE_INDEX, PromptEncoder, label_mapping, normalize_dataset, tokenize_generative
from hf_barred.train.tiny import make_tiny_causal_lm, make_tiny_classifier

ROOT = Path(__file__).resolve().parents[1]
RULE = "The request asks for help with harm, violence or crime."
TAXONOMY = "S1: Violent Crimes.\nShould not\n- Help plan violent crimes.\n\nS2: Privacy.\nShould not\n- Reveal addresses."


def xstest(n: int = 24) -> Dataset:
    rows = list(csv.DictReader(open(ROOT / "dataset_scripts/xstest/xstest_prompts.csv", encoding="utf-8")))
    safe = [r for r in rows if r["label"] == "safe"][: n // 2]
    unsafe = [r for r in rows if r["label"] == "unsafe"][: n // 2]
    mixed = [r for pair in zip(safe, unsafe) for r in pair]
    return Dataset.from_dict({"prompt": [r["prompt"] for r in mixed], "label": [r["label"] for r in mixed]})


@pytest.fixture(scope="module")
def data() -> Dataset:
    return xstest()


@pytest.fixture(scope="module")
def classifier_base(tmp_path_factory, data) -> str:
    return make_tiny_classifier(tmp_path_factory.mktemp("bert"), corpus=list(data["prompt"]) + [RULE])


@pytest.fixture(scope="module")
def causal_base(tmp_path_factory, data) -> str:
    return make_tiny_causal_lm(tmp_path_factory.mktemp("llama"), corpus=list(data["prompt"]) + [RULE, TAXONOMY])


# -- config -----------------------------------------------------------------------------------------


def test_config_from_hf_argument_parser_and_yaml(tmp_path):
    from transformers import HfArgumentParser

    parser = HfArgumentParser(GuardrailConfig)
    (cfg,) = parser.parse_args_into_dataclasses(
        args=["--model_kind", "generative", "--lora_r", "8", "--lora_target_modules", "q_proj", "v_proj",
              "--rule", RULE, "--use_lora", "false"])
    assert (cfg.model_kind, cfg.lora_r, cfg.lora_target_modules, cfg.use_lora) == ("generative", 8, ["q_proj", "v_proj"], False)
    yaml_file = tmp_path / "train.yaml"
    yaml_file.write_text("model_kind: classifier\nlearning_rate: 0.001\nlabel_names: [safe, unsafe]\n")
    (from_yaml,) = parser.parse_yaml_file(str(yaml_file))
    assert from_yaml.learning_rate == 0.001 and from_yaml.label_names == ["safe", "unsafe"]
    # barred train: YAML, then flags win
    import argparse

    cli = argparse.ArgumentParser()
    add_config_arguments(cli)
    flags = vars(cli.parse_args(["--learning_rate", "0.01", "--pair_rule", "--num_train_epochs", "2"]))
    merged = config_from_sources(str(yaml_file), flags)
    assert (merged.learning_rate, merged.pair_rule, merged.num_train_epochs, merged.label_names) == (0.01, True, 2, ["safe", "unsafe"])


def test_config_errors_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="expected one of classifier, generative"):
        GuardrailConfig(model_kind="svm")
    with pytest.raises(ValueError, match=r"threshold: expected a probability"):
        GuardrailConfig(threshold=1.5)
    with pytest.raises(ValueError, match="two distinct names"):
        GuardrailConfig(label_names=["a"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rat: 0.1\n")
    with pytest.raises(ValueError, match=r"unknown GuardrailConfig keys \['learning_rat'\]"):
        config_from_sources(str(bad), {})


def test_mixed_precision_auto_is_off_on_cpu(monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert GuardrailConfig().resolved_mixed_precision() == "no"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # accelerate launch decides
    assert GuardrailConfig().resolved_mixed_precision() is None


# -- data -------------------------------------------------------------------------------------------


def test_labels_are_mapped_and_named():
    assert label_mapping(["0", "1"]) == ({"0": 0, "1": 1}, ["0", "1"])
    with pytest.raises(ValueError, match="--positive_label"):
        label_mapping(["PASS", "FAIL"])
    ds = Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]},
                           features=Features({"text": Value("string"), "label": ClassLabel(names=["ok", "advice"])}))
    norm, info = normalize_dataset(ds, GuardrailConfig(rule=RULE))
    assert norm["label"] == [0, 1] and info.label_names == ["ok", "advice"]
    with pytest.raises(ValueError, match="expected a rule column"):
        normalize_dataset(ds, GuardrailConfig())
    with pytest.raises(ValueError, match="text column"):
        normalize_dataset(Dataset.from_dict({"body": ["a"], "label": [1]}), GuardrailConfig(rule=RULE))


def test_human_test_sets_normalise_with_their_rule_column():
    ds = Dataset.from_csv(str(ROOT / "dataset_scripts/health-advice/human_test.csv"))
    norm, info = normalize_dataset(ds, GuardrailConfig())
    assert info.columns["text"] == "transcript" and info.columns["rule"] == "predicate"
    assert info.rules == ["The agent's response contains health advice."]
    assert sorted(set(norm["label"])) == [0, 1]


@pytest.mark.parametrize("fmt", ["binary", "policy"])
def test_only_the_answer_tokens_carry_a_loss(causal_base, fmt):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(causal_base)
    ds = Dataset.from_dict({"text": ["How do I kill a Python process?", "How do I kill my neighbour?"],
                            "label": [0, 1], "taxonomy": [TAXONOMY] * 2, "categories": [[], ["S1"]]})
    cfg = GuardrailConfig(rule=RULE, prompt_format=fmt, taxonomy=TAXONOMY if fmt == "policy" else None)
    norm, _ = normalize_dataset(ds, cfg)
    rows = tokenize_generative(norm, tok, fmt, max_length=1024)
    expected = {"binary": ["0", "1"],
                "policy": ['{"User Safety": "safe", "Safety Categories": ""}',
                           '{"User Safety": "unsafe", "Safety Categories": "S1"}']}[fmt]
    for row, text, answer in zip(rows, norm["text"], expected):
        ids, labels = row["input_ids"], row["labels"]
        unmasked = [i for i, lab in enumerate(labels) if lab != IGNORE_INDEX]
        first = unmasked[0]
        assert unmasked == list(range(first, len(ids)))  # one contiguous block at the end
        assert [labels[i] for i in unmasked] == ids[first:]
        assert tok.decode(ids[first:]) == answer + "<|im_end|>\n"
        messages = PromptEncoder(tok).fit(fmt, text, RULE, None, TAXONOMY)
        prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert tok.decode(ids[:first]) == prompt


def test_without_a_chat_template_the_answer_ends_with_eos(tmp_path):
    from transformers import AutoTokenizer

    base = make_tiny_causal_lm(tmp_path / "plain", corpus=["hello"], chat_template=False)
    tok = AutoTokenizer.from_pretrained(base)
    row = PromptEncoder(tok).example("binary", "hello", 1, rule=RULE)
    answer = [i for i, lab in zip(row["input_ids"], row["labels"]) if lab != IGNORE_INDEX]
    assert tok.decode(answer) == "1<|endoftext|>"


def test_long_inputs_are_cut_not_the_instructions(causal_base):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(causal_base)
    encoder = PromptEncoder(tok, max_length=160)
    row = encoder.example("binary", "kill the process " * 200, 1, rule=RULE)
    assert len(row["input_ids"]) <= 160
    text = tok.decode(row["input_ids"])
    assert RULE in text and text.endswith("Answer with one character.<|im_end|>\n<|im_start|>assistant\n1<|im_end|>\n")


# -- training ---------------------------------------------------------------------------------------


def _unwrap_key(key: str) -> str:
    return key.removeprefix("base_model.model.").replace(".base_layer.", ".")


def test_lora_changes_the_adapter_and_not_the_base(classifier_base, data, tmp_path):
    cfg = GuardrailConfig(base_model=classifier_base, rule=RULE, output_dir=str(tmp_path / "run"), num_train_epochs=2,
                          learning_rate=5e-3, per_device_train_batch_size=8, save_steps=3, save_total_limit=0,
                          validation_size=0.0, lora_r=4, lora_alpha=8)
    result = train_guardrail(cfg, data)
    assert result.global_step == 6 and 0 < result.trainable_parameters < result.total_parameters
    base = load_file(str(Path(classifier_base) / "model.safetensors"))
    trained = load_file(str(tmp_path / "run/checkpoint-6/model.safetensors"))
    lora_b = [k for k in trained if "lora_B" in k]
    assert lora_b and any(trained[k].abs().sum() > 0 for k in lora_b)  # lora_B starts at zero
    frozen = [k for k in trained if "lora_" not in k and "modules_to_save" not in k and "original_module" not in k
              and _unwrap_key(k) in base and not _unwrap_key(k).startswith("classifier")]
    assert len(frozen) > 20
    for key in frozen:
        torch.testing.assert_close(trained[key], base[_unwrap_key(key)], msg=key)
    head = [k for k in trained if "modules_to_save" in k and k.endswith("weight")]
    assert head and not torch.equal(trained[head[0]], base["classifier.weight"])
    # the saved guardrail is a plain transformers model with the adapter merged in
    merged = load_file(str(tmp_path / "run/model.safetensors"))
    assert not any("lora" in k for k in merged)
    query = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(merged[query], base[query])
    spec = json.loads((tmp_path / "run/guardrail_config.json").read_text())
    assert spec["kind"] == "classifier" and spec["label_names"] == ["safe", "unsafe"] and spec["rule"] == RULE


def test_resume_continues_the_same_run(classifier_base, data, tmp_path):
    """Stopping at a mid-epoch checkpoint and resuming ends with the weights and losses of one run."""
    common = dict(base_model=classifier_base, rule=RULE, num_train_epochs=2, learning_rate=5e-3,
                  per_device_train_batch_size=8, save_steps=2, save_total_limit=0, logging_steps=1,
                  validation_size=0.0, lora_dropout=0.1, warmup_ratio=0.2)
    full = train_guardrail(GuardrailConfig(output_dir=str(tmp_path / "full"), **common), data)
    assert full.global_step == 6
    resumed = train_guardrail(GuardrailConfig(output_dir=str(tmp_path / "resumed"),
                                              resume_from_checkpoint=str(tmp_path / "full/checkpoint-2"), **common), data)
    assert resumed.global_step == 6
    losses = lambda r: [(e["step"], e["loss"]) for e in r.log_history if "loss" in e]  # noqa: E731
    assert losses(resumed) == losses(full)
    a = load_file(str(tmp_path / "full/model.safetensors"))
    b = load_file(str(tmp_path / "resumed/model.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)


def test_latest_checkpoint_resumes_in_the_same_folder(classifier_base, data, tmp_path):
    cfg = GuardrailConfig(base_model=classifier_base, rule=RULE, output_dir=str(tmp_path / "run"), num_train_epochs=2,
                          per_device_train_batch_size=8, validation_size=0.0, save_total_limit=1, logging_steps=1)
    first = train_guardrail(cfg, data)
    assert [p.name for p in (tmp_path / "run").glob("checkpoint-*")] == ["checkpoint-3"]  # end of epoch 1
    again = train_guardrail(dataclasses.replace(cfg, resume_from_checkpoint="latest"), data)
    assert again.global_step == 6
    assert [e["loss"] for e in again.log_history] == [e["loss"] for e in first.log_history]
    with pytest.raises(FileNotFoundError, match="expected a checkpoint folder"):
        train_guardrail(dataclasses.replace(cfg, resume_from_checkpoint=str(tmp_path)), data)


def test_generative_lora_trains_and_saves_an_adapter(causal_base, data, tmp_path):
    cfg = GuardrailConfig(model_kind="generative", base_model=causal_base, rule=RULE, output_dir=str(tmp_path / "gen"),
                          max_steps=3, per_device_train_batch_size=4, gradient_accumulation_steps=2,
                          learning_rate=1e-2, validation_size=0.25, eval_steps=3)
    result = train_guardrail(cfg, data)
    assert result.global_step == 3
    assert {"eval_loss", "eval_accuracy", "eval_f1"} <= set(result.eval_metrics)
    out = tmp_path / "gen"
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
    adapter = load_file(str(out / "adapter_model.safetensors"))
    assert adapter and all("lora_" in k for k in adapter)
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)
    spec = json.loads((out / "guardrail_config.json").read_text())
    assert spec["adapter"] and spec["prompt_format"] == "binary" and spec["format_version"] == "binary-v1"
