"""Flags made from config dataclasses' fields, so that each default and help text is written once: in the config.

- :func:`from_config` makes a field of a flat *arguments* dataclass (what ``transformers.HfArgumentParser``
  turns into flags) that takes its default and help from the config field the flag sets;
  :func:`argument_options` gives the same two as ``add_argument`` options, for flags declared with argparse.
- :func:`kebab_case_flags` makes a parser's flags kebab-case only (HfArgumentParser declares
  ``--max_rounds`` and ``--max-rounds``); :func:`kebab_case_argv` turns a ``--snake_case`` flag into
  its kebab-case, so that both spellings are accepted (as by ``barred train``'s TrlParser).
- :func:`add_lazy_command` registers a command whose parser is built only when that command is parsed, so that
  ``barred --help`` does not import what the parser is made from (the configs import ``datasets``,
  HfArgumentParser ``transformers``).
- :class:`OneLineParser`: every ``barred`` parser's errors are one line, and its help plain text
  (:func:`~hf_barred.cli.help_text.plain_text`).

Example:
    >>> import argparse, dataclasses
    >>> from hf_barred.cli.flags import argument_options, from_config, kebab_case_argv, kebab_case_flags
    >>> @dataclasses.dataclass
    ... class Config:
    ...     rounds: int = dataclasses.field(default=2, metadata={"help": "Debate rounds."})
    >>> @dataclasses.dataclass
    ... class Arguments:
    ...     rounds: int = from_config(Config, "rounds", metavar="T")
    >>> field = dataclasses.fields(Arguments)[0]
    >>> field.default, field.metadata["help"], field.metadata["metavar"]
    (2, 'Debate rounds (default: %(default)s).', 'T')
    >>> parser = argparse.ArgumentParser(prog="barred x")
    >>> _ = parser.add_argument("--max_rounds", "--max-rounds", type=int, **argument_options(Config, "rounds"))
    >>> kebab_case_flags(parser)
    >>> parser._actions[-1].option_strings, parser.parse_args(kebab_case_argv(["--max_rounds", "3"])).max_rounds
    (['--max-rounds'], 3)
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

from .help_text import plain_formatter

__all__ = [
    "EXIT_SHORT",
    "EXIT_USAGE",
    "OneLineParser",
    "add_lazy_command",
    "argument_options",
    "config_help",
    "flag_help",
    "from_config",
    "kebab_case_argv",
    "kebab_case_flags",
]

EXIT_USAGE = 2
"""Exit code of bad input (flags, files, an endpoint that cannot be reached)."""
EXIT_SHORT = 3
"""Exit code of a run that ended with fewer samples (or rows) than asked; the summary says why and what to change."""
"""The exit code of bad input: flags, files, folders (see :mod:`hf_barred.cli.main`)."""


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (what is wrong, and where to read the usage) and
    whose help is plain text: its formatter class, whichever it is, renders the reStructuredText of
    descriptions and flag help (:func:`~hf_barred.cli.help_text.plain_text`)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}. See `{self.prog} --help`.\n")

    def _get_formatter(self) -> argparse.HelpFormatter:
        return plain_formatter(self.formatter_class)(prog=self.prog)


def _field(owner: type, name: str) -> dataclasses.Field:
    try:
        return next(f for f in dataclasses.fields(owner) if f.name == name)
    except StopIteration:
        raise AttributeError(f"{owner.__name__} has no field {name!r}") from None


def config_help(owner: type, name: str) -> str:
    """The help text of the field ``name`` of the config dataclass ``owner`` (its ``metadata["help"]``)."""
    return _field(owner, name).metadata["help"]


def flag_help(text: str, default: Any) -> str:
    """``text`` ready for argparse (``%`` escaped), with the default shown before its final period when
    there is one to show (not None, not False), inside a closing parenthesis there.

    >>> flag_help("Maximum planning rounds.", 4)
    'Maximum planning rounds (default: %(default)s).'
    >>> flag_help("Requests in flight (openai engine).", 32)
    'Requests in flight (openai engine; default: %(default)s).'
    >>> flag_help("Budget of tokens (None: no limit).", None)
    'Budget of tokens (None: no limit).'
    """
    text = text.replace("%", "%%")
    if default is None or default is False:
        return text
    stem, period = (text[:-1], ".") if text.endswith(".") else (text, "")
    if stem.endswith(")"):
        return f"{stem[:-1]}; default: %(default)s){period}"
    return f"{stem} (default: %(default)s){period}"


def from_config(
    owner: type,
    name: str,
    *also: tuple[type, str],
    default: Any = dataclasses.MISSING,
    help_text: str | None = None,
    **argparse_options: Any,
) -> Any:
    """A field of a flat arguments dataclass for the flag that sets the config field ``owner.name``.

    Its default and help are that field's unless ``default`` or ``help_text`` is given; ``also`` names
    other fields the flag sets (their help is appended, their default must be the same);
    ``argparse_options`` (``metavar``, ``choices``, ``type``) go to ``add_argument`` through the
    field's metadata, as HfArgumentParser passes them.
    """
    source = _field(owner, name)
    if default is dataclasses.MISSING:
        default = source.default
        if default is dataclasses.MISSING:
            raise ValueError(f"{owner.__name__}.{name} has no plain default: give the flag its own.")
    text = source.metadata["help"] if help_text is None else help_text
    for other_owner, other_name in also:
        other = _field(other_owner, other_name)
        if other.default != default:
            raise ValueError(
                f"{owner.__name__}.{name} (default {default!r}) and {other_owner.__name__}.{other_name} "
                f"(default {other.default!r}) are set by one flag: give it its own default."
            )
        more = other.metadata["help"]
        text = f"{text.rstrip('.')}; {more[:1].lower()}{more[1:]}"
    return dataclasses.field(default=default, metadata={"help": flag_help(text, default), **argparse_options})


def argument_options(owner: type, name: str, *, default: Any = dataclasses.MISSING) -> dict[str, Any]:
    """``add_argument``'s ``default`` and ``help`` for a flag that sets the config field ``owner.name``
    (its default unless ``default`` is given)."""
    source = _field(owner, name)
    if default is dataclasses.MISSING:
        default = source.default
    return {"default": default, "help": flag_help(source.metadata["help"], default)}


def _kebab(option: str) -> str:
    return "--" + option[2:].replace("_", "-") if option.startswith("--") else option


def kebab_case_flags(parser: argparse.ArgumentParser) -> None:
    """Make each ``--flag`` of ``parser`` kebab-case only: in its help, its errors and the table parsing looks
    flags up in (HfArgumentParser declares ``--max_rounds`` and ``--max-rounds``: a second spelling would
    make abbreviations such as ``--sample`` ambiguous). Call it once every argument is added; a parser that
    accepts the snake_case spelling too hands its words to :func:`kebab_case_argv` first."""
    table = parser._option_string_actions  # argparse's option -> action table
    for action in parser._actions:
        shown = list(dict.fromkeys(_kebab(o) for o in action.option_strings))
        for option in set(action.option_strings) - set(shown):
            del table[option]
        for option in shown:
            table.setdefault(option, action)
        action.option_strings = shown


def kebab_case_argv(argv: Iterable[str]) -> list[str]:
    """``argv`` with every ``--snake_case`` flag spelled ``--kebab-case`` (the name of a ``--name=value``;
    no word after ``--``).

    >>> kebab_case_argv(["task_file.yaml", "--max_rounds", "3", "--sample_max_tokens=9", "--", "--a_b"])
    ['task_file.yaml', '--max-rounds', '3', '--sample-max-tokens=9', '--', '--a_b']
    """
    words = list(argv)
    end = words.index("--") if "--" in words else len(words)
    for i, word in enumerate(words[:end]):
        if word.startswith("--"):
            name, equals, value = word.partition("=")
            words[i] = _kebab(name) + equals + value
    return words


class _ParseWith(argparse.Action):
    """Parses a command's arguments with the parser ``build_parser()`` returns, into the command's namespace."""

    def __init__(
        self, option_strings: list[str], dest: str, build_parser: Callable[[], argparse.ArgumentParser], **kwargs: Any
    ) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.build_parser = build_parser

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        delattr(namespace, self.dest)
        self.build_parser().parse_args(values, namespace)


def add_lazy_command(
    subparsers: Any, name: str, build_parser: Callable[[], argparse.ArgumentParser], **kwargs: Any
) -> argparse.ArgumentParser:
    """Register the command ``name`` on ``subparsers`` (``kwargs`` as for ``add_parser``: ``help``)
    with the arguments, help and errors of ``build_parser()``, called only when the command is parsed.

    The registered parser takes every word after the command as is (``+`` is its only prefix
    character) and hands them to the built one, whose values land in the same namespace; its
    ``--help`` and errors exit there, as a subparser's would.

    >>> parser = argparse.ArgumentParser(prog="barred")
    >>> def build():
    ...     inner = OneLineParser(prog="barred x")
    ...     _ = inner.add_argument("--n", type=int, required=True)
    ...     return inner
    >>> _ = add_lazy_command(parser.add_subparsers(dest="command"), "x", build, help="Do x.")
    >>> parser.parse_args(["x", "--n", "3"])
    Namespace(command='x', n=3)
    """
    parser = subparsers.add_parser(name, add_help=False, prefix_chars="+", **kwargs)
    parser.add_argument("argv", nargs="*", action=_ParseWith, build_parser=build_parser)
    return parser
