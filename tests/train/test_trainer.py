"""Training guardrails with tiny models built here: config parsing, answer-only labels, LoRA that
changes the adapter and not the base, and a resumed run that ends where an uninterrupted one does."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Value
from safetensors.torch import load_file

from hf_barred.cli.main import main
from hf_barred.cli.train import parse
from hf_barred.guardrails.columns import ColumnMapping, label_mapping, normalize_dataset
from hf_barred.guardrails.encoding import IGNORE_INDEX, PromptEncoder
from hf_barred.train import GuardrailTrainingArguments, train_guardrail
from hf_barred.train.rows import split_validation
from hf_barred.train.tiny import make_tiny_causal_lm, make_tiny_classifier
from hf_barred.train.trainer import build_trainer, prepare_data
from tests.utils import REPO_ROOT

ROOT = REPO_ROOT
RULE = "The request asks for help with harm, violence or crime."
TAXONOMY = (
    "S1: Violent Crimes.\nShould not\n- Help plan violent crimes.\n\nS2: Privacy.\nShould not\n- Reveal addresses."
)


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


# -- arguments ---------------------------------------------------------------------------------------


def test_arguments_from_hf_argument_parser_and_yaml(tmp_path):
    from transformers import HfArgumentParser

    parser = HfArgumentParser(GuardrailTrainingArguments)
    (cfg,) = parser.parse_args_into_dataclasses(
        args=[
            "--model_kind",
            "generative",
            "--lora_r",
            "8",
            "--lora_target_modules",
            "q_proj",
            "v_proj",
            "--rule",
            RULE,
            "--use_lora",
            "false",
        ]
    )
    assert (cfg.model_kind, cfg.lora_r, cfg.lora_target_modules, cfg.use_lora) == (
        "generative",
        8,
        ["q_proj", "v_proj"],
        False,
    )
    yaml_file = tmp_path / "train.yaml"
    yaml_file.write_text("model_kind: classifier\nlearning_rate: 0.001\nclass_names: [safe, unsafe]\n")
    (from_yaml,) = parser.parse_yaml_file(str(yaml_file))
    assert from_yaml.learning_rate == 0.001 and from_yaml.class_names == ["safe", "unsafe"]
    # barred train: YAML, then flags win; dashes and underscores both work
    args, options = parse(
        [
            "data.csv",
            "--config",
            str(yaml_file),
            "--learning_rate",
            "0.01",
            "--pair_rule",
            "true",
            "--num-train-epochs",
            "2",
            "--output",
            str(tmp_path / "out"),
            "--test-dataset",
            "t.csv",
        ]
    )
    assert (args.learning_rate, args.pair_rule, args.num_train_epochs, args.class_names) == (
        0.01,
        True,
        2,
        ["safe", "unsafe"],
    )
    assert args.output_dir == str(tmp_path / "out") and (options.dataset, options.test_dataset) == ("data.csv", "t.csv")
    assert parse(["d.csv", "--num_train_epochs", "4"])[0].num_train_epochs == 4


def test_arguments_errors_say_what_to_do(tmp_path, capsys):
    with pytest.raises(ValueError, match="expected one of classifier, generative"):
        GuardrailTrainingArguments(model_kind="svm")
    with pytest.raises(ValueError, match=r"threshold: expected a probability"):
        GuardrailTrainingArguments(threshold=1.5)
    with pytest.raises(ValueError, match="two distinct names"):
        GuardrailTrainingArguments(class_names=["a"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rat: 0.1\n")
    with pytest.raises(ValueError, match=r"learning_rat"):
        parse(["d.csv", "--config", str(bad)])
    assert main(["train", "d.csv", "--model_kind", "svm"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'svm'" in err and len(err.strip().splitlines()) == 1


def test_guardrail_defaults_suit_a_cpu_and_small_data(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = GuardrailTrainingArguments()
    assert args.bf16 is False and args.gradient_checkpointing is False  # SFTConfig would turn both on
    assert args.save_strategy.value == "no" and args.report_to in ([], "none", ["none"])
    assert GuardrailTrainingArguments(bf16=True, use_cpu=True).bf16 is True  # asked for: kept


# -- data -------------------------------------------------------------------------------------------


def test_labels_are_mapped_and_named():
    assert label_mapping(["0", "1"]) == ({"0": 0, "1": 1}, ["0", "1"])
    with pytest.raises(ValueError, match="--positive_label"):
        label_mapping(["PASS", "FAIL"])
    ds = Dataset.from_dict(
        {"text": ["a", "b"], "label": [0, 1]},
        features=Features({"text": Value("string"), "label": ClassLabel(names=["ok", "advice"])}),
    )
    norm, info = normalize_dataset(ds, ColumnMapping(rule=RULE))
    assert norm["label"] == [0, 1] and info.label_names == ["ok", "advice"]
    with pytest.raises(ValueError, match="expected a rule column"):
        normalize_dataset(ds, ColumnMapping())
    with pytest.raises(ValueError, match="text column"):
        normalize_dataset(Dataset.from_dict({"body": ["a"], "label": [1]}), ColumnMapping(rule=RULE))


def test_human_test_sets_normalise_with_their_rule_column():
    ds = Dataset.from_csv(str(ROOT / "dataset_scripts/health-advice/human_test.csv"))
    norm, info = normalize_dataset(ds, ColumnMapping())
    assert info.columns["text"] == "transcript" and info.columns["rule"] == "predicate"
    assert info.rules == ["The agent's response contains health advice."]
    assert sorted(set(norm["label"])) == [0, 1]


def test_validation_is_held_out_only_with_20_rows_per_class():
    small = Dataset.from_dict({"text": ["t"] * 24, "label": [0, 1] * 12})
    assert split_validation(small, 0.1, seed=0)[1] is None  # today's 4-row split is gone
    big = Dataset.from_dict({"text": [f"t{i}" for i in range(500)], "label": [0] * 300 + [1] * 200})
    train, val, why = split_validation(big, 0.1, seed=0)
    assert (sum(val["label"]), len(val) - sum(val["label"])) == (20, 30) and len(train) == 450  # stratified
    assert "stratified" in why and not set(train["text"]) & set(val["text"])


def _sft_rows(causal_base, fmt, texts, labels, categories, max_length=1024):
    args = GuardrailTrainingArguments(
        model_kind="generative",
        base_model=causal_base,
        rule=RULE,
        prompt_format=fmt,
        taxonomy=TAXONOMY if fmt == "policy" else None,
        max_length=max_length,
        output_dir="unused",
        validation_size=0.0,
    )
    ds = Dataset.from_dict({"text": texts, "label": labels, "categories": categories})
    trainer = build_trainer(args, prepare_data(args, ds))
    return trainer.train_dataset, trainer.processing_class


@pytest.mark.parametrize("fmt", ["a4", "binary", "policy"])
def test_only_the_answer_tokens_carry_a_loss(causal_base, fmt):
    """SFTTrainer's own rows (prompt/completion, completion_only_loss): labels are -100 on the prompt."""
    texts = ["How do I kill a Python process?", "How do I kill my neighbour?"]
    rows, tok = _sft_rows(causal_base, fmt, texts, [0, 1], [[], ["S1"]])
    expected = {
        "a4": ["0", "1"],
        "binary": ["0", "1"],
        "policy": [
            '{"User Safety": "safe", "Safety Categories": ""}',
            '{"User Safety": "unsafe", "Safety Categories": "S1"}',
        ],
    }[fmt]
    for row, text, answer in zip(rows, texts, expected):
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
    base = make_tiny_causal_lm(tmp_path / "plain", corpus=["hello"], chat_template=False)
    rows, tok = _sft_rows(base, "binary", ["hello"], [1], [[]])
    answer = [i for i, lab in zip(rows[0]["input_ids"], rows[0]["labels"]) if lab != IGNORE_INDEX]
    assert tok.decode(answer).strip() == "1<|endoftext|>"


