"""Jobs on a remote cluster, driven from this machine over SSH.

Needs ``pip install .`` here, and a host you can log in to over SSH (see below). It keeps
the records in ``.hpcexec/`` here (ignored by git) and the job files on the host
(``~/.hpcexec`` unless ``--remote-dir`` says otherwise).

    python examples/remote_ssh.py mycluster                  # an alias from ~/.ssh/config
    python examples/remote_ssh.py me@login.example.org --backend slurm --queue debug \\
        --python '~/venvs/sim/bin/python' --remote-dir '~/hpcexec-jobs'
    HPCEXEC_PROFILE=cluster-a python examples/remote_ssh.py  # everything from a profile

The login node needs the scheduler's commands and a Python with hpcexec and cloudpickle at
this client's versions (the executor checks once and says what to install). Payloads go up
and results come back over one SSH connection; the records stay in the local cache, so
running this again answers from it. Functions of this script travel by value.
"""

from __future__ import annotations

import argparse
import sys

import hpcexec
import hpcexec.config


def where_am_i(tag: str) -> dict[str, str]:
    """Runs on a compute node of the cluster."""
    import os
    import platform
    import socket

    return {
        "tag": tag,
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "job": os.environ.get("HPCEXEC_JOB_ID", "?"),
        "cwd": os.getcwd(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "host", nargs="?", help="ssh alias or user@host[:port] (default: the profile's)"
    )
    parser.add_argument(
        "--backend",
        help="slurm, sge, pbspro, torque, lsf (default: the "
        "profile's, else 'auto': found on the host)",
    )
    parser.add_argument("--python", help="the interpreter on the host (default: python3)")
    parser.add_argument("--remote-dir", help="job files on the host (default: ~/.hpcexec)")
    parser.add_argument("--ssh-key", help="a private key file (default: agent, ssh config)")
    parser.add_argument("--known-hosts", help="a known-hosts file read besides ~/.ssh's")
    parser.add_argument("--queue", help="queue or partition")
    parser.add_argument("--cache-dir", help="the local job cache (default: .hpcexec)")
    args = parser.parse_args()

    if not args.host and not hpcexec.config.resolve()["host"]:
        parser.error("give the host, or select a profile that names one (HPCEXEC_PROFILE)")
    backend = args.backend or ("auto" if args.host else None)  # None: the profile says
    queue = {"queue": args.queue} if args.queue else {}
    try:
        ex = hpcexec.Executor(
            backend,
            host=args.host,
            python=args.python,
            remote_dir=args.remote_dir,
            ssh_key=args.ssh_key,
            known_hosts=args.known_hosts,
            cache_dir=args.cache_dir,
            time="0:10:00",
            **queue,
        )
    except hpcexec.HpcexecError as e:  # no host, host key unknown, remote Python lacking...
        sys.exit(f"cannot set up jobs on {args.host or 'the profile host'}: {e}")
    with ex:
        one = ex.submit(where_am_i, "submit")
        many = list(ex.map(where_am_i, ["map-0", "map-1", "map-2"]))
        shell = ex.submit_shell("echo shell job $HPCEXEC_JOB_ID on $(hostname)")
        for r in [one.result(), *many]:
            print(
                f"{r['tag']:8} ran as job {r['job']:10} on {r['host']} "
                f"(Python {r['python']}) in {r['cwd']}"
            )
        print(shell.result().stdout.strip())
    print(
        f"records in {ex.cache_dir} name the host {one.record.host!r}: "
        f"`hpcexec jobs --host {one.record.host}` lists them"
    )


if __name__ == "__main__":
    main()
