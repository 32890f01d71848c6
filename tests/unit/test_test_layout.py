"""Helpers shared by test modules live in tests/support (issue 18): no module under tests/ or bench/ imports
a `test_*` module. import-linter cannot say this (its wildcards replace whole module names, not `test_*`),
so this test reads every import with `ast`."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("tests", "sandbox", "bench")


def module_name(path: Path) -> str:
    """The dotted name of a .py file under the repository root (a package's __init__ is the package)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, path: Path) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of every module `source`, the text of `path`, imports, relative imports
    resolved; for `from package import name` both the package and `package.name` (it may be a module)."""
    tree = ast.parse(source, filename=str(path))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package.pop()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            yield node.lineno, module
            for alias in node.names:
                yield node.lineno, f"{module}.{alias.name}"


def python_files() -> Iterator[Path]:
    for folder in FOLDERS:
        yield from sorted((ROOT / folder).rglob("*.py"))


def test_no_module_imports_a_test_module() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: imports {module}"
        for path in python_files()
        for line, module in imported_modules(path.read_text(), path)
        if module.rsplit(".", 1)[-1].startswith("test_")
    ]
    assert not offenders, "move the shared helpers to tests/support:\n" + "\n".join(offenders)


def test_the_check_sees_each_form_of_import() -> None:
    source = (
        "import json\n"
        "import tests.unit.test_a\n"
        "from tests.e2e.test_b import helper\n"
        "from tests.e2e import test_c\n"
        "from .test_d import helper\n"
        "from . import test_e\n"
        "from ..support.objects import apply\n"
    )
    modules = [module for _, module in imported_modules(source, ROOT / "tests" / "unit" / "probe.py")]
    assert "json" in modules and "tests.support.objects.apply" in modules
    found = [module for module in modules if module.rsplit(".", 1)[-1].startswith("test_")]
    assert found == [
        "tests.unit.test_a",
        "tests.e2e.test_b",
        "tests.e2e.test_c",
        "tests.unit.test_d",
        "tests.unit.test_e",
    ]
