"""Fault isolation on the database side (issue 8): no bad row, lock, lost reply or reload takes routing down.

============  ========================================================================================================
issue 8 item  the fault, then its test(s) on the indented line below
============  ========================================================================================================
1             unreadable ``expires_at`` (MariaDB zero date; SQLite text, epoch, ``Z``; PostgreSQL year 10000, BC)
                  test_an_unreadable_expiry_costs_only_its_route
2             locked Delete After Use rows starve the poller (FOR UPDATE; SQLite write lock)
                  test_locked_delete_after_use_rows_do_not_starve_other_calls
3             lost COMMIT acknowledgement loses a record
                  test_a_lost_commit_reply_puts_the_record_back
4             a full reload sends calls to No Match
                  test_calls_during_full_reloads_route_correctly;
                  test_a_full_load_held_up_leaves_the_index_serving_and_fresh
                  (1M rows and event-loop stalls: benchmarks/reload.py)
5             ``dynroute_change`` never pruned
                  test_the_change_log_is_pruned_although_the_index_reloads
5             SQLite change ids restart after pruning
                  test_change_ids_never_go_back_after_pruning; test_schema (upgrade from v2)
7             ``Main-IVR`` overwrites ``main-ivr`` on MariaDB
                  test_names_differing_only_in_case_are_one_name
13            reconnects logged every poll; multi-line psycopg2 messages
                  test_outage.test_database_down_no_match_within_deadline_logged_once_each_way
============  ========================================================================================================
"""

from __future__ import annotations

import io
import logging
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlparse

import gevent
import peewee as pw
import pytest

from fs_dynroute import admin, csvio, demo
from fs_dynroute.check import problems
from fs_dynroute.database import backend_of, bound_statements, open_database
from fs_dynroute.decision import Result
from fs_dynroute.fakeswitch.switch import place_call
from fs_dynroute.index import IndexedStore
from fs_dynroute.models import Audit, Change, Destination, Route, Rule
from fs_dynroute.routing import route_call
from fs_dynroute.store import SQLStore
from tests.backends import BACKENDS
from tests.serving import dialplan_for, running_server

NO_MATCH = "5000 XML default"
SERVERS_ONLY = pytest.mark.parametrize("db_url", [b for b in BACKENDS if b != "sqlite"], indirect=True)

# Values each backend lets a CRM store in expires_at that are no usable time.
UNREADABLE = {
    "sqlite": ["'01/02/2030 10:00'", "1893456000", "'2030-01-02T10:00:00Z'"],
    "mysql": ["'0000-00-00 00:00:00'"],
    "postgresql": ["'10000-01-01 00:00:00'", "'0001-01-01 00:00:00 BC'"],
}


def fs_warnings(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("fs_dynroute") and text in r.getMessage()]


def wait_for(condition, timeout: float = 10.0) -> None:
    limit = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < limit, "condition not met in time"
        gevent.sleep(0.02)


# -- 1 ------------------------------------------------------------------------------------------------------

def test_an_unreadable_expiry_costs_only_its_route(db: pw.Database, db_url: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="fs_dynroute")
    demo.load()
    admin.add_route("Customer Routing", "+15553333333", "1003", expires="48h")  # a readable expiry still works
    rule_id = Rule.get().id
    bad = UNREADABLE[backend_of(db_url)]
    index = IndexedStore(SQLStore(db), poll_interval=60)
    index.reload()
    keys = [f"55540000{n:02d}" for n in range(len(bad))]
    for key, value in zip(keys, bad):  # a CRM writing straight into the table, while the server runs
        db.execute_sql(f"INSERT INTO dynroute_route (rule_id, caller_key, destination, expires_at) "
                       f"VALUES ({rule_id}, '{key}', '1004', {value})")
    index.refresh()  # the poll reads them ...
    index.reload()  # ... and so does a full load (a restart)
    sql = SQLStore(db)  # what `fs-dynroute lookup` asks
    for store in (index, sql):
        rule = store.rule_for(source="5550100")
        for caller, target in (("+15551111111", "1001 XML default"), ("+15553333333", "1003 XML default"),
                               *((f"+1{key}", NO_MATCH) for key in keys)):
            decision = route_call(store, rule, caller, dry_run=True)
            assert (decision.destination, decision.result) == (target, Result.MATCH if target != NO_MATCH
                                                               else Result.NOMATCH), caller
    found = list(problems("default"))
    assert len(found) == len(bad)
    assert all("is not a date-time" in line and "never matches" in line for line in found)
    assert sorted(line.split("caller_key ")[1][1:11] for line in found) == keys
    for key in keys:  # logged once by the server's index, although read twice, and once by lookup
        assert len(fs_warnings(caplog, f"caller_key {key}) ignored")) == 2
    index.stop()


