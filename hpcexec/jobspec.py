"""What one job about to be submitted is: its :class:`Job` (kind, cache key, name,
resources, payload or shell body), built from a call, a shell body or a job file with an
executor view's job options (:class:`~hpcexec.options.JobOptions`).
"""

from __future__ import annotations

import json
import os
import re
import reprlib
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import payload as pl
from .checkpoint import Checkpointable
from .errors import ResourceError
from .future import JobFuture
from .layout import RESERVED
from .options import JobOptions
from .resources import Resources
from .runner import FutureRef
from .script import placeholder_names
from .session import Session

_DIRECTIVE_RE = re.compile(r"^#(\$|[A-Z]{2,})\s")


@dataclass
class Job:
    """One job about to be looked up or submitted."""

    kind: str  # call | chunk | shell
    key: str
    name: str
    res: Resources
    n: int  # futures it serves
    file_bytes: bytes | None = None  # payload (None for shell jobs)
    body: str | None = None  # shell body
    check: bool = True
    futures: list[JobFuture] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)  # more files beside the script
    directives: tuple[str, ...] = ()  # of a submitted job file, before hpcexec's own
    requeue: int = 0  # runs again after ending checkpointed at its warning (JobMaker.requeue)
    summary: str = ""  # what it runs, in short (the record's summary)
    values: dict[str, str | None] = field(default_factory=dict)  # the user's vars
    index: int | None = None  # its place in a map: HPCEXEC_ARRAY_INDEX, {array_index}
    index_step: int = 1  # between the indices of a chunk's calls (a range's step)
    script: str | None = None  # its job script, once Submitter.check rendered it


def extract_futures(
    calls: list[tuple[tuple, dict]],
) -> tuple[list[tuple[tuple, dict]], list[JobFuture]]:
    """Replace JobFutures in arguments (also inside lists, tuples and dicts) by references
    the job resolves from their result files; return the futures as dependencies."""
    found: list[JobFuture] = []

    def swap(obj: Any) -> Any:
        if isinstance(obj, JobFuture):
            found.append(obj)
            return FutureRef(obj.jobdir, obj.index or 0, obj.key)
        if type(obj) in (list, tuple):
            return type(obj)(swap(x) for x in obj)
        if type(obj) is dict:
            return {k: swap(v) for k, v in obj.items()}
        return obj

    out = [(swap(args), swap(kwargs)) for args, kwargs in calls]
    return out, list({id(f): f for f in found}.values())


def file_directives(text: str) -> tuple[str, ...]:
    """The scheduler directives (``#SBATCH``, ``#$``, ``#PBS``, ``#BSUB``, ...) in a job
    file's leading block of comments and blank lines, where schedulers read them."""
    out = []
    for line in text.splitlines()[1 if text.startswith("#!") else 0 :]:
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            break
        if _DIRECTIVE_RE.match(stripped):
            out.append(stripped)
    return tuple(out)


def file_interpreter(text: str) -> str:
    """The command line a job file's ``#!`` names (``/bin/bash`` without one)."""
    first = text.split("\n", 1)[0]
    if first.startswith("#!") and first[2:].strip():
        return " ".join(shlex.quote(w) for w in first[2:].split())
    return "/bin/bash"


SUMMARY = 100  # characters of a record's summary
_LAUNCHERS = {"python", "python3", "bash", "sh", "srun", "mpirun", "mpiexec", "Rscript", "julia"}


