"""The pydantic schemas of the task and taxonomy files (policy.schemas) and their one-line errors (policy.files)."""

import pytest

from hf_barred.policy.files import FieldProblem, TaskFileError, read_structured_file, write_structured_file
from hf_barred.policy.schemas import TaskFile, TaxonomyFile, seed_parts
from hf_barred.policy.task import GuardrailTask, Seed
from hf_barred.policy.taxonomy import Taxonomy


def error_of(model, data, source="f.yaml") -> str:
    with pytest.raises(TaskFileError) as info:
        model.parse(data, source)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{source}: field '")
    return message


def test_task_file_fields_and_defaults():
    file = TaskFile.parse({"criterion": "r", "labels": [False, True], "seeds": None, "description": None})
    assert file.labels == ("False", "True")  # YAML's [no, yes] are booleans: their names are kept
    assert file.seeds == () and file.description == "" and file.name is None and file.input_type == "input_block"
    mapping = TaskFile.parse({"criterion": "r", "labels": {"negative": "ok", "positive": "bad"}, "name": 7})
    assert mapping.labels == ("ok", "bad") and mapping.name == "7"


def test_seeds_of_every_form_give_the_same_objects():
    data = {
        "criterion": "r",
        "input_type": "task_and_response",
        "seeds": [{"task": "t", "response": "r", "note": "ignored"}, {"text": "y", "task": "u"}],
    }
    task = GuardrailTask.from_dict(data, source="x/plan.yaml")
    assert task.seeds == (Seed("r", "t"), Seed("y", "u")) and task.name == "plan"
    assert seed_parts("User: hi") == ("User: hi", None)
    with pytest.raises(FieldProblem, match="non-empty strings"):
        seed_parts({"response": "no task"})


def test_an_unknown_field_is_reported_before_the_other_errors():
    message = error_of(TaskFile, {"criterium": "x", "labels": 4})  # also no criterion and bad labels
    assert "field 'criterium': expected one of the fields" in message
    assert message.endswith("Remove or rename the field.")


@pytest.mark.parametrize(
    "data, expected",
    [
        ({}, "field 'criterion': expected a rule text, found None. Add 'criterion: ...' to the file."),
        ({"criterion": " "}, "field 'criterion': expected a non-empty rule text, found ' '. Write the rule"),
        ({"criterion": "r", "labels": ["a", "a"]}, "field 'labels': expected two distinct names"),
        ({"criterion": "r", "labels": {"yes": 1}}, "expected a list [negative, positive] or {negative: ..., positive"),
        (
            {"criterion": "r", "seeds": ["ok", 3]},
            (
                "field 'seeds': expected non-empty strings, or objects with 'task' and "
                "'response', found 3. Fix or remove seed 1."
            ),
        ),
        (
            "text",
            "field '(top level)': expected a mapping with criterion, labels, input_type, seeds, found 'text'. Write",
        ),
    ],
)
def test_task_file_errors_say_expected_found_and_fix(data, expected):
    assert expected in error_of(TaskFile, data)


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"categories": [5]}, "field 'categories[0]': expected a mapping {name: ..., should_not: [...], can: [...]}"),
        (
            {"categories": [{"should_not": ["x"]}]},
            (
                "field 'categories[0].name': expected a one-line category name, "
                "found None. Add 'name: ...' to categories[0]."
            ),
        ),
        ({"categories": [{"name": "A"}, {"name": "B", "code": "S3"}]}, "field 'categories[1].code': expected 'S2'"),
        (
            {"categories": [{"name": "A", "can": ["x\ny"]}]},
            "field 'categories[0].can[0]': expected a non-empty one-line",
        ),
        ({"categories": [{"name": "A"}], "name": 5}, "field 'name': expected a string naming the policy, found 5."),
        (None, "field '(top level)': expected a mapping with a 'categories' list, found None. Write 'categories:'"),
    ],
)
def test_taxonomy_file_errors_name_the_nested_field(data, expected):
    assert expected in error_of(TaxonomyFile, data)


def test_taxonomy_file_strips_lines_and_accepts_single_strings():
    entry = {"code": "S1", "name": " Hate ", "should_not": " Demean. ", "can": None}
    file = TaxonomyFile.parse({"categories": [entry]})
    taxonomy = Taxonomy.from_file(file)
    assert taxonomy["S1"].name == "Hate" and taxonomy["S1"].should_not == ("Demean.",) and taxonomy["S1"].can == ()


def test_the_schema_documents_what_each_field_expects():
    properties = TaskFile.model_json_schema()["properties"]
    assert properties["criterion"]["description"] == "a rule text"
    assert TaxonomyFile.model_json_schema()["properties"]["categories"]["fix"].startswith("Each entry")


def test_structured_files_round_trip(tmp_path):
    data = {"name": "café", "seeds": ["a\nb"]}
    for suffix in (".json", ".yml"):
        write_structured_file(tmp_path / "sub" / f"f{suffix}", data)
        assert read_structured_file(tmp_path / "sub" / f"f{suffix}") == data
