"""The routes database going away and coming back, with real MariaDB and PostgreSQL servers.

While it is down calls reach No Match within the deadline and the outage is logged once each
way; when it kills our connections the next call is routed correctly; nothing needs a restart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import gevent
import peewee as pw
import pytest

from fs_dynroute import admin, demo
from fs_dynroute.fakeswitch.switch import place_call
from tests.backends import BACKENDS, DatabaseOutage
from tests.serving import dialplan_for, running_server

NO_MATCH = "5000 XML default"


# An SQLite file has no server to go down or connections to kill: these run on the two servers.
pytestmark = pytest.mark.parametrize("db_url", [b for b in BACKENDS if b != "sqlite"], indirect=True)


@pytest.fixture
def switch(db: pw.Database, db_url: str) -> Iterator[DatabaseOutage]:
    demo.load()
    admin.edit_rule("Customer Routing", admin.RuleSpec(delete_after_use=True))  # every match needs the database
    s = DatabaseOutage(db_url)
    yield s
    s.close()


def test_killed_connections_next_call_is_routed_correctly(switch: DatabaseOutage) -> None:
    with running_server(switch.url) as server:
        dialplan = dialplan_for(server)
        assert place_call(dialplan, "+15551111111", "5550100").target == "1001 XML default"
        switch.kill_connections()
        assert place_call(dialplan, "+15552222222", "5550100").target == "1002 XML default"


def test_database_down_no_match_within_deadline_logged_once_each_way(
        switch: DatabaseOutage, caplog: pytest.LogCaptureFixture) -> None:
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
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("fs_dynroute")]
    assert sum("routes database unavailable" in m for m in messages) == 1, messages
    assert sum("routes database back after" in m for m in messages) == 1, messages
    # Once each way too: the poller's reconnect attempts (every 0.1 s here) and the index going stale.
    assert sum("database connection lost" in m for m in messages) <= 1, messages
    assert sum("routes index stale" in m for m in messages) == 1, messages
    assert sum("routes index fresh again" in m for m in messages) == 1, messages
    assert not [m for m in messages if "\n" in m]  # one line per record, psycopg2's messages included
