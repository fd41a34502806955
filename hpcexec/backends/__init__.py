"""The backends by name: the built-in scheduler dialects and those registered. Each backend
is pure: it renders and parses, it never runs anything.

``SCHEDULERS`` maps a backend name to its class, in the order ``backend="auto"`` tries them:
the built-in ones, then those added by :func:`register_backend` or by an installed package's
``hpcexec.backends`` entry point (loaded once, when a backend name is first looked up).
"""

from __future__ import annotations

import inspect
import logging
import re
import threading
from typing import Any

from ..errors import BackendError
from .base import Backend, JobStatus, SchedulerBackend, SubmitSpec
from .local import LocalBackend
from .lsf import LsfBackend
from .pbspro import PbsProBackend
from .sge import SgeBackend
from .slurm import SlurmBackend
from .torque import TorqueBackend

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "hpcexec.backends"
RESERVED = ("local", "auto")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
#: class attributes a scheduler backend must give (besides the abstract methods)
REQUIRED_ATTRIBUTES: dict[str, type] = {
    "name": str,
    "commands": tuple,
    "array_index_pattern": str,
    "array_index_expr": str,
}

SCHEDULERS: dict[str, type[SchedulerBackend]] = {
    "slurm": SlurmBackend,
    "sge": SgeBackend,
    "pbspro": PbsProBackend,
    "torque": TorqueBackend,
    "lsf": LsfBackend,
}
BUILTIN = tuple(SCHEDULERS)

_lock = threading.RLock()
_entry_points_loaded = False
_broken: dict[str, str] = {}  # backend name -> why its entry point could not be used


def _missing(cls: type) -> list[str]:
    """What a scheduler backend class lacks, as readable phrases."""
    problems = []
    abstract = sorted(getattr(cls, "__abstractmethods__", ()))
    if abstract:
        problems.append(f"methods {', '.join(abstract)}")
    for attr, kind in REQUIRED_ATTRIBUTES.items():
        value = getattr(cls, attr, None)
        if not isinstance(value, kind) or not value:
            problems.append(f"class attribute {attr} (a non-empty {kind.__name__})")
    commands = getattr(cls, "commands", None)
    if isinstance(commands, tuple) and not all(isinstance(c, str) and c for c in commands):
        problems.append("class attribute commands holding command names (strings)")
    own_directives = getattr(cls, "directives", None) is not SchedulerBackend.directives
    if not own_directives and not (getattr(cls, "prefix", None) and getattr(cls, "rules", None)):
        problems.append(
            "class attributes prefix and rules (a directive prefix such as "
            "'#SBATCH' and a tuple of Rule), or a directives() method of its own"
        )
    return problems


def register_backend(
    name: str, backend_class: type[SchedulerBackend], *, replace: bool = False
) -> None:
    """Make a scheduler dialect available as ``backend=name`` everywhere a backend is named
    (:class:`~hpcexec.Executor`, profiles, ``hpcexec --backend``, ``backend="auto"``, which
    tries it after the built-in ones by its ``commands``).

    ``backend_class`` subclasses :class:`~hpcexec.backends.base.SchedulerBackend`, implements
    its abstract methods, sets ``name`` (equal to ``name``), ``commands``,
    ``array_index_pattern`` and ``array_index_expr``, and is built with no arguments.
    Raises :class:`~hpcexec.errors.BackendError` naming what is missing, or when ``name`` is
    taken (``replace=True`` replaces a registered one; built-in backends cannot be replaced).
    """
    if not isinstance(name, str) or not _NAME_RE.match(name) or name in RESERVED:
        raise BackendError(
            f"a backend name is 1-64 lower-case letters, digits, '_' or '-' "
            f"starting with a letter, and not {' or '.join(RESERVED)}; "
            f"not {name!r}"
        )
    _check_class(name, backend_class)
    with _lock:
        current = SCHEDULERS.get(name)
        if current is not None and current is not backend_class:
            if name in BUILTIN:
                raise BackendError(
                    f"backend {name!r} is built in and cannot be replaced; "
                    f"register yours under another name"
                )
            if not replace:
                raise BackendError(
                    f"backend {name!r} is already registered (by "
                    f"{current.__module__}.{current.__qualname__}); pass "
                    f"replace=True to replace it"
                )
        SCHEDULERS[name] = backend_class
        _broken.pop(name, None)
    log.debug("backend %r registered: %s", name, backend_class.__qualname__)


