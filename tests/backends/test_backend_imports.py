"""Each scheduler's backend module stands alone: what several share lives in a shared module
(base, pbsfamily), so no backend imports another backend sideways."""

from __future__ import annotations

import ast
from pathlib import Path

import hpcexec.backends

PACKAGE = Path(hpcexec.backends.__file__).parent
SHARED = {"base", "pbsfamily"}  # modules of shared code, not backends
#: a backend's own parts, ``<backend>_<part>.py`` (sge_qacct): only that backend imports them
PARTS = {p.stem for p in PACKAGE.glob("*_*.py")} - {"__init__"}
BACKENDS = {p.stem for p in PACKAGE.glob("*.py")} - SHARED - PARTS - {"__init__"}


def _imported(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found.add((node.module or "").split(".")[0])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "hpcexec.backends."
        ):
            found.add(node.module.split(".")[2])
    return found


def test_no_backend_imports_another_backend():
    assert {"slurm", "sge", "pbspro", "torque", "lsf", "local"} <= BACKENDS
    sideways = {name: _imported(PACKAGE / f"{name}.py") & (BACKENDS - {name}) for name in BACKENDS}
    assert not any(sideways.values()), sideways


def test_a_backends_parts_are_its_own():
    assert "sge_qacct" in PARTS
    for part in PARTS:
        owner = part.split("_")[0]
        assert owner in BACKENDS, f"{part}.py names no backend"
        assert not _imported(PACKAGE / f"{part}.py") & (BACKENDS | PARTS), part
        users = {n for n in BACKENDS if part in _imported(PACKAGE / f"{n}.py")}
        assert users <= {owner}, (part, users)


def test_shared_modules_import_no_backend():
    for name in SHARED:
        assert not _imported(PACKAGE / f"{name}.py") & BACKENDS, name
