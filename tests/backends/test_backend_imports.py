"""Each scheduler's backend module stands alone: what several share lives in a shared module
(base, pbsfamily), so no backend imports another backend sideways."""

from __future__ import annotations

import ast
from pathlib import Path

import hpcexec.backends

PACKAGE = Path(hpcexec.backends.__file__).parent
SHARED = {"base", "pbsfamily"}  # modules of shared code, not backends
BACKENDS = {p.stem for p in PACKAGE.glob("*.py")} - SHARED - {"__init__"}


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


def test_shared_modules_import_no_backend():
    for name in SHARED:
        assert not _imported(PACKAGE / f"{name}.py") & BACKENDS, name
