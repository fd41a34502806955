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
This module is imported by the server only; clients use :func:`spawn`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys
import time

from .checkpoint import WARNING
from .jobfiles import killed_by, write_atomic, write_started
from .layout import JobLayout, cannot_start

IDLE = float(os.environ.get("HPCEXEC_FORKSERVER_IDLE", "120"))
_CONNECT_TIMEOUT = 5.0
_ASK_TIMEOUT = 30.0  # seconds an interpreter may take to describe itself
_MAX_REQUEST = 4 << 20  # bytes; a request is a job's paths and environment


def server_name(python: str) -> str:
    """The server for jobs run with ``python``: one per user, environment (the interpreter as
    given, its prefixes and import path) and copy of hpcexec; see :mod:`hpcexec.environment`.
    Raises OSError when ``python`` cannot be described."""
    from . import environment  # the client's concern: the server starts without it

    return f"hpcexec-forkserver-{environment.interpreter(python, ask).identity()[:20]}"


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
def _request(name: str, request: dict) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(_CONNECT_TIMEOUT)
        s.connect(_address(name))
        s.sendall(json.dumps(request).encode())
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data)


def stop(python: str) -> bool:
    """Ask the fork server for ``python`` to exit (its jobs go on). False if none ran."""
    try:
        name = server_name(python)
    except OSError:  # python cannot be described: no server can run for it
        return False
    try:
        return bool(_request(name, {"stop": True}).get("stopping"))
    except (ConnectionRefusedError, FileNotFoundError):
        return False


# No server answers: none runs, or one that went idle closed its socket with our connection
# still waiting in its backlog (reset, before it read the request): start one.
_NO_SERVER = (ConnectionRefusedError, FileNotFoundError, ConnectionResetError, BrokenPipeError)


def spawn(python: str, request: dict) -> int:
    """Start a job through the server for ``python``, starting the server if none runs.
    Raises OSError when the server cannot be reached or refuses."""
    try:
        name = server_name(python)
    except OSError as e:
        raise OSError(f"the fork server for {python} failed to start: {e}") from None
    try:
        reply = _request(name, request)
    except _NO_SERVER:
        import subprocess

        from . import environment

        server = subprocess.Popen(
            [python, "-m", "hpcexec.forkserver", name],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd="/",
            env=environment.launch_env(),
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
    if "pid" not in reply:
        raise OSError(f"the fork server refused: {reply.get('error')}")
    return int(reply["pid"])


# -- server side ----------------------------------------------------------------------------
class _Server:
    def __init__(self, name: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(_address(name))  # OSError if another server has the name: let it serve
        self.sock.listen(128)
        self.sock.settimeout(1.0)
        self.children: dict[int, str] = {}  # pid -> job directory
        self._reaping = False
        self.last = time.monotonic()
        # Warm up what jobs need, so children start with it imported.
        import cloudpickle  # noqa: F401

        from . import runner  # noqa: F401

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
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                self.reap()
                if not self.children and time.monotonic() - self.last > IDLE:
                    return
                continue
            self.last = time.monotonic()
            with conn:
                try:
                    reply = self.handle(conn)
                    if reply.get("stopping"):
                        conn.sendall(json.dumps(reply).encode())
                        return
                except Exception as e:  # answer, never die on a bad request  # noqa: BLE001
                    reply = {"error": f"{type(e).__name__}: {e}"}
                try:
                    conn.sendall(json.dumps(reply).encode())
                except OSError:
                    pass

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
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            conn.close()
            _child(self.sock, req)  # never returns
        self.children[pid] = req["jobdir"]
        return {"pid": pid}


def _child(listener: socket.socket, req: dict) -> None:
    from .jobfiles import exit_forked, redirect_output
    from .runner import main

    def body() -> int:
        listener.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(WARNING, signal.SIG_IGN)  # never fatal; the runner holds it for the job
        os.setsid()
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
        sys.path[0] = req["cwd"]  # as `python -m` run in the job's directory would have it
        args = [req["jobdir"], req["key"]]
        sys.argv = [sys.executable, "-m", "hpcexec.runner", *args]
        return main(args)

    exit_forked(body)


def main() -> None:
    if len(sys.argv) != 2:
        print("usage: python -m hpcexec.forkserver NAME", file=sys.stderr)
        sys.exit(2)
    try:
        server = _Server(sys.argv[1])
    except OSError:  # another server holds the name
        return
    server.serve()


if __name__ == "__main__":
    main()
