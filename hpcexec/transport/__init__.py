"""Transports: the only place that runs commands and touches job files."""

from .base import CommandResult, Transport
from .local import LocalShell

__all__ = ["CommandResult", "LocalShell", "Transport"]
