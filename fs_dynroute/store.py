"""The routes store: the one small interface the call path uses to read and consume routes.

:class:`SQLStore` answers every question with a query through peewee; the server wraps
its calls in a thread and a deadline, so a slow or locked database costs a call its
deadline, never the event loop.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import time
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, TypeVar

import peewee as pw

from fs_dynroute.decision import Decision, RouteView, RuleView
from fs_dynroute.destinations import DYNAMIC, DestinationError, resolve, validate_rule_name
from fs_dynroute.models import Audit, Change, Route, Rule, database, destination_map, utcnow

log = logging.getLogger(__name__)
T = TypeVar("T")


class DeadlineExceeded(Exception):
    """The call's deadline passed before the store finished; nothing was changed."""


class Store(Protocol):
    """What the call path needs from storage, and nothing more."""

    def rule_for(self, *, name: str | None = None, source: str | None = None) -> RuleView | None:
        """The rule named ``name``, else the rule serving ``source`` (an enabled one first)."""

    def lookup(self, rule: RuleView, key: str) -> RouteView | None:
        """The route for ``key``: the exact key, or in prefix mode the longest stored prefix of it."""

    def consume(self, rule: RuleView, decision: Decision, call_uuid: str | None,
                deadline: float | None = None) -> bool:
        """Delete the matched route if it is still there; True only for the caller whose delete removed it.

        Past ``deadline`` (time.monotonic()) the delete is rolled back and DeadlineExceeded raised: the
        caller has already gone to No Match, so the record must stay for the next call.
        """

    def record(self, rule: RuleView, decision: Decision, call_uuid: str | None) -> None:
        """Count a use of the matched route and write the audit row for a decision."""


def rule_view(rule: Rule, names: dict[str, str], default_context: str) -> RuleView:
    """A Rule row as the call path sees it; raises DestinationError if its name or destinations are unusable."""
    validate_rule_name(rule.name)
    match = None if rule.match_destination == DYNAMIC else resolve(rule.match_destination, names, default_context)
    return RuleView(
        id=rule.id, name=rule.name, source=rule.source, digits_match=rule.digits_match,
        no_match_target=resolve(rule.no_match_destination, names, default_context),
        match_target=match, delete_after_use=bool(rule.delete_after_use), enabled=bool(rule.enabled),
        prefix=rule.match_mode == "prefix")


def route_target(destination: str, names: dict[str, str], default_context: str) -> str | None:
    """The transfer argument of a route's destination, or None if it is empty or unusable."""
    try:
        return resolve(destination, names, default_context) if destination else None
    except DestinationError:
        return None


def key_candidates(key: str, prefix: bool) -> list[str]:
    """The stored keys that can match ``key``: itself, or in prefix mode all its prefixes, longest first."""
    return [key[:n] for n in range(len(key), 0, -1)] if prefix else [key]


def _healing(method: Callable[..., T]) -> Callable[..., T]:
    """On a lost connection, drop it and try once more on a fresh one from the pool.

    That is how the call after a database restart, or after the server killed our connection,
    is routed correctly without restarting fs_dynroute. Trying again is safe for a consume: a
    transaction cut off with its connection was rolled back, and a repeated delete of a record
    that did go finds nothing, so a record still goes to at most one caller. SQLite has no
    connection to lose: its errors (a locked file) are not retried.
    """
    @functools.wraps(method)
    def wrapper(self: Any, *args: object, **kwargs: object) -> T:
        try:
            return method(self, *args, **kwargs)
        except (pw.OperationalError, pw.InterfaceError) as exc:
            _drop_connection(self.db)
            if isinstance(self.db, pw.SqliteDatabase):
                raise
            log.info("database connection lost (%s); retrying on a new one", exc)
            try:
                return method(self, *args, **kwargs)
            except pw.PeeweeException:
                _drop_connection(self.db)
                raise
        except pw.PeeweeException:
            _drop_connection(self.db)
            raise
    return wrapper


def _drop_connection(db: pw.Database) -> None:
    try:
        db.close()
    except pw.PeeweeException as exc:
        log.debug("closing a failed connection: %s", exc)


