"""The store and the call routing on a real database (each backend): lookup, prefix, expiry, Delete After Use."""

from __future__ import annotations

import datetime as dt
import threading

import peewee as pw
import pytest

from fs_dynroute import admin
from fs_dynroute.decision import Result
from fs_dynroute.models import Audit, Route, utcnow
from fs_dynroute.routing import route_call
from fs_dynroute.store import SQLStore


def make_rule(name: str = "Customer Routing", **kw: object) -> None:
    admin.add_destination("main-ivr", "5000 XML default")
    spec = dict(source="5550100", digits_match=10, no_match_destination="main-ivr")
    admin.add_rule(name, admin.RuleSpec(**{**spec, **kw}))


def test_returning_customer_reaches_assigned_rep(db: pw.Database) -> None:
    make_rule()
    admin.add_route("Customer Routing", "+15551111111", "1001", "Acme account")
    store = SQLStore(db)
    rule = store.rule_for(source="5550100")
    for spelling in ("+15551111111", "15551111111", "5551111111", "+1 (555) 111-1111"):
        d = route_call(store, rule, spelling, "uuid-1")
        assert (d.result, d.destination) == (Result.MATCH, "1001 XML default")
    assert route_call(store, rule, "+15559999999").destination == "5000 XML default"
    route = Route.get()
    assert route.use_count == 4 and route.last_used is not None
    assert Audit.select().where(Audit.result == "match").count() == 4


def test_prefix_mode_longest_prefix_wins(db: pw.Database) -> None:
    make_rule(prefix=True)
    admin.add_route("Customer Routing", "555", "2000", "area 555")
    admin.add_route("Customer Routing", "5551", "2001", "555-1xxx")
    store = SQLStore(db)
    rule = store.rule_for(source="5550100")
    assert route_call(store, rule, "+15551234567").destination == "2001 XML default"
    assert route_call(store, rule, "+15559234567").destination == "2000 XML default"
    assert route_call(store, rule, "+16669234567").result is Result.NOMATCH


def test_expired_route_never_matches_and_prefix_falls_back(db: pw.Database) -> None:
    make_rule(prefix=True)
    admin.add_route("Customer Routing", "555", "2000")
    admin.add_route("Customer Routing", "5551", "2001", expires="1h")  # admin refuses a past time: age it here
    Route.update(expires_at=dt.datetime(2020, 1, 1)).where(Route.caller_key == "5551").execute()
    store = SQLStore(db)
    rule = store.rule_for(source="5550100")
    assert route_call(store, rule, "+15551234567").destination == "2000 XML default"


def test_route_expiring_by_duration(db: pw.Database) -> None:
    make_rule()
    before = utcnow()
    admin.add_route("Customer Routing", "+15551111111", "1001", expires="48h")
    after = utcnow()  # the clock may tick between the three readings: bound the expiry from both sides
    assert before + dt.timedelta(hours=48) <= Route.get().expires_at <= after + dt.timedelta(hours=48)


def test_disabled_rule_sends_to_no_match(db: pw.Database) -> None:
    make_rule()
    admin.add_route("Customer Routing", "+15551111111", "1001")
    admin.edit_rule("Customer Routing", admin.RuleSpec(enabled=False))
    store = SQLStore(db)
    d = route_call(store, store.rule_for(source="5550100"), "+15551111111")
    assert (d.result, d.destination) == (Result.DISABLED, "5000 XML default")


def test_delete_after_use_first_call_only(db: pw.Database) -> None:
    make_rule(delete_after_use=True)
    admin.add_route("Customer Routing", "+15551111111", "1001", "callback")
    store = SQLStore(db)
    rule = store.rule_for(source="5550100")
    assert route_call(store, rule, "+15551111111", dry_run=True).result is Result.MATCH  # dry run keeps it
    assert route_call(store, rule, "+15551111111", "a").destination == "1001 XML default"
    assert route_call(store, rule, "+15551111111", "b").destination == "5000 XML default"
    assert [(a.result, a.call_uuid) for a in Audit.select()] == [("consumed", "a")]


def test_delete_after_use_race_has_exactly_one_winner(db: pw.Database) -> None:
    make_rule(delete_after_use=True)
    admin.add_route("Customer Routing", "+15551111111", "1001")
    store = SQLStore(db)
    rule = store.rule_for(source="5550100")
    callers = 12
    barrier = threading.Barrier(callers)
    results: list[str] = []

    def call(n: int) -> None:
        barrier.wait(timeout=10)
        with db.connection_context():
            results.append(route_call(store, rule, "+15551111111", f"call-{n}").destination)

    threads = [threading.Thread(target=call, args=(n,)) for n in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(results) == ["1001 XML default"] + ["5000 XML default"] * (callers - 1)
    assert Audit.select().where(Audit.result == "consumed").count() == 1
    assert Route.select().count() == 0


def test_fixed_match_destination_with_empty_route_destination(db: pw.Database) -> None:
    admin.add_destination("vip-queue", "7000 XML default")
    make_rule(match_destination="vip-queue")
    admin.add_route("Customer Routing", "+15551111111", "", "VIP")
    store = SQLStore(db)
    assert route_call(store, store.rule_for(source="5550100"), "15551111111").destination == "7000 XML default"


def test_dynamic_rule_refuses_route_without_destination(db: pw.Database) -> None:
    make_rule()
    with pytest.raises(admin.UserError, match="destination: required"):
        admin.add_route("Customer Routing", "+15551111111", "")


def test_rule_validation_names_the_field(db: pw.Database) -> None:
    make_rule()
    cases = [
        (dict(source="5550100"), "source: .* already served"),
        (dict(source="bad source"), "source:"),
        (dict(digits_match=0), "digits:"),
        (dict(digits_match=21), "digits:"),
        (dict(no_match_destination="nowhere"), "nomatch-dest:"),
        (dict(match_destination="1001\nX"), "match-dest:"),
    ]
    for n, (override, pattern) in enumerate(cases):
        spec = dict(source=f"55501{n:02d}", digits_match=10, no_match_destination="main-ivr")
        with pytest.raises(admin.UserError, match=pattern):
            admin.add_rule(f"r{n}", admin.RuleSpec(**{**spec, **override}))


def test_consume_refuses_a_decision_without_a_route(db: pw.Database) -> None:
    """A real check, not an assert: ``python -O`` must not turn it into an AttributeError deeper down."""
    make_rule(delete_after_use=True)
    store = SQLStore(db)
    rule = store.rule_for(source="5550100")
    decision = route_call(store, rule, "+15559999999", dry_run=True)
    with pytest.raises(ValueError, match="only a matched route can be consumed"):
        store.consume(rule, decision, "uuid-1")
