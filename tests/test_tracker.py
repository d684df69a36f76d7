"""Callbacks that keep themselves: the tracker against the fake event socket replaying the captured hangups.

The decisions (pure) are checked on every captured leg; then the tracker runs for real: a TCP connection to the
fake inbound switch, a real database, and for the whole loop the real outbound server and the outbound fake.
"""

from __future__ import annotations

import re
import statistics
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import gevent
import peewee as pw
import pytest

from fs_dynroute import admin, demo
from fs_dynroute.database import open_database
from fs_dynroute.fakeswitch.inbound import SCENARIOS, FakeEvent, InboundSwitch, bridged_leg, captured_hangups, variant
from fs_dynroute.fakeswitch.switch import place_call
from fs_dynroute.models import Audit, Route, database
from fs_dynroute.schema import initdb
from fs_dynroute.track import AuthError, Tracker
from fs_dynroute.track_pyesl import available
from fs_dynroute.track_store import TrackOptions, set_track
from fs_dynroute.tracker import Clear, Skip, TrackSpec, Write, decide, hangup_of
from tests.backends import DatabaseOutage
from tests.serving import dialplan_for, running_server

AGENTS = re.compile(r"^1\d{3}$")
MISSED = TrackSpec("Callbacks", "missed", AGENTS, "72h", frozenset({"NO_ANSWER", "USER_BUSY", "ORIGINATOR_CANCEL"}))
LAST = TrackSpec("Last agent", "last-agent", AGENTS, "30d", frozenset())
NO_MATCH = "5000 XML default"


def b_leg(scenario: str, fmt: str = "plain"):
    hangup = hangup_of(dict(bridged_leg(scenario, fmt).pairs[::-1]))  # reversed: the first of a repeat wins
    assert hangup is not None
    return hangup


# ---------------------------------------------------------------------------------------------------------------
# Decisions, on every captured leg


def test_only_the_bridged_leg_of_each_scenario_decides() -> None:
    for scenario in SCENARIOS:
        for event in captured_hangups()[scenario]:
            hangup = hangup_of(dict(reversed(event.pairs)))
            action = decide(hangup, MISSED)
            if event == bridged_leg(scenario):
                assert not isinstance(action, Skip), scenario
            else:
                assert action == Skip("not the bridged leg"), (scenario, event.get("Call-Direction"))


@pytest.mark.parametrize("fmt", ["plain", "json"])
def test_missed_mode_writes_pending_returns_and_clears_them_on_an_answered_call(fmt: str) -> None:
    got = {s: decide(b_leg(s, fmt), MISSED) for s in SCENARIOS}
    assert got["s1"] == Clear("Callbacks", "5551000001", "1101")  # the rep's call was answered
    for scenario, customer in (("s2", "5551000002"), ("s3", "5551000003"), ("s4", "5551000004")):
        write = got[scenario]
        assert isinstance(write, Write) and (write.customer, write.agent, write.ttl) == (customer, "1101", "72h")
        assert re.fullmatch(r"missed call 2026-12-02 \d\d:\d\d uuid=[0-9a-f-]{36}", write.notes)
        assert write.notes.endswith(b_leg(scenario, fmt).uuid)
    assert isinstance(got["s5"], Write) and (got["s5"].customer, got["s5"].agent) == ("+15551000005", "1101")
    assert got["s6"] == Clear("Callbacks", "+15551000005", "1101")  # the customer reached the rep


def test_last_agent_mode_writes_only_answered_calls() -> None:
    got = {s: decide(b_leg(s), LAST) for s in SCENARIOS}
    assert isinstance(got["s1"], Write) and got["s1"].customer == "5551000001"
    assert got["s1"].notes.startswith("answered call 2026-12-02")
    assert isinstance(got["s6"], Write) and (got["s6"].customer, got["s6"].agent) == ("+15551000005", "1101")
    assert {got[s] for s in ("s2", "s3", "s4", "s5")} == {Skip("not answered")}


def test_answered_is_the_answered_time_not_billsec_nor_answer_state() -> None:
    s1 = bridged_leg("s1")
    assert s1.get("Answer-State") == "hangup" == bridged_leg("s2").get("Answer-State")
    quick = hangup_of(dict(reversed(variant(s1, {"variable_billsec": "variable_billsec"}).pairs)))
    assert quick.answered and dict(s1.pairs)["variable_billsec"] in ("0", "1")


