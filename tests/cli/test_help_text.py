"""The CLI helps: every suggested flag exists on the commands that can show it, and every --help has an example."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import hf_barred
from hf_barred.cli.main import build_parser

PACKAGE = Path(hf_barred.__file__).parent
SUGGESTION = re.compile(r"\b(?:[Pp]ass|[Uu]se|[Gg]ive|[Aa]dd|[Ss]et)\s+(--[a-z][a-z0-9_-]*)")


def _subparsers() -> dict:
    """Each command's parser (``barred train`` parses its flags with TrlParser, ``barred generate`` with
    HfArgumentParser, both built when the command runs: those)."""
    from hf_barred.cli import generate, train

    parser = build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return dict(action.choices) | {"train": train.build_parser(), "generate": generate.build_parser()}


def _command_of_module() -> dict[str, set[str]]:
    """The command names each ``hf_barred.cli`` module registers."""
    import argparse

    from hf_barred.cli.main import COMMANDS

    names = {}
    for module in COMMANDS:
        subparsers = argparse.ArgumentParser().add_subparsers()
        module.register(subparsers)
        names[module.__name__] = set(subparsers.choices)
    return names


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _functions() -> list[tuple[str, str, set[str], set[str]]]:
    """Every function of the package: (module, name, the names it references, the flags its strings suggest)."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        module = _module_name(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names, flags = set(), set()
                # a parameter or a local variable shadows a module function of the same name: not a call of it
                local = {a.arg for a in ast.walk(node.args) if isinstance(a, ast.arg)}
                local |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
                for inner in ast.walk(node):
                    if isinstance(inner, ast.Name) and inner.id not in local:
                        names.add(inner.id)
                    elif isinstance(inner, ast.Attribute):
                        names.add(inner.attr)
                    elif isinstance(inner, ast.Constant) and isinstance(inner.value, str):
                        flags.update(SUGGESTION.findall(inner.value))
                found.append((module, node.name, names, flags))
    return found


def _commands_reaching(functions, holder: str, owners: dict[str, set[str]]) -> set[str]:
    """The commands whose code calls ``holder``, directly or through other functions, by name. Names
    defined in several places (``chat``, ``run``, ``load``) are not followed further than one step:
    following them would make every command reach every engine."""
    defined: dict[str, int] = {}
    for _, function, _, _ in functions:
        defined[function] = defined.get(function, 0) + 1
    reached, seen, todo = set(), set(), [holder]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for module, function, names, _ in functions:
            if name in names:
                if module in owners:
                    reached |= owners[module]
                elif not module.startswith("hf_barred.cli.") and defined[function] == 1:
                    todo.append(function)
    return reached


def test_every_suggested_flag_is_accepted_by_the_commands_that_can_show_it():
    functions = _functions()
    commands = _subparsers()
    owners = _command_of_module()
    suggestions = [(module, name, flags) for module, name, _, flags in functions if flags]
    assert suggestions, "no 'pass --flag' suggestion found: the pattern is stale"
    wrong = []
    for module, holder, flags in suggestions:
        shown_by = owners[module] if module in owners else _commands_reaching(functions, holder, owners)
        for flag in sorted(flags):
            for name in sorted(shown_by):
                if not any(flag in action.option_strings for action in commands[name]._actions):
                    wrong.append(f"{module}.{holder} suggests {flag}, which `barred {name}` does not accept")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("name", sorted(_subparsers()))
def test_each_command_help_has_an_example_and_names_the_embedded_default(name, capsys):
    parser = _subparsers()[name]
    text = parser.format_help()
    assert "example" in text.lower(), f"`barred {name} --help` shows no example"
    if any("--engine" in a.option_strings for a in parser._actions):
        assert "embedded" in text, f"`barred {name} --help` does not say that `embedded` is the local default model"


def test_flags_are_kebab_case():
    snake = [
        f"barred {name} {opt}"
        for name, parser in _subparsers().items()
        for a in parser._actions
        for opt in a.option_strings
        if opt.startswith("--")
        and "_" in opt
        and not any(
            o.startswith("--") and "-" in o[2:] and "--" + o[2:].replace("-", "_") == opt for o in a.option_strings
        )
    ]
    assert not snake, f"flags without a kebab-case spelling: {snake}"
