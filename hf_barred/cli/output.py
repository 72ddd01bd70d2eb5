"""What the ``barred`` commands print: their own lines, and the libraries' only with ``--verbose``.

Every command that runs the libraries (datasets, transformers, the Trainer, huggingface_hub, uvicorn,
Gradio) declares ``--verbose`` with :func:`add_verbose_argument` and runs inside
:func:`~hf_barred.progress.quiet_libraries` unless it is given (:func:`quiet_unless_verbose`, or the
command's own ``with`` where its flags are parsed late, as ``barred train``'s). What the command prints
itself (its summary, where its report is, where it serves) shows either way. :class:`StderrHandler` is the
log handler of hf_barred's own log lines.

Example:
    >>> import argparse
    >>> from hf_barred.cli.output import add_verbose_argument, quiet_unless_verbose
    >>> parser = argparse.ArgumentParser(prog="barred x")
    >>> add_verbose_argument(parser)
    >>> import datasets
    >>> @quiet_unless_verbose
    ... def run(args):
    ...     return datasets.utils.logging.is_progress_bar_enabled()
    >>> run(parser.parse_args([]))
    False
    >>> run(parser.parse_args(["--verbose"])) == datasets.utils.logging.is_progress_bar_enabled()  # as set outside
    True
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["VERBOSE_HELP", "StderrHandler", "add_verbose_argument", "quiet_unless_verbose"]

VERBOSE_HELP = (
    "Also show the libraries' own output: progress bars (datasets, model loading and saving, the Trainer's "
    "bar and logged metrics), load reports, their warnings and INFO logs. Hidden by default: the command "
    "prints its own summary."
)


def add_verbose_argument(parser: Any) -> None:
    """Add ``--verbose`` (:data:`VERBOSE_HELP`); the command's ``run`` is wrapped in :func:`quiet_unless_verbose`."""
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)


def quiet_unless_verbose(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``run`` inside :func:`hf_barred.progress.quiet_libraries` unless ``args.verbose``: the libraries' bars,
    load reports, warnings and INFO logs are hidden; what the command prints itself is not."""

    @functools.wraps(run)
    def quiet_run(args: argparse.Namespace) -> int:
        from ..progress import quiet_libraries

        with quiet_libraries(args.verbose):
            return run(args)

    return quiet_run


class StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (as ``logging.lastResort`` does), not
    to the stream it was made with: a command run twice in one process (tests, notebooks) logs both times."""

    @property
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # noqa: ANN001
        pass
