"""Administration of rules, routes and named destinations, with validation on every write.

Each function either does all it says or raises UserError naming the field, writing nothing:
the CLI (and any API) calls these inside one transaction. The rules a row must satisfy live in
``validation``, shared with ``fs-dynroute check`` and the server's loader; what is here is only what
needs the database (a name taken, a source already served, routes stored under the old digits).
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass

import peewee as pw

from fs_dynroute.callerid import CallerIDError, stored_key
from fs_dynroute.destinations import DestinationError, validate_name, validate_transfer
from fs_dynroute.models import (
    EXACT,
    PREFIX,
    Destination,
    Route,
    Rule,
    Source,
    destination_map,
    name_key,
    source_map,
    utcnow,
)
from fs_dynroute.validation import (
    UserError,
    clash_problems,
    raise_first,
    record_problems,
    rule_problems,
    served_numbers,
    serving,
)

_DURATION = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
# Admin checks destinations against this context; a bare extension is valid in any (the server resolves with its own).
_CONTEXT = "default"


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


def parse_expiry(text: str, now: dt.datetime | None = None) -> dt.datetime | None:
    """ISO-8601 (a zone converts to UTC; none means UTC) or a duration such as 48h, 30m, 7d; '' is never.

    A time that is not after ``now`` is refused: the route could never match.
    """
    text = text.strip()
    if not text:
        return None
    now = now or utcnow()
    try:
        if m := _DURATION.fullmatch(text):
            when = now + dt.timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
        else:
            when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            if when.tzinfo is not None:
                when = when.astimezone(dt.timezone.utc).replace(tzinfo=None)
    except ValueError:
        raise UserError(f"expires: {text!r} is neither ISO-8601 nor a duration like 48h") from None
    except OverflowError:
        raise UserError(f"expires: {text!r} is beyond the years 1-9999") from None
    if when <= now:
        raise UserError(f"expires: {text!r} is not in the future ({when:%Y-%m-%d %H:%M:%S} UTC); "
                        "the route could never match")
    return when.replace(microsecond=0)


def get_rule(name: str) -> Rule:
    rule = Rule.get_or_none(Rule.name == name)
    if rule is None:
        raise UserError(f"rule {name!r} does not exist")
    return rule


def rule_dict(rule: Rule, routes: int | None = None) -> dict[str, object]:
    """A rule as the CLI's --json, the API and the page show it; ``routes`` counted when not given. ``numbers``:
    what the rule serves (its named source's numbers, or its source itself)."""
    if routes is None:
        routes = Route.select().where(Route.rule == rule).count()
    return {"name": rule.name, "source": rule.source, "numbers": list(served_numbers(rule, source_map())),
            "digits_match": rule.digits_match,
            "match_mode": rule.match_mode, "match_destination": rule.match_destination,
            "no_match_destination": rule.no_match_destination, "delete_after_use": bool(rule.delete_after_use),
            "enabled": bool(rule.enabled), "routes": routes,
            "created_at": rule.created_at, "updated_at": rule.updated_at}


def _apply(rule: Rule, spec: RuleSpec) -> Rule:
    """Set what ``spec`` gives, then validate the whole row as the server will read it; save only if it passes."""
    before = (rule.digits_match, rule.match_mode)
    for field in ("source", "digits_match", "no_match_destination", "match_destination", "delete_after_use",
                  "enabled"):
        if getattr(spec, field) is not None:
            setattr(rule, field, getattr(spec, field))
    if spec.prefix is not None:
        rule.match_mode = PREFIX if spec.prefix else EXACT
    if spec.source is not None:  # a named source however spelled: stored as the source spells it
        named = Source.get_or_none(name_key(Source.name) == name_key(pw.Value(spec.source)))
        rule.source = named.name if named else spec.source
    sources = source_map()
    raise_first(rule_problems(rule, destination_map(), _CONTEXT, sources))
    if (rule.digits_match, rule.match_mode) != before and rule.id is not None \
            and Route.select().where(Route.rule == rule).exists():
        raise UserError("digits/prefix: the rule has routes stored under the old setting; "
                        "export, delete them, change the rule and import again")
    if rule.enabled:
        others = Rule.select().where(Rule.enabled & (Rule.id != (rule.id or 0)))
        raise_first(clash_problems(rule, serving(others, sources), sources))
    rule.updated_at = utcnow()
    rule.save()
    return rule


def add_rule(name: str, spec: RuleSpec) -> Rule:
    """A new rule: enabled and matching to each record's own destination unless ``spec`` says otherwise."""
    same = Rule.get_or_none(name_key(Rule.name) == name_key(pw.Value(name)))
    if same is not None:
        raise UserError(f"name: rule {same.name!r} already exists" + _spelling(same.name, name))
    for field, value in (("source", spec.source), ("digits", spec.digits_match),
                         ("nomatch-dest", spec.no_match_destination)):
        if value is None:
            raise UserError(f"{field}: required")
    return _apply(Rule(name=name), spec)


def edit_rule(name: str, spec: RuleSpec) -> Rule:
    return _apply(get_rule(name), spec)


def delete_rule(name: str) -> int:
    """Delete a rule and its routes; returns how many routes went with it."""
    rule = get_rule(name)
    count = Route.delete().where(Route.rule == rule).execute()
    rule.delete_instance()
    return count


@dataclass(frozen=True)
class ValidRoute:
    """A validated route ready to store."""

    caller_key: str
    destination: str
    notes: str
    expires_at: dt.datetime | None


def validate_route(rule: Rule, caller_id: str, destination: str, notes: str, expires: str,
                   known: dict[str, str], now: dt.datetime | None = None,
                   checked: set[str] | None = None) -> ValidRoute:
    """One route checked against its rule; UserError says which field is wrong.

    ``checked`` remembers destinations already found good, for imports where thousands of rows
    share a few destinations.
    """
    key = route_key(rule, caller_id)
    destination = destination.strip(" ")  # spaces only: str.strip would drop controls such as NEL unseen
    raise_first(record_problems(rule, destination, notes, known, _CONTEXT, checked))
    return ValidRoute(key, destination, notes, parse_expiry(expires, now))


_UPSERT_FIELDS = [Route.rule, Route.caller_key, Route.destination, Route.notes, Route.expires_at, Route.use_count]


def upsert_routes(rule: Rule, rows: Iterable[ValidRoute], batch: int = 500) -> int:
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


def add_route(rule_name: str, caller_id: str, destination: str, notes: str = "", expires: str = "") -> ValidRoute:
    rule = get_rule(rule_name)
    row = validate_route(rule, caller_id, destination, notes, expires, destination_map())
    upsert_routes(rule, [row])
    return row


def route_key(rule: Rule, caller_id: str) -> str:
    """The key a route for ``caller_id`` (any format) is stored under in ``rule``."""
    try:
        return stored_key(caller_id, rule.digits_match, prefix=rule.prefix)
    except CallerIDError as exc:
        raise UserError(f"caller_id: {exc}") from None


def delete_route(rule_name: str, caller_id: str) -> None:
    rule = get_rule(rule_name)
    key = route_key(rule, caller_id)
    if not Route.delete().where((Route.rule == rule) & (Route.caller_key == key)).execute():
        raise UserError(f"caller_id: no route for key {key} in rule {rule_name!r}")


def add_destination(name: str, transfer: str) -> Destination:
    try:
        validate_name(name)
        validate_transfer(transfer)
    except DestinationError as exc:
        raise UserError(str(exc)) from None
    dest = Destination.get_or_none(name_key(Destination.name) == name_key(pw.Value(name)))
    if dest is None:
        return Destination.create(name=name, transfer=transfer)
    if dest.name != name:  # never redefine a differently spelled name by accident
        raise UserError(f"name: destination {dest.name!r} already exists{_spelling(dest.name, name)}")
    dest.transfer = transfer
    dest.save()
    return dest


def _spelling(stored: str, given: str) -> str:
    """Why ``given`` is taken when it is spelled differently from ``stored``."""
    return "" if stored == given else (f" (names ignore letter case and trailing spaces, so {given!r} is the same "
                                       f"name; use {stored!r})")


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
