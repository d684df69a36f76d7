"""The outbound socket server against the fake FreeSWITCH, over real TCP, on each backend.

Each test reads as "a call from X to Y ends at Z", through the dialplan fs-dynroute generates.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import gevent
import peewee as pw
import pytest

from fs_dynroute import admin, demo
from fs_dynroute.database import backend_of, open_database
from fs_dynroute.dialplan import render
from fs_dynroute.fakeswitch.switch import Dialplan, place_call
from fs_dynroute.models import Audit, Route
from fs_dynroute.server import DynrouteServer
from fs_dynroute.store import SQLStore
from tests.serving import dialplan_for, flush, hosts, live_greenlets, open_fds, refresh, running_server, settle

NO_MATCH = "5000 XML default"  # the demo rule's No Match Destination (main-ivr)


@pytest.fixture
def demo_db(db: pw.Database, db_url: str) -> str:
    demo.load()
    return db_url


@pytest.fixture
def server(demo_db: str) -> Iterator[DynrouteServer]:
    sockets, greenlets = open_fds(), live_greenlets()
    with running_server(demo_db, decision_timeout=1.0) as srv:
        yield srv
    assert open_fds() <= sockets, "a session left a socket open"
    assert set(live_greenlets()) <= set(greenlets), "a session left a greenlet running"


def generated_dialplan(server: DynrouteServer, source: str = "5550100") -> Dialplan:
    """The dialplan `fs-dynroute dialplan` prints for the current rules, as FreeSWITCH would run it."""
    store = SQLStore(Route._meta.database.obj)
    rules = [store.rule_for(source=source)]
    return Dialplan.from_xml(render(rules, [hosts(server)], "public"), source)


def call(server: DynrouteServer, caller: str | None, dest: str = "5550100", **kw: object):
    return place_call(generated_dialplan(server, dest), caller, dest, stuck_after=3.0, **kw)


@pytest.mark.parametrize("caller, target", [
    ("+15551111111", "1001 XML default"),
    ("15552222222", "1002 XML default"),
    ("+1 (555) 222-2222", "1002 XML default"),
    ("+15559999999", NO_MATCH),
    ("anonymous", NO_MATCH),
    (None, NO_MATCH),  # FreeSWITCH sends 0000000000
    ("", NO_MATCH),
])
def test_call_ends_at(server: DynrouteServer, caller: str | None, target: str) -> None:
    outcome = call(server, caller)
    assert (outcome.ended, outcome.target) == ("transferred", target)
    assert outcome.variables["dynroute_result"] == ("match" if target != NO_MATCH else "nomatch")
    assert outcome.variables["dynroute_rule"] == "Customer Routing"
    assert [c.line for c in outcome.sent][0] == "connect" and outcome.sent[-1].line == "exit"


def test_match_sets_cdr_variables(server: DynrouteServer) -> None:
    outcome = call(server, "+15551111111", uuid="0d9a8b3e-1111-4222-8333-444455556666")
    assert {k: outcome.variables[k] for k in ("dynroute_target", "dynroute_result", "dynroute_key")} == {
        "dynroute_target": "1001 XML default", "dynroute_result": "match", "dynroute_key": "5551111111"}
    flush(server)
    assert Route.get(Route.caller_key == "5551111111").use_count == 1
    assert Audit.get().call_uuid == "0d9a8b3e-1111-4222-8333-444455556666"


def test_fixed_match_destination(server: DynrouteServer) -> None:
    admin.add_destination("vip-queue", "7000 XML default")
    admin.edit_rule("Customer Routing", admin.RuleSpec(match_destination="vip-queue"))
    refresh(server)
    assert call(server, "+15551111111").target == "7000 XML default"


def test_delete_after_use_first_call_gets_the_record_second_gets_no_match(server: DynrouteServer) -> None:
    admin.edit_rule("Customer Routing", admin.RuleSpec(delete_after_use=True))
    refresh(server)
    assert call(server, "+15551111111").target == "1001 XML default"
    assert call(server, "+15551111111").target == NO_MATCH
    assert [a.result for a in Audit.select()] == ["consumed"]


def test_disabled_rule_sets_current_no_match_over_stale_dialplan(server: DynrouteServer) -> None:
    dialplan = generated_dialplan(server)  # generated while the No Match Destination was main-ivr
    admin.add_destination("night-ivr", "5001 XML default")
    admin.edit_rule("Customer Routing", admin.RuleSpec(enabled=False, no_match_destination="night-ivr"))
    refresh(server)
    outcome = place_call(dialplan, "+15551111111", "5550100")
    assert (outcome.target, outcome.variables["dynroute_result"]) == ("5001 XML default", "disabled")


def test_no_rule_for_the_source_leaves_the_dialplan_default(server: DynrouteServer) -> None:
    outcome = place_call(dialplan_for(server, "9999 XML default"), "+15551111111", "5550999")
    assert (outcome.ended, outcome.target) == ("transferred", "9999 XML default")
    assert [c.line for c in outcome.sent] == ["connect"]


def test_rule_picked_by_channel_variable(server: DynrouteServer) -> None:
    outcome = place_call(dialplan_for(server, "9999 XML default"), "+15551111111", "70918",
                         variables={"dynroute_rule": "Customer Routing"})
    assert outcome.target == "1001 XML default"


def test_server_down_leaves_the_default(demo_db: str) -> None:
    with running_server(demo_db) as srv:
        dialplan = generated_dialplan(srv)
    outcome = place_call(dialplan, "+15551111111", "5550100")
    assert (outcome.ended, outcome.target) == ("transferred", NO_MATCH)
    assert outcome.silence < 0.5


def test_percent_0a_forgery_routes_on_the_true_caller_id(server: DynrouteServer) -> None:
    outcome = call(server, "+15559999999", behaviour="inject", forged_caller_id="5551111111")
    assert outcome.target == NO_MATCH  # the forged 5551111111 would have reached 1001
    assert outcome.variables["dynroute_key"] == "5559999999"


def test_caller_hangs_up_mid_decision(server: DynrouteServer, demo_db: str, caplog: pytest.LogCaptureFixture) -> None:
    admin.edit_rule("Customer Routing", admin.RuleSpec(delete_after_use=True))
    refresh(server)
    with write_locked(demo_db):  # the consume waits on the lock: the server is mid-decision
        outcome = call(server, "+15551111111", behaviour="hangup", hangup_after=0.1)
        assert outcome.ended == "hangup"
        settle(server)
    assert Route.select().count() == 2  # nothing consumed for a caller who left
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_slow_database_reaches_no_match_on_time(server: DynrouteServer, demo_db: str) -> None:
    admin.edit_rule("Customer Routing", admin.RuleSpec(delete_after_use=True))
    refresh(server)
    with write_locked(demo_db):
        started = time.monotonic()
        outcome = call(server, "+15551111111")
        elapsed = time.monotonic() - started
    assert (outcome.ended, outcome.target) == ("transferred", NO_MATCH)
    assert 0.9 < elapsed < 1.6, elapsed  # the 1 s deadline, not the lock's length
    settle(server)
    gevent.sleep(0.3)  # let the worker thread finish its rolled-back consume
    assert call(server, "+15551111111").target == "1001 XML default"  # the record was kept


def test_over_capacity_gets_the_default_at_once(demo_db: str) -> None:
    admin.edit_rule("Customer Routing", admin.RuleSpec(delete_after_use=True))
    with running_server(demo_db, max_sessions=2, decision_timeout=1.0) as srv, write_locked(demo_db):
        busy = [gevent.spawn(call, srv, "+15551111111") for _ in range(2)]
        gevent.sleep(0.2)
        outcome = call(srv, "+15552222222")
        assert (outcome.ended, outcome.target) == ("transferred", NO_MATCH)
        assert outcome.silence < 0.3
        gevent.joinall(busy, timeout=5)
        assert all(g.value.target == NO_MATCH for g in busy)


def test_unreadable_database_reaches_no_match(tmp_path: Path) -> None:
    garbage = tmp_path / "broken.db"
    garbage.write_bytes(b"this is not an SQLite database" * 100)
    with running_server(f"sqlite:///{garbage}") as srv:
        outcome = place_call(dialplan_for(srv), "+15551111111", "5550100")
    assert (outcome.ended, outcome.target) == ("transferred", "5000 XML default")
    assert outcome.silence < 1.2


def test_two_hundred_concurrent_calls_all_correct(server: DynrouteServer) -> None:
    callers = ["+15551111111", "15552222222", "+15559999999", "anonymous"]
    expected = {"+15551111111": "1001 XML default", "15552222222": "1002 XML default"}
    dialplan = generated_dialplan(server)
    calls = [gevent.spawn(place_call, dialplan, callers[n % 4], "5550100", stuck_after=5.0) for n in range(200)]
    gevent.joinall(calls, timeout=30)
    results = [(c.value.ended, c.value.target) for c in calls]
    assert results == [("transferred", expected.get(callers[n % 4], NO_MATCH)) for n in range(200)]


class write_locked:
    """Hold the database's write lock from another connection, as a long CRM import would."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self.release = threading.Event()
        self.held = threading.Event()
        self.thread = threading.Thread(target=self._hold, daemon=True)

    def _hold(self) -> None:
        backend = backend_of(self.db_url)
        if backend == "sqlite":
            conn = sqlite3.connect(self.db_url[len("sqlite:///"):], isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
        else:
            conn = open_database(self.db_url).connection()
            cur = conn.cursor()
            cur.execute("BEGIN")
            cur.execute("SELECT * FROM dynroute_route FOR UPDATE")
        self.held.set()
        self.release.wait(10)
        conn.rollback()
        conn.close()

    def __enter__(self) -> write_locked:
        self.thread.start()
        assert self.held.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.thread.join(5)


def test_a_newline_in_the_caller_id_cannot_forge_a_log_line(server: DynrouteServer,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fs_dynroute")
    outcome = call(server, "+15559999999\ncall uuid=forged caller=+15551111111")
    assert outcome.target == NO_MATCH
    settle(server)  # the session logs after it has closed the socket
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("call ")]
    assert len(lines) == 1 and "\n" not in lines[0] and "\\n" in lines[0]