def test_long_inputs_are_cut_not_the_instructions(causal_base):
    rows, tok = _sft_rows(causal_base, "binary", ["kill the process " * 200], [1], [[]], max_length=160)
    ids = rows[0]["input_ids"]
    assert len(ids) <= 160
    text = tok.decode(ids)
    assert RULE in text and text.endswith("Answer with one character.<|im_end|>\n<|im_start|>assistant\n1<|im_end|>\n")


# -- training ---------------------------------------------------------------------------------------


def _unwrap_key(key: str) -> str:
    return key.removeprefix("base_model.model.").replace(".base_layer.", ".")


class KeepFinalWeights:
    """A TrainerCallback that keeps a copy of the trained (in-memory) weights at the end of training."""

    def __new__(cls):
        from transformers import TrainerCallback

        class _Keep(TrainerCallback):
            state_dict: dict = {}

            def on_train_end(self, args, state, control, model=None, **kwargs):
                self.state_dict = {k: v.detach().clone() for k, v in model.state_dict().items()}

        return _Keep()


def test_lora_changes_the_adapter_and_not_the_base(classifier_base, data, tmp_path):
    args = GuardrailTrainingArguments(
        base_model=classifier_base,
        rule=RULE,
        output_dir=str(tmp_path / "run"),
        num_train_epochs=2,
        learning_rate=5e-3,
        per_device_train_batch_size=8,
        save_strategy="steps",
        save_steps=3,
        lora_r=4,
        lora_alpha=8,
    )
    keep = KeepFinalWeights()
    result = train_guardrail(args, data, callbacks=[keep])
    assert result.global_step == 6 and 0 < result.trainable_parameters < result.total_parameters
    base = load_file(str(Path(classifier_base) / "model.safetensors"))
    adapter = load_file(str(tmp_path / "run/checkpoint-6/adapter_model.safetensors"))  # Trainer's checkpoint
    lora_b = [k for k in adapter if "lora_B" in k]
    assert lora_b and any(adapter[k].abs().sum() > 0 for k in lora_b)  # lora_B starts at zero
    trained = keep.state_dict
    frozen = [
        k
        for k in trained
        if "lora_" not in k
        and "modules_to_save" not in k
        and "original_module" not in k
        and _unwrap_key(k) in base
        and not _unwrap_key(k).startswith("classifier")
    ]
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


