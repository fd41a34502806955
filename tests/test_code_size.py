"""The size rules of the package (see CONTRIBUTING.md): small modules with one
job each, short functions, a thin public Executor."""

from __future__ import annotations

import ast
from pathlib import Path

import hpcexec

ROOT = Path(hpcexec.__file__).parent
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60  # from its ``def`` line to its last, docstring included
MAX_EXECUTOR_LINES = 400


def _sources() -> dict[str, str]:
    return {str(p.relative_to(ROOT.parent)): p.read_text() for p in sorted(ROOT.rglob("*.py"))}


def test_no_module_is_over_its_size():
    sizes = {name: len(text.splitlines()) for name, text in _sources().items()}
    assert {n: s for n, s in sizes.items() if s > MAX_MODULE_LINES} == {}
    assert sizes["hpcexec/executor.py"] <= MAX_EXECUTOR_LINES


def test_no_function_is_over_its_size():
    long = {}
    for name, text in _sources().items():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > MAX_FUNCTION_LINES:
                    long[f"{name}:{node.lineno} {node.name}"] = size
    assert long == {}
