"""RuleSet: every source kind loads, errors are one line with expected / found / fix, taxonomies keep their
S-codes, and the rule-set file round-trips."""

import json
import subprocess
import sys

import pytest
import yaml

from hf_barred.policy.files import TaskFileError
from hf_barred.policy.rules import TAXONOMY_LABELS, RuleSet, category_criterion
from hf_barred.policy.task import GuardrailTask, Seed
from hf_barred.policy.taxonomy import Category, Taxonomy
from tests.utils import REPO_ROOT

EXAMPLE = REPO_ROOT / "examples" / "support-agent" / "rules.yaml"
TAXONOMY = REPO_ROOT / "dataset_scripts" / "policy-xstest" / "taxonomy.yaml"
HEALTH_TASK = REPO_ROOT / "dataset_scripts" / "health-advice" / "task.yaml"
SEEDS = ["User: Where is my parcel?\nAgent: It left the warehouse today.", "User: hi\nAgent: Hello! How can I help?"]


def rule_set_data(**changes):
    data = {
        "name": "shop",
        "description": "Chats of a shop's agent.",
        "input_type": "input_block",
        "seeds": SEEDS,
        "rules": [
            {"name": "health-advice", "criterion": "The agent gives health advice.", "labels": ["no", "yes"]},
            {
                "name": "plan_check",
                "criterion": "The plan skips a step.",
                "labels": ["PASS", "FAIL"],
                "input_type": "task_and_response",
                "seeds": [{"task": "Plan a move.", "response": "1. Pack."}],
            },
            {
                "name": "repetition",
                "criterion": "The agent repeats itself.",
                "labels": ["no", "yes"],
                "description": "Multi-turn chats.",
            },
        ],
    }
    return data | changes


def write(path, data):
    path.write_text(json.dumps(data) if path.suffix == ".json" else yaml.safe_dump(data), encoding="utf-8")
    return path


def load_error(path) -> str:
    with pytest.raises(TaskFileError) as info:
        RuleSet.load(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path)) and "expected" in message and "found" in message
    return message


# --- sources -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_a_rule_set_file_loads_with_shared_and_own_fields(tmp_path, suffix):
    rules = RuleSet.load(write(tmp_path / f"rules{suffix}", rule_set_data()))
    assert rules.names == ("health-advice", "plan_check", "repetition") and rules.name == "shop" and len(rules) == 3
    health, plan, repetition = rules
    assert health.seeds == tuple(Seed(s) for s in SEEDS) and health.description == "Chats of a shop's agent."
    assert health.labels == ("no", "yes") and health.input_type == "input_block"
    assert plan.input_type == "task_and_response" and plan.seeds == (Seed("1. Pack.", task="Plan a move."),)
    assert repetition.description == "Multi-turn chats." and repetition.seeds == health.seeds
    assert rules["plan_check"] is plan and rules[-1] is repetition and rules.codes == {}


def test_the_shared_seeds_say_which_rules_share_which_seeds(tmp_path):
    rules = RuleSet.load(write(tmp_path / "rules.yaml", rule_set_data()))
    assert rules.shared_seeds == {rules[0].seeds: ("health-advice", "repetition"), rules[1].seeds: ("plan_check",)}


def test_a_folder_of_task_files_is_one_rule_per_file(tmp_path):
    folder = tmp_path / "my-rules"
    folder.mkdir()
    write(folder / "a.yaml", {"name": "health-advice", "criterion": "Health advice.", "seeds": SEEDS})
    write(folder / "repetition.json", {"criterion": "Repeats itself.", "labels": ["no", "yes"], "seeds": SEEDS[:1]})
    write(folder / ".hidden.yaml", {"criterion": "not a rule"})
    (folder / "notes.txt").write_text("not a task file")
    rules = RuleSet.load(folder)
    assert rules.names == ("health-advice", "repetition") and rules.name == "my-rules"  # name field, else the stem
    assert rules["repetition"].labels == ("no", "yes") and rules["health-advice"].labels == ("False", "True")


def test_a_single_task_file_is_a_rule_set_of_one_rule():
    rules = RuleSet.load(HEALTH_TASK)
    assert len(rules) == 1 and rules[0] == GuardrailTask.load(HEALTH_TASK) and rules.names == ("health-advice",)