def test_the_agent_pattern_and_the_causes_decide_who_and_what() -> None:
    nobody = TrackSpec("Callbacks", "missed", re.compile(r"^2\d{3}$"), "72h", MISSED.causes)
    everyone = TrackSpec("Callbacks", "missed", re.compile(r"\d"), "72h", MISSED.causes)
    busy_only = TrackSpec("Callbacks", "missed", AGENTS, "72h", frozenset({"USER_BUSY"}))
    assert decide(b_leg("s2"), nobody) == Skip("no agent")
    assert decide(b_leg("s2"), everyone) == Skip("two agents")
    assert decide(b_leg("s2"), busy_only) == Skip("cause NO_ANSWER")
    assert isinstance(decide(b_leg("s3"), busy_only), Write)


# ---------------------------------------------------------------------------------------------------------------
# The tracker running against the fake event socket


@pytest.fixture(params=["builtin", "python-esl"])
def client(request: pytest.FixtureRequest) -> str:
    """The same tests through both event-socket clients (python-ESL is an optional extra: see the README)."""
    if request.param == "python-esl" and not available():
        pytest.skip("python-ESL is not installed (pip install swig==3.0.12 wheel; then python-ESL==1.4.18)")
    return request.param


@pytest.fixture
def switch() -> Iterator[InboundSwitch]:
    fake = InboundSwitch(heartbeat_interval=0.2).start()
    yield fake
    fake.stop()


def tracked_rules() -> None:
    admin.add_destination("main-ivr", NO_MATCH)
    admin.add_rule("Callbacks", admin.RuleSpec(source="5550310", digits_match=10, no_match_destination="main-ivr",
                                               delete_after_use=True))
    set_track("Callbacks", TrackOptions("missed", r"^1\d{3}$"))
    admin.add_rule("Last agent", admin.RuleSpec(source="5550311", digits_match=10, no_match_destination="main-ivr"))
    set_track("Last agent", TrackOptions("last-agent", r"^1\d{3}$"))


@pytest.fixture
def tracked(db: pw.Database) -> pw.Database:
    tracked_rules()
    return db


def routes(rule: str) -> dict[str, tuple[str, str]]:
    return {r.caller_key: (r.destination, r.notes) for r in Route.select().join(admin.Rule)
            .where(admin.Rule.name == rule)}


def wait_until(condition, timeout: float = 10.0) -> None:
    with gevent.Timeout(timeout):
        while not condition():
            gevent.sleep(0.01)


@contextmanager
def tracking(switch: InboundSwitch, db: pw.Database, password: str = "ClueCon", **options) -> Iterator[Tracker]:
    tracker = Tracker(db, switch.address, password, backoff=(0.05, 0.2), **options).start()
    try:
        yield tracker
    finally:
        tracker.stop()


def subscribed(switch: InboundSwitch, tracker: Tracker) -> None:
    wait_until(lambda: tracker.stats.connected and switch.subscribed())


def settled(tracker: Tracker, events: int) -> None:
    wait_until(lambda: tracker.stats.events + 0 >= events)
    assert tracker.wait_idle(10)


def scenario_b_leg_uuid(scenario: str, fmt: str = "plain") -> str:
    return bridged_leg(scenario, fmt).get("Unique-ID")  # type: ignore[return-value]


def test_events_that_come_before_the_filters_are_answered_are_not_lost(tracked: pw.Database) -> None:
    """FreeSWITCH sends events as soon as ``event`` is answered, even before the reply to the next ``filter``."""
    early = InboundSwitch(on_subscribe=captured_hangups()["s2"]).start()
    try:
        with tracking(early, tracked) as tracker:
            subscribed(early, tracker)
            settled(tracker, 4)
            assert set(routes("Callbacks")) == {"5551000002"}
            assert tracker.stats.reconnects == 0
    finally:
        early.stop()


