"""A warm starter for local Python jobs: ``python -m hpcexec.forkserver NAME``.

Starting an interpreter and importing cloudpickle costs tens of milliseconds per job; a
short job pays that many times over. The fork server is an interpreter that has done so
once and forks one child per job. Each child is a job exactly as if its script had run:
its own process in its own session (it outlives the client and the server), stdout and
stderr to the job's files, the job's working directory and environment, the ``HPCEXEC_*``
variables, its job id and started files (:mod:`hpcexec.recovery`), then the runner.

The server listens on an abstract Unix socket (Linux), answers only its own user (peer
credentials), records a child killed by a signal in the job's exit-code file the way a
scheduler's accounting would, and exits after ``IDLE`` seconds with no request and no child.
There is one server per interpreter, copy of hpcexec and job environment (the ``HPCEXEC_*``
variables, which differ per job, aside): the server is started with that environment, so what
it imports ahead of its jobs (:mod:`hpcexec.preload`, what earlier jobs imported) sees the
same variables (``OMP_NUM_THREADS``...) as a job's own import would. A request that asks for
no preloading (a job holding GPUs: an import that initialised CUDA would leave a forked
child unable to use it) gets a server that preloads nothing.
This module is imported by the server only; clients use :func:`spawn` and :func:`stop`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import select
import signal
import socket
import struct
import sys
import time

from . import preload
from .checkpoint import WARNING
from .jobfiles import killed_by, write_atomic, write_started
from .layout import JobLayout, cannot_start

log = logging.getLogger(__name__)

IDLE = float(os.environ.get("HPCEXEC_FORKSERVER_IDLE", "120"))
_CONNECT_TIMEOUT = 5.0
_REPLY_TIMEOUT = 120.0  # a reply may wait for one module import (a large one takes seconds)
_ASK_TIMEOUT = 30.0  # seconds an interpreter may take to describe itself
_MAX_REQUEST = 4 << 20  # bytes; a request is a job's paths and environment


def server_prefix(python: str) -> str:
    """The start of the names of the servers for jobs run with ``python``: one per user,
    environment (the interpreter as given, its prefixes and import path) and copy of hpcexec;
    see :mod:`hpcexec.environment`. Raises OSError when ``python`` cannot be described."""
    from . import environment  # the client's concern: the server starts without it

    return f"hpcexec-forkserver-{environment.interpreter(python, ask).identity()[:20]}-"


def server_env(env: dict[str, str]) -> dict[str, str]:
    """The environment a server for jobs with ``env`` runs in: theirs, less what differs
    from job to job (hpcexec's own variables)."""
    return {k: v for k, v in env.items() if not k.startswith("HPCEXEC_")}


def server_name(python: str, env: dict[str, str], preload: bool = True) -> str:
    """The server for jobs run with ``python`` in ``env`` (preloading what its jobs import,
    or not)."""
    key = json.dumps([sorted(server_env(env).items()), preload]).encode()
    return server_prefix(python) + hashlib.sha256(key).hexdigest()[:12]


def ask(argv: list[str], env: dict[str, str]) -> str:
    """What ``argv`` prints when run here with ``env`` (how :mod:`hpcexec.environment`
    asks an interpreter about itself); OSError with its last line of stderr if it fails."""
    import subprocess  # the server itself never needs it

    try:
        p = subprocess.run(
            argv,
            check=False,
            capture_output=True,
            text=True,
            cwd="/",
            env=env,
            stdin=subprocess.DEVNULL,
            timeout=_ASK_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise OSError(f"{argv[0]} did not answer within {_ASK_TIMEOUT:.0f} s") from None
    if p.returncode != 0:
        why = p.stderr.strip().splitlines()
        raise OSError(
            why[-1]
            if why
            else f"{argv[0]} is not a Python interpreter (exit status {p.returncode})"
        )
    return p.stdout


def _address(name: str) -> str:
    return "\0" + name


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


# -- client side ----------------------------------------------------------------------------
def _request(name: str, request: dict, timeout: float = _REPLY_TIMEOUT) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(_CONNECT_TIMEOUT)
        s.connect(_address(name))
        s.settimeout(timeout)  # a server may be importing a module for its next jobs
        s.sendall(json.dumps(request).encode())
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data)


def _tell(name: str, request: dict) -> None:
    """Send ``request`` without waiting for the answer (nor for the server to read it)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(_CONNECT_TIMEOUT)
            s.connect(_address(name))
            s.sendall(json.dumps(request).encode())
    except OSError:  # the server went away: the next one learns from the next job
        pass


def _running(prefix: str) -> list[str]:
    """The names of the listening servers whose names begin with ``prefix``."""
    try:
        with open("/proc/net/unix") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return []
    paths = {fields[7] for fields in map(str.split, lines) if len(fields) == 8}
    return sorted(p[1:] for p in paths if p.startswith("@" + prefix))


def stop(python: str) -> bool:
    """Ask every fork server for ``python`` to exit (their jobs go on). False if none ran."""
    try:
        prefix = server_prefix(python)
    except OSError:  # python cannot be described: no server can run for it
        return False
    stopped = False
    for name in _running(prefix):
        try:
            stopped |= bool(_request(name, {"stop": True}).get("stopping"))
        except (OSError, ValueError):  # gone meanwhile
            pass
    return stopped


# No server answers: none runs, or one that went idle closed its socket with our connection
# still waiting in its backlog (reset, before it read the request): start one.
_NO_SERVER = (ConnectionRefusedError, FileNotFoundError, ConnectionResetError, BrokenPipeError)


def spawn(python: str, request: dict) -> int:
    """Start a job through the server for ``python`` and the job's environment, starting the
    server if none runs (or the one running retired). Raises OSError when the server cannot
    be reached or refuses."""
    preloading = bool(request.get("preload", True))
    # the client's HPCEXEC_FORKSERVER_IDLE goes as a setting (the server's environment is
    # its jobs', hpcexec's variables aside)
    settings: dict = {"preload": preloading, "refused": [], "idle": IDLE}
    try:
        name = server_name(python, request.get("env", {}), preloading)
    except OSError as e:
        raise OSError(f"the fork server for {python} failed to start: {e}") from None
    for _ in range(3):
        try:
            reply = _request(name, request)
        except _NO_SERVER:
            reply = _start(python, name, settings, request)
        if "retired" not in reply:
            break
        log.info("the fork server %s retired (%s); starting another", name, reply["retired"])
        settings["refused"] = reply.get("refused", [])
    if "pid" not in reply:
        raise OSError(f"the fork server refused: {reply.get('error') or reply.get('retired')}")
    return int(reply["pid"])


def _start(python: str, name: str, settings: dict, request: dict) -> dict:
    """Start the server ``name`` and send it ``request``; its reply."""
    import subprocess

    from . import environment

    env = environment.launch_env(server_env(request.get("env", {})))
    server = subprocess.Popen(
        [python, "-m", "hpcexec.forkserver", name, json.dumps(settings)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd="/",
        env=env,
        start_new_session=True,
        close_fds=True,
    )
    stderr = server.stderr
    assert stderr is not None  # stderr=PIPE
    deadline = time.monotonic() + _CONNECT_TIMEOUT
    while True:
        try:
            reply = _request(name, request)
            break
        except _NO_SERVER:
            if server.poll() is not None and server.returncode != 0:
                why = stderr.read().decode(errors="replace").strip().splitlines()
                raise OSError(
                    f"the fork server for {python} failed to start: "
                    f"{why[-1] if why else server.returncode}"
                ) from None
            if time.monotonic() > deadline:
                raise OSError(f"the fork server for {python} did not start") from None
            time.sleep(0.01)
    stderr.close()
    return reply


# -- server side ----------------------------------------------------------------------------
class _Server:
    def __init__(self, name: str, settings: dict) -> None:
        self.name = name
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(_address(name))  # OSError if another server has the name: let it serve
        self.sock.listen(128)
        self.sock.settimeout(1.0)
        self.children: dict[int, str] = {}  # pid -> job directory
        self._reaping = False
        self.last = time.monotonic()
        self.learning = bool(settings.get("preload", True))
        self.preloads = preload.Preloads(settings.get("refused", ()))
        self.retiring: str | None = None  # why this server serves no more jobs
        self.idle = float(settings.get("idle", IDLE))
        # Warm up what jobs need, so children start with it imported.
        import cloudpickle

        from . import environment, runner  # noqa: F401  (environment: a child learning)

        self.preloads.watch(cloudpickle)

    def reap(self) -> None:
        if self._reaping:  # SIGCHLD arrived while reaping: this pass will see that child
            return
        self._reaping = True
        try:
            self._reap()
        finally:
            self._reaping = False

    def _reap(self) -> None:
        for pid, jobdir in list(self.children.items()):
            try:
                # Peek first (WNOWAIT): the exit-code file must exist before the pid vanishes,
                # or a client could see the job gone with no exit code and call it lost.
                info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                del self.children[pid]
                continue
            if info is None:
                continue
            exit_file = JobLayout(jobdir, jobdir).exitcode
            if info.si_code == os.CLD_EXITED and not os.path.exists(exit_file):
                # Ended without the runner's exit-code file (os._exit, a crash in C code).
                try:
                    write_atomic(
                        exit_file,
                        f"{info.si_status}\nexited with code "
                        f"{info.si_status} before writing a result\n".encode(),
                    )
                except OSError:
                    pass
            if info.si_code in (os.CLD_KILLED, os.CLD_DUMPED) and not os.path.exists(exit_file):
                sig = info.si_status
                try:
                    write_atomic(exit_file, f"{128 + sig}\n{killed_by(sig)}\n".encode())
                except OSError:
                    pass
            os.waitpid(pid, 0)
            del self.children[pid]

    def serve(self) -> None:
        signal.signal(signal.SIGCHLD, lambda *a: self.reap())
        while True:
            if self.preloads.pending and not self.retiring and not _waiting(self.sock):
                self.retiring = self.preloads.step()
                continue
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                self.reap()
                if not self.children and time.monotonic() - self.last > self.idle:
                    return
                continue
            self.last = time.monotonic()
            with conn:
                try:
                    reply = self.handle(conn)
                except Exception as e:  # answer, never die on a bad request  # noqa: BLE001
                    reply = {"error": f"{type(e).__name__}: {e}"}
                if reply.get("stopping"):
                    conn.sendall(json.dumps(reply).encode())
                    return
                if "retired" in reply:  # free the name first: the client starts the next one
                    self.sock.close()
                try:
                    conn.sendall(json.dumps(reply).encode())
                except OSError:
                    pass
            if "retired" in reply:
                self.drain()
                return

    def drain(self) -> None:
        """Wait for this retired server's children (their exit-code files are its job)."""
        while self.children:
            time.sleep(0.2)
            self.reap()

    def handle(self, conn: socket.socket) -> dict:
        if _peer_uid(conn) != os.getuid():
            return {"error": "this fork server serves its own user only"}
        conn.settimeout(_CONNECT_TIMEOUT)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
            if len(data) > _MAX_REQUEST:
                return {"error": "request too large"}
        req = json.loads(data)
        if req.get("stop"):
            return {"stopping": True}
        if "learn" in req:
            if self.learning:
                self.preloads.add(req["learn"])
            return {"learning": self.learning}
        while self.preloads.pending and not self.retiring:  # what this job may import too:
            self.retiring = self.preloads.step()  # imported once here, not once per child
        self.retiring = self.retiring or self.preloads.changed()
        if self.retiring:
            return {"retired": self.retiring, "refused": sorted(self.preloads.refused)}
        sys.stdout.flush()
        sys.stderr.flush()
        ready, done = os.pipe()
        pid = os.fork()
        if pid == 0:
            conn.close()
            os.close(ready)
            server = self.name if self.learning else None
            _child(self.sock, req, server, self.preloads.tops, done)  # never returns
        self.children[pid] = req["jobdir"]
        os.close(done)
        # The client may signal the job's process group as soon as it has the pid: answer
        # once the child leads its own session (it closes its end then, or as it dies).
        os.read(ready, 1)
        os.close(ready)
        return {"pid": pid}


def _waiting(sock: socket.socket) -> bool:
    """Whether a connection waits to be accepted."""
    return bool(select.select([sock], [], [], 0)[0])


def _child(
    listener: socket.socket, req: dict, server: str | None, tops: list[str], leads: int
) -> None:
    """The job, forked (never returns); it closes ``leads`` once it leads its own session,
    tells ``server`` what it imported (None: nothing) and starts cold if its import path
    finds any of the preloaded ``tops`` elsewhere."""
    from .jobfiles import exit_forked, redirect_output
    from .runner import main

    before = preload.loaded()

    def body() -> int:
        listener.close()
        preload.reseed()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(WARNING, signal.SIG_IGN)  # never fatal; the runner holds it for the job
        os.setsid()
        os.close(leads)
        try:
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            redirect_output(req["stdout"], req["stderr"])
            os.chdir(req["cwd"])
        except OSError as e:  # the job ends failed, saying why (nobody reads this process's output)
            write_atomic(
                JobLayout(req["jobdir"], req["cwd"]).exitcode, f"1\n{cannot_start(e)}\n".encode()
            )
            return 1
        os.environ.clear()
        os.environ.update(req["env"])
        with open("/proc/self/stat") as f:
            stat = f.read()
        start = stat[stat.rfind(")") + 2 :].split()[19]
        job_id = f"{os.getpid()}:{start}"
        os.environ["HPCEXEC_JOB_ID"] = job_id
        write_started(req["jobdir"], job_id, with_job_id=True)  # the client leaves it to us
        watch = _JobWatch(server, tops, before)  # before the job's own import path is set
        sys.path[0] = req["cwd"]  # as `python -m` run in the job's directory would have it
        args = [req["jobdir"], req["key"]]
        sys.argv = [sys.executable, "-m", "hpcexec.runner", *args]
        code = main(args, watch=watch)
        watch.tell()  # what the job imported as it ran
        return code

    exit_forked(body)


class _JobWatch:
    """A forked job's watch over its payload's loading (:func:`hpcexec.runner.run`): once
    its import path is set, it starts again as a cold interpreter if that path finds one of
    the preloaded modules ``tops`` in another file; once loaded, it tells ``server`` what
    loading imported (while the job runs), and :meth:`tell` later what running imported."""

    def __init__(self, server: str | None, tops: list[str], before: frozenset[str]) -> None:
        self.server, self.tops, self.told = server, tops, set(before)
        self.server_path = list(sys.path)  # the import path its preloaded modules came from

    def __call__(self, stage: str) -> None:
        from .runner import IMPORT_PATH, LOADED

        if stage == IMPORT_PATH and preload.shadowed(self.tops, self.server_path):
            sys.stdout.flush()
            sys.stderr.flush()
            # The same process (its job id stays), its files and environment; nothing of
            # the payload has run.
            os.execv(sys.executable, sys.argv)
        if stage == LOADED:
            self.tell()

    def tell(self) -> None:  # never waits, never fails the job
        if self.server is None:
            return
        try:
            names = preload.learned(frozenset(self.told))
        except Exception:  # noqa: BLE001 - learning is an optimisation
            return
        self.told.update(names)
        if names:
            _tell(self.server, {"learn": names})


def main() -> None:
    if len(sys.argv) not in (2, 3):
        print("usage: python -m hpcexec.forkserver NAME [SETTINGS]", file=sys.stderr)
        sys.exit(2)
    settings = json.loads(sys.argv[2]) if len(sys.argv) == 3 else {}
    try:
        server = _Server(sys.argv[1], settings)
    except OSError:  # another server holds the name
        return
    server.serve()


if __name__ == "__main__":
    main()
