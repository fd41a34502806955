"""Job scripts: a shebang, the backend's directives, the core ``HPCEXEC_*`` variables, then
the body. Every user string that reaches the shell is quoted here."""

from __future__ import annotations

import os
import re
import shlex
import signal
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .attempts import attempt_dir
from .checkpoint import REQUEUED_REASON, WARNING
from .errors import ResourceError
from .layout import EXITCODE, RESTARTS, STARTED, USAGE
from .resources import RESOURCE_TABLE, Resources

_PLACEHOLDER = re.compile(r"(?<![$\\{])\{([a-z_][a-z0-9_]*)\}")
CORE_VARS = (
    "HPCEXEC_JOB_ID",
    "HPCEXEC_JOB_NAME",
    "HPCEXEC_WORKDIR",
    "HPCEXEC_SUBMIT_HOST",
    "HPCEXEC_NODELIST",
    "HPCEXEC_ARRAY_INDEX",
)


def current_job() -> str | None:
    """The id of the job this process runs in (``HPCEXEC_JOB_ID``, which every job script
    and a warm start set and child processes inherit), or None outside any job."""
    return os.environ.get("HPCEXEC_JOB_ID") or None


def fill_placeholders(body: str, values: Mapping[str, str], declared: Iterable[str] = ()) -> str:
    """Replace ``{key}`` for known keys with the shell-quoted value. Other braces, such as
    ``${VAR}``, ``{a,b}`` or awk's ``{print $1}``, are left alone. A resource's name
    (``{mem}``) or a ``declared`` name (the user's ``vars``) the job has no value for is
    refused: left as written, the job would see the braces, not a value."""
    known = set(RESOURCE_TABLE).union(declared)
    unset = sorted(n for n in placeholder_names(body) if n in known and n not in values)
    if unset:
        names = ", ".join(f"{{{n}}}" for n in unset)
        first = unset[0]
        how = f"options({first}=...)" if first in RESOURCE_TABLE else f"vars={{{first!r}: ...}}"
        raise ResourceError(
            f"the job's text uses {names} but the job sets no {', '.join(unset)}: give "
            f"{'it' if len(unset) == 1 else 'them'} (e.g. {how}), or remove the placeholder"
        )

    def sub(m: re.Match[str]) -> str:
        key = m.group(1)
        return shlex.quote(values[key]) if key in values else m.group(0)

    return _PLACEHOLDER.sub(sub, body)


def placeholder_names(text: str) -> set[str]:
    """The ``{key}`` names ``text`` uses (whether or not they are known keys)."""
    return set(_PLACEHOLDER.findall(text))


def env_lines(res: Resources) -> list[str]:
    """The lines exporting the ``env`` resource."""
    return [f"export {k}={shlex.quote(v)}" for k, v in res.env]


def placeholder_values(
    res: Resources, name: str, jobdir: str, user: Mapping[str, str | None] | None = None
) -> dict[str, str]:
    """What ``{key}`` stands for in a job's shell body and in the scripts around it: its
    resources, ``name``, ``jobdir`` and the user's own values (``vars``; None: unset)."""
    mine = {k: v for k, v in (user or {}).items() if v is not None}
    return {**mine, **res.placeholders(), "name": name, "jobdir": jobdir}


@dataclass(frozen=True)
class ScriptParts:
    """What the backend contributes to a script."""

    directives: list[str]
    job_id_expr: str  # shell expressions (unquoted) reading the scheduler's own variables
    nodelist_expr: str
    array_index_expr: str
    prologue: str = ""  # backend lines run before the core variables are set


@dataclass(frozen=True)
class TaskLaunch:
    """How the script of a multi-task callable starts its tasks: the backend's launcher
    (an argv prefix such as ``srun --kill-on-bad-exit=1``), the job's shape, and the
    interpreter that picks the job's free port (:mod:`hpcexec.launch`)."""

    launcher: tuple[str, ...]
    python: str
    ntasks: int
    nodes: int
    ppn: int

    def lines(self, command: str) -> tuple[str, str]:
        """The line choosing the port, and the launcher's line running ``command`` (the
        runner's, quoted) once per task with the job's facts: the first node is this
        host, where every scheduler runs the job script."""
        port = f"_hx_port=$({shlex.quote(self.python)} -m hpcexec.launch port) || _hx_port=29500"
        facts = f'--tasks {self.ntasks} {self.nodes} {self.ppn} "${{HOSTNAME:-localhost}}"'
        run = " ".join(shlex.quote(w) for w in self.launcher)
        return port, f'{run} {command} {facts} "$_hx_port"'


