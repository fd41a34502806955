"""``hpcexec resources``: every resource key, its type, the forms it accepts and how each
backend renders an example value.

Nothing here is written by hand per backend: the keys, types, forms and examples come from
:data:`~hpcexec.resources.RESOURCE_TABLE`, and each rendering is what the backend itself
produces for the example (its ``check``, its ``directives`` from its rule table, and its job
script), compared with a job that leaves the key unset. So the help cannot drift from the code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, TextIO

from ..backends import schedulers
from ..backends.base import Backend, SchedulerBackend, SubmitSpec
from ..backends.local import LocalBackend
from ..errors import BackendError
from ..layout import SUBMIT_SCRIPT, JobLayout
from ..resources import RESOURCE_TABLE, Resources
from ..script import render

#: where the example job lives (a single job submitted from a project directory)
WORKDIR = "/home/me/project"
JOBDIR = "/home/me/project/.hpcexec/jobs/KEY"
HELP = "list every resource key, its type, accepted forms and each backend's rendering"


@dataclass(frozen=True)
class Rendering:
    """How one backend expresses one key's example value."""

    backend: str
    refused: str | None = None  # the backend's BackendError: it cannot express the value
    directives: tuple[str, ...] = ()  # directive lines the value adds
    drops: tuple[str, ...] = ()  # directive lines the value removes
    script: tuple[str, ...] = ()  # job script lines the value adds
    note: str | None = None  # what the local queue does with it, or that it is ignored


@dataclass(frozen=True)
class Row:
    """One resource key: its table row and every backend's rendering of its example."""

    key: str
    kind: str
    accepts: str
    example: Any
    renderings: tuple[Rendering, ...]


def backends(name: str | None = None) -> dict[str, Backend]:
    """The backends to describe: every one (local first), or the one named."""
    found: dict[str, Backend] = {
        "local": LocalBackend(1024, "localhost", gpu_ids=[str(i) for i in range(8)])
    }
    found.update((n, cls()) for n, cls in schedulers().items())
    if name is None:
        return found
    if name not in found:
        raise BackendError(f"unknown backend {name!r}: name one of {', '.join(found)}")
    return {name: found[name]}


def example_spec(res: Resources) -> SubmitSpec:
    """A single job's submission with ``res``, as the scheduler driver builds one."""
    lay = JobLayout(JOBDIR, res.workdir or WORKDIR, res.stdout, res.stderr, bool(res.join_output))
    return SubmitSpec(
        lay.file(SUBMIT_SCRIPT), res, res.name or "job", lay.stdout, lay.stderr, lay.workdir
    )


def job_script(backend: Backend, res: Resources) -> list[str]:
    """The lines of the job script ``backend`` writes for a shell job with ``res``."""
    spec = example_spec(res)
    parts = backend.script_parts(
        res,
        name=spec.name,
        jobdir=JOBDIR,
        stdout=spec.stdout,
        stderr=spec.stderr,
        workdir=spec.workdir,
    )
    return render(
        parts,
        res,
        jobdir=JOBDIR,
        workdir=spec.workdir,
        submit_host="login1",
        name=spec.name,
        shell_body="./run.sh",
    ).splitlines()


def _added(lines: list[str], base: list[str]) -> tuple[str, ...]:
    return tuple(x for x in lines if x not in base)


def render_key(backend: Backend, key: str, value: Any) -> Rendering:
    """How ``backend`` renders ``key=value``: refused, or the directive and job script lines
    it adds (and drops) against a job without it, or what the local queue does with it."""
    res = Resources.create(**{key: value})
    name = backend.name
    try:
        backend.check(res)
    except BackendError as e:
        return Rendering(name, refused=str(e))
    script = _added(job_script(backend, res), job_script(backend, Resources()))
    if isinstance(backend, SchedulerBackend):
        lines = backend.directives(example_spec(res))
        base = backend.directives(example_spec(Resources()))
        return Rendering(
            name, directives=_added(lines, base), drops=_added(base, lines), script=script
        )
    note = None
    if isinstance(backend, LocalBackend):
        if key in backend.ignored(res):
            note = "ignored: it means nothing without a scheduler"
        else:
            note = backend.applied.get(key)
    return Rendering(name, script=script, note=note)


