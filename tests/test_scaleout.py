"""Several ``fs-dynroute serve`` processes over one database, as FreeSWITCH's ``socket A|B`` uses them.

Real processes, real TCP on 127.0.0.1, the fake FreeSWITCH placing calls, on each backend:

* Delete After Use is consumed exactly once when two servers race for the same record;
* a change written by the CLI, or by a CRM straight into ``dynroute_route``, reaches both servers' in-memory
  indexes through the change log within about two poll intervals;
* failover: SIGTERM on the first host loses no call (it finishes its calls, then refuses, and FreeSWITCH
  moves on to the second host); SIGKILL costs at most the calls in flight on it, and those still reach the
  dialplan's default (the No Match Destination), never silence.

The last three tests are regressions for defects this file found (fixed in 8851f12 and dd259af): a change-log
entry committed out of id order was never applied (MariaDB, PostgreSQL); a slow COMMIT of a Delete After Use
consume sent its caller to No Match with the record gone (PostgreSQL); SIGTERM reset the calls waiting in the
accept queue between the signal and the listener's close.

The servers log to files, not pipes: a pipe nobody drains fills up after a few hundred calls and then blocks
the server's event loop on its next log line.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import gevent
import pytest

from fs_dynroute.database import backend_of, open_database
from fs_dynroute.fakeswitch.switch import CallOutcome, Dialplan, place_call
from fs_dynroute.models import Audit, Route, database
from tests.test_cli import CLI, SCRIPT
from tests.test_serve_process import free_port

RULE = "Customer Routing"  # the demo rule: source 5550100, 10 digits, No Match = main-ivr
SOURCE = "5550100"
NO_MATCH = "5000 XML default"
ACME = "+15551111111"  # demo route -> 1001
ACME_TARGET = "1001 XML default"
STRANGER = "+15559999999"  # no route -> No Match
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
STUCK_AFTER = 3.0  # the fake's caller gives up in silence after this (a server's own deadline is 1 s)


class Node:
    """One ``fs-dynroute serve`` process on 127.0.0.1:<free port>, logging to a file."""

    def __init__(self, db_url: str, log_path: Path, *extra: str) -> None:
        self.args = (db_url, *extra)
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - the process writes it until close()
        self._spawn()

    def _spawn(self) -> None:
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        db_url, *extra = self.args
        self._log.seek(0)
        self._log.truncate()
        self.proc = subprocess.Popen([SCRIPT, "serve", "--db", db_url, "--listen", self.host, *extra],
                                     stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def wait_listening(self) -> None:
        """Wait for "listening on"; a port taken between free_port() and the bind is retried on another."""
        for _attempt in range(3):
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline and self.proc.poll() is None and "listening on" not in self.log():
                gevent.sleep(0.02)
            if "listening on" in self.log():
                return
            if self.proc.poll() is None or "Address already in use" not in self.log():
                break
            self._spawn()
        raise AssertionError(f"server on {self.host} did not start (exit {self.proc.poll()}):\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text()

    def calls_logged(self) -> list[str]:
        return [line for line in self.log().splitlines() if " call uuid=" in line]

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = STOP_TIMEOUT) -> int:
        """Wait for the process without blocking the event loop (calls may be running in greenlets)."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"server on {self.host} still running {timeout} s after the signal")
            gevent.sleep(0.005)
        return self.proc.returncode

    def terminate(self) -> int:
        self.signal(signal.SIGTERM)
        return self.wait_exit()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()


@contextmanager
def nodes(db_url: str, tmp_path: Path, count: int, *extra: str) -> Iterator[list[Node]]:
    """``count`` servers on the same database, started together; each is killed on the way out if still up."""
    with ExitStack() as stack:
        started = []
        for i in range(count):
            node = Node(db_url, tmp_path / f"serve-{i}-{time.monotonic_ns()}.log", *extra)
            stack.callback(node.close)
            started.append(node)
        for node in started:
            node.wait_listening()
        yield started


