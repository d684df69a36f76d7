"""The routes database going away and coming back, with real MariaDB and PostgreSQL servers.

While it is down calls reach No Match within the deadline and the outage is logged once each
way; when it kills our connections the next call is routed correctly; nothing needs a restart.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlparse

import gevent
import peewee as pw
import pytest

from fs_dynroute import admin, demo
from fs_dynroute.database import backend_of
from fs_dynroute.fakeswitch.switch import place_call
from tests.backends import BACKENDS, admin_connection
from tests.serving import dialplan_for, running_server

NO_MATCH = "5000 XML default"


class Switch:
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


# An SQLite file has no server to go down or connections to kill: these run on the two servers.
pytestmark = pytest.mark.parametrize("db_url", [b for b in BACKENDS if b != "sqlite"], indirect=True)


@pytest.fixture
def switch(db: pw.Database, db_url: str) -> Iterator[Switch]:
    demo.load()
    admin.edit_rule("Customer Routing", admin.RuleSpec(delete_after_use=True))  # every match needs the database
    s = Switch(db_url)
    yield s
    s.close()


def test_killed_connections_next_call_is_routed_correctly(switch: Switch) -> None:
    with running_server(switch.url) as server:
        dialplan = dialplan_for(server)
        assert place_call(dialplan, "+15551111111", "5550100").target == "1001 XML default"
        switch.kill_connections()
        assert place_call(dialplan, "+15552222222", "5550100").target == "1002 XML default"


def test_database_down_no_match_within_deadline_logged_once_each_way(
        switch: Switch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fs_dynroute")
    with running_server(switch.url, stale_after=1.0, decision_timeout=1.0) as server:
        dialplan = dialplan_for(server)
        switch.down()
        gevent.sleep(1.3)  # past stale_after: the index no longer vouches for what it holds
        for _ in range(5):
            outcome = place_call(dialplan, "+15551111111", "5550100")
            assert (outcome.ended, outcome.target) == ("transferred", NO_MATCH)
            assert outcome.silence < 1.1
            gevent.sleep(0.2)
        switch.up()
        started = time.monotonic()
        while time.monotonic() - started < 5:
            gevent.sleep(0.2)
            if place_call(dialplan, "+15551111111", "5550100").target == "1001 XML default":
                break
        else:
            pytest.fail("calls were not routed again after the database came back")
    messages = [r.getMessage() for r in caplog.records]
    assert sum("routes database unavailable" in m for m in messages) == 1, messages
    assert sum("routes database back after" in m for m in messages) == 1, messages