class SQLStore:
    """The store backed directly by the database (used by the CLI and as the server's source of truth)."""

    def __init__(self, db: pw.Database, default_context: str = "default") -> None:
        # The models go through one process-wide proxy; peewee's bind_ctx swaps bindings globally
        # and is not safe with several threads in the store at once.
        database.initialize(db)
        self.db = db
        self.default_context = default_context

    @_healing
    def rule_for(self, *, name: str | None = None, source: str | None = None) -> RuleView | None:
        query = Rule.select()
        query = query.where(Rule.name == name) if name else query.where(Rule.source == source)
        row = query.order_by(Rule.enabled.desc(), Rule.id).first()
        return rule_view(row, destination_map(), self.default_context) if row else None

    @_healing
    def lookup(self, rule: RuleView, key: str) -> RouteView | None:
        candidates = key_candidates(key, rule.prefix)
        rows = list(Route.select(Route.id, Route.caller_key, Route.destination, Route.expires_at, Route.notes)
                    .where((Route.rule == rule.id) & Route.caller_key.in_(candidates)
                           & (Route.expires_at.is_null() | (Route.expires_at > utcnow()))))
        if not rows:
            return None
        best = max(rows, key=lambda r: len(r.caller_key))
        target = route_target(best.destination, destination_map(), self.default_context)
        return RouteView(best.id, best.caller_key, target, best.expires_at, best.notes)

    @_healing
    def consume(self, rule: RuleView, decision: Decision, call_uuid: str | None,
                deadline: float | None = None) -> bool:
        assert decision.route is not None
        late = lambda: deadline is not None and time.monotonic() > deadline  # noqa: E731
        with self._write_transaction():
            row = Route.select().where(Route.id == decision.route.id).dicts().first()
            removed = Route.delete().where(Route.id == decision.route.id).execute() == 1
            audit_id = Audit.insert(_audit_row(rule, decision, "consumed", call_uuid)).execute() if removed else None
            if late():
                raise DeadlineExceeded("consumed after the call's deadline; rolled back")
        if removed and late():  # the commit itself was slow: the caller has gone to No Match meanwhile
            self._restore(row, audit_id)
            raise DeadlineExceeded("committed after the call's deadline; the record was put back")
        return removed

    def _write_transaction(self) -> pw._atomic:
        """A transaction that will write: on SQLite it takes the write lock first (BEGIN IMMEDIATE), so it
        waits for another writer instead of failing when its read snapshot cannot be upgraded."""
        return self.db.atomic("IMMEDIATE") if isinstance(self.db, pw.SqliteDatabase) else self.db.atomic()

    def _restore(self, row: dict[str, object] | None, audit_id: int | None) -> None:
        """Undo a consume whose caller was not sent to the record: the record waits for the next call."""
        with self.db.atomic():
            if row is not None:
                Route.insert(row).on_conflict_ignore().execute()
            Audit.delete().where(Audit.id == audit_id).execute()
        log.warning("route %s of rule %s consumed too late for its call; put back", row and row["caller_key"],
                    row and row["rule"])

    @_healing
    def record(self, rule: RuleView, decision: Decision, call_uuid: str | None) -> None:
        with self.db.atomic():
            if decision.route is not None and decision.result.value == "match":
                (Route.update(use_count=Route.use_count + 1, last_used=utcnow())
                 .where(Route.id == decision.route.id).execute())
            Audit.insert(_audit_row(rule, decision, decision.result.value, call_uuid)).execute()


class Snapshot(NamedTuple):
    """Everything but the routes, as the index loads it: rules by id and the named destinations."""

    rules: list[Rule]
    names: dict[str, str]


RouteRow = tuple[int, str, str, "dt.datetime | None"]  # id, caller_key, destination, expires_at


class ChangeFeed:
    """The SQL side of an in-memory index: bulk loads, the change log, and batched statistics."""

    def __init__(self, db: pw.Database) -> None:
        self.db = db

    @_healing
    def snapshot(self) -> Snapshot:
        return Snapshot(list(Rule.select()), destination_map())

    @_healing
    def last_change(self) -> int:
        return Change.select(pw.fn.COALESCE(pw.fn.MAX(Change.id), 0)).scalar()

    @_healing
    def routes(self, rule_id: int, keys: list[str] | None = None) -> list[RouteRow]:
        """A rule's routes (all, or those with ``keys``)."""
        query = (Route.select(Route.id, Route.caller_key, Route.destination, Route.expires_at)
                 .where(Route.rule == rule_id))
        if keys is not None:
            query = query.where(Route.caller_key.in_(keys))
        return list(query.tuples().iterator())

    @_healing
    def changes(self, after: int, limit: int) -> list[tuple[int, int | None, str | None]]:
        """Up to ``limit`` + 1 change rows after id ``after``: (id, rule_id, caller_key)."""
        return list(Change.select(Change.id, Change.rule_id, Change.caller_key).where(Change.id > after)
                    .order_by(Change.id).limit(limit + 1).tuples())

    @_healing
    def prune(self, upto: int) -> None:
        Change.delete().where(Change.id <= upto).execute()

    @_healing
    def record_many(self, uses: list[tuple[RuleView, Decision, str | None, dt.datetime]]) -> None:
        """Use counts and audit rows for many calls in one transaction (the server batches them).

        Plain SQL with fixed text: this runs every poll in a worker thread that holds the GIL while
        it builds statements, so it must be cheap, and the driver must see the same few statements
        (sqlite3 caches each distinct one, and a multi-row INSERT of every batch size would grow memory).
        """
        counts: dict[int, int] = {}
        for _, decision, _, _ in uses:
            if decision.route is not None and decision.result.value == "match":
                counts[decision.route.id] = counts.get(decision.route.id, 0) + 1
        now = Route.last_used.db_value(utcnow())
        audit = [(Audit.at.db_value(at), rule.name, d.key or "", d.destination, d.result.value, uuid)
                 for rule, d, uuid, at in uses]
        p = self.db.param
        with self.db.atomic():
            cursor = self.db.cursor()
            cursor.executemany(f"UPDATE dynroute_route SET use_count = use_count + {p}, last_used = {p} "
                               f"WHERE id = {p}", [(n, now, route_id) for route_id, n in counts.items()])
            _insert_rows(cursor, p, "dynroute_audit",
                         ("at", "rule_name", "caller_key", "destination", "result", "call_uuid"), audit)


_INSERT_CHUNK = 200


def _insert_rows(cursor: Any, param: str, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """Multi-row INSERTs of a fixed size, then single rows for the rest: two statements whatever the count."""
    one = "(" + ", ".join([param] * len(columns)) + ")"
    head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
    whole = len(rows) - len(rows) % _INSERT_CHUNK
    for start in range(0, whole, _INSERT_CHUNK):
        cursor.execute(head + ", ".join([one] * _INSERT_CHUNK),
                       [v for row in rows[start:start + _INSERT_CHUNK] for v in row])
    if rows[whole:]:
        cursor.executemany(head + one, rows[whole:])


def _audit_row(rule: RuleView, decision: Decision, result: str, call_uuid: str | None,
               at: dt.datetime | None = None) -> dict[str, object]:
    return {"at": at or utcnow(), "rule_name": rule.name, "caller_key": decision.key or "",
            "destination": decision.destination, "result": result, "call_uuid": call_uuid}
