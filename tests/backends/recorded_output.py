"""Reading recorded command output. A ``.txt`` file opens with ``# `` lines naming where its
text comes from; JSON and XML files keep that header in a sibling ``.source`` file."""

from __future__ import annotations

from pathlib import Path


def read_output(path: Path) -> str:
    """The command's output as recorded, without the header."""
    text = path.read_text()
    if path.suffix != ".txt":
        return text
    return "".join(line for line in text.splitlines(keepends=True) if not line.startswith("# "))
