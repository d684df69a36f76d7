"""The routing decision: a pure function of (rule, caller ID, lookup result), no I/O.

Everything that can go wrong on a call ends here as a Decision whose destination is the
rule's No Match Destination, so the caller always reaches somewhere.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import Enum

from fs_dynroute.callerid import call_key


class Result(str, Enum):
    MATCH = "match"
    NOMATCH = "nomatch"
    DISABLED = "disabled"
    ERROR = "error"


@dataclass(frozen=True)
class RuleView:
    """A rule as the call path sees it: destinations already resolved to transfer arguments."""

    id: int
    name: str
    source: str
    digits_match: int
    no_match_target: str
    match_target: str | None  # None: dynamic, the matched route's own destination
    delete_after_use: bool = False
    enabled: bool = True
    prefix: bool = False
    source_numbers: tuple[str, ...] | None = None  # a named source's numbers; None: the source is the number

    @property
    def numbers(self) -> tuple[str, ...]:
        """The dialled numbers this rule serves."""
        return (self.source,) if self.source_numbers is None else self.source_numbers


@dataclass(frozen=True)
class RouteView:
    """A route as the call path sees it. ``target`` is None when its destination is unusable."""

    id: int
    key: str
    target: str | None
    expires_at: dt.datetime | None = None
    notes: str = ""


@dataclass(frozen=True)
class Lookup:
    """What the store found for a key: a route, nothing, or an error (then route is None)."""

    route: RouteView | None = None
    error: str | None = None


@dataclass(frozen=True)
class Decision:
    result: Result
    destination: str
    key: str | None
    route: RouteView | None
    reason: str


def decide(rule: RuleView, caller_id: str | None, lookup: Lookup, now: dt.datetime) -> Decision:
    """Where a call from ``caller_id`` on ``rule`` goes, given what the lookup found at ``now`` (naive UTC)."""
    key = call_key(caller_id, rule.digits_match)
    if not rule.enabled:
        return _fallback(rule, Result.DISABLED, key, "rule disabled")
    if lookup.error is not None:
        return _fallback(rule, Result.ERROR, key, f"lookup failed: {lookup.error}")
    if key is None:
        return _fallback(rule, Result.NOMATCH, None, "caller ID withheld, not a number or too short")
    route = lookup.route
    if route is None:
        return _fallback(rule, Result.NOMATCH, key, "no route for key")
    if route.expires_at is not None and route.expires_at <= now:
        return _fallback(rule, Result.NOMATCH, key, "route expired")
    target = rule.match_target or route.target
    if not target:
        return _fallback(rule, Result.NOMATCH, key, "route has no usable destination")
    return Decision(Result.MATCH, target, key, route, "matched " + ("prefix" if rule.prefix else "key"))


def _fallback(rule: RuleView, result: Result, key: str | None, reason: str) -> Decision:
    return Decision(result, rule.no_match_target, key, None, reason)
