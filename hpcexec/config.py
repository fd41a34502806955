"""Configuration profiles: named sets of Executor settings in TOML files.

The settings a profile may hold, and their defaults, are the fields of
:class:`~hpcexec.settings.ExecutorSettings`.

Two files are read, and a profile in the first replaces one of the same name in the second:

- ``hpcexec.toml`` in the working directory (the project's profiles);
- ``$XDG_CONFIG_HOME/hpcexec/config.toml``, by default ``~/.config/hpcexec/config.toml``.

::

    default_profile = "cluster-a"        # optional: used when nothing else selects one

    [profiles.cluster-a]
    backend = "slurm"
    host = "cluster-a"                   # an ~/.ssh/config alias or user@host[:port]
    python = "~/venvs/sim/bin/python"    # on that host
    remote_dir = "~/hpcexec-jobs"
    cache_dir = "~/.hpcexec/cluster-a"
    [profiles.cluster-a.resources]
    queue = "debug"
    time = "1:00:00"

A profile is selected by ``Executor(profile=...)`` or ``hpcexec --profile``, else by
``HPCEXEC_PROFILE``, else by ``default_profile``; ``profile=""`` selects none. Each setting
is taken from the first of: an explicit argument, the environment (``HPCEXEC_CACHE_DIR``
for ``cache_dir``, ``HPCEXEC_LOCAL_GPUS`` for ``local_gpus``), the profile, the built-in default. Unknown keys and bad values are
:class:`~hpcexec.errors.ConfigError` naming the file and line.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .backends import SCHEDULERS, backend_names
from .errors import ConfigError, ResourceError
from .resources import RESOURCE_TABLE, Resources
from .settings import (
    DEFAULTS,
    ENV_LOCAL_GPUS,
    NAMES,
    NUMBERS,
    ExecutorSettings,
    number_wanted,
    parse_gpu_ids,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

PROJECT_FILE = "hpcexec.toml"
ENV_PROFILE = "HPCEXEC_PROFILE"
ENV_CACHE_DIR = "HPCEXEC_CACHE_DIR"
BACKEND_NAMES = ("local", *SCHEDULERS, "auto")  # built-in; registered ones are accepted too

_PROFILE_EXTRA = ("description", "resources")
_TOP_KEYS = ("profiles", "default_profile")


@dataclass(frozen=True)
class Setting:
    """One effective value and where it came from: ``default``, an argument, an
    environment variable, or ``FILE:LINE``."""

    value: Any
    source: str


@dataclass(frozen=True)
class Profile:
    """One named profile as read from its file."""

    name: str
    path: Path
    values: dict[str, Any]  # Executor settings
    resources: dict[str, Any]  # default resources, as written
    lines: dict[str, int]  # "backend" or "resources.time" -> line in path
    description: str | None = None

    def where(self, key: str) -> str:
        line = self.lines.get(key)
        return f"{self.path}:{line}" if line else str(self.path)


@dataclass(frozen=True)
class ConfigFiles:
    """What the configuration files hold."""

    searched: tuple[Path, ...]
    found: tuple[Path, ...]
    profiles: dict[str, Profile]
    default_profile: Setting | None  # the name, and the file:line that set it


@dataclass(frozen=True)
class Settings:
    """The effective Executor settings and default resources, each with its source."""

    profile: str | None
    profile_source: str | None
    files: ConfigFiles
    values: dict[str, Setting]
    resources: dict[str, Setting] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.values[name].value

    def effective(self) -> ExecutorSettings:
        """The effective settings' values, without their sources."""
        return ExecutorSettings(**{k: s.value for k, s in self.values.items()})

    def kwargs(self) -> dict[str, Any]:
        """The settings as Executor keyword arguments (``profile=""`` keeps them as they
        are), followed by the default resources."""
        return {
            **{k: s.value for k, s in self.values.items()},
            **{k: s.value for k, s in self.resources.items()},
        }


# -- files -----------------------------------------------------------------------------
def config_paths(
    cwd: Path | None = None, environ: Mapping[str, str] = os.environ
) -> tuple[Path, ...]:
    """The files read, first one first: ``./hpcexec.toml``, then the user's."""
    paths = [(cwd or Path.cwd()) / PROJECT_FILE]
    xdg = environ.get("XDG_CONFIG_HOME", "")
    if xdg and os.path.isabs(xdg):
        paths.append(Path(xdg) / "hpcexec" / "config.toml")
    else:
        home = environ.get("HOME") or os.path.expanduser("~")
        if home and home != "~":
            paths.append(Path(home) / ".config" / "hpcexec" / "config.toml")
    return tuple(paths)


