"""The package's structure: import-linter's contracts (layers, no cycle, private modules, a metric module
that imports nothing), no module using another module's private names, and modules of a readable size.

The contracts live in ``setup.cfg`` (``[importlinter:contract:*]``) and CI also runs them as ``lint-imports``;
imports under ``if TYPE_CHECKING:`` count, as they are dependencies of the design.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path
from typing import Optional

from tests.utils import REPO_ROOT

PACKAGE = "hf_barred"
MAX_TOP_LEVEL_MODULES = 12
MAX_MODULE_LINES = 400


def test_import_linter_contracts_hold(tmp_path):
    from importlinter.cli import lint_imports

    assert lint_imports(config_filename=str(REPO_ROOT / "setup.cfg"), cache_dir=str(tmp_path), no_logo=True) == 0


# --- private names -----------------------------------------------------------------------------------
def module_names(root: Path, package: str) -> dict[str, Path]:
    """``{dotted module name: file}`` for every ``.py`` file of ``package`` under ``root``."""
    names = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> Iterable[ast.AST]:
    """Every node except those inside an ``if TYPE_CHECKING:`` block."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def private_uses(name: str, path: Path, known: set[str]) -> list[str]:
    """Where module ``name`` imports or uses another module's private (underscore) name."""
    is_package = path.name == "__init__.py"
    found: list[str] = []
    bound: dict[str, str] = {}  # local name -> package module it refers to
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))

    def resolve(node: ast.ImportFrom) -> Optional[str]:
        if not node.level:
            return node.module
        parts = name.split(".") if is_package else name.split(".")[:-1]
        parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
        return ".".join(parts + ([node.module] if node.module else []))

    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    bound[alias.asname or PACKAGE] = alias.name if alias.asname else PACKAGE
        elif isinstance(node, ast.ImportFrom):
            base = resolve(node)
            if base is None or base.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in known:  # `from pkg import module`
                    bound[alias.asname or alias.name] = full
                elif alias.name.startswith("_") and base != name:
                    found.append(f"{name} imports {base}.{alias.name}")
    for node in _runtime_nodes(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in bound
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            found.append(f"{name} uses {bound[node.value.id]}.{node.attr}")
    return found


def all_private_uses(root: Path) -> list[str]:
    files = module_names(root, PACKAGE)
    return [line for name, path in files.items() for line in private_uses(name, path, set(files))]


def test_the_checker_finds_private_uses(tmp_path):
    pkg = tmp_path / PACKAGE
    (pkg / "metrics").mkdir(parents=True)
    for folder in (pkg, pkg / "metrics"):
        (folder / "__init__.py").write_text("")
    (pkg / "a.py").write_text("_secret = 1\n")
    (pkg / "b.py").write_text("def f():\n    from .a import _secret\n")
    (pkg / "metrics" / "m.py").write_text("import hf_barred.a as a\nx = a._private\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import _secret\n")
    found = all_private_uses(tmp_path)
    assert "hf_barred.b imports hf_barred.a._secret" in found
    assert "hf_barred.metrics.m uses hf_barred.a._private" in found
    assert not any(line.startswith("hf_barred.c ") for line in found)  # TYPE_CHECKING imports never run


def test_no_module_uses_another_modules_private_names():
    broken = all_private_uses(REPO_ROOT)
    assert broken == [], "\n".join(broken)


# --- size ----------------------------------------------------------------------------------------------
def test_the_top_of_the_package_holds_only_its_entry_points():
    top = sorted(path.name for path in (REPO_ROOT / PACKAGE).glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def test_no_module_is_over_the_line_limit():
    long = {
        str(path.relative_to(REPO_ROOT)): n
        for path in (REPO_ROOT / PACKAGE).rglob("*.py")
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}, long
