r"""What ``--help`` shows: plain text made from the reStructuredText of the command modules' docstrings,
and the examples at the end, taken from the same docstring.

:func:`plain_text` renders the reStructuredText that help text is written in (the module docstrings that
give descriptions, the config fields' help that gives flags theirs) as plain text: ``literals`` lose their
double backticks, Sphinx roles such as :class:`~hf_barred.train.GuardrailTrainingArguments` become their
text, and a paragraph's closing ``::`` one colon. :class:`PlainTextFormatter` applies it to every
description, epilog and flag help of a parser (every ``barred`` parser uses it, through
:class:`~hf_barred.cli.flags.OneLineParser`).

Example:
    >>> import argparse
    >>> from hf_barred.cli.help_text import add_examples, plain_text
    >>> plain_text("Reads ``--output`` (see :class:`~hf_barred.train.GuardrailConfig` and :mod:`.main`).")
    'Reads --output (see GuardrailConfig and main).'
    >>> parser = argparse.ArgumentParser(prog="barred x")
    >>> add_examples(parser, "Run x.\n\nExample:\n    $ barred x --n 2 --output out\n")
    >>> parser.epilog
    'example:\n  barred x --n 2 --output out'
"""

from __future__ import annotations

import argparse
import re
from typing import Any

__all__ = ["PlainTextFormatter", "add_examples", "examples_epilog", "plain_formatter", "plain_text"]

_ROLE = re.compile(r":(?:[a-z]+:)?[a-z]+:`([^`]+)`")  # :class:`X`, :py:func:`X`
_LITERAL = re.compile(r"``(.+?)``", re.S)


def _role_text(match: re.Match[str]) -> str:
    """What Sphinx shows for a role: an explicit title (``Title <target>``), else the target, only its
    last part after ``~``, without the leading dots of a relative name."""
    text = match.group(1)
    titled = re.fullmatch(r"(.+?)\s*<[^>]+>", text, re.S)
    if titled:
        return titled.group(1)
    if text.startswith("~"):
        return text.rsplit(".", 1)[-1]
    return text.lstrip(".!")


def plain_text(text: str) -> str:
    """``text`` (reStructuredText) as plain text: literals without their double backticks, roles as their
    text, a closing ``::`` as one colon.

    >>> plain_text("``barred train`` writes :func:`hf_barred.hub.model_card.write_model_card`'s card::")
    "barred train writes hf_barred.hub.model_card.write_model_card's card:"
    >>> plain_text("A title: :class:`the config <hf_barred.train.GuardrailConfig>`.")
    'A title: the config.'
    """
    text = _ROLE.sub(_role_text, text)
    text = _LITERAL.sub(r"\1", text)
    return re.sub(r"(\S)::(?=\s*$)", r"\1:", text, flags=re.M)


class PlainTextFormatter(argparse.HelpFormatter):
    """A help formatter that shows descriptions, epilogs and flag help as :func:`plain_text`; mixed into
    the parser's own formatter class by :func:`plain_formatter`."""

    def _format_text(self, text: str) -> str:
        return super()._format_text(plain_text(text))

    def _expand_help(self, action: argparse.Action) -> str:
        return plain_text(super()._expand_help(action))


_PLAIN: dict[type, type] = {}


def plain_formatter(formatter_class: Any) -> Any:
    """``formatter_class`` (``HelpFormatter``, ``RawDescriptionHelpFormatter``, ...) with its text shown
    as :func:`plain_text` (the class itself when it already does).

    >>> plain_formatter(argparse.RawDescriptionHelpFormatter).__name__
    'PlainRawDescriptionHelpFormatter'
    """
    if not isinstance(formatter_class, type) or issubclass(formatter_class, PlainTextFormatter):
        return formatter_class  # a factory function: left as it is
    if formatter_class not in _PLAIN:
        _PLAIN[formatter_class] = type(f"Plain{formatter_class.__name__}", (PlainTextFormatter, formatter_class), {})
    return _PLAIN[formatter_class]


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
