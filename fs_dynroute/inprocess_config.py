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
from dataclasses import dataclass
from pathlib import Path

from fs_dynroute.database import DatabaseURLError, backend_of, default_url

CONFIG_VAR = "DYNROUTE_CONFIG"
DEFAULT_FILE = "/etc/fs-dynroute.conf"

# Every setting: name -> what it is (the README's table says the same).
VARIABLES: dict[str, str] = {
    "DYNROUTE_DB": "database URL (default: the per-user SQLite file, as for the CLI)",
    "DYNROUTE_DECISION_TIMEOUT": "hard deadline per call in seconds (default 1.0)",
    "DYNROUTE_POLL_INTERVAL": "seconds between reads of the change log (default 0.5)",
    "DYNROUTE_STALE_AFTER": "seconds without the database before calls go to No Match (default 3.0)",
    "DYNROUTE_CONTEXT": "dialplan context for bare extensions such as 1001 (default 'default')",
}


class ConfigError(ValueError):
    """A setting that cannot be used; the message names the setting and where it came from."""


@dataclass(frozen=True)
class InProcessConfig:
    db_url: str
    decision_timeout: float = 1.0
    poll_interval: float = 0.5
    stale_after: float = 3.0
    default_context: str = "default"


def load(environ: Mapping[str, str] = os.environ) -> InProcessConfig:
    """The settings from ``environ`` over the config file; raises ConfigError naming the bad one."""
    named = environ.get(CONFIG_VAR)
    found = read_file(Path(named or DEFAULT_FILE), required=bool(named))
    found.update({name: (environ[name], "environment") for name in VARIABLES if environ.get(name)})
    url = found.get("DYNROUTE_DB", (default_url(), "default"))
    try:
        backend_of(url[0])
    except DatabaseURLError as exc:
        raise ConfigError(f"DYNROUTE_DB ({url[1]}): {exc}") from None
    return InProcessConfig(
        db_url=url[0],
        decision_timeout=_seconds(found, "DYNROUTE_DECISION_TIMEOUT", InProcessConfig.decision_timeout),
        poll_interval=_seconds(found, "DYNROUTE_POLL_INTERVAL", InProcessConfig.poll_interval),
        stale_after=_seconds(found, "DYNROUTE_STALE_AFTER", InProcessConfig.stale_after),
        default_context=found.get("DYNROUTE_CONTEXT", (InProcessConfig.default_context, ""))[0])


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


def _seconds(found: Mapping[str, tuple[str, str]], name: str, default: float) -> float:
    if name not in found:
        return default
    text, where = found[name]
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise ConfigError(f"{name} ({where}): expected a number of seconds above 0, got {text!r}")
    return value
