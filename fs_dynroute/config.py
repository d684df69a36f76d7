"""The serve settings: one table of every option, its environment variable and default, validated once.

As hypercorn's config does: a setting comes from the command line, else from the environment (so a
systemd unit needs no long command line, see ``deploy/``), else from its default here, and a
:class:`ServeConfig` is checked when it is made, whichever way it was made. No other module
writes a default of its own. A bad value is a :class:`ConfigError` naming the option and its variable.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Union

from fs_dynroute.database import ENV_VAR as DB_ENV_VAR
from fs_dynroute.destinations import DestinationError, validate_transfer

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
LOOPBACK: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


class ConfigError(ValueError):
    """A setting that cannot work; the message names the option and the environment variable."""


def parse_listen(text: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) with a port of 0-65535 (0: any free port)."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected host:port, got {text!r}")
    if int(port) > 65535:
        raise ValueError(f"port {port} is not 0-65535")
    return host.strip("[]"), int(port)


def parse_allow(text: str) -> tuple[Network, ...]:
    """``CIDR[,CIDR...]``; a bare address is a network of one."""
    try:
        return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise ValueError(f"expected CIDR[,CIDR...] such as 10.0.0.5/32,10.0.1.0/24: {exc}") from None


@dataclass(frozen=True)
class Setting:
    """One serve option: ``--name`` on the command line, ``env`` in the environment."""

    name: str
    env: str
    default: Any
    parse: Callable[[str], Any]
    metavar: str
    help: str

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    def label(self) -> str:
        return f"{self.option} ({self.env})"

    def described(self) -> str:
        """The help text with the default and the variable, as ``--help`` shows it."""
        shown = "" if self.default is None else f" (default {self.default_text()})"
        return f"{self.help}{shown} [${self.env}]"

    def default_text(self) -> str:
        """The default as one would write it on the command line."""
        return "%s:%d" % self.default if self.name == "listen" else str(self.default)


SETTINGS: tuple[Setting, ...] = (
    Setting("db", DB_ENV_VAR, None, str, "URL", "database URL, e.g. sqlite:///routes.db, "
            "mysql://user@host/db, postgresql://user@host/db (default: the per-user SQLite file)"),
    Setting("default_context", "DYNROUTE_CONTEXT", "default", str, "CTX",
            "dialplan context for bare extensions such as 1001"),
    Setting("listen", "DYNROUTE_LISTEN", ("127.0.0.1", 8084), parse_listen, "HOST:PORT",
            "address to listen on"),
    Setting("allow", "DYNROUTE_ALLOW", None, parse_allow, "CIDR[,CIDR...]",
            "FreeSWITCH hosts that may connect; others are closed at once (default: loopback only; "
            "required with a --listen address that is not loopback)"),
    Setting("max_sessions", "DYNROUTE_MAX_SESSIONS", 1000, int, "N",
            "calls served at once; more are sent straight to the dialplan default"),
    Setting("decision_timeout", "DYNROUTE_DECISION_TIMEOUT", 1.0, float, "SECONDS",
            "hard deadline per call, after which the call takes the No Match Destination"),
    Setting("db_threads", "DYNROUTE_DB_THREADS", 8, int, "N", "threads for database calls"),
    Setting("poll_interval", "DYNROUTE_POLL_INTERVAL", 0.5, float, "SECONDS",
            "seconds between reads of the database's change log: how soon changes from the CLI, other nodes "
            "or a CRM reach calls"),
    Setting("stale_after", "DYNROUTE_STALE_AFTER", 3.0, float, "SECONDS",
            "if the database cannot be read for this long, calls go to No Match instead of being routed "
            "from memory"),
    Setting("web", "DYNROUTE_WEB", None, parse_listen, "HOST:PORT",
            "also serve the admin page and the JSON API here, as 'fs-dynroute web' does (they ask for a token; "
            "default: off)"),
    Setting("web_secret_file", "DYNROUTE_WEB_SECRET_FILE", None, str, "FILE",
            "file holding the key that signs the page's session cookies (at least 32 characters); give every node "
            "behind one address the same file (default: a new key per start, which signs everyone out)"),
    Setting("metrics", "DYNROUTE_METRICS", None, parse_listen, "HOST:PORT",
            "also serve /metrics and /health for this process here (no authentication: keep it on loopback or "
            "behind a firewall; default: off)"),
    Setting("track", "DYNROUTE_TRACK", None, parse_listen, "HOST:PORT",
            "FreeSWITCH's event socket: also feed the tracked rules from call outcomes (missed calls, last agent) "
            "in this process, as 'fs-dynroute track' does (default: not tracked)"),
    Setting("track_password_file", "DYNROUTE_TRACK_PASSWORD_FILE", None, str, "FILE",
            "file whose first line is the event socket password for --track (default: $DYNROUTE_ESL_PASSWORD)"),
)
BY_NAME = {s.name: s for s in SETTINGS}


def resolve(name: str, given: object, environ: Mapping[str, str]) -> Any:
    """One setting's value: ``given`` (the command line) unless None, else the environment, else the default."""
    setting = BY_NAME[name]
    source, text = setting.option, given
    if text is None:
        source, text = setting.env, environ.get(setting.env) or None
    if text is None:
        return setting.default
    if not isinstance(text, str):
        return text  # already a value (built in code, not read from text)
    try:
        return setting.parse(text)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def check_context(context: str) -> str:
    """A default context must be one word: ``1001 XML my context`` is no transfer FreeSWITCH can make."""
    try:
        validate_transfer(f"1001 XML {context}")
    except DestinationError:
        raise ConfigError(f"{BY_NAME['default_context'].label()}: {context!r} is not a dialplan context "
                          "(one word of letters, digits and _.+*#@:-)") from None
    return context


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


