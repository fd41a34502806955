"""Running the installed ``hpcexec`` command as a user would, in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: the console script pip installed next to this interpreter (not a pyenv shim)
HPCEXEC = Path(sys.executable).parent / "hpcexec"


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class Cli:
    """``hpcexec`` in one working directory, with no configuration but its own."""

    def __init__(self, cwd: Path, xdg: Path, **env: str) -> None:
        assert HPCEXEC.exists(), (
            f"no {HPCEXEC}: `pip install -e .` installs the hpcexec "
            f"command (see pyproject.toml [project.scripts])"
        )
        self.cwd = cwd
        self.env = {
            k: v for k, v in os.environ.items() if k not in ("HPCEXEC_PROFILE", "HPCEXEC_CACHE_DIR")
        }
        self.env.update(XDG_CONFIG_HOME=str(xdg), **env)

    def __call__(
        self, *args: str, ok: bool | None = True, timeout: float = 180, **env: str
    ) -> Result:
        """Run ``hpcexec ARGS``; ``ok``: the exit status must be 0 (True), non-zero
        (False), or anything (None)."""
        p = subprocess.run(
            [str(HPCEXEC), *args],
            cwd=self.cwd,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        r = Result(p.returncode, p.stdout, p.stderr)
        if ok is True:
            assert r.code == 0, f"hpcexec {' '.join(args)} exited {r.code}: {r.err}{r.out}"
        elif ok is False:
            assert r.code != 0, f"hpcexec {' '.join(args)} succeeded: {r.out}"
        assert "Traceback" not in r.err or "--debug" in args, r.err
        return r

    def json(self, *args: str, **kw: Any) -> Any:
        return self("--json", *args, **kw).json()

    def error(self, *args: str, code: int = 1, **env: str) -> str:
        """Run a command that must fail with ``code`` and one line on stderr; the line."""
        r = self(*args, ok=False, **env)
        assert r.code == code, f"exit {r.code}, not {code}: {r.err}"
        lines = r.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("hpcexec: error: "), r.err
        return lines[0]