def _check_class(name: str, backend_class: Any) -> None:
    """Refuse a class :func:`register_backend` cannot use, saying what to change."""
    if not (inspect.isclass(backend_class) and issubclass(backend_class, SchedulerBackend)):
        raise BackendError(
            f"backend {name!r} must be a class derived from "
            f"hpcexec.backends.base.SchedulerBackend, not {backend_class!r}"
        )
    problems = _missing(backend_class)
    if problems:
        raise BackendError(
            f"backend class {backend_class.__module__}."
            f"{backend_class.__qualname__} registered as {name!r} lacks "
            f"{'; '.join(problems)}: add them (see hpcexec.backends.base)"
        )
    if backend_class.name != name:
        raise BackendError(
            f"backend class {backend_class.__qualname__} has name "
            f"{backend_class.name!r} but is registered as {name!r}: set its "
            f"class attribute name = {name!r} (job records carry it)"
        )
    try:
        backend_class()
    except Exception as e:
        raise BackendError(
            f"backend class {backend_class.__qualname__} cannot be built with "
            f"no arguments ({type(e).__name__}: {e}); hpcexec builds it as "
            f"{backend_class.__qualname__}()"
        ) from e


def unregister_backend(name: str) -> None:
    """Remove a backend added by :func:`register_backend` (built-in ones stay)."""
    if name in BUILTIN:
        raise BackendError(f"backend {name!r} is built in and cannot be removed")
    with _lock:
        SCHEDULERS.pop(name, None)


def _dist_name(ep: Any) -> str:
    dist = getattr(ep, "dist", None)
    return str(getattr(dist, "name", None) or getattr(ep, "value", "?"))


def load_entry_points() -> None:
    """Register the backends installed packages declare in the ``hpcexec.backends``
    entry-point group (once per process). A plugin that fails to import or to register
    is skipped with a warning naming its package; asking for its backend then raises a
    :class:`~hpcexec.errors.BackendError` saying why."""
    global _entry_points_loaded
    with _lock:
        if _entry_points_loaded:
            return
        _entry_points_loaded = True
        from importlib.metadata import entry_points

        try:
            found = list(entry_points(group=ENTRY_POINT_GROUP))
        except Exception as e:  # a broken installed distribution's metadata  # noqa: BLE001
            log.warning("cannot read the %s entry points: %s", ENTRY_POINT_GROUP, e)
            return
        for ep in found:
            if ep.name in SCHEDULERS:
                continue  # registered by hand already, or a built-in name
            try:
                cls = ep.load()
                register_backend(ep.name, cls)
            except Exception as e:  # a third-party plugin fails in any way: say which  # noqa: BLE001
                why = (
                    f"the package {_dist_name(ep)} declares backend {ep.name!r} "
                    f"({ep.value}) in entry-point group {ENTRY_POINT_GROUP!r}, but it "
                    f"cannot be used: {type(e).__name__}: {e}"
                )
                _broken[ep.name] = why
                log.warning("%s", why)


def schedulers() -> dict[str, type[SchedulerBackend]]:
    """Every scheduler backend by name (entry points loaded), in ``"auto"`` order."""
    load_entry_points()
    return SCHEDULERS


def backend_names() -> tuple[str, ...]:
    """``"local"`` and every scheduler backend's name."""
    return ("local", *schedulers())


def scheduler_class(name: str) -> type[SchedulerBackend]:
    """The class of scheduler backend ``name``; :class:`BackendError` if there is none."""
    found = schedulers().get(name)
    if found is None:
        raise unknown_backend(name)
    return found


def unknown_backend(name: str, extra: str = "") -> BackendError:
    """The error for a backend name nobody provides (with the failed plugin, if one was)."""
    if name in _broken:
        return BackendError(_broken[name])
    return BackendError(
        f"unknown backend {name!r} (a package adds one through the "
        f"{ENTRY_POINT_GROUP!r} entry-point group, a script through "
        f"hpcexec.register_backend); available: {', '.join(backend_names())}"
        f"{extra}"
    )


__all__ = [
    "SCHEDULERS",
    "Backend",
    "JobStatus",
    "LocalBackend",
    "SchedulerBackend",
    "SlurmBackend",
    "SubmitSpec",
    "backend_names",
    "load_entry_points",
    "register_backend",
    "scheduler_class",
    "schedulers",
    "unregister_backend",
]
