"""The package's shape: its modules import each other without cycles, lazy (in-function) and
type-checking imports included, so each layer only asks the ones below it; and every module
has a docstring and a row in docs/architecture.md's module table."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import hpcexec

ROOT = Path(hpcexec.__file__).parent
REPO = Path(__file__).resolve().parents[1]
ARCHITECTURE = REPO / "docs" / "architecture.md"


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its text (packages' own
    ``__init__`` left out: importing ``hpcexec.x`` is not importing all of ``hpcexec``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names = [module, *(f"{module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found.update(
            n for n in names if n in known and n != name and known[n].name != "__init__.py"
        )
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                cycles.append(sorted(part))

    for v in graph:
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycle_in_the_package():
    known = _modules()
    graph = {name: _imports(name, path, known) for name, path in known.items()}
    assert _cycles(graph) == []


def _module_table() -> set[str]:
    """The module paths in the first column of docs/architecture.md's "Modules" section."""
    text = ARCHITECTURE.read_text()
    section = text.split("\n## Modules\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(hpcexec/[\w/]+\.py)` \|", section, re.M))


def test_every_module_is_in_the_architecture_module_table():
    package = {str(p.relative_to(REPO).as_posix()) for p in (REPO / "hpcexec").rglob("*.py")}
    listed = _module_table()
    assert sorted(package - listed) == [], "add these to the module table of docs/architecture.md"
    assert sorted(listed - package) == [], "docs/architecture.md lists modules that do not exist"


def test_every_module_has_a_docstring():
    missing = [
        str(p.relative_to(REPO))
        for p in sorted((REPO / "hpcexec").rglob("*.py"))
        if not (ast.get_docstring(ast.parse(p.read_text())) or "").strip()
    ]
    assert missing == []


def test_no_file_keeps_a_merge_conflict_marker():
    """A merge resolved by hand once left its markers in the README (seen: the settings keys)."""
    marker = re.compile(r"^(<{7} |={7}$|>{7} )", re.M)
    texts = [
        p
        for p in REPO.rglob("*")
        if p.suffix in (".py", ".md", ".sh", ".toml", ".cfg", ".txt", ".yml", ".yaml")
        and p.is_file()
        and not any(part.startswith(".") or part == "node_modules" for part in p.parts)
    ]
    found = [
        str(p.relative_to(REPO)) for p in texts if marker.search(p.read_text(errors="replace"))
    ]
    assert found == []
