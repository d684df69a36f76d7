"""The outbound socket server against the fake FreeSWITCH, over real TCP, on each backend.

Each test reads as "a call from X to Y ends at Z", through the dialplan fs-dynroute generates.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import gevent
import pytest

from fs_dynroute import admin
from fs_dynroute.dialplan import render
from fs_dynroute.fakeswitch.switch import Dialplan, place_call
from fs_dynroute.models import Audit, Route
from fs_dynroute.service import Service
from fs_dynroute.store import SQLStore
from tests.serving import CALLS, NO_MATCH, dialplan_for, hosts, running_server, settle, wait_until, write_locked


def generated_dialplan(server: Service, source: str = "5550100") -> Dialplan:
    """The dialplan `fs-dynroute dialplan` prints for the current rules, as FreeSWITCH would run it."""
    store = SQLStore(Route._meta.database.obj)
    rules = [store.rule_for(source=source)]
    return Dialplan.from_xml(render(rules, [hosts(server)], "public"), source)


def call(server: Service, caller: str | None, dest: str = "5550100", **kw: object):
    return place_call(generated_dialplan(server, dest), caller, dest, stuck_after=3.0, **kw)




@pytest.mark.parametrize("caller, target", CALLS)
def test_call_ends_at(server: Service, caller: str | None, target: str) -> None:
    outcome = call(server, caller)
    assert (outcome.ended, outcome.target) == ("transferred", target)
    assert outcome.variables["dynroute_result"] == ("match" if target != NO_MATCH else "nomatch")
    assert outcome.variables["dynroute_rule"] == "Customer Routing"
    assert [c.line for c in outcome.sent] == ["connect", "sendmsg"]  # two round trips: no exit (issue 11)
    multiset = outcome.sent[1].headers
    assert multiset["execute-app-name"] == "multiset"
    assert multiset["execute-app-arg"].startswith(f"^^|dynroute_target={target}|dynroute_result=")


def test_match_sets_cdr_variables(server: Service) -> None:
    outcome = call(server, "+15551111111", uuid="0d9a8b3e-1111-4222-8333-444455556666")
    assert {k: outcome.variables[k] for k in ("dynroute_target", "dynroute_result", "dynroute_key")} == {
        "dynroute_target": "1001 XML default", "dynroute_result": "match", "dynroute_key": "5551111111"}
    server.store.flush()
    assert Route.get(Route.caller_key == "5551111111").use_count == 1
    assert Audit.get().call_uuid == "0d9a8b3e-1111-4222-8333-444455556666"


def test_fixed_match_destination(server: Service) -> None:
    admin.add_destination("vip-queue", "7000 XML default")
    admin.edit_rule("Customer Routing", admin.RuleSpec(match_destination="vip-queue"))
    server.store.refresh()
    assert call(server, "+15551111111").target == "7000 XML default"


def test_delete_after_use_first_call_gets_the_record_second_gets_no_match(server: Service) -> None:
    admin.edit_rule("Customer Routing", admin.RuleSpec(delete_after_use=True))
    server.store.refresh()
    assert call(server, "+15551111111").target == "1001 XML default"
    assert call(server, "+15551111111").target == NO_MATCH
    assert [a.result for a in Audit.select()] == ["consumed"]


def test_disabled_rule_sets_current_no_match_over_stale_dialplan(server: Service) -> None:
    dialplan = generated_dialplan(server)  # generated while the No Match Destination was main-ivr
    admin.add_destination("night-ivr", "5001 XML default")
    admin.edit_rule("Customer Routing", admin.RuleSpec(enabled=False, no_match_destination="night-ivr"))
    server.store.refresh()
    outcome = place_call(dialplan, "+15551111111", "5550100")
    assert (outcome.target, outcome.variables["dynroute_result"]) == ("5001 XML default", "disabled")


def test_no_rule_for_the_source_leaves_the_dialplan_default(server: Service) -> None:
    outcome = place_call(dialplan_for(server, "9999 XML default"), "+15551111111", "5550999")
    assert (outcome.ended, outcome.target) == ("transferred", "9999 XML default")
    assert [c.line for c in outcome.sent] == ["connect"]


def test_rule_picked_by_channel_variable(server: Service) -> None:
    outcome = place_call(dialplan_for(server, "9999 XML default"), "+15551111111", "70918",
                         variables={"dynroute_rule": "Customer Routing"})
    assert outcome.target == "1001 XML default"


def test_server_down_leaves_the_default(demo_db: str) -> None:
    with running_server(demo_db) as srv:
        dialplan = generated_dialplan(srv)
    outcome = place_call(dialplan, "+15551111111", "5550100")
    assert (outcome.ended, outcome.target) == ("transferred", NO_MATCH)
    assert outcome.silence < 0.5


def test_percent_0a_forgery_routes_on_the_true_caller_id(server: Service) -> None:
    outcome = call(server, "+15559999999", behaviour="inject", forged_caller_id="5551111111")
    assert outcome.target == NO_MATCH  # the forged 5551111111 would have reached 1001
    assert outcome.variables["dynroute_key"] == "5559999999"


def test_caller_hangs_up_mid_decision(server: Service, demo_db: str, caplog: pytest.LogCaptureFixture) -> None:
    admin.edit_rule("Customer Routing", admin.RuleSpec(delete_after_use=True))
    server.store.refresh()
    with write_locked(demo_db):  # the consume waits on the lock: the server is mid-decision
        outcome = call(server, "+15551111111", behaviour="hangup", hangup_after=0.1)
        assert outcome.ended == "hangup"
        settle(server)
    assert Route.select().count() == 2  # nothing consumed for a caller who left
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_slow_database_reaches_no_match_on_time(server: Service, demo_db: str) -> None:
    admin.edit_rule("Customer Routing", admin.RuleSpec(delete_after_use=True))
    server.store.refresh()
    with write_locked(demo_db):
        started = time.monotonic()
        outcome = call(server, "+15551111111")
        elapsed = time.monotonic() - started
    assert (outcome.ended, outcome.target) == ("transferred", NO_MATCH)
    assert 0.9 < elapsed < 2.5, elapsed  # the 1 s deadline, not the lock's length (the caller gives up at 3 s)
    settle(server)
    wait_until(lambda: len(server.store.threads) == 0, what="the rolled-back consume to finish")
    assert call(server, "+15551111111").target == "1001 XML default"  # the record was kept


def test_over_capacity_gets_the_default_at_once(demo_db: str) -> None:
    admin.edit_rule("Customer Routing", admin.RuleSpec(delete_after_use=True))
    with running_server(demo_db, max_sessions=2, decision_timeout=1.0) as srv, write_locked(demo_db):
        busy = [gevent.spawn(call, srv, "+15551111111") for _ in range(2)]
        wait_until(lambda: srv.server.live == 2, what="two calls in flight")
        outcome = call(srv, "+15552222222")
        assert (outcome.ended, outcome.target) == ("transferred", NO_MATCH)
        assert outcome.silence < 0.5  # closed at once, not after the 1 s deadline
        gevent.joinall(busy, timeout=5)
        assert all(g.value.target == NO_MATCH for g in busy)


def test_unreadable_database_reaches_no_match(tmp_path: Path) -> None:
    garbage = tmp_path / "broken.db"
    garbage.write_bytes(b"this is not an SQLite database" * 100)
    with running_server(f"sqlite:///{garbage}") as srv:
        outcome = place_call(dialplan_for(srv), "+15551111111", "5550100")
    assert (outcome.ended, outcome.target) == ("transferred", "5000 XML default")
    assert outcome.silence < 1.2


def test_two_hundred_concurrent_calls_all_correct(server: Service) -> None:
    callers = ["+15551111111", "15552222222", "+15559999999", "anonymous"]
    expected = {"+15551111111": "1001 XML default", "15552222222": "1002 XML default"}
    dialplan = generated_dialplan(server)
    calls = [gevent.spawn(place_call, dialplan, callers[n % 4], "5550100", stuck_after=5.0) for n in range(200)]
    gevent.joinall(calls, timeout=30)
    results = [(c.value.ended, c.value.target) for c in calls]
    assert results == [("transferred", expected.get(callers[n % 4], NO_MATCH)) for n in range(200)]


def test_a_newline_in_the_caller_id_cannot_forge_a_log_line(server: Service,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fs_dynroute")
    outcome = call(server, "+15559999999\ncall uuid=forged caller=+15551111111")
    assert outcome.target == NO_MATCH
    settle(server)  # the session logs after it has closed the socket
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("call ")]
    assert len(lines) == 1 and "\n" not in lines[0] and "\\n" in lines[0]
