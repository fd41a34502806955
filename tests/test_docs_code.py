"""Every Python block in the docs (docs/*.md) and the README runs, or says why it cannot.

A block whose first line is ``# not run: REASON`` (it needs a scheduler, a remote host, a
GPU, or names things of the reader's own) is only checked for its reason. Every other
``python`` block runs: the blocks of one page in order, in one namespace (a later block may
use what an earlier one defined), in a fresh interpreter whose working directory, cache and
configuration are a temporary directory, on the local backend.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGES = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])
FENCE = re.compile(
    r"^(?P<indent> *)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```", re.M | re.S
)
NOT_RUN = re.compile(r"^# not run: \S.{9,}$")

#: runs the blocks given as JSON [[line, code], ...] in one namespace; names the failing block
DRIVER = """
import json, sys, traceback
blocks = json.load(open(sys.argv[1]))
namespace = {"__name__": "__main__"}
for line, code in blocks:
    try:
        exec(compile(code, f"{sys.argv[2]}:{line}", "exec"), namespace)
    except BaseException:
        traceback.print_exc()
        sys.exit(f"the block at {sys.argv[2]}:{line} failed")
"""


def blocks(page: Path) -> list[tuple[int, str]]:
    """The page's ``python`` blocks: (line of the fence, code without the indentation)."""
    text = page.read_text()
    out = []
    for m in FENCE.finditer(text):
        if m["info"].strip() != "python":
            continue
        indent = len(m["indent"])
        code = "".join(line[indent:] for line in m["body"].splitlines(keepends=True))
        out.append((text.count("\n", 0, m.start()) + 1, code))
    return out


def runnable(page: Path) -> list[tuple[int, str]]:
    return [(line, code) for line, code in blocks(page) if not code.startswith("# not run:")]


def test_every_python_block_is_found():
    """A fence this module's pattern misses would be neither run nor checked."""
    for page in PAGES:
        text = page.read_text()
        opened = len(re.findall(r"^ *```python *$", text, re.M))
        assert len(blocks(page)) == opened, page.name


def test_every_block_not_run_says_why():
    for page in PAGES:
        for line, code in blocks(page):
            first = code.splitlines()[0] if code.strip() else ""
            if first.startswith("# not run"):
                assert NOT_RUN.match(first), f"{page.name}:{line}: give the reason: {first!r}"


@pytest.mark.parametrize(
    "page", [p for p in PAGES if runnable(p)], ids=lambda p: p.relative_to(REPO).as_posix()
)
def test_blocks_run(page: Path, tmp_path: Path):
    todo = tmp_path / "blocks.json"
    todo.write_text(json.dumps(runnable(page)))
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPCEXEC_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    p = subprocess.run(
        [sys.executable, "-c", DRIVER, str(todo), page.relative_to(REPO).as_posix()],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr[-4000:]
