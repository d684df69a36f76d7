"""Administration of rules, routes and named destinations, with validation on every write.

Each function either does all it says or raises UserError naming the field, writing nothing:
the CLI (and any API) calls these inside one transaction.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass

import peewee as pw

from fs_dynroute.callerid import MAX_DIGITS, CallerIDError, stored_key
from fs_dynroute.destinations import (
    CONTROL,
    DYNAMIC,
    DestinationError,
    resolve,
    validate_name,
    validate_rule_name,
    validate_transfer,
)
from fs_dynroute.models import MATCH_MODES, Destination, Route, Rule, destination_map, utcnow

SOURCE_PATTERN = re.compile(r"[A-Za-z0-9_+*#.@\-]{1,100}")
_DURATION = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class UserError(ValueError):
    """Bad input from a person or a CRM: one line that names the field or line."""


@dataclass
class RuleSpec:
    """The writable fields of a rule; None means 'leave as is' on edit."""

    source: str | None = None
    digits_match: int | None = None
    no_match_destination: str | None = None
    match_destination: str | None = None
    delete_after_use: bool | None = None
    prefix: bool | None = None
    enabled: bool | None = None


def check_text(field: str, value: str, max_length: int) -> str:
    """Refuse control characters and overlong values in any stored text."""
    if CONTROL.search(value):
        raise UserError(f"{field}: contains a control character")
    if len(value) > max_length:
        raise UserError(f"{field}: longer than {max_length} characters")
    return value


def check_destination(field: str, dest: str, known: dict[str, str], allow_dynamic: bool = False) -> str:
    """A destination that resolves now (names exist, transfer argument safe); returns it as given."""
    if allow_dynamic and dest == DYNAMIC:
        return dest
    check_text(field, dest, 255)
    try:
        resolve(dest, known, "default")
    except DestinationError as exc:
        raise UserError(f"{field}: {exc}") from None
    return dest


def parse_expiry(text: str, now: dt.datetime | None = None) -> dt.datetime | None:
    """ISO-8601 (a zone converts to UTC; none means UTC) or a duration such as 48h, 30m, 7d; '' is never."""
    text = text.strip()
    if not text:
        return None
    if m := _DURATION.fullmatch(text):
        return (now or utcnow()) + dt.timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UserError(f"expires: {text!r} is neither ISO-8601 nor a duration like 48h") from None
    if when.tzinfo is not None:
        when = when.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return when.replace(microsecond=0)


def get_rule(name: str) -> Rule:
    rule = Rule.get_or_none(Rule.name == name)
    if rule is None:
        raise UserError(f"rule {name!r} does not exist")
    return rule


def _apply(rule: Rule, spec: RuleSpec) -> Rule:
    known = destination_map()
    if spec.source is not None:
        if not SOURCE_PATTERN.fullmatch(spec.source):
            raise UserError(f"source: {spec.source!r} must be 1-100 of letters, digits and _+*#.@-")
        rule.source = spec.source
    if spec.digits_match is not None or spec.prefix is not None:
        new_digits = spec.digits_match if spec.digits_match is not None else rule.digits_match
        new_mode = ("prefix" if spec.prefix else "exact") if spec.prefix is not None else rule.match_mode
        if not 1 <= new_digits <= MAX_DIGITS:
            raise UserError(f"digits: must be 1 to {MAX_DIGITS}, not {new_digits}")
        changed = (new_digits, new_mode) != (rule.digits_match, rule.match_mode)
        if changed and rule.id is not None and Route.select().where(Route.rule == rule).exists():
            raise UserError("digits/prefix: the rule has routes stored under the old setting; "
                            "export, delete them, change the rule and import again")
        rule.digits_match, rule.match_mode = new_digits, new_mode
    if spec.no_match_destination is not None:
        rule.no_match_destination = check_destination("nomatch-dest", spec.no_match_destination, known)
    if spec.match_destination is not None:
        rule.match_destination = check_destination("match-dest", spec.match_destination, known, allow_dynamic=True)
    if spec.delete_after_use is not None:
        rule.delete_after_use = spec.delete_after_use
    if spec.enabled is not None:
        rule.enabled = spec.enabled
    assert rule.match_mode in MATCH_MODES
    if rule.enabled:
        clash = Rule.select().where((Rule.source == rule.source) & Rule.enabled
                                    & (Rule.id != (rule.id or 0))).first()
        if clash:
            raise UserError(f"source: {rule.source!r} is already served by enabled rule {clash.name!r}")
    rule.updated_at = utcnow()
    rule.save()
    return rule


def add_rule(name: str, spec: RuleSpec) -> Rule:
    try:
        validate_rule_name(name)
    except DestinationError as exc:
        raise UserError(f"name: {exc}") from None
    if Rule.select().where(Rule.name == name).exists():
        raise UserError(f"name: rule {name!r} already exists")
    for field, value in (("source", spec.source), ("digits", spec.digits_match),
                         ("nomatch-dest", spec.no_match_destination)):
        if value is None:
            raise UserError(f"{field}: required")
    rule = Rule(name=name, source="", digits_match=spec.digits_match, no_match_destination="",
                match_mode="prefix" if spec.prefix else "exact")
    spec = RuleSpec(**{**vars(spec), "match_destination": spec.match_destination or DYNAMIC,
                       "enabled": True if spec.enabled is None else spec.enabled, "prefix": None})
    return _apply(rule, spec)


def edit_rule(name: str, spec: RuleSpec) -> Rule:
    return _apply(get_rule(name), spec)


def delete_rule(name: str) -> int:
    """Delete a rule and its routes; returns how many routes went with it."""
    rule = get_rule(name)
    count = Route.delete().where(Route.rule == rule).execute()
    rule.delete_instance()
    return count


@dataclass(frozen=True)
class RouteRow:
    """A validated route ready to store."""

    caller_key: str
    destination: str
    notes: str
    expires_at: dt.datetime | None


def validate_route(rule: Rule, caller_id: str, destination: str, notes: str, expires: str,
                   known: dict[str, str], now: dt.datetime | None = None,
                   checked: set[str] | None = None) -> RouteRow:
    """One route checked against its rule; UserError says which field is wrong.

    ``checked`` remembers destinations already found good, for imports where thousands of rows
    share a few destinations.
    """
    try:
        key = stored_key(caller_id, rule.digits_match, prefix=rule.match_mode == "prefix")
    except CallerIDError as exc:
        raise UserError(f"caller_id: {exc}") from None
    destination = destination.strip()
    if destination:
        if checked is None or destination not in checked:
            check_destination("destination", destination, known)
            if checked is not None:
                checked.add(destination)
    elif rule.match_destination == DYNAMIC:
        raise UserError(f"destination: required, rule {rule.name!r} routes to each record's own destination")
    return RouteRow(key, destination, check_text("notes", notes, 255), parse_expiry(expires, now))


_UPSERT_FIELDS = [Route.rule, Route.caller_key, Route.destination, Route.notes, Route.expires_at, Route.use_count]


def upsert_routes(rule: Rule, rows: Iterable[RouteRow], batch: int = 500) -> int:
    """Insert routes, replacing the destination, notes and expiry of keys already stored.

    The multi-row statement is built by peewee once per batch size and reused with new
    parameters: building SQL costs peewee more than the database takes to run it.
    """
    db = Route._meta.database
    db = db.obj if isinstance(db, pw.DatabaseProxy) else db
    conflict: dict[str, object] = {"preserve": [Route.destination, Route.notes, Route.expires_at]}
    if not isinstance(db, pw.MySQLDatabase):
        conflict["conflict_target"] = (Route.rule, Route.caller_key)
    statements: dict[int, str] = {}
    count, chunk = 0, []
    for row in itertools.chain(rows, [None]):
        if row is not None:
            chunk.append((rule.id, row.caller_key, row.destination, row.notes, row.expires_at, 0))
        if chunk and (row is None or len(chunk) >= batch):
            if len(chunk) not in statements:
                query = Route.insert_many(chunk, fields=_UPSERT_FIELDS).on_conflict(**conflict)
                statements[len(chunk)] = db.get_sql_context().sql(query).query()[0]
            db.execute_sql(statements[len(chunk)], [db_value(f, v) for r in chunk for f, v in zip(_UPSERT_FIELDS, r)])
            count += len(chunk)
            chunk = []
    return count


def db_value(field: pw.Field, value: object) -> object:
    """A Python value as the driver takes it (what peewee would pass for ``field``)."""
    return field.db_value(value) if value is not None else None


def add_route(rule_name: str, caller_id: str, destination: str, notes: str = "", expires: str = "") -> RouteRow:
    rule = get_rule(rule_name)
    row = validate_route(rule, caller_id, destination, notes, expires, destination_map())
    upsert_routes(rule, [row])
    return row


def delete_route(rule_name: str, caller_id: str) -> None:
    rule = get_rule(rule_name)
    try:
        key = stored_key(caller_id, rule.digits_match, prefix=rule.match_mode == "prefix")
    except CallerIDError as exc:
        raise UserError(f"caller_id: {exc}") from None
    if not Route.delete().where((Route.rule == rule) & (Route.caller_key == key)).execute():
        raise UserError(f"caller_id: no route for key {key} in rule {rule_name!r}")


def add_destination(name: str, transfer: str) -> Destination:
    try:
        validate_name(name)
        validate_transfer(transfer)
    except DestinationError as exc:
        raise UserError(str(exc)) from None
    dest, created = Destination.get_or_create(name=name, defaults={"transfer": transfer})
    if not created:
        dest.transfer = transfer
        dest.save()
    return dest


def delete_destination(name: str) -> None:
    dest = Destination.get_or_none(Destination.name == name)
    if dest is None:
        raise UserError(f"destination {name!r} does not exist")
    users = Rule.select().where((Rule.no_match_destination == name) | (Rule.match_destination == name)).first()
    if users:
        raise UserError(f"destination {name!r} is used by rule {users.name!r}")
    if Route.select().where(Route.destination == name).exists():
        raise UserError(f"destination {name!r} is used by routes; change them first")
    dest.delete_instance()
