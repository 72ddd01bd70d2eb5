"""The ``barred`` command: generate, augment, train, evaluate, push, demo.

Each subcommand lives in its own module under :mod:`hf_barred.commands` with two functions,
``register(subparsers)`` and ``run(args) -> int``; this file only dispatches.

Example:
    $ barred --help
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import Optional, Sequence

from . import commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="barred",
        description="Turn a written policy into a small, fast guardrail model (BARRED + APT).",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{module_info.name}")
        if hasattr(module, "register"):  # modules without it are shared helpers (engine_options)
            module.register(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("\nInterrupted. Finished LLM calls are cached: run the same command again to resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