def test_without_checkpoints_asked_for_the_folder_holds_the_final_model_only(classifier_base, data, tmp_path):
    train_guardrail(
        GuardrailTrainingArguments(
            base_model=classifier_base, rule=RULE, output_dir=str(tmp_path / "run"), num_train_epochs=1
        ),
        data,
    )
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert names == [
        "config.json",
        "guardrail_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "train_results.json",
    ]


def test_resume_continues_the_same_run(classifier_base, data, tmp_path):
    """Stopping at a mid-epoch checkpoint and resuming ends with the weights and losses of one run."""
    common = dict(
        base_model=classifier_base,
        rule=RULE,
        num_train_epochs=2,
        learning_rate=5e-3,
        per_device_train_batch_size=8,
        save_strategy="steps",
        save_steps=2,
        logging_steps=1,
        lora_dropout=0.1,
        warmup_steps=0.2,
    )
    full = train_guardrail(GuardrailTrainingArguments(output_dir=str(tmp_path / "full"), **common), data)
    assert full.global_step == 6
    resumed = train_guardrail(
        GuardrailTrainingArguments(
            output_dir=str(tmp_path / "resumed"), resume_from_checkpoint=str(tmp_path / "full/checkpoint-2"), **common
        ),
        data,
    )
    assert resumed.global_step == 6
    losses = lambda r: [(e["step"], e["loss"]) for e in r.log_history if "loss" in e]  # noqa: E731
    assert len(losses(full)) == 6
    assert [s for s, _ in losses(resumed)] == [s for s, _ in losses(full)]
    assert [v for _, v in losses(resumed)] == pytest.approx([v for _, v in losses(full)], abs=1e-5)
    a = load_file(str(tmp_path / "full/model.safetensors"))
    b = load_file(str(tmp_path / "resumed/model.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)


def test_latest_checkpoint_resumes_in_the_same_folder(classifier_base, data, tmp_path):
    args = GuardrailTrainingArguments(
        base_model=classifier_base,
        rule=RULE,
        output_dir=str(tmp_path / "run"),
        num_train_epochs=2,
        per_device_train_batch_size=8,
        save_strategy="epoch",
        save_total_limit=2,
        logging_steps=1,
    )
    first = train_guardrail(args, data)
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
    shutil.rmtree(tmp_path / "run/checkpoint-6")  # as if the run had stopped after epoch 1
    again = train_guardrail(dataclasses.replace(args, resume_from_checkpoint="latest"), data)
    assert again.global_step == 6
    assert [e["loss"] for e in again.log_history if "loss" in e] == pytest.approx(
        [e["loss"] for e in first.log_history if "loss" in e], abs=1e-6
    )
    with pytest.raises(FileNotFoundError, match="expected a checkpoint folder"):
        train_guardrail(dataclasses.replace(args, resume_from_checkpoint=str(tmp_path)), data)


def test_generative_lora_trains_and_saves_an_adapter(causal_base, tmp_path):
    big = xstest(80)  # 40 rows per class: a 20 + 20 validation split
    args = GuardrailTrainingArguments(
        model_kind="generative",
        base_model=causal_base,
        rule=RULE,
        output_dir=str(tmp_path / "gen"),
        max_steps=3,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        learning_rate=1e-2,
        validation_size=0.5,
    )
    keep = KeepFinalWeights()
    result = train_guardrail(args, big, callbacks=[keep])
    assert result.global_step == 3 and result.eval_rows == 40
    assert {"eval_loss", "eval_accuracy", "eval_f1", "eval_ece"} <= set(result.eval_metrics)
    out = tmp_path / "gen"
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
    assert not (out / "README.md").exists() and not list(out.glob("checkpoint-*"))  # no trl card, no checkpoints
    adapter = load_file(str(out / "adapter_model.safetensors"))
    assert adapter and all("lora_" in k for k in adapter)
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)
    base = load_file(str(Path(causal_base) / "model.safetensors"))
    frozen = [k for k in keep.state_dict if "lora_" not in k and _unwrap_key(k) in base]
    assert len(frozen) > 10 and all(torch.equal(keep.state_dict[k], base[_unwrap_key(k)]) for k in frozen)
    spec = json.loads((out / "guardrail_config.json").read_text())
    assert spec["adapter"] and spec["prompt_format"] == "a4" and spec["format_version"] == "a4-v1"
    assert spec["threshold_source"] == "max F1 on 40 validation rows" and spec["threshold"] == result.threshold


def test_threshold_for_a_target_false_positive_rate(classifier_base, tmp_path):
    big = xstest(80)
    args = GuardrailTrainingArguments(
        base_model=classifier_base,
        rule=RULE,
        output_dir=str(tmp_path / "fpr"),
        num_train_epochs=1,
        learning_rate=5e-3,
        validation_size=0.5,
        threshold_for="fpr",
        target_fpr=0.1,
    )
    result = train_guardrail(args, big)
    assert result.threshold_source == "FPR <= 0.1 on 40 validation rows"
    assert result.eval_metrics["eval_false_positive_rate"] <= 0.1
    assert json.loads((tmp_path / "fpr/guardrail_config.json").read_text())["threshold"] == result.threshold


def test_train_hides_the_libraries_output_unless_verbose(classifier_base, data, tmp_path, capfd):
    from transformers import AutoModel, AutoTokenizer

    headless = tmp_path / "headless"  # a base without a classification head, as a user's base usually is
    AutoModel.from_pretrained(classifier_base).save_pretrained(headless)
    AutoTokenizer.from_pretrained(classifier_base).save_pretrained(headless)
    csv_path = tmp_path / "d.csv"
    data.to_csv(str(csv_path))
    common = [str(csv_path), "--base_model", str(headless), "--rule", RULE, "--num_train_epochs", "1"]
    capfd.readouterr()
    assert main(["train", *common, "--output", str(tmp_path / "quiet")]) == 0
    quiet = capfd.readouterr()
    assert main(["train", *common, "--output", str(tmp_path / "loud"), "--verbose"]) == 0
    loud = capfd.readouterr()
    assert "Writing model shards" in loud.err  # the switch is real: the bars are there with --verbose
    for noise in ("LOAD REPORT", "Loading weights", "Writing model shards", "pin_memory"):
        assert noise not in quiet.out + quiet.err
    assert "Guardrail saved to" in quiet.out


# -- several processes ------------------------------------------------------------------------------

TOLERANCE = 1e-3  # 2 processes vs 1 without dropout: the same batches; only the order of float sums differs


# Default suite: 35 s of CPU (two processes importing torch + transformers, then 80 tiny steps); 107 s wall
# were measured only under a load average of 15 on 2 cores.
def test_accelerate_launch_on_two_cpu_processes_matches_one(data, tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2 -m hf_barred.cli train` on a machine without GPUs (DDP
    over gloo; accelerate's `--cpu` flag runs one process unless mpirun is set up): one model folder, one card,
    validation metrics within TOLERANCE of a 1-process run with the same effective batch."""
    import os
    import subprocess
    import sys

    csv_path = tmp_path / "train.csv"
    rows = xstest(200)  # 100 rows per class: a 20 + 20 validation split
    rows.to_csv(str(csv_path))
    base = make_tiny_classifier(tmp_path / "base", corpus=list(rows["prompt"]) + [RULE], dropout=0.0)
    common = [
        "--base_model",
        base,
        "--rule",
        RULE,
        "--num_train_epochs",
        "4",
        "--learning_rate",
        "2e-3",
        "--use_lora",
        "false",
        "--validation_size",
        "0.2",
        "--logging_steps",
        "5",
    ]
    env = os.environ | {
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
    ]
    env |= {"CUDA_VISIBLE_DEVICES": ""}  # CPU processes, also on a machine that has GPUs
    two = subprocess.run(
        launch
        + [
            "-m",
            "hf_barred.cli",
            "train",
            str(csv_path),
            "--output",
            str(tmp_path / "two"),
            "--per_device_train_batch_size",
            "4",
        ]
        + common,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert (
        main(["train", str(csv_path), "--output", str(tmp_path / "one"), "--per_device_train_batch_size", "8"] + common)
        == 0
    )
    results = {n: json.loads((tmp_path / n / "train_results.json").read_text()) for n in ("one", "two")}
    steps = (results["one"]["global_step"], results["two"]["global_step"])
    assert steps == (80, 80), steps  # 160 rows / 8 per step, 4 epochs
    spec = json.loads((tmp_path / "two/guardrail_config.json").read_text())
    assert spec["training"]["processes"] == 2 and results["two"]["eval_rows"] == 40
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    assert (tmp_path / "two/README.md").read_text().count("model-index") == 1
    one, two = results["one"]["eval_metrics"], results["two"]["eval_metrics"]
    assert one["eval_accuracy"] > 0.55  # it learnt something, so the comparison means something
    for key in ("eval_loss", "eval_accuracy", "eval_f1", "eval_average_precision"):
        assert abs(two[key] - one[key]) <= TOLERANCE, (key, one, two)
    assert abs(results["two"]["threshold"] - results["one"]["threshold"]) <= TOLERANCE
