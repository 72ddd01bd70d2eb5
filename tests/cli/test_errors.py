"""One-line errors with exit code 2 for bad input, and data sanity checks.

Every error here is one line on stderr that keeps its expected / found / fix text; the traceback
appears only with ``--debug``; nothing is written, and no request is sent, before the input is checked.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import hf_barred.llm as llm
from hf_barred.cli.main import main
from hf_barred.policy.data import load_labelled_data, require_two_classes
from tests.utils import REPO_ROOT
from tests.utils.cli_runs import TASK, fresh_cli, generate_argv  # noqa: F401 (fixture)
from tests.utils.servers.openai_server import OpenAIServer, error

ROOT = REPO_ROOT


pytestmark = pytest.mark.usefixtures("fresh_cli")


def generate(task: Path, url: str, output: Path, *more: str) -> list[str]:
    return generate_argv(url, output, "--max-retries", "0", *more, task=task)


def lines_of(capsys) -> tuple[list[str], str]:
    err = capsys.readouterr().err
    return [line for line in err.splitlines() if line.startswith("barred")], err


def task_file(tmp_path: Path, **changes) -> Path:
    data = yaml.safe_load(TASK.read_text(encoding="utf-8")) | changes
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "flag, value, expected",
    [
        ("--n", "0", "argument --n: expected an integer >= 1, found '0'"),
        ("--judges", "0", "argument --judges: expected an integer >= 1, found '0'"),
        ("--rounds", "-1", "argument --rounds: expected an integer >= 1, found '-1'"),
        ("--max-failure-rate", "2", "argument --max-failure-rate: expected a share between 0 and 1"),
        ("--max-seed-chars", "zero", "argument --max-seed-chars: expected an integer >= 1, found 'zero'"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(tmp_path, capsys, flag, value, expected):
    out = tmp_path / "out"
    args = generate(TASK, "http://127.0.0.1:9/v1", out)
    with pytest.raises(SystemExit) as caught:
        main(args + [flag, value])
    lines, err = lines_of(capsys)
    assert caught.value.code == 2 and lines == [f"barred generate: error: {expected}" + lines[0].split(expected)[1]]
    assert "See `barred generate --help`." in lines[0] and "usage:" not in err and not out.exists()


def test_judges_0_is_refused_by_the_config_too():
    from hf_barred.recipes.barred.run import BarredConfig

    with pytest.raises(ValueError, match="expected judges >= 1"):
        BarredConfig.for_engine(llm.EngineConfig(), judges=0)


def test_a_rejected_api_key_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-wrong-key-123")
    with OpenAIServer(api_key="sk-right") as server:
        code = main(generate(TASK, server.url, tmp_path / "out", "--api-key-env", "MY_KEY"))
    lines, err = lines_of(capsys)
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert "refused the request for model 'test-model' with the API key in $MY_KEY (HTTP 401" in lines[0]
    assert "Set MY_KEY to a valid key" in lines[0] and "sk-wrong-key-123" not in err
    assert not (tmp_path / "out").exists()


def test_debug_shows_the_traceback(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hf_barred.cli",
            "generate",
            "missing.yaml",
            "--n",
            "2",
            "--output",
            str(tmp_path / "o"),
            "--debug",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": ""},
    )
    assert result.returncode == 2
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "barred generate: error: missing.yaml: file not found. Expected a YAML or JSON file; check the path."
    )


def test_a_task_file_that_is_not_utf8_names_the_file_and_the_encoding(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(TASK.read_text(encoding="utf-8").replace("Agent:", "Agent: caf\u00e9", 1).encode("latin-1"))
    assert main(generate(path, "http://127.0.0.1:9/v1", tmp_path / "out")) == 2
    [line], _ = lines_of(capsys)
    assert line.startswith(
        f"barred generate: error: {path}: expected a UTF-8 text file, found a byte that is not UTF-8"
    )
    assert "(b'\\xe9' at byte" in line and "Save the file as UTF-8" in line


def test_a_seed_over_max_seed_chars_is_refused_with_its_index(tmp_path, capsys):
    seeds = yaml.safe_load(TASK.read_text(encoding="utf-8"))["seeds"]
    seeds[3] = "x" * 40_000
    path = task_file(tmp_path, seeds=seeds)
    with OpenAIServer() as server:
        assert main(generate(path, server.url, tmp_path / "out")) == 2
        [line], _ = lines_of(capsys)
        assert "seed 3 has 40000 characters, expected at most 32000 (--max-seed-chars)" in line
        assert main(generate(path, server.url, tmp_path / "out", "--max-seed-chars", "1000")) == 2
        [line], _ = lines_of(capsys)
        assert "seed 3 has 40000 characters, expected at most 1000 " in line
        assert not server.requests and not (tmp_path / "out").exists()


def test_fewer_than_10_seeds_warns(tmp_path, capsys):
    seeds = yaml.safe_load(TASK.read_text(encoding="utf-8"))["seeds"][:3]
    with OpenAIServer() as server:
        server.script(error(500), forever=True)
        main(generate(task_file(tmp_path, seeds=seeds), server.url, tmp_path / "out"))
    lines, _ = lines_of(capsys)
    assert lines[0] == (
        "barred generate: warning: task 'health-advice' has 3 seed(s); BARRED asks for 10-30 unlabelled "
        "examples, and with fewer the samples copy the seeds' domain and style more narrowly. "
        "Add seeds to the task file."
    )


def test_train_on_an_empty_folder_is_one_line_and_exit_2(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "hf_barred.cli", "train", str(empty), "--output", str(tmp_path / "g")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(ROOT), "PATH": "", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )
    lines = [line for line in result.stderr.splitlines() if line.startswith("barred")]
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert lines == [
        f"barred train: error: {empty}: expected a labelled dataset (a csv/tsv/json/jsonl/parquet file, "
        "a folder of them, a saved dataset or a Hub id), found a folder with no data files "
        f"(The directory at {empty} doesn't contain any data files). Check the path."
    ]
    assert not (tmp_path / "g").exists()


@pytest.mark.parametrize(
    "csv, expected",
    [
        ("text,verdict\nhello,1\nbye,0\n", "Expected the dataset to have a label column"),
        ("text,label\na,yes\nb,no\nc,maybe\n", "Expected a binary label with two values, found 3"),
    ],
)
def test_evaluate_data_errors_are_one_line_and_exit_2(tmp_path, capsys, csv, expected):
    data = tmp_path / "data.csv"
    data.write_text(csv)
    with OpenAIServer() as server:
        code = main(
            [
                "evaluate",
                "--engine",
                "openai",
                "--model",
                "test-model",
                "--base-url",
                server.url,
                str(data),
                "--output",
                str(tmp_path / "report"),
                "--rule",
                "The text is rude.",
            ]
        )
        assert not server.requests
    [line], err = lines_of(capsys)
    assert code == 2 and line.startswith(f"barred evaluate: error: {expected}") and "Fix:" in line
    assert "Traceback" not in err


def test_a_generate_output_with_0_accepted_says_so(tmp_path):
    folder = tmp_path / "run"
    (folder / "data").mkdir(parents=True)
    from datasets import Dataset

    Dataset.from_dict({"text": ["a"], "label": [0]}).to_parquet(
        str(folder / "data" / "rejected-00000-of-00001.parquet")
    )
    (folder / "summary.json").write_text(json.dumps({"accepted": 0, "rejected": 1, "requested": 8}))
    with pytest.raises(ValueError) as caught:
        load_labelled_data(folder, split="train")
    message = str(caught.value)
    assert "found 0 accepted samples of 8 requested (1 rejected" in message and "nothing to train on" in message
    assert "--split" not in message  # the rejected split is not training data
    assert len(load_labelled_data(folder, split="rejected")) == 1  # asked for explicitly, it still loads


def test_a_single_class_training_set_is_refused_naming_the_class():
    with pytest.raises(ValueError) as caught:
        require_two_classes([0, 0, 0, 0], ["no_health_advice", "health_advice"], "train.csv")
    assert str(caught.value).startswith(
        "train.csv: expected rows of both classes ['no_health_advice', 'health_advice'], "
        "found only 'no_health_advice' (4 rows) and 0 'health_advice'."
    )
    require_two_classes([0, 1, 1], ["a", "b"])  # both present: no error


def test_barred_train_refuses_a_single_class_training_set(tmp_path, capsys):
    from datasets import Dataset

    csv_path = tmp_path / "train.csv"
    Dataset.from_dict({"text": [f"User: question {i}\nAgent: answer" for i in range(6)], "label": [0] * 6}).to_csv(
        str(csv_path)
    )
    assert (
        main(
            [
                "train",
                str(csv_path),
                "--output_dir",
                str(tmp_path / "model"),
                "--rule",
                "Health advice.",
                "--class_names",
                "no_health_advice",
                "health_advice",
            ]
        )
        == 2
    )
    [line], _ = lines_of(capsys)
    assert "expected rows of both classes" in line and "'no_health_advice' (6 rows)" in line
    assert not (tmp_path / "model" / "guardrail_config.json").exists()  # no model, no card
