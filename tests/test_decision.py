"""The pure routing decision: every outcome, and that each failure names the No Match Destination."""

from __future__ import annotations

import datetime as dt

import pytest

from fs_dynroute.decision import Lookup, Result, RouteView, RuleView, decide

NOW = dt.datetime(2026, 11, 26, 12, 0, 0)
RULE = RuleView(id=1, name="Customer Routing", source="5550100", digits_match=10,
                no_match_target="5000 XML default", match_target=None)
ROUTE = RouteView(id=7, key="5551111111", target="1001 XML default", notes="Acme account")


def test_match_goes_to_the_records_own_destination() -> None:
    d = decide(RULE, "+15551111111", Lookup(ROUTE), NOW)
    assert (d.result, d.destination, d.key, d.route) == (Result.MATCH, "1001 XML default", "5551111111", ROUTE)


def test_fixed_match_destination_overrides_the_record() -> None:
    vip = RuleView(**{**vars(RULE), "match_target": "7000 XML vip"})
    assert decide(vip, "+15551111111", Lookup(ROUTE), NOW).destination == "7000 XML vip"


@pytest.mark.parametrize("rule, caller_id, lookup, result, reason", [
    (RULE, "+15559999999", Lookup(None), Result.NOMATCH, "no route"),
    (RULE, "anonymous", Lookup(None), Result.NOMATCH, "withheld"),
    (RULE, "+15551111111", Lookup(error="OperationalError: database is locked"), Result.ERROR, "locked"),
    (RuleView(**{**vars(RULE), "enabled": False}), "+15551111111", Lookup(ROUTE), Result.DISABLED, "disabled"),
    (RULE, "+15551111111", Lookup(RouteView(7, "5551111111", "1001 XML default", NOW)), Result.NOMATCH, "expired"),
    (RULE, "+15551111111", Lookup(RouteView(7, "5551111111", None)), Result.NOMATCH, "no usable destination"),
])
def test_every_failure_ends_at_no_match(rule: RuleView, caller_id: str, lookup: Lookup, result: Result,
                                        reason: str) -> None:
    d = decide(rule, caller_id, lookup, NOW)
    assert (d.result, d.destination, d.route) == (result, "5000 XML default", None)
    assert reason in d.reason


def test_route_expiring_later_still_matches() -> None:
    later = RouteView(7, "5551111111", "1001 XML default", NOW + dt.timedelta(seconds=1))
    assert decide(RULE, "+15551111111", Lookup(later), NOW).result is Result.MATCH
