"""The CLI helps: every suggested flag exists on the commands that can show it, and every --help has an example."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import hf_barred
from hf_barred.cli import build_parser

PACKAGE = Path(hf_barred.__file__).parent
SUGGESTION = re.compile(r"\b(?:[Pp]ass|[Uu]se|[Gg]ive|[Aa]dd|[Ss]et)\s+(--[a-z][a-z0-9_-]*)")


def _subparsers() -> dict:
    parser = build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return dict(action.choices)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.AST, module: str) -> set[str]:
    """The hf_barred modules ``module`` imports (at any depth of its code)."""
    found = set()
    package = module.split(".")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.startswith("hf_barred")}


def _suggestions_and_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    suggestions: dict[str, set[str]] = {}
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        module = _module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        graph[module] = _imports(tree, module)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for flag in SUGGESTION.findall(node.value):
                    suggestions.setdefault(module, set()).add(flag)
    return suggestions, graph


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo.extend(m for m in graph.get(module, ()) if m in graph)
    return seen


def test_every_suggested_flag_is_accepted_by_the_commands_that_can_show_it():
    suggestions, graph = _suggestions_and_graph()
    assert suggestions, "no 'pass --flag' suggestion found: the pattern is stale"
    commands = _subparsers()
    reach = {name: _reachable(graph, f"hf_barred.commands.{name}") for name in commands}
    wrong = []
    for module, flags in sorted(suggestions.items()):
        shown_by = [name for name, modules in reach.items() if module in modules]
        for flag in sorted(flags):
            for name in shown_by:
                if not any(flag in action.option_strings for action in commands[name]._actions):
                    wrong.append(f"{module} suggests {flag}, which `barred {name}` does not accept")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("name", sorted(_subparsers()))
def test_each_command_help_has_an_example_and_names_the_embedded_default(name, capsys):
    parser = _subparsers()[name]
    text = parser.format_help()
    assert "example" in text.lower(), f"`barred {name} --help` shows no example"
    if any("--engine" in a.option_strings for a in parser._actions):
        assert "embedded" in text, f"`barred {name} --help` does not say that `embedded` is the local default model"


def test_flags_are_kebab_case():
    snake = [f"barred {name} {opt}" for name, parser in _subparsers().items() for a in parser._actions
             for opt in a.option_strings if opt.startswith("--") and "_" in opt
             and not any(o.startswith("--") and "-" in o[2:] and o.replace("-", "_") == opt for o in a.option_strings)]
    assert not snake, f"flags without a kebab-case spelling: {snake}"
