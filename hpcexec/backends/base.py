"""What every backend provides. Backends are pure: no I/O, only text in and text out."""
from __future__ import annotations

import abc
from typing import ClassVar

from ..resources import Resources
from ..script import ScriptParts


class Backend(abc.ABC):
    """A scheduler dialect: renders resources, builds argv, parses command output."""

    name: ClassVar[str]
    #: polling interval: start (seconds), and the cap that backoff grows to
    poll_min: ClassVar[float] = 1.0
    poll_max: ClassVar[float] = 30.0

    @abc.abstractmethod
    def check(self, res: Resources) -> None:
        """Raise :class:`~hpcexec.errors.BackendError` if ``res`` cannot be expressed."""

    @abc.abstractmethod
    def script_parts(self, res: Resources, *, name: str, jobdir: str, stdout: str,
                     stderr: str, workdir: str) -> ScriptParts:
        """Directives and the expressions that set the core ``HPCEXEC_*`` variables."""