def test_a_taxonomy_file_with_seeds_gives_one_rule_per_category_with_its_code(tmp_path):
    data = yaml.safe_load(TAXONOMY.read_text(encoding="utf-8")) | {"seeds": SEEDS}
    rules = RuleSet.load(write(tmp_path / "hazards.yaml", data))
    taxonomy = Taxonomy.load(TAXONOMY)
    assert len(rules) == len(taxonomy) == 12 and rules.name == "ailuminate-style-hazards"
    assert rules.codes == {rule.name: code for rule, code in zip(rules, taxonomy.codes, strict=True)}
    assert rules.code_of("violent-crimes") == "S1" and rules.code_of("sex-related-crimes") == "S3"
    assert rules.code_of("suicide-self-harm") == "S11"
    violent = rules["violent-crimes"]
    assert violent.labels == TAXONOMY_LABELS == ("safe", "unsafe") and violent.seeds == tuple(Seed(s) for s in SEEDS)
    assert violent.criterion == category_criterion(taxonomy["S1"]) and violent.description == taxonomy.description
    assert all(line in violent.criterion for line in taxonomy["S1"].should_not + taxonomy["S1"].can)
    assert Taxonomy.load(tmp_path / "hazards.yaml") == taxonomy  # the seeds key is no error for the taxonomy


def test_a_taxonomy_without_seeds_needs_them_from_the_caller():
    message = load_error(TAXONOMY)
    assert "field 'seeds'" in message and "Add a 'seeds:' list to the taxonomy file, or pass seeds=..." in message
    rules = RuleSet.from_taxonomy(Taxonomy.load(TAXONOMY), seeds=SEEDS)
    assert len(rules) == 12 and rules.codes["violent-crimes"] == "S1"
    with pytest.raises(TaskFileError, match="pass seeds="):
        RuleSet.from_taxonomy(Taxonomy.load(TAXONOMY), seeds=[])


def test_category_names_become_unique_rule_names():
    taxonomy = Taxonomy(
        (Category("Hate & Harassment"), Category("Hate/Harassment"), Category("Ünïcode Name"), Category("???"))
    )
    rules = RuleSet.from_taxonomy(taxonomy, seeds=SEEDS)
    assert rules.names == ("hate-harassment", "hate-harassment-s2", "unicode-name", "s4")
    assert rules["s4"].criterion == 'The input falls under the policy category "???".'
    assert list(rules.codes.values()) == ["S1", "S2", "S3", "S4"]


# --- errors --------------------------------------------------------------------------------------------
def _with_rule(index, **changes):
    data = rule_set_data()
    data["rules"][index] = data["rules"][index] | changes
    return data


@pytest.mark.parametrize(
    "data, fragment, fix",
    [
        (
            _with_rule(2, name="health-advice"),
            "field 'rules[2].name': expected a name no other rule has, found 'health-advice'",
            "Rename one of the two rules.",
        ),
        (
            rule_set_data(seeds=[]) | {"rules": rule_set_data()["rules"][:2]},
            "field 'rules[0].seeds': expected 10-30 unlabelled examples",
            "Add a shared 'seeds:' list at the top of the file, or one under this rule.",
        ),
        (rule_set_data(rules=[]), "field 'rules': expected a non-empty list of rules, found []", "Each entry: {name:"),
        (
            _with_rule(0, name="Health Advice"),
            "field 'rules[0].name': expected a name of lowercase letters, digits, '-' and '_'",
            "Rename it, e.g. 'health-advice'.",
        ),
        (_with_rule(1, criterium="x"), "field 'rules[1].criterium': expected one of the fields", "Remove or rename"),
        (_with_rule(0, labels=["a"]), "field 'rules[0].labels': expected two distinct names", ""),
        (_with_rule(0, code="S0"), "field 'rules[0].code': expected a taxonomy category code", "Fix the code"),
        (_with_rule(0, seeds=[""]), "field 'rules[0].seeds': expected non-empty strings", "Fix or remove seed 0."),
        (
            rule_set_data(rules=[{"name": "x", "criterion": "r"}]),
            "field 'rules[0].labels': expected two label names [rule does not hold, rule holds], found None",
            "Add 'labels: ...' to rules[0].",
        ),
        (
            {"criteria": ["r"]},
            "field '(top level)': expected a rule-set file ('rules:'), a taxonomy file ('categories:') "
            "or a task file ('criterion:'), found ['criteria']",
            "Add the key of the kind of file you meant.",
        ),
    ],
)
def test_bad_rule_set_files_are_one_line_with_the_fix(tmp_path, data, fragment, fix):
    message = load_error(write(tmp_path / "rules.yaml", data))
    assert fragment in message and message.endswith(".") and fix in message


