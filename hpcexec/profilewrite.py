"""Writing a configuration profile from code (as fyrd's users do with ``fyrd.conf``).

``hpcexec.save_profile("cluster-a", backend="slurm", host="cluster-a", queue="debug",
time="1:00:00")`` writes ``[profiles.cluster-a]`` (its settings) and
``[profiles.cluster-a.resources]`` into the user's configuration file, replacing a profile of
that name and keeping the rest of the file, comments included (tomlkit). The file read back
must pass the same checks as when an Executor reads it (:func:`hpcexec.config.parse`), or
nothing is written.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from pathlib import Path
from typing import Any

import tomlkit

from .config import PROJECT_FILE, config_paths, parse
from .errors import ConfigError
from .resources import RESOURCE_TABLE
from .resourcevalues import format_time, parse_time
from .settings import NAMES

_TOML_TYPES = (str, int, float, bool, list, dict)


def save_profile(
    name: str,
    *,
    path: str | os.PathLike | None = None,
    description: str | None = None,
    default: bool = False,
    **values: Any,
) -> Path:
    """Write the profile ``name``: Executor settings (``backend``, ``host``, ``cache_dir``,
    ...) and default resources (``queue``, ``time``, ...), as :class:`hpcexec.Executor`
    takes them. Into ``path`` (a project's ``hpcexec.toml``, say), by default the user's
    file (``~/.config/hpcexec/config.toml``). ``default``: make it the file's
    ``default_profile``. Returns the file written. Raises :class:`ConfigError` for a key that
    is neither a setting nor a resource, or a value the profile could not be read with."""
    if not isinstance(name, str) or not name or "\n" in name:
        raise ConfigError(f"a profile's name is a non-empty line of text, not {name!r}")
    target = Path(path).expanduser() if path is not None else config_paths()[-1]
    table = _profile_table(name, description, values)
    try:
        text = target.read_text(encoding="utf-8") if target.exists() else ""
        doc = tomlkit.parse(text)
    except (OSError, UnicodeDecodeError, tomlkit.exceptions.ParseError) as e:
        raise ConfigError(f"{target}: cannot be read as TOML ({e}); fix or move it") from None
    profiles = doc.setdefault("profiles", tomlkit.table(is_super_table=True))
    profiles[name] = table
    if default:
        doc["default_profile"] = name
    new = tomlkit.dumps(doc)
    parse(new, target)  # as an Executor will read it, or nothing is written
    _write(target, new)
    return target


def _profile_table(name: str, description: str | None, values: dict[str, Any]) -> Any:
    settings = {k: v for k, v in values.items() if k in NAMES and v is not None}
    resources = {
        k: v for k, v in values.items() if k in RESOURCE_TABLE and k != "name" and v is not None
    }
    other = sorted(set(values) - set(settings) - set(resources) - {"profile"})
    if other or "profile" in values:
        raise ConfigError(
            f"profile {name!r}: {', '.join(other or ['profile'])} is neither an Executor "
            f"setting nor a resource a profile holds (job options and the job name are given "
            f"to the Executor or options())"
        )
    table = tomlkit.table()
    if description is not None:
        table["description"] = description
    for key, value in settings.items():
        table[key] = _toml_value(name, key, value)
    if resources:
        res = tomlkit.table()
        for key, value in resources.items():
            res[key] = _toml_value(name, key, value)
        table["resources"] = res
    return table


def _toml_value(profile: str, key: str, value: Any) -> Any:
    """``value`` as TOML can hold it: a path as text, a timedelta as a walltime."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dt.timedelta):
        return format_time(parse_time(value))
    if isinstance(value, tuple):
        return list(value)
    if not isinstance(value, _TOML_TYPES):
        raise ConfigError(
            f"profile {profile!r}: {key} = {value!r} cannot be written to a TOML file; "
            "give it as text"
        )
    return value


def _write(target: Path, text: str) -> None:
    """``text`` into ``target`` at once (a reader sees the old file or the new one); a new
    user configuration directory is private."""
    private = target.name != PROJECT_FILE
    try:
        target.parent.mkdir(mode=0o700 if private else 0o777, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            if target.exists():
                os.chmod(tmp, target.stat().st_mode & 0o777)
            else:
                os.chmod(tmp, 0o600 if private else 0o644)
            os.replace(tmp, target)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as e:
        raise ConfigError(f"cannot write {target}: {e.strerror or e}") from None
