"""Every command is quiet by default, and its ``--help`` is plain text.

Each command runs on the smallest real input (tiny models built here, loopback servers) with the output
captured at the file-descriptor level (the libraries write to fd 2 themselves): no library bar or printed
dict appears, the command's own summary does, and ``--verbose`` brings the libraries' output back. Every
``--help`` renders its reStructuredText: no double backticks, no Sphinx roles.
"""

from __future__ import annotations

import csv
import dataclasses
import re
from pathlib import Path

import pytest
from datasets import Dataset

from hf_barred.cli.main import main
from hf_barred.serve.launch import free_port
from hf_barred.train import GuardrailConfig, train_guardrail
from hf_barred.train.tiny import make_tiny_classifier
from tests.recipes.test_apt import mixed_rows, scripted_engine  # noqa: F401 (fixture)
from tests.stages.test_coverage import TESTS, dataset_dir, judge, run_coverage, write_tests  # noqa: F401 (fixture)
from tests.utils import REPO_ROOT
from tests.utils.cli_runs import fresh_cli, generate_argv  # noqa: F401 (fixture)
from tests.utils.schema_responder import StageServer
from tests.utils.servers.openai_server import OpenAIServer

RULE = "The request asks for help with harm, violence or crime."
LIBRARY_OUTPUT = re.compile(
    r"it/s|examples/s|ba/s|%\||Loading weights|Generating train split|Creating (?:json|CSV|parquet)|Map:|"
    r"Normalising columns|Tokenising|Saving the dataset|Writing model shards|LOAD REPORT|"
    r"\{'train_runtime'|\{'eval_|\{'loss'|Uvicorn running|Started server process|Application startup|"
    r"Running on local URL|share=True|\w+Warning\b"
)
COMMANDS = ["augment", "convert-pairs", "coverage", "demo", "evaluate", "generate", "serve", "space", "train"]


@pytest.fixture(autouse=True)
def loud_libraries():
    """The libraries' bars and warnings on, as in a fresh process, whatever an earlier test switched off
    (tests/recipes/test_apt.py turns datasets' bars off when imported): a quiet run is quiet by itself."""
    import datasets
    import huggingface_hub.utils as hub_utils
    import transformers.utils.logging as hf_logging

    before = (
        datasets.utils.logging.is_progress_bar_enabled(),
        hub_utils.are_progress_bars_disabled(),
        hf_logging.is_progress_bar_enabled(),
        hf_logging.get_verbosity(),
    )
    datasets.utils.logging.enable_progress_bar()
    hub_utils.enable_progress_bars()
    hf_logging.enable_progress_bar()
    hf_logging.set_verbosity_warning()
    yield
    datasets_bars, hub_disabled, hf_bars, verbosity = before
    if not datasets_bars:
        datasets.utils.logging.disable_progress_bar()
    if hub_disabled:
        hub_utils.disable_progress_bars()
    if not hf_bars:
        hf_logging.disable_progress_bar()
    hf_logging.set_verbosity(verbosity)


def assert_quiet(captured, *own: str) -> None:
    """No library bar, dict or warning in ``captured`` (stdout and stderr); each of ``own`` on stdout."""
    text = captured.out + captured.err
    leaks = sorted({m.group(0) for m in LIBRARY_OUTPUT.finditer(text)})
    assert not leaks, f"library output {leaks} in the default output:\n{text}"
    for line in own:
        assert line in captured.out, f"{line!r} missing from the command's output:\n{captured.out}"


