"""The ``barred`` command: generate, augment, train, evaluate, push, demo.

Each subcommand lives in its own module under :mod:`hf_barred.cli` with two functions,
``register(subparsers)`` and ``run(args) -> int``, and is listed in :data:`COMMANDS`; this file only
dispatches, and turns errors into one line on stderr (the traceback only with ``--debug``, anywhere on
the command line):

====================================================================  =========
What went wrong                                                       Exit code
====================================================================  =========
bad input: flags, task/data files, ``--output``, cache folder, API    2
key, an endpoint that cannot be reached (``ValueError``,
``EngineError``, ``OSError``)
the run stopped: too many requests got no answer, or too many         1
answers could not be used (``RunStopped``: ``RequestsFailed``,
``AnswersUnusable``); nothing after the stage was spent
the run ended short of its goal (fewer samples than asked: budget     3
spent, rounds exhausted, a round accepted nothing); the summary
says why and what to change
anything else (a bug: please report it with the ``--debug`` output)   1
Ctrl-C (finished LLM calls are cached: rerun to resume)               130
====================================================================  =========

Example:
    >>> from hf_barred.cli.main import main
    >>> main(["generate", "missing.yaml", "--n", "2", "--output", "out"])
    2
"""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import sys
import traceback
from collections.abc import Sequence
from typing import Optional

from . import augment, convert_pairs, coverage, demo, evaluate, generate, serve, space, train
from .flags import EXIT_USAGE, OneLineParser
from .help_text import add_examples
from .output import StderrHandler

__all__ = ["COMMANDS", "EXIT_FAILED", "EXIT_USAGE", "OneLineParser", "build_parser", "main"]

COMMANDS = (augment, convert_pairs, coverage, demo, evaluate, generate, serve, space, train)
"""The subcommand modules, in the order ``barred --help`` lists them."""

EXIT_FAILED = 1


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="barred",
        description="Turn a written policy into a small, fast guardrail model (BARRED + APT).",
    )
    parser.add_argument(
        "--debug", action="store_true", help="Show the Python traceback of an error (also accepted after the command)."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        before = set(subparsers.choices)
        module.register(subparsers)
        for name in set(subparsers.choices) - before:
            add_examples(subparsers.choices[name], module.__doc__ or "")
    return parser


def _show_warnings() -> None:
    """The engines' warnings (e.g. a request retried after a timeout) as one line each on stderr.

    On the ``hf_barred.llm`` logger, so that a command's own handler on ``hf_barred`` (``barred
    train`` shows its progress there) is left alone.
    """
    logger = logging.getLogger("hf_barred.llm")
    if not any(isinstance(handler, StderrHandler) for handler in logger.handlers):
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter("barred: warning: %(message)s"))
        handler.setLevel(logging.WARNING)
        logger.addHandler(handler)
        logger.propagate = False


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 2000 else text[:1997] + "..."


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("HF_BARRED_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"barred {args.command}"
    _show_warnings()
    from ..llm.base import EngineError
    from ..recipes.barred.failures import RunStopped

    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("\nInterrupted. Finished LLM calls are cached: run the same command again to resume.", file=sys.stderr)
        return 130
    except RunStopped as err:
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_FAILED
    except (ValueError, EngineError, OSError, sqlite3.Error) as err:
        if debug:
            traceback.print_exc()
        if isinstance(err, sqlite3.Error):
            err = ValueError(
                f"the response cache could not be used ({err}). Check that --cache-dir is writable and has free space."
            )
        elif isinstance(err, OSError) and not isinstance(err, EngineError):
            where = f" ({err.filename})" if err.filename else ""
            err = ValueError(f"{err.strerror or err}{where}. Check the path, its permissions and the free space.")
        print(f"{prog}: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as err:  # a bug: still one line, the traceback on request
        if debug:
            traceback.print_exc()
        print(
            f"{prog}: internal error: {type(err).__name__}: {_one_line(err)} "
            "(run again with --debug for the traceback, and please report it)",
            file=sys.stderr,
        )
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