def call_summary(fn: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> str:
    """``module.function(args...)``, the arguments in short (reprlib)."""
    short = reprlib.Repr()
    short.maxstring, short.maxother, short.maxlist, short.maxdict = 24, 24, 4, 4
    words = [short.repr(a) for a in args] + [f"{k}={short.repr(v)}" for k, v in kwargs.items()]
    qual = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    mod = getattr(fn, "__module__", None) or type(fn).__module__
    text = f"{qual if mod in ('__main__', 'builtins', None) else f'{mod}.{qual}'}"
    return _cut(f"{text}({', '.join(words)})")


def shell_summary(body: str) -> str:
    """A shell body's first line that is neither blank nor a comment."""
    lines = [ln.strip() for ln in body.splitlines()]
    return _cut(next((ln for ln in lines if ln and not ln.startswith("#")), ""))


def shell_name(body: str) -> str:
    """A shell job's default name: its command (``./prep.sh in`` -> ``prep.sh``; a launcher
    such as ``python train.py`` -> ``train.py``)."""
    words = shell_summary(body).split()
    while len(words) > 1 and os.path.basename(words[0]) in _LAUNCHERS:
        words = [w for w in words[1:] if not w.startswith("-")] or words[:1]
    return safe_name(os.path.basename(words[0])) if words else "shell"


def _cut(text: str) -> str:
    return text if len(text) <= SUMMARY else text[: SUMMARY - 3] + "..."


def safe_name(text: str) -> str:
    """``text`` as a job name schedulers accept."""
    name = re.sub(r"[^\w.+-]+", "_", text).strip("_")
    return name[:64] or "job"


class JobMaker:
    """Builds the jobs of one executor view: its session, resources and job options."""

    def __init__(self, session: Session, res: Resources, opts: JobOptions) -> None:
        self.session = session
        self.res = res
        self.opts = opts

    def key(self, *parts: str | bytes) -> str:
        """The cache key of work ``parts`` (see DESIGN.md, "Cache keys")."""
        after = sorted(f.key for f in self.opts.after)
        if after:  # the same work after other jobs is other work (futures in arguments are
            parts = (*parts, "after:" + ",".join(after))  # in the payload already)
        if self.res.ntasks > 1:  # a callable then runs in each task: other work
            parts = (*parts, f"tasks:{self.res.ntasks}")
        aux = self.opts.aux_scripts or {}
        if aux:  # the job may run them (a prologue or an epilogue runs outside the job)
            parts = (*parts, "aux:" + json.dumps(aux, sort_keys=True))
        # a scheduling resource, or a value of the user's, is in the key only where the
        # job's text fills it in
        texts = [p for p in parts if isinstance(p, str)] + list(aux.values())
        keep = set().union(*map(placeholder_names, texts))
        used = {k: v for k, v in (self.opts.vars or {}).items() if k in keep}
        if used:
            parts = (*parts, "vars:" + json.dumps(used, sort_keys=True))
        return pl.cache_key(
            *parts, self.res.canonical(keep), self.session.backend.name, self.session.host
        )

    def payload(
        self, fn: Callable[..., Any], calls: list[tuple[tuple, dict]], kind: str, refs: bool
    ) -> tuple[bytes, bytes]:
        """The payload file's bytes and the bytes its key is made of."""
        return pl.dumps_payload(
            fn,
            calls,
            kind=kind,
            sys_path=self.session.sys_path,
            by_value=self.session.by_value(),
            refs=refs,
        )

    def call(
        self, fn: Callable[..., Any], args: tuple, kwargs: dict[str, Any]
    ) -> tuple[Job, list[JobFuture]]:
        """The job of one call, and the futures in its arguments."""
        no_index_paths(self.res)
        calls, deps = extract_futures([(args, kwargs)])
        file_bytes, body = self.payload(fn, calls, "call", bool(deps))
        key = self.opts.key or self.key("call", body)
        name = self.res.name or safe_name(getattr(fn, "__name__", type(fn).__name__))
        job = Job(
            "call",
            key,
            name,
            self.res,
            1,
            file_bytes=file_bytes,
            requeue=self.requeue(fn),
            values=dict(self.opts.vars or {}),
        )
        job.summary = call_summary(fn, args, kwargs)
        return job, deps

    def requeue(self, fn: Callable[..., Any] | None) -> int:
        """How many times the job of ``fn`` (None: a shell body or a job file) ends
        checkpointed at its warning signal and runs again: ``requeue`` where it can, 0 where
        it cannot. A call of one task of a :class:`~hpcexec.checkpoint.Checkpointable`
        saves its state; a shell job opts in with ``requeue`` (its body is restartable)."""
        if fn is None or (isinstance(fn, Checkpointable) and self.res.ntasks == 1):
            return self.opts.requeue
        return 0

    def shell(self, body: str, check: bool) -> Job:
        """The job of a shell body."""
        no_index_paths(self.res)
        if not isinstance(body, str) or not body.strip():
            raise ResourceError("submit_shell needs a non-empty shell body string")
        if "\0" in body:
            raise ResourceError("the shell body contains a NUL byte")
        key = self.opts.key or self.key("shell", body)
        return self._shell_job(key, shell_name(body), body, check, summary=shell_summary(body))

    def _shell_job(self, key: str, name: str, body: str, check: bool, **more: Any) -> Job:
        """A shell job of this view (``name``: unless the resources name it)."""
        return Job(
            "shell",
            key,
            self.res.name or name,
            self.res,
            1,
            body=body,
            check=check,
            requeue=self.requeue(None),
            values=dict(self.opts.vars or {}),
            **more,
        )

    def file(self, path: str | os.PathLike, check: bool) -> Job:
        """The job of a job file on this machine (copied into its job directory)."""
        no_index_paths(self.res)
        try:
            data = Path(path).expanduser().read_bytes()
        except OSError as e:
            raise ResourceError(f"cannot read the job file {path}: {e.strerror or e}") from e
        try:
            text = data.decode()
        except UnicodeDecodeError:
            raise ResourceError(f"the job file {path} is not UTF-8 text") from None
        if "\0" in text or not text.strip():
            raise ResourceError(f"the job file {path} is empty or holds NUL bytes")
        copy = Path(path).name
        copy = copy if copy not in RESERVED and not copy.startswith(".") else f"user_{copy}"
        key = self.opts.key or self.key("file", data)
        jobdir = self.session.job_dir(key)
        body = f"{file_interpreter(text)} {shlex.quote(os.path.join(jobdir, copy))}"
        return self._shell_job(
            key,
            safe_name(Path(path).stem),
            body,
            check,
            files={copy: data},
            directives=file_directives(text),
            summary=_cut(f"{path} (a job file)"),
        )

    def chunks(
        self,
        fn: Callable[..., Any],
        calls: list[tuple[tuple, dict]],
        chunksize: int,
        refs: bool,
        base: str,
        indices: Sequence[int] | None = None,
    ) -> list[Job]:
        """The jobs of a ``map``: ``chunksize`` calls each, with their futures. Each job's
        index (``indices`` of its first call; default: its place, from 0) is its
        ``HPCEXEC_ARRAY_INDEX`` and fills ``{array_index}`` in its path resources."""
        jobs = []
        for start in range(0, len(calls), chunksize):
            part = calls[start : start + chunksize]
            kind = "chunk" if chunksize > 1 else "call"
            index = indices[start] if indices is not None else start
            step = indices[start + 1] - index if indices is not None and len(part) > 1 else 1
            maker = JobMaker(self.session, index_paths(self.res, index), self.opts)
            file_bytes, body = maker.payload(fn, part, kind, refs)
            key = maker.key(kind, body)
            name = base if chunksize == 1 else f"{base}[{start}:{start + len(part)}]"
            job = Job(
                kind,
                key,
                name,
                maker.res,
                len(part),
                file_bytes=file_bytes,
                values=dict(self.opts.vars or {}),
                index=index,
                index_step=step,
            )
            first = call_summary(fn, *part[0]) if part else ""
            job.summary = first if len(part) == 1 else _cut(f"{first} and {len(part) - 1} more")
            job.futures = [
                JobFuture(self.session.control, key, i if kind == "chunk" else None)
                for i in range(len(part))
            ]
            jobs.append(job)
        if not jobs and not callable(fn):
            raise TypeError(f"{fn!r} is not callable")
        return jobs


INDEX_PLACEHOLDER = "{array_index}"
_INDEXED_PATHS = ("stdout", "stderr", "workdir")


def index_paths(res: Resources, index: int) -> Resources:
    """``res`` with ``{array_index}`` in its path resources replaced by ``index`` (DRMAA's
    ``PARAMETRIC_INDEX`` in the output paths of a bulk job)."""
    changed = {
        k: v.replace(INDEX_PLACEHOLDER, str(index))
        for k in _INDEXED_PATHS
        if isinstance(v := getattr(res, k), str) and INDEX_PLACEHOLDER in v
    }
    return res.replace(**changed) if changed else res


def index_paths_used(res: Resources) -> list[str]:
    """The path resources of ``res`` that use ``{array_index}``."""
    return [k for k in _INDEXED_PATHS if INDEX_PLACEHOLDER in (getattr(res, k) or "")]


def no_index_paths(res: Resources) -> None:
    """Refuse ``{array_index}`` in the paths of a job that is no element of a ``map``."""
    used = index_paths_used(res)
    if used:
        raise ResourceError(
            f"{used[0]} uses {INDEX_PLACEHOLDER}, which only the jobs of a map have (each its "
            f"own): give a path without it, or map over the inputs"
        )


def map_chunksize(res: Resources, chunksize: Any, default: Callable[[], int]) -> int:
    """A ``map``'s calls per job: ``chunksize`` checked, else ``default()``; one where a
    path resource uses ``{array_index}`` (a file per call needs a job per call)."""
    indexed = index_paths_used(res)
    if chunksize is None:
        return 1 if indexed else default()
    if isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1:
        raise ValueError("chunksize must be >= 1.")
    if indexed and chunksize > 1:
        raise ResourceError(
            f"{indexed[0]} uses {INDEX_PLACEHOLDER}, a file per call: a map with it runs a "
            f"job per call; drop chunksize={chunksize}"
        )
    return chunksize