def dialplan(*servers: Node) -> Dialplan:
    """The recommended dialplan with ``socket host1|host2...`` (the No Match Destination set first)."""
    return Dialplan.recommended("|".join(s.host for s in servers), NO_MATCH)


def call(plan: Dialplan, caller: str) -> CallOutcome:
    return place_call(plan, caller, SOURCE, stuck_after=STUCK_AFTER)


@pytest.fixture
def cli(db_url: str) -> CLI:
    run = CLI(db_url)
    assert "demo data loaded" in run("initdb", "--demo").stdout
    return run


def audit_results(db_url: str) -> list[tuple[str, str, str]]:
    """(result, caller_key, destination) of every audit row, read with the models."""
    db = open_database(db_url)
    database.initialize(db)
    try:
        with db.connection_context():
            return [(a.result, a.caller_key, a.destination) for a in Audit.select().order_by(Audit.id)]
    finally:
        db.close()


def remaining_routes(db_url: str) -> set[str]:
    db = open_database(db_url)
    database.initialize(db)
    try:
        with db.connection_context():
            return {r.caller_key for r in Route.select()}
    finally:
        db.close()


# ---------------------------------------------------------------------------------------------------------------
# 1. Delete After Use: exactly once across two processes


def test_delete_after_use_is_consumed_exactly_once_across_two_servers(cli: CLI, db_url: str, tmp_path: Path) -> None:
    cli("rule", "edit", RULE, "--delete-after-use")
    with nodes(db_url, tmp_path, 2) as (a, b):
        plans = [dialplan(a, b), dialplan(b, a)]
        calls = [gevent.spawn(call, plans[i % 2], ACME) for i in range(50)]
        gevent.joinall(calls, timeout=15)
        assert all(g.successful() for g in calls), [g.exception for g in calls if not g.successful()]
        outcomes = [g.value for g in calls]
        assert [o.ended for o in outcomes] == ["transferred"] * 50  # none stuck, none dropped
        targets = [o.target for o in outcomes]
        assert targets.count(ACME_TARGET) == 1, targets
        assert targets.count(NO_MATCH) == 49, targets
        served = {o.host for o in outcomes}
        assert served == {a.host, b.host}, f"both servers must have taken calls, got {served}"
        # SIGTERM: each finishes, flushes its batched audit rows and exits 0
        assert (a.terminate(), b.terminate()) == (0, 0), a.log() + b.log()
        assert len(a.calls_logged()) + len(b.calls_logged()) == 50
    audit = audit_results(db_url)
    assert [row for row in audit if row[0] == "consumed"] == [("consumed", "5551111111", ACME_TARGET)], audit
    assert "5551111111" not in remaining_routes(db_url)


# ---------------------------------------------------------------------------------------------------------------
# 2. Changes reach every server through the change log


def _await_route(servers: list[Node], caller: str, target: str, within: float = 5.0) -> float:
    """Seconds until a call from ``caller`` to each server alone reaches ``target`` (bounded by ``within``)."""
    started = time.monotonic()
    pending = {s.host: dialplan(s) for s in servers}
    last: dict[str, str | None] = {}
    while pending and time.monotonic() - started < within:
        for host, plan in list(pending.items()):
            outcome = call(plan, caller)
            assert outcome.ended == "transferred" and outcome.host == host, outcome.as_dict()
            last[host] = outcome.target
            if outcome.target == target:
                del pending[host]
        gevent.sleep(0.02)
    assert not pending, f"after {within} s still not routed to {target!r} by {sorted(pending)}: {last}"
    return time.monotonic() - started


