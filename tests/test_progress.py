"""The run's live progress view, and the quiet libraries underneath it."""

from __future__ import annotations

import io
import re
import time

import pytest

import hf_barred.llm as llm
from hf_barred.llm import EngineConfig
from hf_barred.llm.activity import ACTIVITY
from hf_barred.llm.base import Completion
from hf_barred.progress import RunView
from hf_barred.recipes.barred.run import BarredConfig, run_barred
from tests.utils.barred_resume_worker import TASK
from tests.utils.barred_script import BarredScript


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _last_frame(stream: FakeTerminal) -> str:
    return re.split(r"[\r\n]", stream.getvalue().rstrip("\r\n"))[-1]


def test_the_view_moves_with_each_finished_request_not_once_per_batch():
    stream = FakeTerminal()
    with RunView(n=4, stream=stream, interval=0.02) as view:
        view.stage("generate (round 1)", rows=8, expected_requests=8)
        ACTIVITY.sent(8)
        frames = []
        for _ in range(3):  # three requests of the batch of 8 finish, one by one
            ACTIVITY.finished(Completion(text="x", completion_tokens=10))
            time.sleep(0.1)
            frames.append(_last_frame(stream))
        view.accepted(1)
        time.sleep(0.1)
        frames.append(_last_frame(stream))
        ACTIVITY.finished(Completion(text="", error="HTTP 500"))  # leave the counters balanced for other tests
        for _ in range(4):
            ACTIVITY.finished(Completion(text="x"))
    assert [re.search(r"(\d)/8 req", f).group(1) for f in frames[:3]] == ["1", "2", "3"]
    assert "5 in flight" in frames[2] and "0 cached" in frames[2] and "tok/s" in frames[2]
    assert "accepted 1/4" in frames[3] and "accepted 0/4" in frames[2]
    assert "generate (round 1) (8 rows)" in frames[0]


def test_a_stage_without_a_known_request_count_shows_no_eta():
    stream = FakeTerminal()
    with RunView(n=2, stream=stream, interval=0.02) as view:
        view.stage("debate", rows=4)
        time.sleep(0.08)
    assert "<" not in _last_frame(stream) and "debate (4 rows)" in stream.getvalue()


@pytest.fixture
def scripted(monkeypatch, cache_dir):
    script = BarredScript()
    monkeypatch.setattr(llm, "build_backend", lambda config: script)
    llm.clear_engines()
    yield EngineConfig(engine="local", cache_dir=str(cache_dir))
    llm.clear_engines()


def test_a_run_shows_its_own_view_and_hides_the_libraries_bars(scripted, tmp_path, capsys):
    run_barred(TASK, 2, BarredConfig.for_engine(scripted, max_refinements=0), tmp_path / "out", progress=True)
    err = capsys.readouterr().err
    assert "decompose (1 rows)" in err and "generate, debate, refine (round 1)" in err and "accepted" in err
    for noise in ("Saving the dataset", "Creating parquet", "Loading weights", "LOAD REPORT", "Map"):
        assert noise not in err


def test_verbose_keeps_the_libraries_bars(scripted, tmp_path, capsys):
    import datasets

    datasets.utils.logging.enable_progress_bar()  # whatever an earlier test left
    run_barred(
        TASK, 2, BarredConfig.for_engine(scripted, max_refinements=0), tmp_path / "out", progress=True, verbose=True
    )
    assert "Saving the dataset" in capsys.readouterr().err
