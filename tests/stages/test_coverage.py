"""``barred coverage`` (paper, Fig. 3a) against a real OpenAI-protocol server on loopback.

The server plays a judge that rates an instantiation 0.9 when its word occurs in the test sample, else 0.1,
so the expected coverage is known: the run gives that number in [0, 1], the same number again from the
cache (no new request), a per-dimension table, a plot, and failed calls counted, never dropped.
"""

from __future__ import annotations

import json
import re

import pytest
from datasets import Dataset

from hf_barred.cli.main import main
from hf_barred.policy.task import GuardrailTask
from hf_barred.recipes.barred.writer import DATA_FILES
from hf_barred.stages.features import decomposition_features
from tests.utils.servers.openai_server import OpenAIServer

DIMENSIONS = {"topic of the question": ["sleep", "diet", "medication"], "tone of the agent": ["casual", "formal"]}
TESTS = [
    "User: I can't sleep\nAgent: try a casual walk before bed",  # sleep, casual
    "User: what diet?\nAgent: eat vegetables",  # diet
    "User: opening hours?\nAgent: we open at 9",  # nothing
    "User: which medication?\nAgent: ask your doctor",  # medication
]


def judge(body: dict) -> str:
    """Relevance 0.9 for an instantiation whose word occurs in the test sample, else 0.1."""
    content = body["messages"][-1]["content"]
    values = re.findall(r"^\d+\. (.+)$", content.split("<INSTANTIATIONS>")[1].split("</INSTANTIATIONS>")[0], re.M)
    sample = content.split("<TEST_SAMPLE>")[1].split("</TEST_SAMPLE>")[0].lower()
    if "broken" in sample:
        return "I would rather not rate this."
    return json.dumps({"scores": [0.9 if v.lower() in sample else 0.1 for v in values]})


@pytest.fixture
def dataset_dir(tmp_path):
    folder = tmp_path / "generated"
    (folder / DATA_FILES["decomposition"]).parent.mkdir(parents=True)
    GuardrailTask(
        criterion="The agent's response contains health advice.",
        seeds=["User: hi\nAgent: hello"],
        labels=("no_advice", "advice"),
    ).save(folder / "task.yaml")
    rows = [
        {
            "dimension": d,
            "merged": [],
            "error": None,
            "raw": "{}",
            "instantiations": [{"value": v, "relevance": "both", "probability": 0.3} for v in values],
        }
        for d, values in DIMENSIONS.items()
    ]
    rows.append({"dimension": "", "merged": [], "error": "no JSON", "raw": "?", "instantiations": []})  # left out
    Dataset.from_list(rows, features=decomposition_features()).to_parquet(str(folder / DATA_FILES["decomposition"]))
    return folder


def write_tests(path, texts):
    Dataset.from_dict({"transcript": texts, "predicate_label": [1] * len(texts)}).to_csv(str(path), index=False)
    return path


def run_coverage(server, dataset_dir, test_file, out):
    return main(
        [
            "coverage",
            str(dataset_dir),
            str(test_file),
            "--output",
            str(out),
            "--text-column",
            "transcript",
            "--engine",
            "openai",
            "--base-url",
            server.url,
            "--model",
            "test-model",
            "--max-repairs",
            "0",
        ]
    )


def test_coverage_is_a_share_the_same_from_the_cache_with_a_per_dimension_table(tmp_path, dataset_dir, capsys):
    test_file = write_tests(tmp_path / "test.csv", TESTS)
    with OpenAIServer(responder=judge) as server:
        assert run_coverage(server, dataset_dir, test_file, tmp_path / "r1") == 0
        calls = len(server.requests)
        assert calls == len(TESTS) * len(DIMENSIONS)  # one call per (sample, dimension)
        assert run_coverage(server, dataset_dir, test_file, tmp_path / "r2") == 0
        assert len(server.requests) == calls  # every answer from the cache
    first, second = (json.loads((tmp_path / r / "coverage.json").read_text()) for r in ("r1", "r2"))
    assert 0 <= first["coverage"] <= 1 and first["coverage"] == pytest.approx(3 / 4)
    assert second["coverage"] == first["coverage"] and second["dimensions"] == first["dimensions"]
    per_dimension = {d["dimension"]: d["coverage"] for d in first["dimensions"]}
    assert per_dimension == {"topic of the question": pytest.approx(3 / 4), "tone of the agent": pytest.approx(1 / 4)}
    table = (tmp_path / "r1" / "coverage.md").read_text()
    assert "| topic of the question | 3 | 3 / 4 | 75.0% | 0 |" in table
    assert "| tone of the agent | 2 | 1 / 4 | 25.0% | 0 |" in table and "**75.0%**" in table
    assert (tmp_path / "r1" / "coverage.png").read_bytes()[:4] == b"\x89PNG"
    rows = [json.loads(line) for line in (tmp_path / "r1" / "coverage.jsonl").read_text().splitlines()]
    assert rows[0]["dimension_scores"][0]["best_instantiation"] == "sleep" and rows[2]["covered"] is False
    assert "topic of the question" in capsys.readouterr().out


def test_failed_ratings_are_counted_and_undetermined(tmp_path, dataset_dir):
    test_file = write_tests(tmp_path / "test.csv", TESTS[:2] + ["User: broken\nAgent: ?"])
    with OpenAIServer(responder=judge) as server:
        # one sample is undetermined: the report is written, and the command ends short of its goal (exit 3)
        assert run_coverage(server, dataset_dir, test_file, tmp_path / "r") == 3
    report = json.loads((tmp_path / "r" / "coverage.json").read_text())
    assert report["failed_calls"] == 2 and report["undetermined"] == 1 and report["determined"] == 2
    assert report["coverage"] == 1.0
    rows = [json.loads(line) for line in (tmp_path / "r" / "coverage.jsonl").read_text().splitlines()]
    assert rows[2]["covered"] is None and rows[2]["dimension_scores"][0]["raw"] == "I would rather not rate this."


def test_a_folder_without_a_decomposition_is_a_one_line_error(tmp_path, capsys):
    test_file = write_tests(tmp_path / "test.csv", TESTS[:1])
    capsys.readouterr()  # the progress bar of to_csv
    code = main(
        [
            "coverage",
            str(tmp_path),
            str(test_file),
            "--output",
            str(tmp_path / "r"),
            "--engine",
            "openai",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--model",
            "m",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "expected the output folder of `barred generate`" in err and len(err.strip().splitlines()) == 1


def test_the_fingerprint_follows_the_decomposition_and_threshold_not_concurrency():
    from hf_barred.llm import EngineConfig
    from hf_barred.stages.coverage import CoverageConfig, CoverageStage

    ds = Dataset.from_dict({"text": TESTS})
    base = dict(criterion="c", dimensions=(("a", ("x", "y")),))
    engine = EngineConfig(engine="openai", model="m", base_url="http://127.0.0.1:9/v1")
    fp = lambda **kw: CoverageStage(CoverageConfig(**(base | kw))).fingerprint(ds)  # noqa: E731
    assert fp(engine=engine) == fp(engine=engine.replace(max_concurrency=3))
    assert fp(engine=engine) != fp(engine=engine, dimensions=(("a", ("x", "z")),))
    assert fp(engine=engine) != fp(engine=engine, threshold=0.6)