def render(
    parts: ScriptParts,
    res: Resources,
    *,
    jobdir: str,
    workdir: str,
    submit_host: str,
    name: str,
    command: str | None = None,
    shell_body: str | None = None,
    after: Sequence[str] = (),
    tasks: TaskLaunch | None = None,
    restartable: bool = False,
    warned: bool = False,
    user_values: Mapping[str, str | None] | None = None,
    index: int | None = None,
    index_step: int = 1,
) -> str:
    """The whole job script. Exactly one of ``command`` (an argv line already quoted, run with
    ``exec``) and ``shell_body`` (user shell text, run in a subshell whose exit code is
    recorded) is given. ``after`` lists the job directories of jobs that must have completed:
    the script checks their exit-code files first, for schedulers whose dependencies wait
    only for the end of a job, not its success. ``tasks``: ``command`` is run once per task
    by the launcher, and the script writes the exit-code file after it. ``restartable``: the
    shell body runs again after ending checkpointed at the warning signal (``requeue=N``),
    see :func:`_restartable_run`. ``warned``: the job asks for that signal; until its runner
    or its body's trap takes it, it is ignored, never fatal. ``user_values``: the job's
    ``vars`` for its own ``{placeholders}``. ``index``: its place in its map, its
    ``HPCEXEC_ARRAY_INDEX`` (None: the scheduler's array element, if any)."""
    lines = ["#!/bin/bash", *parts.directives, "# written by hpcexec"]
    if warned or restartable:
        lines.append(f"trap '' {WARNING.name.removeprefix('SIG')}")
    if res.soft_time:  # Grid Engine's SIGUSR1 at it: the body's (or function's) to take
        lines.append("trap '' USR1")
    if parts.prologue:
        lines.append(parts.prologue)
    lines += _core_exports(parts, name=name, workdir=workdir, submit_host=submit_host)
    if index is not None:  # a chunk's runner counts its calls on from it by the step
        lines.append(f"export HPCEXEC_ARRAY_INDEX={index} HPCEXEC_INDEX_STEP={index_step}")
    lines += env_lines(res)
    jd = shlex.quote(jobdir)
    if restartable:
        lines += _restart_count(jd)
    lines.append(f'printf \'%s\\n\' "$HPCEXEC_JOB_ID" "${{HOSTNAME:-}}" > {jd}/{STARTED}')
    if after:
        lines += _dependency_check(after, jd)
    lines.append(f"cd {shlex.quote(workdir)} || exit 1")
    if command is not None and tasks is not None:
        port, run = tasks.lines(command)
        lines += [port, *_shell_run(run, jd, "a task failed: the launcher exited with code")]
    elif command is not None:
        lines.append(f"exec {command}")
    else:
        assert shell_body is not None
        values = placeholder_values(res, name, jobdir, user_values)
        body = fill_placeholders(shell_body, values, user_values or ())
        lines += _restartable_run(body, jd) if restartable else _shell_run(body, jd)
    return "\n".join(lines) + "\n"


def _core_exports(parts: ScriptParts, *, name: str, workdir: str, submit_host: str) -> list[str]:
    """The lines setting ``CORE_VARS``."""
    q = shlex.quote
    return [
        f"export HPCEXEC_JOB_ID={parts.job_id_expr}",
        f"export HPCEXEC_JOB_NAME={q(name)}",
        f"export HPCEXEC_WORKDIR={q(workdir)}",
        f"export HPCEXEC_SUBMIT_HOST={q(submit_host)}",
        f"export HPCEXEC_NODELIST={parts.nodelist_expr}",
        f"export HPCEXEC_ARRAY_INDEX={parts.array_index_expr}",
    ]


def _dependency_check(after: Sequence[str], jd: str) -> list[str]:
    """Lines that end the job, recording why, unless every job directory in ``after`` holds
    exit code 0 (``jd``: this job's directory, quoted)."""
    dirs = " ".join(shlex.quote(d) for d in after)
    return [
        f"for _hx_dep in {dirs}; do",
        f'  _hx_rc=; read -r _hx_rc < "$_hx_dep/{EXITCODE}" 2>/dev/null',
        '  if [ "$_hx_rc" != 0 ]; then',
        (
            f"    printf '%s\\n%s\\n' 1 \"dependency ${{_hx_dep##*/}} did not complete "
            f'(exit code ${{_hx_rc:-none}}); this job did not run" {_into_exitcode(jd)}'
        ),
        "    exit 1",
        "  fi",
        "done",
    ]


def _shell_run(body: str, jd: str, failed: str = "") -> list[str]:
    """Lines running a shell body in a subshell and recording its exit code, and the signal
    that ended it, in the job directory ``jd`` (quoted); ``failed``: the reason recorded for
    a non-zero exit code, followed by the code (none given: no reason)."""
    why = "${hpcexec_sig:+terminated by SIG$hpcexec_sig}"
    lines = ["trap 'hpcexec_sig=TERM' TERM", "(", body.rstrip("\n"), ")", "hpcexec_rc=$?"]
    if failed:
        lines.append(
            f'hpcexec_why="{why}"; [ -n "$hpcexec_why" ] || [ "$hpcexec_rc" = 0 ] || '
            f'hpcexec_why="{failed} $hpcexec_rc"'
        )
        why = "$hpcexec_why"
    return [
        *lines,
        *_usage_lines(jd),
        f'printf \'%s\\n%s\\n\' "$hpcexec_rc" "{why}" {_into_exitcode(jd)}',
        'exit "$hpcexec_rc"',
    ]


