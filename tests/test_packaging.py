"""What the built package holds: hpcexec ships its type hints (PEP 561's ``py.typed``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_package_says_it_is_typed():
    assert resources.files("hpcexec").joinpath("py.typed").is_file()


def test_the_wheel_ships_py_typed(tmp_path):
    # built from a copy: a build/ left in the tree could lend the wheel files it lacks
    source = tmp_path / "src"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".*", "build", "dist", "*.egg-info", "__pycache__", "tests", "benchmarks"
        ),
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "--disable-pip-version-check",
            "-w",
            str(tmp_path),
            str(source),
        ],
        check=True,
        timeout=600,
    )
    (wheel,) = tmp_path.glob("hpcexec-*.whl")
    with zipfile.ZipFile(wheel) as z:
        assert "hpcexec/py.typed" in z.namelist()
