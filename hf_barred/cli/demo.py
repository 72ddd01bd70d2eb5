"""``barred demo``: run the Gradio demo locally (the same app a Space runs).

Example:
    $ barred demo --guardrail outputs/guardrail --dataset outputs/health-advice
"""

from __future__ import annotations

import argparse

from .output import add_verbose_argument, quiet_unless_verbose


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="Run the Gradio demo (guardrail + dataset browser) locally.")
    parser.add_argument("--guardrail", default="", help="Guardrail folder or Hub model id to pre-fill.")
    parser.add_argument("--dataset", default="", help="Dataset folder or Hub dataset id to pre-fill.")
    parser.add_argument("--host", default="127.0.0.1", help="Interface to listen on (default: loopback only).")
    parser.add_argument("--port", type=int, default=7860)
    add_verbose_argument(parser)
    parser.set_defaults(run=run)


@quiet_unless_verbose
def run(args: argparse.Namespace) -> int:
    from ..space.app import main

    main(guardrail=args.guardrail, dataset=args.dataset, host=args.host, port=args.port, quiet=not args.verbose)
    return 0
