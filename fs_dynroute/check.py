"""``fs-dynroute check``: find rows that fs_dynroute itself would never have written.

A CRM writing straight into the tables can store unnormalised caller IDs, empty or broken
destinations, or control characters. The call path already sends such calls to No Match
(see store.route_target and IndexedStore._load_rules); this names each row so a person can fix it.
"""

from __future__ import annotations

from collections.abc import Iterator

from fs_dynroute.admin import SOURCE_PATTERN
from fs_dynroute.callerid import MAX_DIGITS
from fs_dynroute.destinations import (
    CONTROL,
    DYNAMIC,
    DestinationError,
    resolve,
    validate_name,
    validate_rule_name,
    validate_transfer,
)
from fs_dynroute.models import MATCH_MODES, Destination, Route, Rule, destination_map


def _dest_problem(dest: str, names: dict[str, str], context: str) -> str | None:
    try:
        resolve(dest, names, context)
    except DestinationError as exc:
        return str(exc)
    return None


def destination_problems() -> Iterator[str]:
    for d in Destination.select().order_by(Destination.id):
        for check, value in ((validate_name, d.name), (validate_transfer, d.transfer)):
            try:
                check(value)
            except DestinationError as exc:
                yield f"destination {d.id} ({d.name!r}): {exc}"


def rule_problems(names: dict[str, str], context: str) -> Iterator[str]:
    enabled_sources: dict[str, str] = {}
    for r in Rule.select().order_by(Rule.id):
        where = f"rule {r.id} ({r.name!r})"
        try:
            validate_rule_name(r.name or "")
        except DestinationError as exc:
            yield f"{where}: {exc}"
        if not SOURCE_PATTERN.fullmatch(r.source or ""):
            yield f"{where}: source {r.source!r} is not 1-100 of letters, digits and _+*#.@-"
        if not 1 <= (r.digits_match or 0) <= MAX_DIGITS:
            yield f"{where}: digits_match {r.digits_match} is not 1 to {MAX_DIGITS}"
        if r.match_mode not in MATCH_MODES:
            yield f"{where}: match_mode {r.match_mode!r} is not one of {', '.join(MATCH_MODES)}"
        if problem := _dest_problem(r.no_match_destination or "", names, context):
            yield f"{where}: no_match_destination: {problem}"
        if r.match_destination != DYNAMIC and (problem := _dest_problem(r.match_destination or "", names, context)):
            yield f"{where}: match_destination: {problem}"
        if r.enabled and r.source in enabled_sources:
            yield f"{where}: source {r.source!r} is also served by enabled rule {enabled_sources[r.source]!r}"
        elif r.enabled:
            enabled_sources[r.source] = r.name


def route_problems(names: dict[str, str], context: str) -> Iterator[str]:
    rules = {r.id: r for r in Rule.select()}
    verdicts: dict[str, str | None] = {}
    query = (Route.select(Route.id, Route.rule_id, Route.caller_key, Route.destination, Route.notes)
             .order_by(Route.id).tuples())
    for route_id, rule_id, key, dest, notes in query.iterator():
        rule = rules.get(rule_id)
        where = f"route {route_id} (rule {rule.name!r}, caller_key {key!r})" if rule else f"route {route_id}"
        if rule is None:
            yield f"{where}: rule {rule_id} does not exist"
            continue
        prefix = rule.match_mode == "prefix"
        if not key.isdigit() or (len(key) > rule.digits_match if prefix else len(key) != rule.digits_match):
            want = f"1 to {rule.digits_match}" if prefix else f"exactly {rule.digits_match}"
            yield f"{where}: caller_key is not normalised ({want} digits); no call can match it"
        if not dest:
            if rule.match_destination == DYNAMIC:
                yield f"{where}: destination is empty and the rule routes to each record's own destination"
        else:
            if dest not in verdicts:
                verdicts[dest] = _dest_problem(dest, names, context)
            if verdicts[dest]:
                yield f"{where}: destination: {verdicts[dest]}"
        if CONTROL.search(notes or ""):
            yield f"{where}: notes contain a control character"


def problems(context: str) -> Iterator[str]:
    """Every problem in the database, one line each, destinations first, then rules, then routes."""
    names = destination_map()
    yield from destination_problems()
    yield from rule_problems(names, context)
    yield from route_problems(names, context)
