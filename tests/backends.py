"""Real test databases: a fresh SQLite file, MariaDB database or PostgreSQL database per test, dropped after.

The backends come from DYNROUTE_TEST_BACKENDS (default: all three). Server URLs default to this
project's machines (MariaDB root@127.0.0.1, PostgreSQL postgres@127.0.0.1, no passwords) and can be
changed with DYNROUTE_TEST_MYSQL / DYNROUTE_TEST_POSTGRESQL. Where a server is unreachable the test
skips and says why, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import pytest

from fs_dynroute.database import backend_of

BACKENDS = [b for b in os.environ.get("DYNROUTE_TEST_BACKENDS", "sqlite,mysql,postgresql").split(",") if b]
SERVERS = {
    "mysql": os.environ.get("DYNROUTE_TEST_MYSQL", "mysql://root@127.0.0.1:3306"),
    "postgresql": os.environ.get("DYNROUTE_TEST_POSTGRESQL", "postgresql://postgres@127.0.0.1:5432"),
}


def _unavailable(backend: str, why: str) -> None:
    message = f"{backend} server at {SERVERS[backend]} unavailable: {why}"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (CI=true makes this backend mandatory)")
    pytest.skip(message)


def admin_connection(backend: str):  # a raw DB-API connection to the server itself, autocommit
    if backend == "mysql":
        import pymysql

        return pymysql.connect(host="127.0.0.1", user="root", port=int(SERVERS[backend].rsplit(":", 1)[1]),
                               connect_timeout=3, autocommit=True)
    import psycopg2

    conn = psycopg2.connect(f"{SERVERS[backend]}/postgres", connect_timeout=3)
    conn.autocommit = True
    return conn


@contextmanager
def fresh_database(backend: str, tmp_path: Path) -> Iterator[str]:
    """A URL to an empty database of ``backend`` that exists for the duration of the block."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'routes.db'}"
        return
    name = f"dynroute_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = admin_connection(backend)
    except Exception as exc:  # driver-specific connection errors
        _unavailable(backend, str(exc))
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name}")
        yield f"{SERVERS[backend]}/{name}"
    finally:
        with admin.cursor() as cur:
            if backend == "postgresql":
                cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
            cur.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.close()


class DatabaseOutage:
    """Takes one test database away from its clients and gives it back, as an outage would."""

    def __init__(self, db_url: str) -> None:
        self.backend = backend_of(db_url)
        self.name = urlparse(db_url).path.lstrip("/")
        self.admin = admin_connection(self.backend)
        self.url = db_url
        if self.backend == "mysql":  # a user of its own, so it can be locked out without touching root
            user, password = f"dr_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
            self.sql(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'",
                     f"GRANT ALL ON {self.name}.* TO '{user}'@'%'")
            self.user = user
            self.url = db_url.replace("root@", f"{user}:{password}@")

    def sql(self, *statements: str) -> list[tuple]:
        rows: list[tuple] = []
        with self.admin.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
                rows = list(cur.fetchall()) if cur.description else []
        return rows

    def kill_connections(self) -> None:
        if self.backend == "mysql":
            for (pid,) in self.sql(f"SELECT id FROM information_schema.processlist WHERE user = '{self.user}'"):
                self.sql(f"KILL {pid}")
        else:
            self.sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     f"WHERE datname = '{self.name}' AND pid <> pg_backend_pid()")

    def down(self) -> None:
        self.sql(f"ALTER USER '{self.user}'@'%' ACCOUNT LOCK" if self.backend == "mysql"
                 else f"ALTER DATABASE {self.name} ALLOW_CONNECTIONS false")
        self.kill_connections()

    def up(self) -> None:
        self.sql(f"ALTER USER '{self.user}'@'%' ACCOUNT UNLOCK" if self.backend == "mysql"
                 else f"ALTER DATABASE {self.name} ALLOW_CONNECTIONS true")

    def close(self) -> None:
        self.up()
        if self.backend == "mysql":
            self.sql(f"DROP USER '{self.user}'@'%'")
        self.admin.close()