def test_cli_and_crm_changes_reach_both_servers_within_two_seconds(cli: CLI, db_url: str, tmp_path: Path) -> None:
    with nodes(db_url, tmp_path, 2) as servers:
        for s in servers:  # before the change: No Match on both
            assert call(dialplan(s), "+15553333333").target == NO_MATCH

        cli("route", "add", RULE, "+15553333333", "1003")
        took = _await_route(servers, "+15553333333", "1003 XML default")
        assert took < 2.5, f"CLI change took {took:.2f} s to reach both servers"

        # A CRM writing straight into the table, naming only the columns it cares about.
        crm = open_database(db_url)
        try:
            p = crm.param
            with crm.connection_context(), crm.atomic():
                rule_id = crm.execute_sql(f"SELECT id FROM dynroute_rule WHERE name = {p}", (RULE,)).fetchone()[0]
                crm.execute_sql(f"INSERT INTO dynroute_route (rule_id, caller_key, destination) VALUES ({p}, {p}, {p})",
                                (rule_id, "5554444444", "1004"))
        finally:
            crm.close()
        took = _await_route(servers, "+1 555 444 4444", "1004 XML default")
        assert took < 2.5, f"CRM insert took {took:.2f} s to reach both servers"

        # and a deletion is seen too (the route must stop matching on both)
        cli("route", "delete", RULE, "+15553333333")
        took = _await_route(servers, "+15553333333", NO_MATCH)
        assert took < 2.5, f"CLI delete took {took:.2f} s to reach both servers"


# ---------------------------------------------------------------------------------------------------------------
# 3. Failover between the hosts of `socket A|B`


@dataclass
class Placed:
    caller: str
    expected: str
    started: float
    ended_at: float
    outcome: CallOutcome


def _caller_loop(plan: Dialplan, log: list[Placed], until: float, first: int) -> None:
    """Place calls one after another until ``until``, alternating a matching and a non-matching caller."""
    i = first
    while time.monotonic() < until:
        caller, expected = ((ACME, ACME_TARGET), (STRANGER, NO_MATCH))[i % 2]
        started = time.monotonic()
        outcome = call(plan, caller)
        log.append(Placed(caller, expected, started, time.monotonic(), outcome))
        i += 1
        gevent.sleep(0.002)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_failover_when_the_first_host_stops(cli: CLI, db_url: str, tmp_path: Path, sig: int) -> None:
    run_for, stop_at, callers = 3.0, 1.5, 2
    with nodes(db_url, tmp_path, 2) as (a, b):
        plan = dialplan(a, b)
        placed: list[Placed] = []
        begin = time.monotonic()
        loops = [gevent.spawn(_caller_loop, plan, placed, begin + run_for, n) for n in range(callers)]
        gevent.sleep(stop_at)
        signalled = time.monotonic()
        a.signal(sig)
        code = a.wait_exit()  # polls, so the callers keep calling meanwhile
        gone = time.monotonic()  # A's listening socket is closed by now: every later call must find B
        gevent.joinall(loops, timeout=run_for + 2 * STUCK_AFTER)
        assert all(g.successful() for g in loops), [g.exception for g in loops if not g.successful()]
        assert b.terminate() == 0

    before = [p for p in placed if p.ended_at < signalled]
    after = [p for p in placed if p.started > gone]
    assert len(before) >= 20 and len(after) >= 20, (len(before), len(after))
    assert {p.outcome.host for p in before} == {a.host}, "before the stop, A (first in the list) takes every call"
    assert {p.outcome.host for p in after} == {b.host}, "after the stop, B takes every call"
    assert all(p.outcome.ended == "transferred" for p in placed), \
        [p.outcome.as_dict() for p in placed if p.outcome.ended != "transferred"]  # never stuck, never dropped

    wrong = [p for p in placed if p.outcome.target != p.expected]
    if sig == signal.SIGTERM:
        assert code == 0, a.log()
        assert not wrong, [(p.caller, p.started - signalled, p.outcome.as_dict()) for p in wrong]
        # A finished (and logged) every call it took, including those queued when the signal came
        assert len(a.calls_logged()) == sum(p.outcome.host == a.host for p in placed)
    else:
        assert code == -signal.SIGKILL
        # Only calls that were on A at the instant of the kill may have fallen to the dialplan default.
        in_flight = [p for p in wrong if p.outcome.host == a.host and p.started <= gone and p.ended_at >= signalled]
        assert wrong == in_flight, [(p.caller, p.started - signalled, p.outcome.as_dict()) for p in wrong]
        assert all(p.outcome.target == NO_MATCH for p in wrong)
        assert len(wrong) <= callers


