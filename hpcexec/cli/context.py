"""What every command works on: the effective settings, the job store, the records a KEY
names, and executors for the backends and hosts those records belong to."""

from __future__ import annotations

import logging
import platform
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import HpcexecError, UnknownJob
from ..executor import Executor
from ..future import JobFuture
from ..record import JobRecord
from ..settings import REACH
from ..store import Store
from .output import Output, note, short_key

log = logging.getLogger(__name__)


class UsageError(HpcexecError):
    """The command line asks for something that cannot be done as given."""


@dataclass
class Context:
    """The state of one command: settings, output, and what it opened (closed by
    :meth:`close`)."""

    settings: Settings
    out: Output
    _store: Store | None = None
    _executors: dict[tuple[str, str], Executor] = field(default_factory=dict)
    _submitters: list[Executor] = field(default_factory=list)
    _followed: dict[int, list[JobFuture]] = field(default_factory=dict)  # id(executor) ->
    here: str = field(default_factory=platform.node)

    @property
    def cache_dir(self) -> Path:
        return Path(self.settings["cache_dir"]).absolute()

    def select(
        self,
        states: list[str] | None,
        match: str | None,
        backend: str | None = None,
        host: list[str] | None = None,
        *,
        newest: int | None = None,
    ) -> list[JobRecord]:
        """The records in these states whose key or name matches (``newest``: only that many
        of the most recent); none without a cache."""
        store = self.store()
        if store is None:
            return []
        try:
            return store.select(states, match, backend=backend, host=host, newest=newest)
        except ValueError as e:  # an unknown state or a bad regular expression
            raise UsageError(str(e)) from None

    def iter_data(
        self,
        states: list[str] | None,
        match: str | None,
        backend: str | None,
        host: list[str] | None,
    ) -> Iterator[dict[str, Any]]:
        """:meth:`select`'s records as JSON-ready data, read as they are printed."""
        store = self.store()
        if store is None:
            return iter(())
        try:
            return store.iter_select_data(states, match, backend=backend, host=host)
        except ValueError as e:
            raise UsageError(str(e)) from None

    def count(
        self,
        states: list[str] | None,
        match: str | None,
        backend: str | None,
        host: list[str] | None,
    ) -> int:
        store = self.store()
        return 0 if store is None else store.count(states, match, backend=backend, host=host)

    def store(self, *, create: bool = False) -> Store | None:
        """The job store, or None when there is no cache yet (and ``create`` is False)."""
        if self._store is None:
            if not create and not Store.exists_in(self.cache_dir):
                return None
            self._store = Store(self.cache_dir)
        return self._store

    def no_cache(self) -> UnknownJob:
        return UnknownJob(
            f"no job cache at {self.cache_dir}: give --cache-dir, set "
            f"HPCEXEC_CACHE_DIR, or run where the workflow ran"
        )

    # -- keys ----------------------------------------------------------------------------
    def find(self, key: str) -> JobRecord:
        """The record a key, a unique prefix of one, a scheduler job id or a unique job
        name names."""
        store = self.store()
        if store is None:
            raise self.no_cache()
        found = store.find(key)
        exact = [r for r in found if r.key == key]
        if exact:
            return exact[0]
        if not found:
            raise UnknownJob(
                f"no job {key!r} in {store.path} (a KEY is a record key, a "
                f"unique prefix of one, a scheduler job id or a job's name): `hpcexec jobs` "
                f"lists them"
            )
        if len(found) > 1:
            some = ", ".join(short_key(r.key) for r in found[:5])
            more = f" and {len(found) - 5} more" if len(found) > 5 else ""
            if all(r.name == key for r in found):
                raise UnknownJob(
                    f"{len(found)} jobs are named {key!r} ({some}{more}): give one's key "
                    f"(`hpcexec jobs --match '^{key}$'` lists them)"
                )
            raise UnknownJob(
                f"{key!r} names {len(found)} jobs ({some}{more}): give more of the key"
            )
        return found[0]

    def records(self, keys: Iterable[str]) -> list[JobRecord]:
        """The records of several KEYs, each once, in the order given; every KEY is
        checked before anything is done."""
        out: dict[str, JobRecord] = {}
        for key in keys:
            rec = self.find(key)
            out.setdefault(rec.key, rec)
        return list(out.values())

    # -- executors -----------------------------------------------------------------------
    def executor(self) -> Executor:
        """An executor with the effective settings (for submitting)."""
        kwargs = self.settings.kwargs()
        if self.settings.values["coalesce"].source == "default":
            kwargs["coalesce"] = 0.0  # one command, one job: submit it at once
        ex = Executor(profile="", **kwargs)
        self._submitters.append(ex)
        return ex

    def executor_on(self, backend: str, host: str) -> Executor:
        """An executor of ``backend`` on ``host`` (one per pair), to follow its records."""
        if (backend, host) not in self._executors:
            s = self.settings
            options: dict[str, Any] = {}
            if host != self.here:
                options = {"host": host, **self._host_options(host)}
            self._executors[backend, host] = Executor(
                backend,
                cache_dir=self.cache_dir,
                profile="",
                poll_interval=s["poll_interval"],
                calls_per_second=s["calls_per_second"],
                local_gpus=s["local_gpus"],
                local_cores=s["local_cores"],
                **options,
            )
        return self._executors[backend, host]

    def attach(self, rec: JobRecord) -> JobFuture:
        """A future following ``rec`` (see :meth:`Executor.attach`)."""
        ex = self.executor_on(rec.backend, rec.host)
        future = ex.attach(rec.key)
        self.follow(ex, future)
        return future

    def follow(self, ex: Executor, future: JobFuture) -> None:
        self._followed.setdefault(id(ex), []).append(future)

    def _host_options(self, host: str) -> dict[str, Any]:
        """How to reach ``host``: the selected settings if they name it, else the first
        profile that does, else nothing (``~/.ssh/config`` and the defaults)."""
        if self.settings["host"] == host:
            return {k: self.settings[k] for k in REACH}
        for prof in self.settings.files.profiles.values():
            if prof.values.get("host") == host:
                return {k: v for k, v in prof.values.items() if k in REACH}
        return {}

    def reachable(self, host: str) -> bool:
        """Whether records of ``host`` are refreshed: this machine's, and the selected
        host's (others would each need an SSH connection)."""
        return host == self.here or host == self.settings["host"]

    def refresh(self, records: Iterable[JobRecord]) -> None:
        """One status pass for each backend and reachable host of the unfinished records
        given. Records of other hosts are shown as last seen (a note says so)."""
        groups = sorted({(r.backend, r.host) for r in records if not r.state.finished})
        skipped = sorted({h for _, h in groups if not self.reachable(h)})
        for backend, host in groups:
            if host in skipped:
                continue
            try:
                self.executor_on(backend, host).refresh()
            except HpcexecError as e:
                note(f"{backend} jobs on {host} are shown as last seen: {one_line(e)}")
        if skipped and not self.out.as_json:
            note(
                f"jobs on {', '.join(skipped)} are shown as last seen; give --host (or a "
                f"profile) naming one to ask it"
            )

    def close(self) -> None:
        """Let go of executors: jobs outlive the command; followed futures are dropped."""
        for ex in [*self._executors.values(), *self._submitters]:
            done = all(f.done() for f in self._followed.get(id(ex), ()))
            try:
                ex.shutdown(wait=done)  # not waiting on jobs still running
            except HpcexecError as e:  # closing a dropped connection, say
                log.debug("closing an executor: %s", e)
        self._executors.clear()
        self._submitters.clear()
        if self._store is not None:
            self._store.close()


def parse_states(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [s.strip() for v in values for s in v.split(",") if s.strip()]


def one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
