"""``fs-dynroute check``: find rows that fs_dynroute itself would never have written.

A CRM writing straight into the tables can store unnormalised caller IDs, empty or broken
destinations, or control characters. The call path leaves such rows out (store.rule_view and the
index's loader for rules, store.route_target for destinations, and no call's key equals an
unnormalised one); this names each row so a person can fix it. Every verdict comes from
``validation``, the same functions ``admin`` and the loader use.
"""

from __future__ import annotations

from collections.abc import Iterator

from fs_dynroute import expiry
from fs_dynroute.models import Destination, Route, Rule, Source, SourceNumber, destination_map, source_map
from fs_dynroute.validation import (
    clashes,
    named_destination_problems,
    number_problems,
    route_problems,
    rule_problems,
    source_name_problems,
)


def bad_destinations() -> Iterator[str]:
    for d in Destination.select().order_by(Destination.id):
        for problem in named_destination_problems(d.name, d.transfer):
            yield f"destination {d.id} ({d.name!r}): {problem}"


def bad_sources() -> Iterator[str]:
    for s in Source.select().order_by(Source.id):
        for problem in source_name_problems(s.name):
            yield f"source {s.id} ({s.name!r}): {problem}"
    for n in SourceNumber.select().order_by(SourceNumber.id):
        for problem in number_problems(n.number):
            yield f"source number {n.id}: {problem}"


def bad_rules(names: dict[str, str], context: str) -> Iterator[str]:
    rules, sources = list(Rule.select().order_by(Rule.id)), source_map()
    clashing = clashes(rules, sources)
    for r in rules:
        for problem in rule_problems(r, names, context, sources) + clashing.get(r.id, []):
            yield f"rule {r.id} ({r.name!r}): {problem}"


def bad_routes(names: dict[str, str], context: str) -> Iterator[str]:
    rules = {r.id: r for r in Rule.select()}
    good_destinations: set[str] = set()
    query = (Route.select(Route.id, Route.rule_id, Route.caller_key, Route.destination, Route.notes)
             .order_by(Route.id).tuples())
    for route_id, rule_id, key, dest, notes in query.iterator():
        rule = rules.get(rule_id)
        if rule is None:
            yield f"route {route_id}: rule {rule_id} does not exist"
            continue
        for problem in route_problems(rule, key, dest or "", notes, names, context, good_destinations):
            yield f"route {route_id} (rule {rule.name!r}, caller_key {key!r}): {problem}"


def expiry_problems() -> Iterator[str]:
    """Routes whose expires_at cannot be read (the rule lives in expiry.py, shared with the call path)."""
    rules = {r.id: r.name for r in Rule.select(Rule.id, Rule.name)}
    for route_id, rule_id, key, text in expiry.unreadable():
        yield (f"route {route_id} (rule {rules.get(rule_id, rule_id)!r}, caller_key {key!r}): expires_at {text!r} "
               f"is not a date-time ({expiry.FORM}); the route never matches")


def problems(context: str) -> Iterator[str]:
    """Every problem in the database, one line each, destinations first, then sources, rules, routes."""
    names = destination_map()
    yield from bad_destinations()
    yield from bad_sources()
    yield from bad_rules(names, context)
    yield from bad_routes(names, context)
    yield from expiry_problems()