def test_a_rule_whose_seeds_do_not_fit_its_input_type_names_the_rule(tmp_path):
    message = load_error(write(tmp_path / "rules.yaml", _with_rule(0, input_type="task_and_response")))
    assert "task 'health-advice': field 'seeds': expected objects with 'task' and 'response'" in message


def test_folder_errors_name_the_file(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TaskFileError, match="expected a folder of task files .*found none. Add one task file per rule"):
        RuleSet.load(empty)
    folder = tmp_path / "rules"
    folder.mkdir()
    bad = write(folder / "Health Advice.yaml", {"criterion": "Health advice.", "seeds": SEEDS})
    for source in (folder, bad):  # the folder, and the file alone
        message = load_error(source).replace(str(folder), "<folder>", 1)
        assert message.startswith("<folder>/Health Advice.yaml: field 'name': expected a name of lowercase")
        assert message.endswith("Rename it, e.g. 'health-advice'. Set 'name:' in the file.")
    bad.unlink()
    write(folder / "a.yaml", {"name": "same", "criterion": "r", "seeds": SEEDS})
    write(folder / "b.yaml", {"name": "same", "criterion": "s", "seeds": SEEDS})
    message = load_error(folder)
    assert message.startswith(f"{folder / 'b.yaml'}: field 'name'")
    assert message.endswith("a.yaml has it too: rename one of them.")
    (folder / "b.yaml").unlink()
    write(folder / "c.yaml", {"criterion": "no seeds"})
    message = load_error(folder)
    assert message.startswith(f"{folder / 'c.yaml'}: field 'seeds': expected 10-30")
    assert "Add a 'seeds:' list" in message


def test_the_runtime_rule_set_keeps_the_same_invariants():
    task = GuardrailTask("r", seeds=SEEDS, name="a")
    with pytest.raises(TaskFileError, match=r"field 'rules\[1\].name': expected a name no other rule has"):
        RuleSet((task, task))
    with pytest.raises(TaskFileError, match=r"field 'rules\[0\].name': expected a name of lowercase"):
        RuleSet((GuardrailTask("r", seeds=SEEDS, name="Bad Name"),))
    with pytest.raises(TaskFileError, match=r"field 'rules\[0\].seeds': expected 10-30"):
        RuleSet((GuardrailTask("r", name="a"),))
    with pytest.raises(TaskFileError, match="expected a non-empty sequence"):
        RuleSet(())
    with pytest.raises(ValueError, match="expected a category code"):
        RuleSet((task,), codes={"a": "X1"})
    with pytest.raises(KeyError, match="unknown rule 'b'"):
        RuleSet((task,))["b"]


# --- writing -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_save_and_load_round_trip(tmp_path, suffix):
    rules = RuleSet.load(write(tmp_path / "in.yaml", rule_set_data()))
    rules.save(tmp_path / f"out{suffix}")
    again = RuleSet.load(tmp_path / f"out{suffix}")
    assert again == rules and again.name == "shop" and again.shared_seeds == rules.shared_seeds
    saved = (yaml.safe_load if suffix == ".yaml" else json.loads)((tmp_path / f"out{suffix}").read_text())
    assert saved["seeds"] == SEEDS and [sorted(rule) for rule in saved["rules"]] == [
        ["criterion", "labels", "name"],
        ["criterion", "input_type", "labels", "name", "seeds"],
        ["criterion", "description", "labels", "name"],
    ]  # a rule writes only what it does not share


def test_a_taxonomy_rule_set_round_trips_with_its_codes(tmp_path):
    rules = RuleSet.from_taxonomy(Taxonomy.load(TAXONOMY), seeds=SEEDS)
    rules.save(tmp_path / "hazards.yaml")
    again = RuleSet.load(tmp_path / "hazards.yaml")
    assert again == rules and again.codes == rules.codes and again.code_of("hate") == "S10"
    assert RuleSet.from_dict(rules.to_dict()) == rules


# --- the example ---------------------------------------------------------------------------------------
def test_the_example_rule_set_loads():
    rules = RuleSet.load(EXAMPLE)
    assert rules.names == ("health-advice", "employee-location", "repetition") and rules.name == "support-agent"
    assert 10 <= len(rules[0].seeds) <= 12 and list(rules.shared_seeds.values()) == [rules.names]
    assert all(task.seed_warning() is None and task.input_type == "input_block" for task in rules)
    assert len({task.labels for task in rules}) == 3


def test_importing_the_policy_layer_stays_light():
    code = "import sys, hf_barred.policy; print([m for m in ('datasets', 'torch', 'transformers') if m in sys.modules])"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": ""},
    )
    assert result.stdout.strip() == "[]"
