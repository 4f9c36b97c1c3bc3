"""The package's code stays readable in pieces: no function or method over 80 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import waeserver

PACKAGE = Path(waeserver.__file__).parent
MAX_LINES = 80


def long_functions(tree: ast.Module, limit: int = MAX_LINES) -> list[tuple[str, int, int]]:
    """``(name, first line, lines)`` of every function in ``tree`` (nested ones too, decorators
    included) longer than ``limit`` lines."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            lines = node.end_lineno - first + 1
            if lines > limit:
                found.append((node.name, first, lines))
    return found


def test_no_function_in_the_package_is_over_80_lines():
    too_long = [f"{path.relative_to(PACKAGE.parent)}:{line} {name} ({lines} lines)"
                for path in sorted(PACKAGE.rglob("*.py"))
                for name, line, lines in long_functions(ast.parse(path.read_text(), str(path)))]
    assert not too_long, f"functions over {MAX_LINES} lines (split them into their stages): " + "; ".join(too_long)


def test_the_check_counts_every_line_of_a_function_and_its_decorators():
    def method(body_lines: int) -> ast.Module:
        return ast.parse("class A:\n    @staticmethod\n    def f():\n" + "        x = 0\n" * body_lines)

    assert long_functions(method(78)) == []                  # decorator, def and 78 lines: 80
    assert long_functions(method(79)) == [("f", 2, 81)]
