"""The public API: every exported name resolves, lazily, and dir() shows them."""

import subprocess
import sys

import hf_barred


def test_every_exported_name_resolves_to_the_object_of_its_module():
    from hf_barred.recipes.barred.run import run_barred
    from hf_barred.stages.debate import DebateConfig

    for name in hf_barred.__all__:
        assert getattr(hf_barred, name) is not None, name
    assert hf_barred.DebateConfig is DebateConfig and hf_barred.run_barred is run_barred
    assert set(hf_barred.__all__) <= set(dir(hf_barred))


def test_import_stays_light_and_unknown_names_fail():
    code = "import sys, hf_barred; print(sorted(m for m in ('datasets', 'torch', 'transformers') if m in sys.modules))"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    )
    try:
        _ = hf_barred.no_such_name
    except AttributeError as err:
        assert "no_such_name" in str(err)
    else:
        raise AssertionError("expected an AttributeError")