# ---------------------------------------------------------------------------------------------------------------
# Regressions: defects found by this file, each made to happen on purpose.


def test_change_committed_after_a_later_one_still_reaches_the_servers(cli: CLI, db_url: str, tmp_path: Path) -> None:
    """A writer's transaction that commits after a shorter one that started later must not be lost.

    The change log's ids are handed out when a row is inserted, not when its transaction commits. On MariaDB
    and PostgreSQL a server that polls while a long transaction (a CRM's, or ``route import`` of a big file)
    is still open sees the later, already committed ids; it used to move its cursor past them and never read
    the earlier id once that transaction committed, so those routes stayed invisible on every server until a
    restart. (SQLite has one writer at a time, so ids commit in order there.)
    """
    if backend_of(db_url) == "sqlite":
        pytest.skip("SQLite serialises writers: change ids always commit in order")
    with nodes(db_url, tmp_path, 2) as servers:
        crm = open_database(db_url)
        try:
            p = crm.param
            # the CRM's transaction stays open while the CLI writes and both servers poll
            with crm.connection_context(), crm.atomic():
                rule_id = crm.execute_sql(f"SELECT id FROM dynroute_rule WHERE name = {p}", (RULE,)).fetchone()[0]
                crm.execute_sql(f"INSERT INTO dynroute_route (rule_id, caller_key, destination) "
                                f"VALUES ({p}, {p}, {p})", (rule_id, "5554444444", "1004"))
                cli("route", "add", RULE, "+15553333333", "1003")
                _await_route(servers, "+15553333333", "1003 XML default")  # both polled past the CLI's change
            # committed now: its change row has a smaller id than the CLI's
        finally:
            crm.close()
        assert "5554444444" in remaining_routes(db_url)
        _await_route(servers, "+15554444444", "1004 XML default", within=3.0)


def test_a_consumed_record_is_always_sent_to_its_caller_even_when_the_commit_is_slow(
        cli: CLI, db_url: str, tmp_path: Path) -> None:
    """Delete After Use: the record is gone if and only if its caller was sent to it (README, design notes).

    The consume checks the call's deadline inside its transaction, then commits. A COMMIT that takes longer than
    what is left of the deadline (here a deferred constraint trigger sleeping at commit time; in production a
    synchronous standby or a Galera certification that is slow for a moment) finishes in the worker thread after
    the session's gevent.Timeout has fired and the caller has gone to the No Match Destination. It used to leave
    the record deleted and a ``consumed`` audit row for a caller who never reached it; now either the caller is
    sent to the record, or the record and no ``consumed`` row remain. PostgreSQL only, because it can make a
    commit slow from inside the database.
    """
    if backend_of(db_url) != "postgresql":
        pytest.skip("needs a deferred constraint trigger (PostgreSQL) to make COMMIT itself slow")
    cli("rule", "edit", RULE, "--delete-after-use")
    run_sql(db_url, [
        ("CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS "
         "$$ BEGIN PERFORM pg_sleep(1.2); RETURN NULL; END $$"),
        ("CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON dynroute_audit "
         "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit()")])
    with nodes(db_url, tmp_path, 1) as (a,):
        outcome = call(dialplan(a), ACME)  # its session's 1 s deadline passes while the COMMIT sleeps
        assert outcome.ended == "transferred"
        gevent.sleep(1.0)  # the worker thread's COMMIT returns meanwhile
        consumed = [row for row in audit_results(db_url) if row[0] == "consumed"]
        gone = "5551111111" not in remaining_routes(db_url)
        assert (outcome.target, gone, len(consumed)) in [(ACME_TARGET, True, 1), (NO_MATCH, False, 0)], \
            f"caller sent to {outcome.target!r}; record consumed: {gone}; consumed audit rows: {consumed}"
        if outcome.target == NO_MATCH:  # the record is still there, and the next caller gets it
            run_sql(db_url, ["DROP TRIGGER slow_commit ON dynroute_audit"])
            _await_route([a], ACME, ACME_TARGET, within=3.0)
        assert a.terminate() == 0
    assert [row for row in audit_results(db_url) if row[0] == "consumed"] == [("consumed", "5551111111", ACME_TARGET)]
    assert "5551111111" not in remaining_routes(db_url)