def _usage_lines(jd: str) -> list[str]:
    """Lines writing the usage file of a job no runner measured (a shell body; a runner's
    file is kept): the CPU time of what it ran and waited for (bash's ``times``, run in this
    shell: a subshell's would count nothing), in bash alone (a job's PATH may lack awk). Its
    wall time is the record's, its memory the scheduler accounting's to tell."""
    tmp, usage = f"{jd}/.{USAGE}.tmp", f"{jd}/{USAGE}"
    return [
        f"if [ ! -e {usage} ] && times > {tmp} 2>/dev/null; then",
        f"  {{ read -r _ _; read -r hpcexec_u hpcexec_s; }} < {tmp}",
        # "1m2.345s" -> "62.345" (a locale's decimal comma read as a point)
        "  hpcexec_secs() { local v=${1%s} m; m=${v%%m*}; v=${v#*m}; v=${v/,/.}; "
        'echo "$((10#$m * 60 + 10#${v%%.*})).${v#*.}"; }',
        f'  printf \'user_s %s\\nsys_s %s\\n\' "$(hpcexec_secs "$hpcexec_u")" '
        f'"$(hpcexec_secs "$hpcexec_s")" > {tmp} && mv -f {tmp} {usage}',
        "fi",
    ]


def _restart_count(jd: str) -> list[str]:
    """Lines exporting ``HPCEXEC_RESTART``, the number of earlier runs of the job: a run
    that finds the files of an earlier one in its job directory ``jd`` (its ``started``
    file, kept where the scheduler requeued the job itself; ``attempt.1/``, where the client
    ran it again; or lines in ``restarts``) adds a line to ``restarts`` and drops the earlier
    run's exit-code file, as the runner does when it resumes from a checkpoint."""
    return [
        f"hpcexec_restart=0; [ -f {jd}/{RESTARTS} ] && "
        f"hpcexec_restart=$(( $(wc -l < {jd}/{RESTARTS}) ))",
        f'if [ -e {jd}/{STARTED} ] || [ -d {jd}/{attempt_dir(1)} ] || [ "$hpcexec_restart" != 0 ]',
        "then",
        f"  rm -f {jd}/{EXITCODE}",
        f'  printf \'%s %s\\n\' "$(date +%s)" "$HPCEXEC_JOB_ID" >> {jd}/{RESTARTS}',
        "  hpcexec_restart=$((hpcexec_restart + 1))",
        "fi",
        "export HPCEXEC_RESTART=$hpcexec_restart",
    ]


def _restartable_run(body: str, jd: str) -> list[str]:
    """Lines running a shell body that may be stopped at the warning signal (SIGUSR2) and
    run again. Bash runs a trap only between foreground commands, so the body runs in the
    background (its stdin kept) and the script waits for it; on the warning every process of
    the job's process group but the script gets SIGTERM, and the job records exit code 140
    and a reason starting ``checkpointed``, whatever the body's own code. A wrapper that
    outlives the body's signals writes the body's exit code to a file (``wait`` may lose the
    status of a child that ends while a trap runs)."""
    rc = f"{jd}/.{EXITCODE}.body"
    warn = WARNING.name.removeprefix("SIG")
    term = "hpcexec_sig=TERM"
    return [
        f"trap '{term}' TERM",
        # once: a warning sent again (the local queue repeats one that may have been lost
        # while the job started) must not signal a body saving its state a second time
        f'trap \'[ -n "$hpcexec_warned" ] || {{ hpcexec_warned=1; trap "" TERM; '
        f'kill -TERM 0; trap "{term}" TERM; }}\' {warn}',
        f"rm -f {rc}",
        f"{{ trap : TERM {warn}",
        "(",
        body.rstrip("\n"),
        ")",
        f"printf '%s\\n' \"$?\" > {rc}",
        "} <&0 &",
        "hpcexec_pid=$!",
        'while kill -0 "$hpcexec_pid" 2>/dev/null; do wait "$hpcexec_pid"; done',
        f"trap '' {warn}",
        f"hpcexec_rc={128 + signal.SIGTERM}; read -r hpcexec_rc 2>/dev/null < {rc}",
        'hpcexec_why="${hpcexec_sig:+terminated by SIG$hpcexec_sig}"',
        f'[ -z "$hpcexec_warned" ] || {{ hpcexec_rc={128 + WARNING}; hpcexec_why={shlex.quote(REQUEUED_REASON)}; }}',
        f'printf \'%s\\n%s\\n\' "$hpcexec_rc" "$hpcexec_why" {_into_exitcode(jd)}',
        'exit "$hpcexec_rc"',
    ]


def _into_exitcode(jd: str) -> str:
    """The redirection that writes a printf's output into the job's exit-code file whole."""
    return f"> {jd}/.{EXITCODE}.tmp && mv -f {jd}/.{EXITCODE}.tmp {jd}/{EXITCODE}"
