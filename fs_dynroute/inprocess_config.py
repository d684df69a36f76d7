"""Settings for the in-process mode, read without a command line: FreeSWITCH's environment, else a small file.

mod_python3 passes no arguments to configure from, so the settings come from the environment
FreeSWITCH runs with, or from ``/etc/fs-dynroute.conf`` (another path in ``DYNROUTE_CONFIG``).
The file holds the same ``NAME=value`` lines as the environment, so one file can also serve as a
systemd ``EnvironmentFile``; a variable set in the environment wins over the file. The names are
the ones ``fs-dynroute serve`` reads, so one set of settings describes both front doors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from fs_dynroute.config import BY_NAME, ConfigError, ServeConfig, resolve
from fs_dynroute.database import DatabaseURLError, backend_of, default_url

CONFIG_VAR = "DYNROUTE_CONFIG"
DEFAULT_FILE = "/etc/fs-dynroute.conf"

# The serve settings that mean something in-process; their names, defaults and checks are config.py's.
IN_PROCESS = ("db", "decision_timeout", "poll_interval", "stale_after", "default_context")
VARIABLES: dict[str, str] = {BY_NAME[name].env: BY_NAME[name].help for name in IN_PROCESS}


def load(environ: Mapping[str, str] = os.environ) -> ServeConfig:
    """The settings from ``environ`` over the config file; raises ConfigError naming the bad one and where."""
    named = environ.get(CONFIG_VAR)
    found = read_file(Path(named or DEFAULT_FILE), required=bool(named))
    found.update({name: (environ[name], "environment") for name in VARIABLES if environ.get(name)})
    values = {}
    for name in IN_PROCESS:
        env = BY_NAME[name].env
        if env in found:
            text, where = found[env]
            try:
                values[name] = resolve(name, None, {env: text})
                if name == "db":
                    backend_of(text)
            except (ConfigError, DatabaseURLError) as exc:
                raise ConfigError(f"{env} ({where}): {str(exc).removeprefix(env + ': ')}") from None
    values["db"] = values.get("db") or default_url()
    try:
        return ServeConfig(**values)
    except ConfigError as exc:
        sources = sorted({where for _, where in found.values()})
        raise ConfigError(f"{exc} (set in {', '.join(sources) or 'the defaults'})") from None


def read_file(path: Path, *, required: bool) -> dict[str, tuple[str, str]]:
    """``NAME=value`` lines (blank lines and ``#`` comments skipped) -> name -> (value, "path:line")."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{CONFIG_VAR}: {path} does not exist") from None
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    found = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, equals, value = line.partition("=")
        name = name.strip()
        if not equals or name not in VARIABLES:
            raise ConfigError(f"{path}:{number}: expected NAME=value with NAME one of {', '.join(VARIABLES)}")
        found[name] = (_unquote(value.strip()), f"{path}:{number}")
    return found


def _unquote(value: str) -> str:
    """A value as systemd reads it: one pair of surrounding quotes removed."""
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"" else value
