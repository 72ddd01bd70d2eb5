"""The Ray executor's progress, without Ray: a worker's round ends write its rule's accepted count, and the
driver prints a line when a count moves (the Ray runs themselves: test_ray_executor.py, marker ``ray``)."""

from __future__ import annotations

import time

from hf_barred.recipes.barred.ray_executor import PROGRESS_FILE, ProgressLines, progress_file_view


def test_round_ends_reach_the_driver_as_one_line_per_change(tmp_path, capsys):
    folders = {"health-advice": tmp_path / "health-advice", "repetition": tmp_path / "repetition"}
    view = progress_file_view(10, folders["health-advice"] / PROGRESS_FILE)
    with ProgressLines(folders, 10, interval=0.05) as lines:
        view.accepted(4, "health-advice")
        time.sleep(0.3)
        view.accepted(4, "health-advice")  # no change: no new line
        time.sleep(0.3)
        lines.done.add("health-advice")  # its final line is the executor's
        view.accepted(12, "health-advice")
        time.sleep(0.3)
    err = capsys.readouterr().err.splitlines()
    assert err == ["[ray] rule health-advice: 4 of 10 accepted so far"]
    assert (folders["health-advice"] / PROGRESS_FILE).read_text() == '{"accepted": 10}'  # at most n
