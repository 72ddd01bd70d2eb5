"""Generated tokens/s of the embedded SmolLM2-135M on the quickstart's own LLM calls, per engine.

The workload (``benchmarks/data/quickstart_calls.jsonl``) is every ``chat`` call that
``bash scripts/quickstart.sh`` made, recorded in order: conversations and sampling parameters
(JSON schemas included). Each engine answers the same calls with the same parameters, with no
response cache, one call after another as the pipeline makes them:

- ``local``: the in-process transformers engine (``engine="local"``) as the quickstart runs it:
  prefix reuse on, ``dtype="auto"`` (bfloat16 with packed weights on CPUs with AMX or AVX512-BF16
  where it measures faster, else float32);
- ``local-float32``: the same in float32 (the engine's precision before, and on other CPUs);
- ``local-no-prefix``: ``local`` with its prefix key/value cache off;
- ``vllm`` / ``vllm-bfloat16``: vLLM's CPU build (``engine="vllm"``) in float32 / bfloat16, run with
  the python of a separate venv (``--vllm-venv``, default ``$VLLM_VENV`` or ``/work/venvs/vllm``; see
  scripts/vllm_check.sh), skipped when that venv is absent.

    python benchmarks/bench_engines.py                       # all engines, all 24 calls
    python benchmarks/bench_engines.py --calls 0-8 --threads 2
    python benchmarks/bench_engines.py --engines local,local-no-prefix --json out.json
    python benchmarks/bench_engines.py --engines local --calls 16 --max-tokens 4       # a smoke run
    python benchmarks/bench_engines.py --record calls.jsonl -- dataset_scripts/health-advice/task.yaml --n 12 ...

``--record FILE -- ARGS`` runs ``barred generate ARGS`` with the local engine and writes its calls
to FILE (to refresh the workload after the prompts change). Each engine runs in its own process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORKLOAD = ROOT / "benchmarks" / "data" / "quickstart_calls.jsonl"
ENGINES = ("vllm", "vllm-bfloat16", "local", "local-float32", "local-no-prefix")


def load_calls(path: Path, which: str) -> list[dict[str, Any]]:
    """The recorded calls; ``which`` is ``all`` or a range ``A-B`` (inclusive) of call indices."""
    calls = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if which != "all":
        first, _, last = which.partition("-")
        calls = calls[int(first) : int(last or first) + 1]
    return calls


def build(engine: str, threads: int | None, batch_size: int) -> Any:
    from hf_barred.llm import EngineConfig

    if engine.startswith("vllm"):
        from hf_barred.llm.engines.vllm.engine import VLLMBackend

        kwargs = {
            "max_model_len": 2048,
            "enforce_eager": os.environ.get("HF_BARRED_VLLM_COMPILE") != "1",
            "dtype": "bfloat16" if engine == "vllm-bfloat16" else "float32",
        }
        return VLLMBackend.from_config(EngineConfig(engine="vllm", vllm_kwargs=kwargs), progress=False)
    from hf_barred.llm.engines.local.engine import LocalBackend

    config = EngineConfig(
        engine="local",
        batch_size=batch_size,
        device="cpu",
        threads=threads,
        dtype="float32" if engine == "local-float32" else "auto",
    )
    return LocalBackend.from_config(config, progress=False, prefix_reuse=engine != "local-no-prefix")


def worker(args: argparse.Namespace) -> None:
    """Run one engine over the calls (this process); print one JSON line of figures."""
    import dataclasses

    from hf_barred.llm import SamplingParams

    calls = load_calls(Path(args.workload), args.calls)
    start = time.perf_counter()
    backend = build(args.engine, args.threads, args.batch_size)
    load_s = time.perf_counter() - start
    generated = prompt = rows = 0
    cpu, start = time.process_time(), time.perf_counter()
    for call in calls:
        params = SamplingParams(**(call["params"] | {"stop": tuple(call["params"]["stop"])}))
        if args.max_tokens:  # a smoke run: fewer generated tokens per conversation
            params = dataclasses.replace(params, max_tokens=min(params.max_tokens, args.max_tokens))
        answers = backend.chat(call["conversations"], params)
        rows += len(answers)
        generated += sum(a.completion_tokens for a in answers)
        prompt += sum(a.prompt_tokens for a in answers)
    seconds = time.perf_counter() - start
    model = getattr(backend, "model", None)  # the local engine's; vLLM's runs in its own processes
    dtype = (
        str(model.dtype).removeprefix("torch.")
        if model is not None
        else ("bfloat16" if args.engine == "vllm-bfloat16" else "float32")
    )
    figures = {
        "engine": args.engine,
        "dtype": dtype,
        "load_s": round(load_s, 1),
        "seconds": round(seconds, 1),
        "cpu_s": round(time.process_time() - cpu, 1),
        "calls": len(calls),
        "rows": rows,
        "prompt_tokens": prompt,
        "generated_tokens": generated,
        "tokens_per_s": round(generated / seconds, 1),
    }
    cache = getattr(backend, "prefix_cache", None)
    if cache is not None:
        figures["prefix_tokens_reused"] = cache.reused_tokens
    if hasattr(backend, "close"):
        backend.close()
    print("FIGURES " + json.dumps(figures), flush=True)


def run_engine(engine: str, args: argparse.Namespace, cache_dir: str) -> dict[str, Any] | None:
    python = sys.executable
    if engine.startswith("vllm"):
        python = str(Path(args.vllm_venv) / "bin" / "python")
        if not Path(python).exists():
            print(f"vllm: skipped, no venv at {args.vllm_venv} (build one: bash scripts/vllm_check.sh)")
            return None
    cmd = [
        python,
        __file__,
        "--worker",
        "--engine",
        engine,
        "--workload",
        args.workload,
        "--calls",
        args.calls,
        "--batch-size",
        str(args.batch_size),
        "--max-tokens",
        str(args.max_tokens),
    ]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    env = os.environ | {
        "PYTHONPATH": str(ROOT),
        "HF_BARRED_CACHE": cache_dir,
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"),
    }
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("FIGURES ")]
    if proc.returncode != 0 or not lines:
        print(f"{engine}: failed (exit {proc.returncode}); last lines:\n" + "\n".join(proc.stderr.splitlines()[-15:]))
        return None
    return json.loads(lines[-1][len("FIGURES ") :])


def record(out: str, generate_args: list[str]) -> int:
    """``barred generate generate_args`` with every local-engine call appended to ``out``."""
    import dataclasses

    from hf_barred.cli.main import main
    from hf_barred.llm.engines.local import engine as local

    chat = local.LocalBackend.chat
    sink = open(out, "w", encoding="utf-8")

    def recording_chat(self: Any, conversations: Any, params: Any, on_result: Any = None) -> Any:
        fields = dataclasses.asdict(params) | {"stop": list(params.stop)}
        sink.write(json.dumps({"conversations": list(conversations), "params": fields}, ensure_ascii=False) + "\n")
        sink.flush()
        return chat(self, conversations, params, on_result)

    local.LocalBackend.chat = recording_chat  # type: ignore[method-assign]
    try:
        return main(["generate", *generate_args])
    finally:
        local.LocalBackend.chat = chat  # type: ignore[method-assign]
        sink.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default=",".join(ENGINES), help=f"Comma-separated, of {', '.join(ENGINES)}.")
    parser.add_argument("--calls", default="all", help="'all' or a range of call indices, e.g. 0-8.")
    parser.add_argument("--workload", default=str(WORKLOAD), help="The recorded calls (JSON lines).")
    parser.add_argument(
        "--threads", type=int, default=None, help="Threads of the local engine (default: physical cores)."
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=32,
        help="Conversations per forward batch of the local engine (default 32, as the quickstart).",
    )
    parser.add_argument(
        "--vllm-venv",
        default=os.environ.get("VLLM_VENV", "/work/venvs/vllm"),
        help="A venv with vllm-cpu (scripts/vllm_check.sh builds one).",
    )
    parser.add_argument(
        "--max-tokens", type=int, default=0, help="Cap every call's max_tokens (0: as recorded; smoke runs)."
    )
    parser.add_argument("--cache-dir", default=None, help="HF_BARRED_CACHE for the converted model (default: yours).")
    parser.add_argument("--json", default=None, help="Also write the figures to this file.")
    parser.add_argument("--record", default=None, help="Record `barred generate` calls into this file instead.")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--engine", default=None, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    if args.record:
        sys.exit(record(args.record, [a for a in rest if a != "--"]))
    if args.worker:
        worker(args)
        return
    from hf_barred.llm.config import default_cache_dir

    cache_dir = args.cache_dir or str(default_cache_dir())
    from hf_barred.llm.embedded import embedded_model_path

    os.environ["HF_BARRED_CACHE"] = cache_dir
    embedded_model_path()  # convert the GGUF once, outside the timed runs
    load = os.getloadavg()[0]
    results = []
    for engine in [e.strip() for e in args.engines.split(",") if e.strip()]:
        if engine not in ENGINES:
            parser.error(f"--engines: expected names among {', '.join(ENGINES)}, found {engine!r}")
        figures = run_engine(engine, args, cache_dir)
        if figures is not None:
            results.append(figures)
            print(f"{engine}: {figures['tokens_per_s']} generated tok/s", flush=True)
    print(
        f"\nEmbedded SmolLM2-135M-Instruct, {results[0]['calls'] if results else 0} recorded quickstart calls, "
        f"{os.cpu_count()} CPUs, load average {load:.1f} at start -> {os.getloadavg()[0]:.1f} at end"
    )
    print(
        f"{'engine':<16} {'dtype':<9} {'load s':>7} {'run s':>7} {'rows':>5} {'prompt tok':>10} {'gen tok':>8} "
        f"{'gen tok/s':>9}"
    )
    for f in results:
        print(
            f"{f['engine']:<16} {f['dtype']:<9} {f['load_s']:>7} {f['seconds']:>7} {f['rows']:>5} "
            f"{f['prompt_tokens']:>10} {f['generated_tokens']:>8} {f['tokens_per_s']:>9}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"load_average": load, "results": results}, indent=2))


if __name__ == "__main__":
    main()