def rows(backend: str | None = None) -> list[Row]:
    """Every key of the resource table with each backend's (or the one named) rendering."""
    chosen = backends(backend)
    return [
        Row(
            spec.key,
            spec.kind,
            spec.doc,
            spec.example,
            tuple(render_key(b, spec.key, spec.example) for b in chosen.values()),
        )
        for spec in RESOURCE_TABLE.values()
    ]


def as_data(found: list[Row]) -> list[dict[str, Any]]:
    """JSON-friendly rows: key, type, accepts, example, and per backend its rendering."""
    return [
        {
            "key": r.key,
            "type": r.kind,
            "accepts": r.accepts,
            "example": r.example,
            "backends": {
                x.backend: {
                    k: list(v) if isinstance(v, tuple) else v
                    for k, v in asdict(x).items()
                    if k != "backend"
                }
                for x in r.renderings
            },
        }
        for r in found
    ]


def rendering_lines(x: Rendering) -> list[str]:
    """A rendering as the lines the text output shows for it."""
    if x.refused:
        return [f"refused: {x.refused}"]
    lines = list(x.directives) + [f"without {d}" for d in x.drops]
    lines += [f"job script: {s}" for s in x.script]
    if x.note:
        lines.append(x.note)
    return lines or ["(nothing to render)"]


def as_text(found: list[Row]) -> str:
    """One block per key: its type and forms, the example, then each backend's rendering."""
    width = max((len(x.backend) for r in found for x in r.renderings), default=0)
    blocks = []
    for r in found:
        lines = [f"{r.key} ({r.kind}): {r.accepts}", f"  example: {r.key}={r.example!r}"]
        for x in r.renderings:
            for i, text in enumerate(rendering_lines(x)):
                lines.append(f"  {(x.backend if i == 0 else '').ljust(width)}  {text}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def print_resources(stream: TextIO, *, backend: str | None = None, as_json: bool = False) -> None:
    """Write the help to ``stream``, as text or JSON."""
    import json

    found = rows(backend)
    if as_json:
        json.dump(as_data(found), stream, indent=2, default=str)
    else:
        stream.write(as_text(found))
    stream.write("\n")


def cmd_resources(args: argparse.Namespace, ctx: Any = None) -> int:
    """The ``resources`` command: with a CLI context its output (``--json`` too), else
    standard output."""
    found = rows(getattr(args, "backend", None))
    if ctx is not None:
        ctx.out.emit(as_data(found), as_text(found))
    else:
        print_resources(
            sys.stdout,
            backend=getattr(args, "backend", None),
            as_json=bool(getattr(args, "json", False)),
        )
    return 0


def register(
    subparsers: Any,
    common: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.ArgumentParser:
    """Add the ``resources`` command to an argparse subparsers object; its function is in
    the parser's defaults as ``func``. ``common`` adds the command line's global options to
    the new parser (then its ``--json`` and ``--backend`` serve). ``--json`` and ``--backend``
    set nothing unless given, so the same global options given before the command stand."""
    p = subparsers.add_parser("resources", help=HELP, description=HELP)
    if common is not None:
        common(p)
    for flags, kw in (
        (("--backend",), dict(metavar="NAME", help="show only this backend's rendering")),
        (("--json",), dict(action="store_true", help="print JSON")),
    ):
        try:
            p.add_argument(*flags, default=argparse.SUPPRESS, **kw)
        except argparse.ArgumentError:
            pass  # given by ``common`` already
    p.set_defaults(func=cmd_resources)
    return p


COMMAND: Callable[[argparse.Namespace, Any], int] = cmd_resources
