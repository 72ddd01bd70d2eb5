"""Throughput of the ``openai`` engine against a loopback server, and the overhead of a cache hit.

The server (``tests/utils/servers/openai_server.py``, its own process) answers every request after a fixed
latency L and processes at most C requests at once, so the best possible throughput is C / L
requests/s. The engine runs N requests with ``max_concurrency=C``; the target is >= 90 % of C / L.
Then the same conversations are answered again through :class:`CachedBackend` (all cache hits):
the target is < 1 ms per call.

With ``--servers K`` the engine sends to K such servers at once (``EngineConfig.extra_base_urls``, C in
flight on each, the least busy first): the best possible throughput is K C / L, and the target is the
same >= 90 % of it; the bare client spreads its requests round-robin, C on each (the cache figures are
skipped: they are the one-server run's).

    python benchmarks/bench_openai_engine.py                      # L=0.1 s, C=32, N=1000
    python benchmarks/bench_openai_engine.py --latency 0.05 --concurrency 64 --requests 2000
    python benchmarks/bench_openai_engine.py --servers 2          # two servers of C=32: ideal 2 C / L
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hf_barred.llm import CachedBackend, EngineConfig, ResponseCache, SamplingParams  # noqa: E402
from hf_barred.llm.engines.openai.backend import OpenAICompatBackend  # noqa: E402


def start_server(latency: float, concurrency: int) -> tuple[subprocess.Popen, str]:
    cmd = [
        sys.executable,
        str(ROOT / "tests" / "utils" / "servers" / "openai_server.py"),
        "--latency",
        str(latency),
        "--max-parallel",
        str(concurrency),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        raise RuntimeError(f"the benchmark server did not start (printed {url!r})")
    return proc, url


def conversations(n: int, tag: str) -> list[list[dict[str, str]]]:
    return [
        [
            {"role": "system", "content": "You are a strict judge."},
            {"role": "user", "content": f"{tag} request {i}: does the rule hold? Answer 0 or 1."},
        ]
        for i in range(n)
    ]


def bare_client_seconds(urls: list[str], convs: list, concurrency: int) -> float:
    """The same requests from a bare aiohttp client (no SDK, no engine; request i to server i mod K, C in flight
    on each): what this machine allows now."""
    import aiohttp

    async def run() -> float:
        semaphores = [asyncio.Semaphore(concurrency) for _ in urls]
        connector = aiohttp.TCPConnector(limit=2 * concurrency * len(urls))
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one(i: int, conv: list) -> None:
                async with semaphores[i % len(urls)]:
                    body = {"model": "test-model", "messages": conv, "max_tokens": 8}
                    async with session.post(f"{urls[i % len(urls)]}/chat/completions", json=body) as response:
                        json.loads(await response.read())

            await asyncio.gather(*(one(i, c) for i, c in enumerate(convs[: concurrency * len(urls)])))  # warm-up
            start = time.perf_counter()
            await asyncio.gather(*(one(i, c) for i, c in enumerate(convs)))
            return time.perf_counter() - start

    return asyncio.run(run())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency", type=float, default=0.1, help="server latency L in seconds")
    parser.add_argument("--concurrency", type=int, default=32, help="C: server parallelism and max_concurrency")
    parser.add_argument("--requests", type=int, default=1000, help="N requests")
    parser.add_argument("--repeat", type=int, default=3, help="throughput runs; the best is reported")
    parser.add_argument("--transport", default="auto", choices=["auto", "aiohttp", "httpx"], help="SDK HTTP client")
    parser.add_argument("--servers", type=int, default=1, help="K servers of C each (the engine's rotation)")
    args = parser.parse_args(argv)
    latency, conc, n = args.latency, args.concurrency, args.requests
    params = SamplingParams(max_tokens=8, temperature=0.0)

    load = os.getloadavg()  # other work on the machine makes the throughput figure noisy
    servers = [start_server(latency, conc) for _ in range(args.servers)]
    procs, urls = [proc for proc, _ in servers], [url for _, url in servers]
    url = urls[0]
    try:
        config = EngineConfig(
            engine="openai",
            model="test-model",
            base_url=url,
            extra_base_urls=tuple(urls[1:]),
            max_concurrency=conc,
            max_retries=2,
            timeout=30,
        )
        backend = OpenAICompatBackend.from_config(config)
        backend.http_transport = args.transport
        backend.chat(conversations(conc * args.servers, "warm-up"), params)  # opens the connections

        runs = []  # (seconds, client CPU seconds); best of --repeat, as the machine may be shared
        for repeat in range(args.repeat):
            convs = conversations(n, f"throughput {repeat}")
            cpu = resource.getrusage(resource.RUSAGE_SELF)
            start = time.perf_counter()
            answers = backend.chat(convs, params)
            elapsed = time.perf_counter() - start
            cpu_after = resource.getrusage(resource.RUSAGE_SELF)
            runs.append((elapsed, (cpu_after.ru_utime - cpu.ru_utime) + (cpu_after.ru_stime - cpu.ru_stime)))
            assert all(a.ok for a in answers), [a.error for a in answers if not a.ok][:3]
        elapsed, client_cpu = min(runs)
        k = args.servers
        rate, ideal = n / elapsed, k * conc / latency
        servers_text = f", {k} servers" if k > 1 else ""
        print(
            f"throughput: {n} requests, L={latency:g} s, C={conc}{servers_text}: {elapsed:.2f} s, {rate:.1f} "
            f"requests/s; ideal {'K C/L' if k > 1 else 'C/L'} = {ideal:.1f} requests/s; fraction = {rate / ideal:.3f} "
            "(target >= 0.9)"
        )
        print(f"  all {len(runs)} runs: " + ", ".join(f"{n / ideal / t:.3f}" for t, _ in runs))
        cpu = resource.getrusage(resource.RUSAGE_SELF)
        bare = n / bare_client_seconds(urls, conversations(n, "bare"), conc)
        cpu_after = resource.getrusage(resource.RUSAGE_SELF)
        bare_cpu = (cpu_after.ru_utime - cpu.ru_utime) + (cpu_after.ru_stime - cpu.ru_stime)
        print(
            f"  same run from a bare aiohttp client (no SDK, no engine): {bare:.1f} requests/s, "
            f"fraction {bare / ideal:.3f}; the engine reaches {rate / bare:.3f} of it"
        )
        print(
            f"  client CPU per request: engine {client_cpu / n * 1e3:.2f} ms "
            f"({type(backend._rt.client._client).__name__}), bare client {bare_cpu / n * 1e3:.2f} ms; "
            f"load average before/after: {load[0]:.2f} / {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
        )
        if k > 1:
            counts = backend.endpoint_counts()
            print("  answered per server: " + ", ".join(str(counts[u]["answered"]) for u in urls))
            print(
                f"RESULT servers={k} requests={n} requests_per_s={rate:.1f} ideal={ideal:.1f} "
                f"fraction={rate / ideal:.3f} bare_fraction={bare / ideal:.3f} client_cpu_ms={client_cpu / n * 1e3:.2f}"
            )
            backend.close()
            return

        with tempfile.TemporaryDirectory() as tmp:
            cached = CachedBackend(backend, ResponseCache(Path(tmp) / "responses.sqlite"))
            cached.chat(convs, params)  # fills the cache: n real calls
            start = time.perf_counter()
            for conv in convs:
                hit = cached.chat([conv], params)[0]
            single = (time.perf_counter() - start) / n
            assert hit.cached
            start = time.perf_counter()
            batch = cached.chat(convs, params)
            batched = (time.perf_counter() - start) / n
            assert all(c.cached for c in batch)
            chunk = 32
            start = time.perf_counter()
            for k in range(0, n, chunk):
                cached.chat(convs[k : k + chunk], params)
            chunked = (time.perf_counter() - start) / n
            print(
                f"cache hit overhead: {single * 1e3:.3f} ms per single-conversation call ({n} calls); "
                f"{batched * 1e3:.4f} ms per conversation in one batch of {n}; "
                f"{chunked * 1e3:.4f} ms per conversation in batches of {chunk} (target < 1 ms)"
            )
        backend.close()
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