@pytest.mark.parametrize("fmt", ["plain", "json"])
def test_each_scenario_writes_or_does_not_write_the_right_route(client: str, switch: InboundSwitch,
                                                                tracked: pw.Database, fmt: str) -> None:
    with tracking(switch, tracked, fmt=fmt, client=client) as tracker:
        subscribed(switch, tracker)
        assert switch.subscribed()[0].filters == [("Event-Name", "CHANNEL_HANGUP_COMPLETE"),
                                                  ("Event-Name", "HEARTBEAT")]
        expected_missed: dict[str, str] = {}
        for number, scenario in enumerate(SCENARIOS, 1):
            switch.deliver(captured_hangups(fmt)[scenario])
            settled(tracker, 4 * number)
            customer = {"s5": "5551000005", "s6": "5551000005"}.get(scenario, f"555100000{number}")
            if scenario in ("s2", "s3", "s4", "s5"):
                expected_missed[customer] = f"missed call 2026-12-02 ..:.. uuid={scenario_b_leg_uuid(scenario, fmt)}"
            else:
                expected_missed.pop(customer, None)  # s6: the customer reached the rep: the return happened
            got = routes("Callbacks")
            assert {k: v[0] for k, v in got.items()} == {k: "1101" for k in expected_missed}, scenario
            assert all(re.fullmatch(expected_missed[k], v[1]) for k, v in got.items()), scenario
        last = routes("Last agent")
        assert {k: v[0] for k, v in last.items()} == {"5551000001": "1101", "5551000005": "1101"}
        assert tracker.stats.written == 4 + 2 and tracker.stats.cleared == 1
        assert tracker.stats.skipped["not the bridged leg"] == 2 * 18
        results = [a.result for a in Audit.select().where(Audit.caller_key == "5551000005").order_by(Audit.id)]
        assert results == ["tracked", "cleared", "tracked"]  # missed (Callbacks), cleared, last agent


@pytest.mark.parametrize("chunking", ["each", "split"])
def test_events_split_across_reads_or_glued_give_the_same_routes(client: str, switch: InboundSwitch,
                                                                 tracked: pw.Database, chunking: str) -> None:
    with tracking(switch, tracked, client=client) as tracker:
        subscribed(switch, tracker)
        switch.deliver([e for s in SCENARIOS for e in captured_hangups()[s]], chunking, split=333)
        settled(tracker, 24)
    assert set(routes("Callbacks")) == {"5551000002", "5551000003", "5551000004"}


def test_the_json_capture_replayed_exactly_as_recorded(client: str, switch: InboundSwitch,
                                                       tracked: pw.Database) -> None:
    with tracking(switch, tracked, fmt="json", client=client) as tracker:
        subscribed(switch, tracker)
        assert switch.replay("inbound/i3_events_json.repr") == 1
        settled(tracker, 24)
    assert set(routes("Callbacks")) == {"5551000002", "5551000003", "5551000004"}
    assert set(routes("Last agent")) == {"5551000001", "5551000005"}


def test_reconnects_after_the_switch_drops_it_and_writes_a_repeated_event_once(client: str,
        switch: InboundSwitch, tracked: pw.Database, caplog: pytest.LogCaptureFixture) -> None:
    with tracking(switch, tracked, client=client) as tracker:
        subscribed(switch, tracker)
        switch.deliver(captured_hangups()["s2"])
        settled(tracker, 4)
        switch.stop()  # FreeSWITCH restarting: connections dropped, nothing listening for a while
        wait_until(lambda: not tracker.stats.connected)
        gevent.sleep(0.5)  # several refused attempts
        switch.start()
        wait_until(lambda: tracker.stats.connected and len(switch.subscribed()) == 1)
        switch.deliver(captured_hangups()["s2"] + captured_hangups()["s3"])  # s2 again: a replay mid-call
        settled(tracker, 12)
        assert tracker.stats.duplicates == 4 and tracker.stats.written == 2 and tracker.stats.reconnects == 1
    assert set(routes("Callbacks")) == {"5551000002", "5551000003"}
    assert Audit.select().where(Audit.result == "tracked").count() == 2
    said = [r.getMessage() for r in caplog.records if "reconnecting" in r.getMessage()]
    assert len(said) == 1 and "ClueCon" not in caplog.text


