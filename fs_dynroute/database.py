"""Opening the routes database from a URL (playhouse.db_url form) with the settings each backend needs.

The URL comes from ``--db`` or ``DYNROUTE_DB``; the default is an SQLite file in the
user's data directory. ``pooled=True`` (the server) turns on playhouse.pool so calls reuse
connections instead of connecting per call.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from urllib.parse import urlparse

import peewee as pw
from playhouse import db_url

ENV_VAR = "DYNROUTE_DB"

# Bounded waits everywhere: a database that hangs must cost a call its deadline, never a thread forever.
_SQLITE_PRAGMAS = (("journal_mode", "wal"), ("synchronous", "normal"), ("foreign_keys", 1))
_CONNECT_TIMEOUT = 3
_QUERY_TIMEOUT = 10


class DatabaseURLError(ValueError):
    """A --db / DYNROUTE_DB value that names no backend we support."""


def default_url() -> str:
    """``sqlite:///$XDG_DATA_HOME/fs-dynroute/routes.db`` (``~/.local/share/...`` when unset)."""
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return f"sqlite:///{base / 'fs-dynroute' / 'routes.db'}"


def resolve_url(url: str | None) -> str:
    """The URL to use: the explicit one, else ``DYNROUTE_DB``, else the default file."""
    return url or os.environ.get(ENV_VAR) or default_url()


def backend_of(url: str) -> str:
    """``sqlite``, ``mysql`` or ``postgresql`` for a database URL."""
    scheme = urlparse(url).scheme.split("+")[0]
    backend = {"sqlite": "sqlite", "mysql": "mysql", "postgres": "postgresql",
               "postgresql": "postgresql"}.get(scheme)
    if backend is None:
        raise DatabaseURLError(
            f"database URL {url!r}: scheme must be sqlite://, mysql:// or postgresql://")
    return backend


def _connect_params(backend: str, busy_timeout: float) -> dict[str, object]:
    if backend == "sqlite":
        return {"pragmas": _SQLITE_PRAGMAS, "timeout": busy_timeout, "check_same_thread": False}
    if backend == "mysql":
        return {"connect_timeout": _CONNECT_TIMEOUT, "read_timeout": _QUERY_TIMEOUT,
                "write_timeout": _QUERY_TIMEOUT, "charset": "utf8mb4"}
    # DateStyle ISO: expires_at is read as text (see expiry.py) and must come in one form.
    return {"connect_timeout": _CONNECT_TIMEOUT,
            "options": f"-c statement_timeout={_QUERY_TIMEOUT * 1000} -c DateStyle=ISO"}


def bound_statements(db: pw.Database, seconds: float | None) -> None:
    """Make the backend itself give up on each statement, lock wait included, after ``seconds``.

    Called by the server before each unit of work on its thread's pooled connection (so a bound
    set for one call never outlives it): PostgreSQL's statement_timeout and lock_timeout, MariaDB's
    max_statement_time and innodb_lock_wait_timeout (whole seconds), SQLite's busy timeout. None
    restores the default bound. A thread whose statement is cut off is free for the next one.
    """
    seconds = _QUERY_TIMEOUT if seconds is None else max(seconds, 0.001)
    ms = max(1, round(seconds * 1000))
    if isinstance(db, pw.SqliteDatabase):
        db.execute_sql(f"PRAGMA busy_timeout = {ms}")
    elif isinstance(db, pw.MySQLDatabase):
        db.execute_sql(f"SET SESSION max_statement_time = {ms / 1000:.3f}, "
                       f"innodb_lock_wait_timeout = {max(1, math.ceil(seconds))}")
    else:
        db.execute_sql(f"SET statement_timeout = {ms}; SET lock_timeout = {ms}")


def open_database(url: str | None = None, *, pooled: bool = False, max_connections: int = 16,
                  busy_timeout: float = 5.0) -> pw.Database:
    """A peewee Database for ``url``; for SQLite, creates the file's directory when it is missing."""
    url = resolve_url(url)
    backend = backend_of(url)
    scheme, rest = url.split("://", 1)
    base_scheme = scheme.split("+")[0]
    params = _connect_params(backend, busy_timeout)
    if pooled:
        scheme = f"{base_scheme}+pool"
        params.update(max_connections=max_connections, stale_timeout=300, timeout=busy_timeout)
    if backend == "sqlite":
        path = urlparse(url).path[1:] if url.startswith("sqlite:///") else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    # User and password are percent-decoded, as in any URL ("p%40ss" is "p@ss"); PyMySQL takes "password"
    # (playhouse names it "passwd" for plain mysql://, which PyMySQL deprecates).
    db = db_url.connect(f"{scheme}://{rest}", unquote_password=True, unquote_user=True, **params)
    if "passwd" in db.connect_params:
        db.connect_params["password"] = db.connect_params.pop("passwd")
    return db


def write_transaction(db: pw.Database) -> pw._atomic:
    """A transaction that will write. On SQLite it takes the write lock at BEGIN (IMMEDIATE), so it waits up to
    the busy timeout for another writer (a server flushing statistics); a deferred one that has read first cannot
    upgrade once another connection committed, and fails at once with 'database is locked'."""
    db = db.obj if isinstance(db, pw.DatabaseProxy) else db
    return db.atomic("IMMEDIATE") if isinstance(db, pw.SqliteDatabase) else db.atomic()
