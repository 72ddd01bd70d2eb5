"""``--executor ray`` where Ray is not installed: a one-line error before anything is written (the Ray tests
themselves are opt-in: tests/recipes/barred/test_ray_executor.py, marker ``ray``)."""

from __future__ import annotations

import sys

from hf_barred.cli.main import main
from tests.utils.cli_runs import generate_argv


def test_executor_ray_without_ray_is_a_one_line_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as where it is not installed
    monkeypatch.setitem(sys.modules, "ray.data", None)
    code = main(generate_argv("http://127.0.0.1:9/v1", tmp_path / "out", "--executor", "ray"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "--executor ray: expected Ray Data to be installed" in err and "pip install 'hf_barred[ray]'" in err
    assert not (tmp_path / "out").exists()
