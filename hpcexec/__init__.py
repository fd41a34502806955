"""hpcexec: run Python work as batch-scheduler jobs through ``concurrent.futures``.

Imports are lazy so that the in-job runner (``python -m hpcexec.runner``) starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Executor": "executor",
    "wait": "waiting",
    "JobFuture": "future",
    "JobInfo": "future",
    "Checkpointable": "checkpoint",
    "Resubmit": "checkpoint",
    "ShellResult": "future",
    "JobState": "states",
    "JobOptions": "options",
    "ExecutorSettings": "settings",
    "Resources": "resources",
    "Store": "store",
    "JobRecord": "record",
    "HpcexecError": "errors",
    "ResourceError": "errors",
    "PayloadError": "errors",
    "BackendError": "errors",
    "SubmitError": "errors",
    "TransportError": "errors",
    "CacheError": "errors",
    "ConfigError": "errors",
    "UnknownJob": "errors",
    "JobFailed": "errors",
    "OutOfMemory": "errors",
    "WorkerLost": "errors",
    "WorkerPool": "workers",
    "TaskFuture": "workers",
    "PrologueFailed": "errors",
    "HostKeyError": "errors",
    "IntegrityError": "errors",
    "UntrustedPath": "errors",
    "RemoteTraceback": "errors",
    "RemoteError": "errors",
    "register_backend": "backends",
    "read_defaults": "inidefaults",
    "save_profile": "profilewrite",
    "task": "taskenv",
    "Task": "taskenv",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .backends import register_backend
    from .checkpoint import Checkpointable, Resubmit
    from .errors import (
        BackendError,
        CacheError,
        ConfigError,
        HostKeyError,
        HpcexecError,
        IntegrityError,
        JobFailed,
        OutOfMemory,
        PayloadError,
        PrologueFailed,
        RemoteError,
        RemoteTraceback,
        ResourceError,
        SubmitError,
        TransportError,
        UnknownJob,
        UntrustedPath,
        WorkerLost,
    )
    from .executor import Executor, wait
    from .future import JobFuture, JobInfo, ShellResult
    from .options import JobOptions
    from .record import JobRecord
    from .resources import Resources
    from .settings import ExecutorSettings
    from .states import JobState
    from .store import Store
    from .taskenv import Task, task
    from .workers import TaskFuture, WorkerPool


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hpcexec' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
