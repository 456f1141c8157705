"""Every public function, method and class of the listed packages has a docstring.

Public here means: a module-level function or class, or a method of such a class, whose name does
not start with ``_`` -- in any module of the package, including ``_impl.py`` modules, whose names
are re-exported by their package. Dunder methods and ``@overload`` stubs are skipped. The scan is
purely syntactic (AST), so it imports nothing.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

# Add a package (a top-level folder of the repository) here once its docstrings are complete.
PACKAGES: tuple[str, ...] = ("pi_opt", "pi_opt_cli", "mpc", "service")

ROOT = Path(__file__).resolve().parents[1]

_FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef


def _is_overload(node: _FunctionNode) -> bool:
    for deco in node.decorator_list:
        name = deco.attr if isinstance(deco, ast.Attribute) else getattr(deco, "id", "")
        if name == "overload":
            return True
    return False


def _public_undocumented(tree: ast.Module) -> Iterator[str]:
    """Yield ``name`` / ``Class.method`` for each public definition without a docstring."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if not node.name.startswith("_") and not _is_overload(node) and not ast.get_docstring(node):
                yield node.name
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            if not ast.get_docstring(node):
                yield node.name
            for member in node.body:
                if (isinstance(member, ast.FunctionDef | ast.AsyncFunctionDef)
                        and not member.name.startswith("_") and not _is_overload(member)
                        and not ast.get_docstring(member)):
                    yield f"{node.name}.{member.name}"


def undocumented(package: str) -> list[str]:
    """Return ``path:line name`` for every undocumented public definition under ``package``."""
    missing = []
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        rel = path.relative_to(ROOT).as_posix()
        missing.extend(f"{rel}: {name}" for name in _public_undocumented(tree))
    return missing


def test_scan_finds_a_missing_docstring() -> None:
    tree = ast.parse(
        "def f():\n    pass\n"
        "class C:\n    'doc'\n    def m(self):\n        pass\n    def __init__(self):\n        pass\n"
        "def _private():\n    pass\n"
        "def g():\n    'doc'\n"
    )
    assert list(_public_undocumented(tree)) == ["f", "C.m"]


@pytest.mark.parametrize("package", PACKAGES)
def test_public_names_have_docstrings(package: str) -> None:
    assert (ROOT / package).is_dir(), f"no package folder {package}/"
    missing = undocumented(package)
    assert not missing, f"{len(missing)} undocumented public names in {package}:\n" + "\n".join(missing)