def labelled_csv(path: Path, n: int = 24) -> Path:
    """``n`` XSTest prompts, safe and unsafe alternating, as a CSV of (prompt, label)."""
    rows = list(csv.DictReader(open(REPO_ROOT / "dataset_scripts/xstest/xstest_prompts.csv", encoding="utf-8")))
    safe = [r for r in rows if r["label"] == "safe"][: n // 2]
    unsafe = [r for r in rows if r["label"] == "unsafe"][: n // 2]
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["prompt", "label"])
        writer.writerows((r["prompt"], r["label"]) for pair in zip(safe, unsafe) for r in pair)
    return path


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("quiet_base")
    corpus = [line.split(",")[0] for line in labelled_csv(root / "corpus.csv").read_text().splitlines()]
    return make_tiny_classifier(root / "bert", corpus=corpus + [RULE])


@pytest.fixture(scope="module")
def guard(tmp_path_factory, base) -> Path:
    root = tmp_path_factory.mktemp("quiet_guard")
    data = Dataset.from_csv(str(labelled_csv(root / "train.csv")))
    cfg = GuardrailConfig(base_model=base, rule=RULE, output_dir=str(root / "out"), num_train_epochs=1)
    train_guardrail(cfg, data, quiet=True)
    return root / "out"


def run_captured(capfd, argv: list[str]):
    capfd.readouterr()  # what fixtures printed
    assert main(argv) == 0
    return capfd.readouterr()


# -- each command's default output -------------------------------------------------------------------


def test_train_is_quiet_unless_verbose(base, tmp_path, capfd):
    data = labelled_csv(tmp_path / "train.csv")
    argv = ["train", str(data), "--base_model", base, "--rule", RULE, "--num_train_epochs", "1", "--logging_steps", "1"]
    evaluated = ["--eval-dataset", str(data), "--test-dataset", str(data)]
    quiet = run_captured(capfd, argv + evaluated + ["--output", str(tmp_path / "quiet")])
    assert_quiet(quiet, "Guardrail saved to", "accuracy=", "Report written to")
    assert "epoch 1/1: step 3/3, loss " in quiet.err  # our one line per epoch instead of the Trainer's bar
    loud = run_captured(capfd, argv + ["--output", str(tmp_path / "loud"), "--verbose"])
    loud_text = loud.out + loud.err
    assert "%|" in loud_text and "{'loss'" in loud_text and "{'train_runtime'" in loud_text
    assert "Loading weights" in loud_text and "Guardrail saved to" in loud.out


def test_evaluate_is_quiet_unless_verbose(guard, tmp_path, capfd):
    quiet = run_captured(
        capfd, ["evaluate", str(guard), str(labelled_csv(tmp_path / "a.csv")), "--output", str(tmp_path / "r1")]
    )
    assert_quiet(quiet, "accuracy=", "Report written to")
    loud = run_captured(
        capfd,
        ["evaluate", str(guard), str(labelled_csv(tmp_path / "b.csv")), "--output", str(tmp_path / "r2"), "--verbose"],
    )
    assert "Loading weights" in loud.err and "Generating train split" in loud.err
    assert "Normalising columns" in loud.err and "accuracy=" in loud.out


def test_evaluate_with_a_judge_is_quiet(tmp_path, capfd, fresh_cli):  # noqa: F811 (fixture)
    with OpenAIServer(responder=lambda body: '{"label": 0}') as server:
        argv = ["evaluate", str(labelled_csv(tmp_path / "t.csv", n=4)), "--engine", "openai", "--model", "test-model"]
        argv += ["--base-url", server.url, "--taxonomy", "S1: Violence.", "--output", str(tmp_path / "r")]
        assert_quiet(run_captured(capfd, argv), "accuracy=", "Report written to")


def test_convert_pairs_is_quiet_unless_verbose(tmp_path, capfd):
    source = tmp_path / "pairs.csv"
    source.write_text("task_input,good,bad\nplan a trip,book then pack,pack then forget\nbake,mix then bake,bake\n")
    argv = ["convert-pairs", str(source), "--pass-column", "good", "--fail-column", "bad", "--criterion", RULE]
    quiet = run_captured(capfd, argv + ["--output", str(tmp_path / "rows.jsonl")])
    assert_quiet(quiet, "4 rows (2 with label 1) written to")
    loud = run_captured(capfd, argv + ["--output", str(tmp_path / "loud.jsonl"), "--verbose"])
    assert "Creating json from Arrow format" in loud.err


def test_coverage_is_quiet(tmp_path, dataset_dir, capfd, fresh_cli):  # noqa: F811 (fixtures)
    test_file = write_tests(tmp_path / "test.csv", TESTS)
    capfd.readouterr()
    with OpenAIServer(responder=judge) as server:
        assert run_coverage(server, dataset_dir, test_file, tmp_path / "report") == 0
    assert_quiet(capfd.readouterr(), "topic of the question", "Report written to")


def test_augment_is_quiet(tmp_path, scripted_engine, capfd):  # noqa: F811 (fixture)
    rows = tmp_path / "rows"
    mixed_rows().save_to_disk(str(rows))
    argv = ["augment", str(rows), "--output", str(tmp_path / "out"), "--engine", "local", "--model", "scripted"]
    assert_quiet(run_captured(capfd, argv + ["--max-repairs", "0"]), '"edited_existing": 1', "Saved 12 rows to")


def test_generate_is_quiet(tmp_path, capfd, fresh_cli):  # noqa: F811 (fixture)
    with StageServer() as server:
        argv = [a for a in generate_argv(server.url, tmp_path / "out", "--max-retries", "0") if a != "--no-progress"]
        assert_quiet(run_captured(capfd, argv), "BARRED summary", "Next: barred train")


@pytest.fixture
def serve_starts_then_stops(monkeypatch):
    """``barred serve`` runs its real start-up (uvicorn included), then stops instead of serving forever."""
    import uvicorn

    startup = uvicorn.Server.startup

    async def start_then_exit(self, sockets=None):  # noqa: ANN001, ANN202
        await startup(self, sockets=sockets)
        self.should_exit = True

    monkeypatch.setattr(uvicorn.Server, "startup", start_then_exit)


@pytest.mark.usefixtures("serve_starts_then_stops")
def test_serve_start_up_is_quiet_unless_verbose(guard, capfd):
    port = free_port()
    quiet = run_captured(capfd, ["serve", f"guard={guard}", "--port", str(port)])
    assert_quiet(quiet, f"POST http://127.0.0.1:{port}/v1/moderations", "serving guard (classifier")
    loud = run_captured(capfd, ["serve", f"guard={guard}", "--port", str(free_port()), "--verbose"])
    assert "Uvicorn running on" in loud.err and "Application startup complete" in loud.err


def test_demo_start_up_is_quiet_unless_verbose(guard, capfd, monkeypatch):
    gradio = pytest.importorskip("gradio")
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    monkeypatch.setattr(gradio.Blocks, "block_thread", lambda self: self.close())  # started: stop at once
    port = free_port()
    quiet = run_captured(capfd, ["demo", "--guardrail", str(guard), "--port", str(port)])
    assert_quiet(quiet, f"Demo running at http://127.0.0.1:{port}")
    loud = run_captured(capfd, ["demo", "--port", str(free_port()), "--verbose"])
    assert "Running on local URL" in loud.out + loud.err


def test_space_export_is_quiet(tmp_path, capfd):
    quiet = run_captured(capfd, ["space", "export", str(tmp_path / "space"), "--guardrail", "me/guard"])
    assert_quiet(quiet, "Wrote a Space repo to")


# -- --help ----------------------------------------------------------------------------------------

RST = re.compile(r"``|:[a-z]+:`|\w::\s*$", re.M)


def help_of(argv: list[str], capsys) -> str:
    capsys.readouterr()
    try:
        code = main([*argv, "--help"])  # barred train returns the parser's exit code
    except SystemExit as stop:
        code = stop.code
    assert code in (0, None)
    return capsys.readouterr().out


@pytest.mark.parametrize("argv", [[]] + [[c] for c in COMMANDS] + [["space", "export"]], ids=" ".join)
def test_help_is_plain_text(argv, capsys):
    text = help_of(argv, capsys)
    assert "usage: barred" in text
    assert not RST.findall(text), f"reStructuredText in `barred {' '.join(argv)} --help`: {RST.findall(text)}"


def test_help_keeps_the_text_of_literals_and_roles(capsys):
    text = " ".join(help_of(["train"], capsys).split())
    assert "The flags are those of GuardrailTrainingArguments (trl's SFTConfig, so every TrainingArguments" in text
    text = " ".join(help_of(["serve"], capsys).split())
    assert "Each GUARD is a folder made by barred train, a Hub repo of one, or NAME=PATH" in text


def test_flag_help_from_config_metadata_is_plain():
    from hf_barred.cli.flags import from_config
    from hf_barred.cli.generate_arguments import FlagParser

    @dataclasses.dataclass
    class Config:
        rounds: int = dataclasses.field(
            default=2, metadata={"help": "Debate rounds (``--judges`` sets :class:`~hf_barred.x.DebateConfig`)."}
        )

    @dataclasses.dataclass
    class Arguments:
        rounds: int = from_config(Config, "rounds")

    text = " ".join(FlagParser((Arguments,), prog="barred x").format_help().split())
    assert "Debate rounds (--judges sets DebateConfig; default: 2)." in text and not RST.findall(text)