def load(cwd: Path | None = None, environ: Mapping[str, str] = os.environ) -> ConfigFiles:
    """Read and check every configuration file that exists."""
    searched = config_paths(cwd, environ)
    found: list[Path] = []
    profiles: dict[str, Profile] = {}
    default: Setting | None = None
    for path in searched:
        if not path.is_file():
            continue
        found.append(path)
        mine, my_default = _read_file(path)
        for name, prof in mine.items():
            profiles.setdefault(name, prof)  # the earlier file wins
        if default is None:
            default = my_default
    return ConfigFiles(searched, tuple(found), profiles, default)


def _read_file(path: Path) -> tuple[dict[str, Profile], Setting | None]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot be read ({e})") from None
    return parse(text, path)


def parse(text: str, path: Path) -> tuple[dict[str, Profile], Setting | None]:
    """The profiles and the default profile that ``text``, the file ``path``'s, holds,
    checked (:class:`~hpcexec.errors.ConfigError` naming ``path`` and the line)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    lines = _key_lines(text)

    def fail(keys: tuple[str, ...], message: str) -> ConfigError:
        for n in range(len(keys), 0, -1):
            if keys[:n] in lines:
                return ConfigError(f"{path}:{lines[keys[:n]]}: {message}")
        return ConfigError(f"{path}: {message}")

    for key in data:
        if key not in _TOP_KEYS:
            raise fail(
                (key,),
                f"unknown key {key!r}; a configuration file holds "
                f"{' and '.join(_TOP_KEYS)} ([profiles.NAME] tables)",
            )
    default = None
    if "default_profile" in data:
        name = data["default_profile"]
        if not isinstance(name, str):
            raise fail(("default_profile",), "default_profile takes a profile name (a string)")
        default = Setting(name, f"{path}:{lines.get(('default_profile',), '?')}")
    tables = data.get("profiles", {})
    if not isinstance(tables, dict):
        raise fail(("profiles",), "profiles must be a table: write [profiles.NAME] sections")
    profiles = {}
    for name, table in tables.items():
        where = ("profiles", name)
        if not isinstance(table, dict):
            raise fail(where, f"profile {name!r} must be a table: write [profiles.{name}]")
        profiles[name] = _read_profile(path, name, table, lines, fail)
    return profiles, default


def _read_profile(
    path: Path,
    name: str,
    table: dict[str, Any],
    lines: dict[tuple[str, ...], int],
    fail: Callable[[tuple[str, ...], str], ConfigError],
) -> Profile:
    values: dict[str, Any] = {}
    resources: dict[str, Any] = {}
    where: dict[str, int] = {}
    for key, value in table.items():
        keys = ("profiles", name, key)
        if key == "resources":
            if not isinstance(value, dict):
                raise fail(
                    keys,
                    f"resources of profile {name!r} must be a table: write "
                    f"[profiles.{name}.resources]",
                )
            for rkey, rvalue in value.items():
                rkeys = (*keys, rkey)
                if rkey not in RESOURCE_TABLE or rkey == "name":
                    valid = ", ".join(k for k in RESOURCE_TABLE if k != "name")
                    raise fail(
                        rkeys, f"unknown resource {rkey!r} in profile {name!r}; valid ones: {valid}"
                    )
                try:
                    Resources.create(**{rkey: rvalue})
                except ResourceError as e:
                    raise fail(rkeys, f"profile {name!r}: {e}") from None
                resources[rkey] = rvalue
                where[f"resources.{rkey}"] = _line(lines, rkeys)
            continue
        if key == "description":
            if not isinstance(value, str):
                raise fail(keys, "description takes a string")
            continue
        if key not in NAMES:
            valid = ", ".join([*NAMES, *_PROFILE_EXTRA])
            raise fail(keys, f"unknown key {key!r} in profile {name!r}; valid keys: {valid}")
        problem = _check(key, value)
        if problem:
            raise fail(keys, f"profile {name!r}: {key} {problem}")
        values[key] = os.path.expanduser(value) if key == "cache_dir" else value
        where[key] = _line(lines, keys)
    description = table.get("description")
    return Profile(
        name, path, values, resources, {k: v for k, v in where.items() if v}, description
    )


def _line(lines: dict[tuple[str, ...], int], keys: tuple[str, ...]) -> int:
    for n in range(len(keys), 0, -1):
        if keys[:n] in lines:
            return lines[keys[:n]]
    return 0


def _check(key: str, value: Any) -> str | None:
    """What is wrong with a setting's value, or None."""
    if key == "backend":
        names = (*backend_names(), "auto")  # with backends registered by packages
        if value not in names:
            return f"must be one of {', '.join(names)}, not {value!r}"
    elif key == "trust_on_first_use":
        if not isinstance(value, bool):
            return f"takes true or false, not {value!r}"
    elif key in NUMBERS:
        wanted = number_wanted(key, value)
        if wanted:
            return f"takes {wanted}, not {value!r}"
    elif key == "local_gpus":
        try:
            parse_gpu_ids(value)
        except ValueError as e:
            return f"takes GPU ids such as '0,1', or 'none': {e}"
    elif not isinstance(value, str) or not value:
        return f"takes a non-empty string, not {value!r}"
    return None


