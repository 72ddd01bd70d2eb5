"""Hermetic test setup: caches and token paths in a temporary folder, no network but loopback.

The environment is set at import time, before any test module imports huggingface_hub, datasets
or transformers (they read these variables when they are imported).
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

_ROOT = Path(tempfile.mkdtemp(prefix="hf_barred_tests_"))
os.environ["HF_HOME"] = str(_ROOT / "hf_home")
os.environ["HF_DATASETS_CACHE"] = str(_ROOT / "hf_home" / "datasets")
os.environ.setdefault("HF_BARRED_CACHE", str(_ROOT / "hf_barred"))
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.pop("HF_TOKEN", None)
os.environ.pop("OPENAI_API_KEY", None)

import pytest  # noqa: E402

_real_connect = socket.socket.connect


def _loopback_only(self: socket.socket, address):  # type: ignore[no-untyped-def]
    host = address[0] if isinstance(address, tuple) else address
    if (
        isinstance(host, str)
        and not (host.startswith("127.") or host in ("localhost", "::1"))
        and self.family != socket.AF_UNIX
    ):
        raise RuntimeError(f"test tried to reach {address!r}: tests may only use servers on 127.0.0.1")
    return _real_connect(self, address)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection outside loopback fails loudly."""
    monkeypatch.setattr(socket.socket, "connect", _loopback_only)


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    """A fresh response-cache folder for one test."""
    return tmp_path / "cache"


# The Hub look-alike on loopback (HF_ENDPOINT is set when the plugin is imported, before the test modules).
pytest_plugins = ["tests.utils.hub_plugin"]
