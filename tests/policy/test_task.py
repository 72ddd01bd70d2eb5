import pytest

from hf_barred.policy.task import GuardrailTask, Seed, TaskFileError


def test_yaml_and_json_round_trip(tmp_path):
    task = GuardrailTask(
        criterion="The agent's response contains health advice.",
        labels=("no_advice", "advice"),
        seeds=("User: hi\nAgent: hello", Seed(text="Agent: rest", task="User: tired")),
        input_type="input_block",
        name="health",
        description="pharmacy assistant",
    )
    for suffix in (".yaml", ".json"):
        path = tmp_path / f"task{suffix}"
        task.save(path)
        assert GuardrailTask.load(path) == task


def test_task_and_response_seeds(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("criterion: r\ninput_type: task_and_response\nseeds:\n  - {task: plan a trip, response: go}\n")
    task = GuardrailTask.load(path)
    assert task.seeds == (Seed(text="go", task="plan a trip"),)


@pytest.mark.parametrize(
    "content, field, found",
    [
        ("labels: [a, b]\nseeds: [x]\n", "criterion", "None"),
        ("criterion: r\nlabels: [a]\n", "labels", "('a',)"),
        ("criterion: r\ninput_type: chat\n", "input_type", "'chat'"),
        ("criterion: r\nseeds: x\n", "seeds", "'x'"),
        ("criterion: r\nseeds: ['']\n", "seeds", "''"),
        ("criterion: r\ncriterium: x\n", "criterium", "'criterium'"),
        ("- just a list\n", "(top level)", "['just a list']"),
    ],
)
def test_bad_files_name_file_field_expected_and_found(tmp_path, content, field, found):
    path = tmp_path / "task.yaml"
    path.write_text(content)
    with pytest.raises(TaskFileError) as err:
        GuardrailTask.load(path)
    message = str(err.value)
    assert str(path) in message and f"'{field}'" in message and "expected" in message and found in message


def test_invalid_yaml_and_missing_file(tmp_path):
    path = tmp_path / "task.yaml"
    path.write_text("criterion: [unclosed\n")
    with pytest.raises(TaskFileError, match="not valid YAML"):
        GuardrailTask.load(path)
    with pytest.raises(TaskFileError, match="file not found"):
        GuardrailTask.load(tmp_path / "missing.yaml")


def test_labels_and_seeds_checks():
    task = GuardrailTask(criterion="r", labels=("PASS", "FAIL"))
    assert task.label_id("fail") == 1 and task.label_id(True) == 1 and task.label_id(0) == 0
    with pytest.raises(ValueError, match="expected one of"):
        task.label_id("maybe")
    with pytest.raises(TaskFileError, match="10-30 unlabelled examples"):
        task.require_seeds()