# -- where each key is written -------------------------------------------------------------
_PART = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
_DOTTED = rf"{_PART}(?:\s*\.\s*{_PART})*"
_HEADER_RE = re.compile(rf"^\s*\[\[?\s*({_DOTTED})\s*\]\]?\s*(?:#.*)?$")
_KEY_RE = re.compile(rf"^\s*({_DOTTED})\s*=")
_PART_RE = re.compile(_PART)


def _split_dotted(text: str) -> tuple[str, ...]:
    parts = []
    for m in _PART_RE.finditer(text):
        p = m.group(0)
        parts.append(p[1:-1] if p[0] in "\"'" else p)
    return tuple(parts)


def _key_lines(text: str) -> dict[tuple[str, ...], int]:
    """The line each table header and key is written on (first occurrence), for messages.
    Keys inside inline tables and multi-line values are found through their parent."""
    out: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    in_multiline: str | None = None
    for n, line in enumerate(text.splitlines(), 1):
        if in_multiline:
            if line.count(in_multiline) % 2 == 1:
                in_multiline = None
            continue
        m = _HEADER_RE.match(line)
        if m:
            table = _split_dotted(m.group(1))
            for i in range(1, len(table) + 1):  # [a.b] also defines a
                out.setdefault(table[:i], n)
            continue
        m = _KEY_RE.match(line)
        if m:
            keys = table + _split_dotted(m.group(1))
            for i in range(len(table) + 1, len(keys) + 1):
                out.setdefault(keys[:i], n)
            for quote in ('"""', "'''"):
                if line.count(quote) % 2 == 1:
                    in_multiline = quote
    return out


# -- resolution --------------------------------------------------------------------------
def resolve(
    profile: str | None = None,
    explicit: Mapping[str, Any] | None = None,
    *,
    labels: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Settings:
    """The effective settings: each from an explicit (non-None) value in ``explicit``, else
    the environment, else the selected profile, else the default. ``labels`` names where
    explicit values came from (default ``"argument"``; the command line gives its option)."""
    explicit = {k: v for k, v in (explicit or {}).items() if v is not None}
    unknown = set(explicit) - set(NAMES)
    if unknown:
        raise ConfigError(f"unknown settings {sorted(unknown)}; valid: {', '.join(NAMES)}")
    labels = labels or {}
    files = load(cwd, environ)
    name, name_source = _select(profile, files, environ, labels.get("profile", "argument"))
    prof = None
    if name:
        prof = files.profiles.get(name)
        if prof is None:
            raise ConfigError(_no_such_profile(name, name_source, files))
    values: dict[str, Setting] = {}
    for key, default in DEFAULTS.items():
        if key in explicit:
            values[key] = Setting(explicit[key], labels.get(key, "argument"))
        elif key == "cache_dir" and environ.get(ENV_CACHE_DIR):
            values[key] = Setting(
                os.path.expanduser(environ[ENV_CACHE_DIR]), f"env {ENV_CACHE_DIR}"
            )
        elif key == "local_gpus" and environ.get(ENV_LOCAL_GPUS) is not None:
            values[key] = Setting(environ[ENV_LOCAL_GPUS], f"env {ENV_LOCAL_GPUS}")
        elif prof is not None and key in prof.values:
            values[key] = Setting(prof.values[key], prof.where(key))
        else:
            values[key] = Setting(default, "default")
    resources = (
        {k: Setting(v, prof.where(f"resources.{k}")) for k, v in prof.resources.items()}
        if prof is not None
        else {}
    )
    return Settings(name, name_source, files, values, resources)


def _select(
    profile: str | None, files: ConfigFiles, environ: Mapping[str, str], label: str
) -> tuple[str | None, str | None]:
    if profile is not None:
        return (profile or None), label
    if ENV_PROFILE in environ:
        return (environ[ENV_PROFILE] or None), f"env {ENV_PROFILE}"
    if files.default_profile is not None:
        return files.default_profile.value, files.default_profile.source
    return None, None


def _no_such_profile(name: str, source: str | None, files: ConfigFiles) -> str:
    via = f" (from {source})" if source else ""
    if not files.found:
        looked = " and ".join(str(p) for p in files.searched)
        return (
            f"no profile {name!r}{via}: no configuration file found (looked for {looked}); "
            f"create one with a [profiles.{name}] table"
        )
    have = ", ".join(sorted(files.profiles)) or "none"
    return (
        f"no profile {name!r}{via} in {', '.join(str(p) for p in files.found)}; "
        f"profiles there: {have}"
    )
