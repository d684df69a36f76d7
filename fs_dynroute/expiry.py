"""Reading ``expires_at`` as any writer may have stored it: one rule for the index, ``lookup`` and ``check``.

A CRM writes the routes table directly, and every backend accepts expiries that are no usable time:
MariaDB the zero date ``0000-00-00 00:00:00`` (its default sql_mode), SQLite any text or number,
PostgreSQL years past 9999, BC dates and ``infinity`` (psycopg2 cannot even fetch a row with year
10000: the whole result fails). So the column is read as text, in SQL, and parsed here with one rule:
an expiry must be a plain date-time, ``YYYY-MM-DD[ HH:MM[:SS[.ffffff]]]`` in UTC with no zone, as
fs_dynroute writes it. Any other value makes that one route unusable: it matches nobody, as if it had
expired, it is logged once, and ``fs-dynroute check`` names it. Every other route still routes.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterator

import peewee as pw

from fs_dynroute.models import Route

log = logging.getLogger(__name__)

_FORM = re.compile(r"\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)?")
FORM = "YYYY-MM-DD HH:MM:SS in UTC"

class UnreadableExpiry(ValueError):
    """An ``expires_at`` that is not a plain date-time: the route cannot be used."""


def parse(text: str | None) -> dt.datetime | None:
    """The expiry as naive UTC, None for never; raises UnreadableExpiry for anything else."""
    if text is None:
        return None
    if _FORM.fullmatch(text):
        try:
            return dt.datetime.fromisoformat(text)
        except ValueError:  # month 13, day 0, the zero date
            pass
    raise UnreadableExpiry(f"expires_at {text!r} is not a date-time ({FORM})")


def as_text(db: pw.Database | pw.DatabaseProxy) -> pw.Node:
    """``expires_at`` cast to text in SQL, so no driver ever converts (and fails on) a bad value."""
    db = db.obj if isinstance(db, pw.DatabaseProxy) else db
    return pw.Cast(Route.expires_at, "CHAR" if isinstance(db, pw.MySQLDatabase) else "TEXT")


def usable(route_id: int, rule_id: int, key: str, text: str | None,
           reported: set[int]) -> tuple[bool, dt.datetime | None]:
    """(True, expiry) for a readable expiry; (False, None) for an unreadable one, logged unless its route id
    is in ``reported`` (the reader's memory of what it said already, so a bad row is not logged every reload)."""
    try:
        return True, parse(text)
    except UnreadableExpiry as exc:
        if route_id not in reported:
            reported.add(route_id)
            log.warning("route %d (rule %d, caller_key %s) ignored: %s; see 'fs-dynroute check'",
                        route_id, rule_id, key, exc)
        return False, None


def unreadable() -> Iterator[tuple[int, int, str, str]]:
    """Every route whose expiry cannot be read: (route id, rule id, caller_key, the stored text)."""
    query = (Route.select(Route.id, Route.rule_id, Route.caller_key, as_text(Route._meta.database))
             .where(Route.expires_at.is_null(False)).order_by(Route.id).tuples())
    for route_id, rule_id, key, text in query.iterator():
        try:
            parse(text)
        except UnreadableExpiry:
            yield route_id, rule_id, key, text
