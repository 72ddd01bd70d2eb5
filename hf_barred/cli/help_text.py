r"""The examples at the end of each command's ``--help``, taken from the command module's docstring.

Example:
    >>> import argparse
    >>> from hf_barred.cli.help_text import add_examples
    >>> parser = argparse.ArgumentParser(prog="barred x")
    >>> add_examples(parser, "Run x.\n\nExample:\n    $ barred x --n 2 --output out\n")
    >>> parser.epilog
    'example:\n  barred x --n 2 --output out'
"""

from __future__ import annotations

import argparse

__all__ = ["add_examples", "examples_epilog"]


def examples_epilog(doc: str) -> str:
    """The ``$ barred ...`` lines of ``doc`` (with their ``\\`` continuation lines), as an ``example:`` block."""
    lines, taking = [], False
    for line in doc.splitlines():
        text = line.strip()
        if text.startswith("$ "):
            lines.append("  " + text[2:])
            taking = text.endswith("\\")
        elif taking and text:
            lines.append("      " + text)
            taking = text.endswith("\\")
        else:
            taking = False
    return "example:\n" + "\n".join(lines) if lines else ""


def add_examples(parser: argparse.ArgumentParser, doc: str) -> None:
    """Show the examples of ``doc`` at the end of ``parser``'s help, laid out as written."""
    epilog = examples_epilog(doc)
    if epilog:
        parser.epilog = epilog
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
