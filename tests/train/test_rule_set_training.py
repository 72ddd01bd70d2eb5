"""``barred train`` on a rule-set output: one guardrail per rule, each with its own rule's criterion and labels."""

from __future__ import annotations

import pytest

from hf_barred.cli.main import main
from hf_barred.guardrails.guardrail import Guardrail
from hf_barred.policy.rules import RuleSet
from hf_barred.train.tiny import make_tiny_classifier
from tests.utils.cli_runs import RULES, fresh_cli, rule_set_argv  # noqa: F401  (fresh_cli: a fixture)
from tests.utils.schema_responder import StageServer


@pytest.mark.usefixtures("fresh_cli")
def test_a_rule_set_output_trains_one_guardrail_per_chosen_rule(tmp_path, capsys):
    data = tmp_path / "rules-out"
    with StageServer() as server:
        assert main(rule_set_argv(server.url, data, n=4)) == 0
    rules = RuleSet.load(RULES)
    base = make_tiny_classifier(tmp_path / "bert", corpus=[seed.text for task in rules for seed in task.seeds])
    chosen = ["health-advice", "repetition"]
    guards = tmp_path / "guards"
    capsys.readouterr()
    argv = ["train", str(data), "--output", str(guards), "--base_model", base, "--num_train_epochs", "1"]
    assert main([*argv, "--rules", ",".join(chosen)]) == 0
    printed = capsys.readouterr().out
    assert "2 guardrails trained" in printed and sorted(p.name for p in guards.iterdir()) == chosen
    for name in chosen:
        guard = Guardrail.from_pretrained(guards / name, device="cpu")
        assert guard.spec.rule == rules[name].criterion  # its own rule, not another's
        assert guard.spec.label_names == list(rules[name].labels)
        (verdict,) = guard("User: hi\nAgent: hello")
        assert 0.0 <= verdict.score <= 1.0


def test_rules_names_a_rule_the_output_lacks_or_a_folder_that_is_no_rule_set(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "rules.yaml").write_text(RULES.read_text())
    assert main(["train", str(tmp_path / "out"), "--output", str(tmp_path / "g"), "--rules", "nope"]) == 2
    err = capsys.readouterr().err
    assert "--rules: expected rules of" in err and "found nope" in err
    assert (
        main(["train", "dataset_scripts/xstest/xstest_prompts.csv", "--output", str(tmp_path / "g"), "--rules", "a"])
        == 2
    )
    assert "expected a rule-set output of barred generate" in capsys.readouterr().err
