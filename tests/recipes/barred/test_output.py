"""The output folder: checked before a run writes, locked while it does; an unusable cache folder is one line.

A second run into a folder being written fails at once naming the holder's PID; temporary folders
have unique names; a folder holding someone else's README.md is refused unless ``--overwrite``; an
output or cache path that cannot be written is one line and exit code 2, and leaves nothing behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from datasets import Dataset

from hf_barred.cli.main import main
from hf_barred.recipes.barred.output import LOCK_FILE, PID_FILE, locked_output
from hf_barred.recipes.barred.store import saved_or_run
from tests.utils import REPO_ROOT
from tests.utils.cli_runs import TASK, fresh_cli, generate_argv  # noqa: F401 (fixture)
from tests.utils.servers.openai_server import OpenAIServer, error, hang

ROOT = REPO_ROOT

pytestmark = pytest.mark.usefixtures("fresh_cli")


def generate(url: str, output: Path, *more: str) -> list[str]:
    return generate_argv(url, output, "--max-retries", "0", *more)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("barred")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_second_run_into_a_locked_folder_fails_at_once_naming_the_pid(tmp_path, capsys):
    out = tmp_path / "out"
    with OpenAIServer() as server:
        server.script(hang(60), forever=True)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_BARRED_CACHE": str(tmp_path / "cache1")}
        first = subprocess.Popen(
            [sys.executable, "-m", "hf_barred.cli", *generate(server.url, out, "--timeout", "60")],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while not server.requests and time.monotonic() < deadline:  # the first run holds the lock
                time.sleep(0.2)
            assert server.requests, "the first run never reached the server"
            start = time.monotonic()
            code = main(generate(server.url, out))
            elapsed = time.monotonic() - start
            line = one_error_line(capsys)
            assert code == 2 and elapsed < 5
            assert f"another run (PID {first.pid}) is writing it" in line and str(out) in line
            assert len(server.requests) == 2  # the second run sent nothing
        finally:
            first.terminate()
            first.wait(timeout=30)


def test_the_lock_is_released_after_a_run_and_its_pid_file_removed(tmp_path):
    out = tmp_path / "out"
    with locked_output(out):
        assert (out / PID_FILE).read_text().strip() == f'{{"pid": {os.getpid()}}}'
    assert not (out / PID_FILE).exists() and (out / LOCK_FILE).exists()
    with locked_output(out):  # free again
        pass


def test_temporary_folders_have_unique_names_and_stale_ones_go(tmp_path, monkeypatch):
    folder = tmp_path / "plan"
    (tmp_path / "plan.tmp").mkdir()  # left by a killed run of an older version
    (tmp_path / "plan.tmp-1-deadbeef").mkdir()
    written: list[str] = []
    real_save = Dataset.save_to_disk

    def recording_save(self, path, *args, **kwargs):
        written.append(Path(path).name)
        return real_save(self, path, *args, **kwargs)

    monkeypatch.setattr(Dataset, "save_to_disk", recording_save)
    ds = Dataset.from_dict({"x": [1, 2]})
    saved_or_run(folder, ds._fingerprint, lambda: ds, [])
    [name] = written
    assert name.startswith(f"plan.tmp-{os.getpid()}-") and len(name) == len(f"plan.tmp-{os.getpid()}-") + 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan"]


def test_a_folder_with_a_users_readme_is_refused_unless_overwrite(tmp_path, capsys):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "README.md").write_text("# My notes\n")
    with OpenAIServer() as server:
        server.script(error(500), forever=True)
        assert main(generate(server.url, folder)) == 2
        line = one_error_line(capsys)
        assert "holds a README.md but no summary.json" in line and "--overwrite" in line
        assert not server.requests  # refused before any request
        assert sorted(p.name for p in folder.iterdir()) == ["README.md"]
        assert (folder / "README.md").read_text() == "# My notes\n"

        assert main(generate(server.url, folder, "--overwrite")) == 1  # let in: the run then fails on the 500s
        assert server.requests
    assert (folder / "README.md").read_text() == "# My notes\n"  # a failed run wrote no card
    assert not (folder / "work").exists()  # and left no empty work/ behind


def test_an_output_that_is_a_file_is_one_line_and_exit_2(tmp_path, capsys):
    a_file = tmp_path / "results.txt"
    a_file.write_text("keep me")
    assert main(generate("http://127.0.0.1:9/v1", a_file)) == 2
    assert "expected a folder (new or from an earlier run), found a file" in one_error_line(capsys)
    assert main(generate("http://127.0.0.1:9/v1", a_file / "out")) == 2
    assert f"expected {a_file} to be a folder, found a file" in one_error_line(capsys)
    assert a_file.read_text() == "keep me"


def test_an_unwritable_cache_folder_is_one_line_and_exit_2(tmp_path, capsys):
    blocker = tmp_path / "cache-is-a-file"
    blocker.write_text("")
    out = tmp_path / "out"
    assert main(generate("http://127.0.0.1:9/v1", out, "--cache-dir", str(blocker / "c"))) == 2
    line = one_error_line(capsys)
    assert f"--cache-dir {blocker / 'c'}: expected a folder the response cache can write" in line
    assert "Pass a writable --cache-dir" in line and not out.exists()


def test_a_failed_run_leaves_no_empty_work_folder(tmp_path, capsys):
    out = tmp_path / "existing"
    out.mkdir()
    assert main(generate("http://127.0.0.1:9/v1", out)) == 2  # unreachable endpoint
    assert "could not reach" in one_error_line(capsys)
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # the user's folder stays; no work/


def test_a_full_disk_during_the_run_is_one_line_and_keeps_the_work(tmp_path, capsys):
    import errno

    from hf_barred.recipes.barred.output import OutputFolderError

    out = tmp_path / "out"
    with pytest.raises(OutputFolderError) as caught:
        with locked_output(out):
            (out / "work" / "round_000").mkdir(parents=True)
            (out / "work" / "round_000" / "plan").mkdir()  # a finished stage: kept for the rerun
            raise OSError(errno.ENOSPC, "No space left on device", str(out / "work" / "round_000" / "generate"))
    message = str(caught.value)
    assert "could not write the run's files: no space left on device (errno 28)" in message
    assert "run the same command again to resume" in message and "\n" not in message
    assert (out / "work" / "round_000" / "plan").is_dir() and not (out / PID_FILE).exists()