# -- 2 ------------------------------------------------------------------------------------------------------

def other_client(db_url: str):  # a raw DB-API connection of another program, in a transaction of its own
    url = urlparse(db_url)
    if backend_of(db_url) == "sqlite":
        return sqlite3.connect(url.path[1:], isolation_level=None)
    if backend_of(db_url) == "mysql":
        import pymysql

        return pymysql.connect(host=url.hostname, port=url.port, user="root", database=url.path[1:])
    import psycopg2

    return psycopg2.connect(db_url)


@contextmanager
def rows_locked(db_url: str, rule_id: int) -> Iterator[None]:
    """Another client holds the rule's routes: SELECT ... FOR UPDATE, or on SQLite the file's write lock."""
    conn = other_client(db_url)
    if backend_of(db_url) == "sqlite":
        conn.execute("BEGIN IMMEDIATE")
    else:
        with conn.cursor() as cur:
            cur.execute(f"SELECT id FROM dynroute_route WHERE rule_id = {rule_id} FOR UPDATE")
            assert len(cur.fetchall()) == 20
    try:
        yield
    finally:
        conn.rollback()
        conn.close()


def test_locked_delete_after_use_rows_do_not_starve_other_calls(db: pw.Database, db_url: str,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fs_dynroute")
    demo.load()
    admin.add_rule("Callbacks", admin.RuleSpec(source="5550200", digits_match=10, no_match_destination="main-ivr",
                                               delete_after_use=True))
    keys = [f"55530000{n:02d}" for n in range(20)]
    for key in keys:
        admin.add_route("Callbacks", key, "1003")
    callbacks = Rule.get(Rule.name == "Callbacks").id
    customer = Rule.get(Rule.name == "Customer Routing").id
    servers = backend_of(db_url) != "sqlite"
    with running_server(db_url, stale_after=1.0, decision_timeout=1.0, db_threads=4) as server:
        dialplan = dialplan_for(server)
        with rows_locked(db_url, callbacks):
            waiting: list[gevent.Greenlet] = []
            routed: list[str] = []
            started = time.monotonic()
            while time.monotonic() - started < 4.0:  # four times stale_after, the consumes' threads all held
                waiting += [gevent.spawn(place_call, dialplan, f"+1{keys[len(waiting) % 20]}", "5550200")
                            for _ in range(2)]
                routed.append(place_call(dialplan, "+15551111111", "5550100").target)
                if servers and len(routed) == 10:  # a change made meanwhile still reaches the index
                    # as a CRM would, on a connection of its own (outside the locked range)
                    open_database(db_url).execute_sql(
                        "INSERT INTO dynroute_route (rule_id, caller_key, destination) VALUES (%s, %s, %s)",
                        (customer, "5550004444", "1004"))
                gevent.sleep(0.05)
            if servers:
                assert place_call(dialplan, "+15550004444", "5550100").target == "1004 XML default"
            gevent.joinall(waiting, timeout=10)
        assert set(routed) == {"1001 XML default"} and len(routed) > 20
        assert {w.value.target for w in waiting} == {NO_MATCH}  # each locked record cost its call the deadline
        assert max(w.value.silence for w in waiting) < 1.5
        wait_for(lambda: place_call(dialplan, f"+1{keys[0]}", "5550200").target == "1003 XML default")
    assert Route.select().where(Route.rule == callbacks).count() == 19  # only the call that reached one took it
    assert not fs_warnings(caplog, "routes index stale")
    assert not fs_warnings(caplog, "connection lost")  # a bound that fired is not a lost connection


# -- 3 ------------------------------------------------------------------------------------------------------

class CommitCutter:
    """A TCP proxy on loopback between a client and its database. Once armed, it forwards the next COMMIT
    but never delivers the reply: it holds the connection for ``hold`` seconds, then cuts both sides."""

    def __init__(self, port: int, hold: float = 0.5) -> None:
        self.target = ("127.0.0.1", port)
        self.hold = hold
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.armed = threading.Event()
        self.cut = threading.Event()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target, timeout=5)
            self.sockets += [client, upstream]
            muted = threading.Event()
            threading.Thread(target=self._pump, args=(client, upstream, muted, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, muted, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, muted: threading.Event, to_server: bool) -> None:
        try:
            while data := src.recv(65536):
                if to_server and self.armed.is_set() and b"COMMIT" in data:
                    self.armed.clear()
                    muted.set()
                    dst.sendall(data)
                    threading.Event().wait(self.hold)  # the reply is lost on the way back
                    for sock in (src, dst):
                        sock.shutdown(socket.SHUT_RDWR)
                    self.cut.set()
                    return
                if not (muted.is_set() and not to_server):
                    dst.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.listener.close()
        for sock in self.sockets:
            sock.close()


@SERVERS_ONLY
def test_a_lost_commit_reply_puts_the_record_back(db: pw.Database, db_url: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="fs_dynroute")
    demo.load()
    admin.edit_rule("Customer Routing", admin.RuleSpec(delete_after_use=True))
    url = urlparse(db_url)
    proxy = CommitCutter(url.port)
    try:
        store = SQLStore(open_database(db_url.replace(f":{url.port}/", f":{proxy.port}/")))
        rule = store.rule_for(source="5550100")
        proxy.armed.set()
        decision = route_call(store, rule, "+15551111111", "call-1", deadline=time.monotonic() + 10)
        assert proxy.cut.is_set()
        assert (decision.result, decision.destination) == (Result.ERROR, NO_MATCH)  # the caller went to No Match
        assert Route.get_or_none(Route.caller_key == "5551111111") is not None  # so the record is back
        assert not Audit.select().exists()
        assert fs_warnings(caplog, "had gone through: put back for the next call")
        again = route_call(store, rule, "+15551111111", "call-2", deadline=time.monotonic() + 10)
        assert again.destination == "1001 XML default"  # the next caller reaches it
        assert [(a.result, a.call_uuid) for a in Audit.select()] == [("consumed", "call-2")]
        store.db.close()
    finally:
        proxy.close()


# -- 4 ------------------------------------------------------------------------------------------------------

def test_calls_during_full_reloads_route_correctly(db: pw.Database, db_url: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fs_dynroute")
    demo.load()
    admin.add_rule("Bulk", admin.RuleSpec(source="5550300", digits_match=10, no_match_destination="main-ivr"))
    rows = "".join(f"+1556{n:07d},{1000 + n % 7}\n" for n in range(30_000))
    with db.atomic():
        csvio.import_routes(Rule.get(Rule.name == "Bulk"), io.StringIO(rows))
    # full_reload=0: a new index is always being built beside the one serving calls.
    with running_server(db_url, stale_after=0.6, store_options={"full_reload": 0.0}) as server:
        dialplan = dialplan_for(server)
        started, targets = time.monotonic(), []
        while time.monotonic() - started < 3.0:
            targets.append((place_call(dialplan, "+15551111111", "5550100").target,
                            place_call(dialplan, "+15560012345", "5550300").target))
            gevent.sleep(0.01)
    assert set(targets) == {("1001 XML default", "1004 XML default")}  # 12345 % 7 == 4
    assert len(fs_warnings(caplog, "index loaded")) >= 3
    assert not fs_warnings(caplog, "routes index stale")


@pytest.mark.parametrize("db_url", [b for b in BACKENDS if b == "postgresql"], indirect=True)
def test_a_full_load_held_up_leaves_the_index_serving_and_fresh(db: pw.Database, db_url: str,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """A full load that takes long is not a stale index. Another client locks the rules table, which only
    the load reads. (PostgreSQL: MariaDB's table lock would hold up every write to the routes too.)"""
    caplog.set_level(logging.INFO, logger="fs_dynroute")
    demo.load()
    bound_statements(db, 5.0)  # the test's own statements: a mistake here fails, never hangs
    with running_server(db_url, stale_after=1.0) as server:
        dialplan = dialplan_for(server)
        conn = other_client(db_url)
        try:
            with conn.cursor() as cur:
                cur.execute("LOCK TABLE dynroute_rule IN ACCESS EXCLUSIVE MODE")
            server.store.reload_at = 0.0  # a load is due; it waits on the lock
            started, targets = time.monotonic(), []
            while time.monotonic() - started < 3.0:  # three times stale_after
                targets.append(place_call(dialplan, "+15551111111", "5550100").target)
                gevent.sleep(0.05)
            # The poller keeps the serving index fresh meanwhile: a change still reaches calls.
            db.execute_sql("UPDATE dynroute_route SET destination = '1009' WHERE caller_key = '5552222222'")
            wait_for(lambda: place_call(dialplan, "+15552222222", "5550100").target == "1009 XML default")
        finally:
            conn.rollback()
            conn.close()
        wait_for(lambda: len(fs_warnings(caplog, "index loaded")) == 2)  # the load finishes once the lock goes
        assert place_call(dialplan, "+15552222222", "5550100").target == "1009 XML default"
    assert set(targets) == {"1001 XML default"}
    assert not fs_warnings(caplog, "routes index stale")


# -- 5 ------------------------------------------------------------------------------------------------------

def test_the_change_log_is_pruned_although_the_index_reloads(db: pw.Database) -> None:
    demo.load()
    index = IndexedStore(SQLStore(db), poll_interval=60, change_retention=0.5, settle=0.0, full_reload=0.1)
    index.reload()
    admin.add_route("Customer Routing", "+15553333333", "1003")
    first = Change.select(pw.fn.MAX(Change.id)).scalar()
    started = time.monotonic()
    while Change.select().where(Change.id <= first).exists():  # the full loads come more often than retention
        assert time.monotonic() - started < 10, "change rows older than the retention were never pruned"
        gevent.sleep(0.05)
        index.refresh()
    assert len(index._read) < 100  # what is remembered for pruning is bounded too
    index.stop()


def test_change_ids_never_go_back_after_pruning(db: pw.Database) -> None:
    demo.load()
    last = Change.select(pw.fn.MAX(Change.id)).scalar()
    Change.delete().execute()  # pruning emptied the log
    admin.add_route("Customer Routing", "+15553333333", "1003")
    assert Change.select(pw.fn.MIN(Change.id)).scalar() > last  # above every server's cursor


# -- 7 ------------------------------------------------------------------------------------------------------

def test_names_differing_only_in_case_are_one_name(db: pw.Database) -> None:
    demo.load()
    with pytest.raises(admin.UserError, match="destination 'main-ivr' already exists .*use 'main-ivr'"):
        admin.add_destination("Main-IVR", "7777 XML default")
    assert destination_transfers() == {"main-ivr": "5000 XML default"}  # nothing overwritten, nothing added
    admin.add_destination("main-ivr", "5001 XML default")  # the same spelling still redefines it
    assert destination_transfers() == {"main-ivr": "5001 XML default"}
    with pytest.raises(admin.UserError, match="rule 'Customer Routing' already exists"):
        admin.add_rule("customer routing ", admin.RuleSpec(source="5550999", digits_match=10,
                                                           no_match_destination="main-ivr"))
    # The schema holds to the same rule for a CRM writing the tables directly, on every backend.
    with pytest.raises(pw.IntegrityError), db.atomic():
        db.execute_sql("INSERT INTO dynroute_destination (name, transfer) VALUES ('MAIN-IVR', '7777 XML default')")
    with pytest.raises(pw.IntegrityError), db.atomic():
        Rule.insert(name="CUSTOMER ROUTING", source="5550999", digits_match=10,
                    no_match_destination="main-ivr").execute()
    assert destination_transfers() == {"main-ivr": "5001 XML default"}


def destination_transfers() -> dict[str, str]:
    return {d.name: d.transfer for d in Destination.select()}
