from __future__ import annotations

import pytest
from clirun import Cli


def _cancel_active(cli: Cli) -> None:
    """End what a test left running (after a failure, say): jobs outlive the command."""
    if (cli.cwd / ".hpcexec" / "jobs.sqlite").exists():
        active = [j["key"] for j in cli.json("jobs", "--state", "active", ok=None)]
        if active:
            cli("cancel", *active, ok=None)


@pytest.fixture
def cli(tmp_path):
    """The hpcexec command in a fresh working directory (its cache: ./.hpcexec)."""
    work = tmp_path / "work"
    work.mkdir()
    c = Cli(work, tmp_path / "xdg")
    yield c
    _cancel_active(c)
