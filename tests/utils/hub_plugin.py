"""Pytest plugin: one Hub look-alike (``servers/hub_server.py``) for the whole test session.

Registered from ``tests/conftest.py`` with ``pytest_plugins = ["tests.utils.hub_plugin"]``. When pytest loads it
(with the root conftest, before any test module is imported) it starts the server on a free
127.0.0.1 port and sets ``HF_ENDPOINT`` and ``HF_HUB_DISABLE_XET=1`` for the session:
``huggingface_hub``, ``datasets`` and ``transformers`` read them once, when they are first imported,
so every later import in the session talks to the server and never to huggingface.co.
``HF_HOME`` is pointed at a temporary folder unless a conftest already set it.

``HF_TOKEN`` is set (with ``monkeypatch``) only during the tests that use the ``hub_server`` fixture,
so other tests still see "no token". Usage::

    def test_push(hub_server):
        repo_id = hub_server.new_repo_id("guardrail-data")  # unique in the session
        dataset.push_to_hub(repo_id, private=True)           # real client, real HTTP
        assert load_dataset(repo_id, split="train")["text"] == dataset["text"]

    def test_push_without_token(hub_server, monkeypatch):
        monkeypatch.delenv("HF_TOKEN")                      # or pass token=False to the call
        ...

Client code that must run in a subprocess gets its environment from ``hub_server.client_env()``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.utils.servers.hub_server import HubServer

_STATE = Path(tempfile.mkdtemp(prefix="hf_barred_hub_"))
HUB = HubServer(_STATE / "hub").start()
os.environ.update(HUB.client_env(token=False))
os.environ.setdefault("HF_HOME", str(_STATE / "hf_home"))


def _misconfigured_clients() -> list[str]:
    """Client libraries imported before this plugin, so still pointing at another endpoint."""
    found = []
    if "huggingface_hub" in sys.modules:
        from huggingface_hub import constants

        if constants.ENDPOINT != HUB.url or not constants.HF_HUB_DISABLE_XET:
            found.append(
                f"huggingface_hub (ENDPOINT={constants.ENDPOINT}, HF_HUB_DISABLE_XET={constants.HF_HUB_DISABLE_XET})"
            )
    if "datasets" in sys.modules:
        from datasets import config

        if config.HF_ENDPOINT != HUB.url:
            found.append(f"datasets (HF_ENDPOINT={config.HF_ENDPOINT})")
    return found


@pytest.fixture(scope="session")
def hub_server() -> HubServer:
    """The session's Hub server (``.url``, ``.token``, ``.user``, ``.org``, ``.new_repo_id()``)."""
    if problems := _misconfigured_clients():
        pytest.fail(
            f"expected the Hugging Face clients to point at the test Hub {HUB.url}, but found: "
            + "; ".join(problems)
            + ". They were imported before tests/utils/hub_plugin.py set the environment. Fix: register "
            '`pytest_plugins = ["tests.utils.hub_plugin"]` in tests/conftest.py and import no client library at the '
            "top of a conftest, or run the client in a subprocess with `hub_server.client_env()`."
        )
    return HUB


@pytest.fixture(autouse=True)
def _hub_token(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Give the tests that use ``hub_server`` a valid token in HF_TOKEN, and no other test."""
    if "hub_server" in request.fixturenames:
        monkeypatch.setenv("HF_TOKEN", HUB.token)
    yield


def pytest_unconfigure(config: pytest.Config) -> None:
    HUB.stop()
    shutil.rmtree(_STATE, ignore_errors=True)