def test_a_silent_connection_is_dead_but_heartbeats_keep_a_quiet_one_alive(client: str, tracked: pw.Database) -> None:
    beating, silent = InboundSwitch(heartbeat_interval=0.2).start(), InboundSwitch(heartbeat_interval=60).start()
    try:
        with tracking(beating, tracked, heartbeat_timeout=0.6, client=client) as alive, \
                tracking(silent, tracked, heartbeat_timeout=0.6, client=client) as dead:
            wait_until(lambda: dead.stats.reconnects >= 1 and alive.stats.heartbeats >= 5)
            assert "not even a HEARTBEAT" in dead.stats.last_error
            assert alive.stats.reconnects == 0 and alive.stats.connected
    finally:
        beating.stop()
        silent.stop()


def test_a_wrong_password_is_an_error_not_a_retry(client: str, switch: InboundSwitch, tracked: pw.Database) -> None:
    with tracking(switch, tracked, password="WrongPassword", client=client) as tracker:
        with pytest.raises(AuthError, match="refused the password") as refused:
            tracker.wait(timeout=5)
        assert "WrongPassword" not in str(refused.value)
        # one attempt, never retried (python-ESL's client first opens and closes a bare TCP connection)
        assert [c.commands for c in switch.connections if c.commands] == [["auth WrongPassword"]]


@contextmanager
def outage(db_url: str) -> Iterator[tuple[str, Callable[[], None], Callable[[], None]]]:
    """(the URL the tracker uses, down, up): a server locks the tracker's user out and kills its connections
    (as tests/test_outage does); an SQLite file has no server, so another connection holds its write lock."""
    if not db_url.startswith("sqlite"):
        server = DatabaseOutage(db_url)
        try:
            yield server.url, server.down, server.up
        finally:
            server.close()
        return
    blocker = open_database(db_url)

    def down() -> None:
        blocker.connect()
        blocker.execute_sql("BEGIN EXCLUSIVE")

    def up() -> None:
        blocker.rollback()
        blocker.close()

    yield db_url, down, up