@dataclass(frozen=True)
class ServeConfig:
    """Everything ``fs-dynroute serve`` needs, checked on creation; fields as in :data:`SETTINGS`."""

    db: str | None = BY_NAME["db"].default
    default_context: str = BY_NAME["default_context"].default
    listen: tuple[str, int] = BY_NAME["listen"].default
    allow: tuple[Network, ...] | None = BY_NAME["allow"].default
    max_sessions: int = BY_NAME["max_sessions"].default
    decision_timeout: float = BY_NAME["decision_timeout"].default
    db_threads: int = BY_NAME["db_threads"].default
    poll_interval: float = BY_NAME["poll_interval"].default
    stale_after: float = BY_NAME["stale_after"].default
    web: tuple[str, int] | None = BY_NAME["web"].default
    web_secret_file: str | None = BY_NAME["web_secret_file"].default
    metrics: tuple[str, int] | None = BY_NAME["metrics"].default
    track: tuple[str, int] | None = BY_NAME["track"].default
    track_password_file: str | None = BY_NAME["track_password_file"].default

    @classmethod
    def load(cls, given: Mapping[str, object], environ: Mapping[str, str]) -> ServeConfig:
        """From the command line's values (None: not given), else ``environ``, else the defaults."""
        return cls(**{s.name: resolve(s.name, given.get(s.name), environ) for s in SETTINGS})

    def __post_init__(self) -> None:
        check_context(self.default_context)
        for name, least in (("max_sessions", 1), ("db_threads", 1)):
            if getattr(self, name) < least:
                raise ConfigError(f"{BY_NAME[name].label()} must be at least {least}, got {getattr(self, name)}")
        for name in ("decision_timeout", "poll_interval", "stale_after"):
            if not getattr(self, name) > 0:  # also refuses NaN
                raise ConfigError(f"{BY_NAME[name].label()} must be more than 0 seconds, got {getattr(self, name)}")
        if self.stale_after <= self.poll_interval:
            raise ConfigError(f"{BY_NAME['stale_after'].label()} ({self.stale_after} s) must be longer than "
                              f"{BY_NAME['poll_interval'].label()} ({self.poll_interval} s), or the index goes "
                              "stale between two reads and every call goes to No Match")
        if self.allow is None and not is_loopback(self.listen[0]):
            raise ConfigError(f"{BY_NAME['listen'].label()} {self.listen[0]} is not a loopback address: anyone "
                              "who can reach the port could read the routing table and consume Delete After Use "
                              f"records, so say which FreeSWITCH hosts may connect with {BY_NAME['allow'].label()}")
        if self.allow == ():
            raise ConfigError(f"{BY_NAME['allow'].label()}: no network given")
        taken: dict[tuple[str, int], str] = {}
        for name in ("listen", "web", "metrics"):
            address = getattr(self, name)
            if address is not None and address[1] and taken.setdefault(address, name) != name:
                raise ConfigError(f"{BY_NAME[name].label()} {address[0]}:{address[1]} is where "
                                  f"{BY_NAME[taken[address]].label()} listens: give each its own port")
        for name, needs in (("track_password_file", "track"), ("web_secret_file", "web")):
            if getattr(self, name) is not None and getattr(self, needs) is None:
                raise ConfigError(f"{BY_NAME[name].label()} is for {BY_NAME[needs].label()}, which is not given")

    @property
    def allowed(self) -> tuple[Network, ...]:
        """The networks a connection may come from: ``allow``, loopback when not given."""
        return self.allow if self.allow is not None else LOOPBACK

    def replace(self, **changes: Any) -> ServeConfig:
        return dataclasses.replace(self, **changes)
