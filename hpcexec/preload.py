"""What a fork server imports ahead of its jobs: the installed modules its jobs imported.

A warm start (:mod:`hpcexec.forkserver`) saves a job the interpreter's start-up, but a job
that imports NumPy or scikit-learn still pays for those imports, every time: most of a short
job's cost under joblib. So the server learns, as multiprocessing's fork server does with its
``set_forkserver_preload`` list, only from what its jobs did:

1. a child notes the modules loaded when it was forked (:func:`loaded`);
2. once its payload is loaded, and again after its result is written, it sends the server the
   *installed* modules it imported on top of those (:func:`learned`; which modules are
   installed is :mod:`hpcexec.environment`'s rule): never the user's own code, which changes
   between jobs, nor ``__main__``;
3. the server imports them one at a time between requests, and whatever is still pending
   before its next fork (:class:`Preloads`), so the next job starts with them imported.

Each job keeps its isolation: the server never runs a job, every job is a fresh fork of it.
Two kinds of state are not fresh after a fork and are dealt with here: NumPy's global random
state, seeded once per process at import (:func:`reseed` in each child; the standard ``random``
module reseeds itself), and threads, which a fork does not copy: a server whose import started
a Python thread can no longer fork safely and retires (:meth:`Preloads.step`). A server also
retires when a directory its imports came from changes (a ``pip install`` there): its imports
are stale (:meth:`Preloads.changed`). A retired server's jobs go on; the next job starts a
fresh server, which is told the modules that cannot be preloaded. And a job whose own import
path would find one of the preloaded modules in another file (a ``utils.py`` of its own
beside an installed ``utils``) must not run with the preloaded one: it starts again as a cold
interpreter (:func:`shadowed`).
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import threading
from collections.abc import Iterable

# a module name as `import` takes it; anything else in a request is refused unread
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
MAX_MODULES = 20000  # a bound on what waits to be imported (scikit-learn's stack: ~1,500)


def loaded() -> frozenset[str]:
    """The modules loaded now (a child calls it when it is forked)."""
    return frozenset(sys.modules)


def learned(before: frozenset[str]) -> list[str]:
    """The installed modules imported since ``before``, in the order they were imported: what a
    job teaches its server. hpcexec and ``__main__`` aside."""
    new = [
        (name, path)
        for name, mod in list(sys.modules.items())
        if name not in before
        and name != "__main__"
        and name.partition(".")[0] != "hpcexec"
        and (path := getattr(mod, "__file__", None))
    ]
    if not new:  # most jobs, once the server has learned: no need to describe anything
        return []
    from .environment import Environment

    env = Environment.describe()
    return [name for name, path in new if env.is_installed(path)]


def shadowed(tops: list[str], server_path: list[str]) -> str | None:
    """Which of the preloaded top-level modules ``tops`` this process's import path, as the
    job has set it, would find in another file: the job must not run with the preloaded one.
    Only the entries the job added to the server's ``server_path`` (its working directory,
    the client's own directories) can; each is listed once. None when none would."""
    from importlib.machinery import PathFinder

    wanted = set(tops)
    added = [e for e in sys.path if e not in set(server_path)]
    hits: set[str] = set()
    for entry in added:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        hits.update(n.partition(".")[0] for n in names if n.partition(".")[0] in wanted)
    for name in (t for t in tops if t in hits):  # confirmed as the import system would find it
        preloaded = getattr(sys.modules.get(name), "__file__", None)
        spec = PathFinder.find_spec(name, sys.path)
        found = spec.origin if spec is not None else None
        if found and preloaded and os.path.realpath(found) != os.path.realpath(preloaded):
            return f"{name} ({found}, not the preloaded {preloaded})"
    return None


def reseed() -> None:
    """Give this forked child its own NumPy global random state (seeded from the OS, as a new
    process's is): without it, every job forked from one server draws the same numbers."""
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        numpy_random.seed()


class Preloads:
    """A fork server's learned imports: what is still to import, what was refused, and the
    directories the imports came from."""

    def __init__(self, refused: Iterable[str] = ()) -> None:
        self.pending: list[str] = []
        self.tops: list[str] = []  # the top-level modules imported by learning, in order
        self.refused = set(refused)  # failed, or started a thread (told by a retired server)
        self._dirs: dict[str, int] = {}  # directory -> its mtime when a module came from it
        self._threads = threading.active_count()

    def add(self, names: Iterable[str]) -> None:
        """Queue the modules a job imported (names that are not module names are dropped)."""
        queued = set(self.pending)
        for name in names:
            if len(queued) >= MAX_MODULES:
                break
            if (
                isinstance(name, str)
                and name not in queued
                and name not in sys.modules
                and name not in self.refused
                and _NAME.fullmatch(name)
            ):
                self.pending.append(name)
                queued.add(name)

    def step(self) -> str | None:
        """Import the next queued module; a reason to retire if that started a thread."""
        name = self.pending.pop(0)
        if name in sys.modules:  # imported with an earlier one
            return None
        try:
            mod = importlib.import_module(name)
        except BaseException:  # noqa: BLE001 - not importable here: the job imports it itself
            self.refused.add(name)
            return None
        self.watch(mod)
        top = name.partition(".")[0]
        if top not in self.tops:
            self.tops.append(top)
        if threading.active_count() > self._threads:
            self.refused.add(name)
            return f"importing {name} started a thread"
        return None

    def watch(self, mod: object) -> None:
        """Note the directory holding ``mod``'s top-level module (``site-packages``, whose
        entries any install or upgrade there changes)."""
        top = sys.modules.get(str(getattr(mod, "__name__", "")).partition(".")[0])
        path = getattr(top, "__file__", None)
        if not path:
            return
        head = os.path.dirname(path)
        if os.path.basename(path).startswith("__init__."):  # a package: the directory above it
            head = os.path.dirname(head)
        if head not in self._dirs:
            try:
                self._dirs[head] = os.stat(head).st_mtime_ns
            except OSError:
                pass

    def changed(self) -> str | None:
        """Why the imports are stale (a directory they came from changed), or None."""
        for d, mtime in self._dirs.items():
            try:
                now = os.stat(d).st_mtime_ns
            except OSError:
                now = None
            if now != mtime:
                return f"{d} changed"
        return None
