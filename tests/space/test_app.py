"""The Space: the app escapes model-written text, `barred space export` writes a repo that runs as
is, and (marker `browser`) headless Chromium drives the exported app: submit a text, read the verdict."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from datasets import Dataset
from huggingface_hub import SpaceCard

from hf_barred.cli.main import main
from hf_barred.space.app import check_text, load_samples, render_sample
from hf_barred.train import GuardrailConfig, train_guardrail
from hf_barred.train.tiny import make_tiny_classifier

RULE = "The request asks for help with harm, violence or crime."
TEXTS = [
    "How can I kill a Python process?",
    "How do I hurt my neighbour?",
    "What is the capital of France?",
    "How do I make a bomb?",
    "Where can I buy flowers?",
    "How do I steal a car?",
]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def guardrail_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("space_guardrail")
    data = Dataset.from_dict({"prompt": TEXTS * 2, "label": ["safe", "unsafe", "safe", "unsafe", "safe", "unsafe"] * 2})
    base = make_tiny_classifier(root / "base", corpus=TEXTS + [RULE])
    train_guardrail(
        GuardrailConfig(
            base_model=base, rule=RULE, output_dir=str(root / "out"), num_train_epochs=1, validation_size=0.0
        ),
        data,
    )
    return root / "out"


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("space_dataset")
    debate = [
        {
            "round": 1,
            "advocate": "",
            "judges": [{"judge": "strict", "label": "True", "confidence": 0.9, "reasoning": "<b>bold claim</b>"}],
        }
    ]
    Dataset.from_dict(
        {
            "text": ["<script>alert('x')</script> take two aspirin", "User: hi\nAgent: hello"],
            "label": [1, 0],
            "dimension": ["advice form", "tone"],
            "instantiation": ["dosage", "greeting"],
            "debate_path": ["agreement", "agreement"],
            "refinements": [0, 1],
            "reasoning": ["r1", "r2"],
            "debate": [debate, debate],
        }
    ).to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    return folder


def test_dataset_tab_escapes_model_text(dataset_dir):
    table, _, samples = load_samples(str(dataset_dir))
    assert [row[3] for row in table] == ["advice form", "tone"]
    page = render_sample(samples, 0)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<b>bold claim</b>" not in page and "&lt;b&gt;bold claim&lt;/b&gt;" in page
    assert "Round 1" in page and "strict" in page


def test_guardrail_tab_gives_verdict_and_score(guardrail_dir):
    badge, score, categories = check_text(str(guardrail_dir), "How do I hurt my neighbour?", "", "")
    assert 'id="verdict"' in badge and 0.0 <= score <= 1.0 and categories == ""


def test_space_export_writes_a_ready_repo(tmp_path, guardrail_dir):
    assert (
        main(
            [
                "space",
                "export",
                str(tmp_path / "space"),
                "--guardrail",
                "me/health-guardrail",
                "--dataset",
                "me/health-advice",
            ]
        )
        == 0
    )
    folder = tmp_path / "space"
    card = SpaceCard.load(folder / "README.md")
    assert card.data.sdk == "gradio" and card.data.app_file == "app.py"
    assert card.data.models == ["me/health-guardrail"] and card.data.datasets == ["me/health-advice"]
    requirements = (folder / "requirements.txt").read_text().splitlines()
    assert any(r.startswith("gradio") for r in requirements) and any(r.startswith("transformers") for r in requirements)
    assert (folder / "hf_barred" / "space" / "app.py").is_file()
    compile((folder / "app.py").read_text(), "app.py", "exec")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (apt-get install chromium)")
def test_exported_space_in_headless_chromium(tmp_path, guardrail_dir, dataset_dir):
    from playwright.sync_api import sync_playwright

    folder = tmp_path / "space"
    assert main(["space", "export", str(folder), "--guardrail", str(guardrail_dir), "--dataset", str(dataset_dir)]) == 0
    port = _free_port()
    env = os.environ | {
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    server = subprocess.Popen(
        [sys.executable, "app.py"], cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                assert server.poll() is None, server.stdout.read()
                assert time.time() < deadline, "the exported Space did not start within 120 s"
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM,
                headless=True,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                ],
            )
            page = browser.new_page()
            page.goto(url)
            page.locator("#text-input textarea").fill("How do I hurt my neighbour?")
            page.locator("#check-button").click()
            verdict = page.locator("#verdict")
            verdict.wait_for(timeout=60_000)
            assert verdict.inner_text().strip() in ("safe", "unsafe")
            assert verdict.get_attribute("data-violation") in ("true", "false")
            score = float(page.locator("#score input").input_value())
            assert 0.0 <= score <= 1.0
            shot = Path(os.environ.get("BARRED_SCREENSHOT_DIR", tmp_path)) / "space.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
