"""clusterjob's INI defaults, read as an Executor's keyword arguments.

clusterjob users keep their defaults in an INI file with an ``[Attributes]`` section (where
and how jobs run, and values of their own for ``{placeholders}``) and a ``[Resources]``
section (what jobs ask for)::

    [Attributes]
    remote = login.cluster.edu
    backend = slurm
    rootdir = ~/jobs
    prologue = rsync -a {workdir}/ {remote}:{rootdir}/
    text = Hello World

    [Resources]
    queue = exec
    nodes = 1
    threads = 4
    mem = 1000

``Executor(**read_defaults("cluster.ini"))`` runs with them. Each attribute maps to its
hpcexec counterpart (``remote`` -> ``host``, ``rootdir`` -> ``remote_dir``, ``cache_folder``
-> ``cache_dir``, ``workdir`` -> the ``workdir`` resource, ``prologue``/``epilogue`` -> the
job options); an attribute of the user's own becomes a ``vars`` value, as clusterjob fills
every attribute into job texts. Attributes that mean nothing here (how clusterjob writes or
copies its scripts) are dropped with a warning naming them.
"""

from __future__ import annotations

import configparser
import logging
import os
import re
from typing import Any

from .errors import ConfigError
from .resources import RESOURCE_TABLE

log = logging.getLogger(__name__)

SECTIONS = ("Attributes", "Resources")
#: clusterjob attribute -> the Executor keyword it becomes
ATTRIBUTES = {
    "backend": "backend",
    "remote": "host",
    "rootdir": "remote_dir",
    "cache_folder": "cache_dir",
    "workdir": "workdir",
    "prologue": "prologue",
    "epilogue": "epilogue",
}
#: clusterjob attributes about its own way of writing and copying scripts: no counterpart
DROPPED = ("shell", "filename", "max_sleep_interval", "debug_cmds", "ssh", "scp", "cache_prefix")
#: clusterjob's backend names that differ from hpcexec's
BACKENDS = {"pbs": "torque", "lpbs": "local"}
#: clusterjob resource names that differ from hpcexec's
RESOURCES = {"jobname": "name"}
_KEY_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def read_defaults(path: str | os.PathLike) -> dict[str, Any]:
    """The keyword arguments for :class:`hpcexec.Executor` that clusterjob's INI defaults
    file ``path`` stands for (see the module's documentation). Raises
    :class:`~hpcexec.errors.ConfigError` naming the file and what is wrong in it."""
    config = configparser.ConfigParser(interpolation=None)  # '%' stays as written
    try:
        with open(path) as f:
            config.read_file(f)
    except OSError as e:
        raise ConfigError(f"cannot read the INI defaults {path}: {e.strerror or e}") from e
    except configparser.Error as e:
        raise ConfigError(f"{path} is not an INI file: {e}") from None
    wrong = [s for s in config.sections() if s not in SECTIONS]
    if wrong or not config.sections():
        raise ConfigError(
            f"{path} must have an [Attributes] or a [Resources] section (or both), "
            f"and no other{f'; found [{wrong[0]}]' if wrong else ''}"
        )
    out: dict[str, Any] = {}
    if config.has_section("Attributes"):
        out.update(_attributes(path, dict(config.items("Attributes"))))
    if config.has_section("Resources"):
        out.update(_resources(path, dict(config.items("Resources"))))
    return out


def _attributes(path: str | os.PathLike, items: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    own: dict[str, str] = {}
    dropped = []
    for key, value in items.items():
        _check_key(path, "Attributes", key)
        if key in ATTRIBUTES:
            value = value.strip()
            out[ATTRIBUTES[key]] = BACKENDS.get(value, value) if key == "backend" else value
            if key not in RESOURCE_TABLE and key not in ("prologue", "epilogue"):
                own[key] = value  # texts may say {remote}, {rootdir} as in clusterjob
        elif key in DROPPED:
            dropped.append(key)
        else:
            own[key] = value
    if dropped:
        log.warning(
            "%s: dropped the clusterjob attributes %s (hpcexec writes and copies job scripts "
            "itself; they have no counterpart)",
            path,
            ", ".join(dropped),
        )
    if own:
        out["vars"] = own
    return out


def _resources(path: str | os.PathLike, items: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in items.items():
        _check_key(path, "Resources", key)
        name = RESOURCES.get(key, key)
        if name not in RESOURCE_TABLE:
            raise ConfigError(
                f"{path}: [Resources] {key} is no resource of hpcexec's "
                f"(`hpcexec resources` lists them); put a scheduler option of your own in "
                f"native, e.g. native = --constraint=x"
            )
        # one native directive per line: "-l arch=lx-amd64" is one
        out[name] = value.strip().splitlines() if name == "native" else value.strip()
    return out


def _check_key(path: str | os.PathLike, section: str, key: str) -> None:
    if not _KEY_RE.match(key):
        raise ConfigError(
            f"{path}: [{section}] key {key!r} must be a name of letters, digits and '_', "
            "starting with a letter"
        )