def run_sql(db_url: str, statements: list[str]) -> None:
    db = open_database(db_url)
    try:
        with db.connection_context(), db.atomic():
            for sql in statements:
                db.execute_sql(sql)
    finally:
        db.close()


def test_sigterm_does_not_reset_a_call_that_connected_while_it_was_stopping(cli: CLI, db_url: str,
                                                                          tmp_path: Path) -> None:
    """SIGTERM must either serve a call that has connected, or refuse it so FreeSWITCH tries the next host.

    Until the listening socket closes, the kernel keeps completing handshakes into the accept queue, and closing
    it resets them: FreeSWITCH saw a connection, so it does not try the next host, and the reset makes it go on
    with the dialplan at the No Match Destination: a caller with a route is misrouted. ``serve_until_signalled``
    used to write "signal received" before closing, and the failover test above hit this about one run in ten (a
    call started microseconds after the signal). Here the server's stdout is a pipe that is full when the signal
    comes (a log reader that is behind, journald applying back-pressure): anything the server does between the
    signal and the close is held up, which makes the window deterministic.
    """
    if backend_of(db_url) != "sqlite":
        pytest.skip("the server's shutdown does not depend on the backend")
    fallback = Node(db_url, tmp_path / "b.log")
    read_end, write_end = os.pipe()
    proc = None
    try:
        fcntl.fcntl(read_end, fcntl.F_SETPIPE_SZ, 4096)
        port = free_port()
        proc = subprocess.Popen([SCRIPT, "serve", "--db", db_url, "--listen", f"127.0.0.1:{port}"],
                                stdout=write_end, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        os.set_blocking(read_end, False)
        seen = b""
        deadline = time.monotonic() + START_TIMEOUT
        while b"listening on" not in seen and time.monotonic() < deadline and proc.poll() is None:
            gevent.sleep(0.02)
            try:
                seen += os.read(read_end, 65536)
            except BlockingIOError:
                pass
        assert b"listening on" in seen, seen
        fallback.wait_listening()
        # Fill the pipe so that the server's next log line blocks. Through a file description of our own:
        # O_NONBLOCK on the shared one would make the server's writes fail instead of wait.
        filler = os.open(f"/proc/self/fd/{write_end}", os.O_WRONLY | os.O_NONBLOCK)
        try:
            while True:
                os.write(filler, b"#" * 512)
        except BlockingIOError:
            pass
        finally:
            os.close(filler)
        plan = Dialplan.recommended(f"127.0.0.1:{port}|{fallback.host}", NO_MATCH)
        proc.send_signal(signal.SIGTERM)
        gevent.sleep(0.3)  # the server is blocked on its next log line ("signal received" used to precede the close)
        caller = gevent.spawn(place_call, plan, ACME, SOURCE, stuck_after=STUCK_AFTER, first_command_timeout=5.0)
        gevent.sleep(0.3)  # the call is in A's accept queue (then it must be served) or was refused (then B has it)
        deadline = time.monotonic() + STOP_TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline:  # let the server write, stop and exit
            try:
                os.read(read_end, 65536)
            except BlockingIOError:
                gevent.sleep(0.01)
        outcome = caller.get(timeout=10)
        assert proc.poll() == 0
        assert (outcome.ended, outcome.target) == ("transferred", ACME_TARGET), outcome.as_dict()
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)
        os.close(read_end)
        os.close(write_end)
        fallback.close()