def test_database_down_queues_and_writes_when_it_is_back(switch: InboundSwitch, db: pw.Database,
                                                        db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    tracked_rules()
    with outage(db_url) as (url, down, up):
        handle = open_database(url, busy_timeout=0.1)
        with tracking(switch, handle) as tracker:
            subscribed(switch, tracker)
            down()
            switch.deliver(captured_hangups()["s2"] + captured_hangups()["s3"])
            wait_until(lambda: tracker.stats.database_down_since is not None)
            gevent.sleep(0.5)  # several failed attempts
            assert tracker.stats.queued > 0 and tracker.stats.written == 0
            up()
            settled(tracker, 8)
            assert tracker.stats.database_down_since is None and tracker.stats.written == 2
    db.close()  # PostgreSQL's outage killed this test's own connection too
    assert set(routes("Callbacks")) == {"5551000002", "5551000003"}
    messages = [r.getMessage() for r in caplog.records]
    assert sum("routes database unavailable" in m for m in messages) == 1, messages
    assert sum("routes database back after" in m for m in messages) == 1, messages


def test_a_tracked_route_is_validated_like_any_other(client: str, switch: InboundSwitch, tracked: pw.Database) -> None:
    short = variant(bridged_leg("s2"), {"5551000002": "5552", scenario_b_leg_uuid("s2"): str(uuidlib.uuid4())})
    with tracking(switch, tracked, client=client) as tracker:
        subscribed(switch, tracker)
        switch.deliver([short])
        settled(tracker, 1)
        assert tracker.stats.skipped["invalid caller_id"] == 1 and tracker.stats.written == 0
    assert routes("Callbacks") == {}


# ---------------------------------------------------------------------------------------------------------------
# The whole loop, and a burst beside live calls, with the real outbound server in the same process


@contextmanager
def served(db_url: str) -> Iterator[object]:
    handle = open_database(db_url)
    database.initialize(handle)
    with handle.connection_context():
        initdb(handle)
        demo.load()  # "Customer Routing" on 5550100: +15551111111 -> 1001
        tracked_rules()
    handle.close()
    with running_server(db_url) as server:
        yield server


def test_a_missed_call_becomes_a_return_that_reaches_the_rep_once(client: str, switch: InboundSwitch,
                                                                  db_url: str) -> None:
    with served(db_url) as server:
        with tracking(switch, database.obj, client=client) as tracker:
            subscribed(switch, tracker)
            switch.deliver(captured_hangups()["s5"])  # the customer called 5550300; agent 1101 never answered
            settled(tracker, 4)
        server.store.refresh()
        dialplan = dialplan_for(server, NO_MATCH)
        back = place_call(dialplan, "+15551000005", "5550310")  # the customer calls the callback number
        again = place_call(dialplan, "+15551000005", "5550310")
    assert back.target == "1101 XML default"  # the rep who missed them
    assert again.target == NO_MATCH  # Delete After Use: once


def test_a_burst_of_hangups_does_not_delay_calls_in_the_same_process(switch: InboundSwitch, db_url: str) -> None:
    """10,000 missed calls arrive at once while calls are routed by the same process; every call still reaches
    its destination. The calls' latency is printed (a figure for the README, not an assertion)."""
    count = 10_000
    with served(db_url) as server:
        dialplan = dialplan_for(server, NO_MATCH)

        def latencies(until) -> list[float]:
            out = []
            while not until():
                start = time.perf_counter()
                outcome = place_call(dialplan, "+15551111111", "5550100")
                out.append(time.perf_counter() - start)
                assert outcome.target == "1001 XML default"
                gevent.sleep(0.005)
            return out

        with tracking(switch, database.obj) as tracker:
            subscribed(switch, tracker)
            calm = time.perf_counter() + 1.0
            quiet = latencies(lambda: time.perf_counter() > calm)
            started = time.perf_counter()
            sender = gevent.spawn(switch.burst, bridged_leg("s2"), "5551000002", count)
            busy = latencies(lambda: tracker.stats.events >= count and tracker.wait_idle(0))
            took = time.perf_counter() - started
            sender.get()
            assert tracker.stats.written == count and tracker.stats.dropped == 0
        print(f"\nburst of {count} hangups written in {took:.1f} s ({count / took:.0f}/s); calls before: "
              f"median {statistics.median(quiet) * 1000:.1f} ms, max {max(quiet) * 1000:.1f} ms; "
              f"{len(busy)} calls during: median {statistics.median(busy) * 1000:.1f} ms, "
              f"max {max(busy) * 1000:.1f} ms")


def test_an_encoded_newline_cannot_forge_the_customer(client: str, switch: InboundSwitch,
                                                      tracked: pw.Database) -> None:
    """A SIP header the caller controls, carrying ``%0A`` and a fake Caller-Destination-Number line, placed before
    the real one: both clients split lines before decoding, so the pending return goes to the real customer."""
    real = bridged_leg("s2")
    at = next(i for i, (name, _) in enumerate(real.pairs) if name == "Caller-Destination-Number")
    forged = FakeEvent(real.pairs[:at] + (("variable_sip_h_X-Note", "x\nCaller-Destination-Number: 5559999999"),)
                       + real.pairs[at:])
    assert b"x%0ACaller-Destination-Number%3A%205559999999" in forged.encode("plain")
    with tracking(switch, tracked, client=client) as tracker:
        subscribed(switch, tracker)
        switch.deliver([forged])
        settled(tracker, 1)
    assert set(routes("Callbacks")) == {"5551000002"}


def test_the_queue_is_bounded_and_what_it_drops_is_counted(switch: InboundSwitch, db: pw.Database,
                                                           db_url: str) -> None:
    tracked_rules()
    with outage(db_url) as (url, down, up):
        with tracking(switch, open_database(url, busy_timeout=0.1), max_queue=5) as tracker:
            subscribed(switch, tracker)
            down()
            switch.deliver(captured_hangups()["s2"] + captured_hangups()["s3"])
            wait_until(lambda: tracker.stats.events == 8 and tracker.stats.database_down_since is not None)
            gevent.sleep(0.3)
            assert tracker.stats.dropped == 3 and tracker.stats.queued == 5  # the three oldest went
            up()
            assert tracker.wait_idle(10)
            assert tracker.stats.written + sum(tracker.stats.skipped.values()) == 5 * 2  # 5 hangups, 2 rules
    db.close()
    assert len(routes("Callbacks")) == tracker.stats.written
