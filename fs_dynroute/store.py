"""The routes store: the one small interface the call path uses to read and consume routes.

:class:`SQLStore` answers every question with a query through peewee; the server wraps
its calls in a thread and a deadline, so a slow or locked database costs a call its
deadline, never the event loop. Each unit of server work first bounds its statements with
the backend's own timeouts (database.bound_statements), so a locked row frees its thread.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import time
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, TypeVar

import peewee as pw

from fs_dynroute import expiry
from fs_dynroute.database import bound_statements
from fs_dynroute.decision import Decision, RouteView, RuleView
from fs_dynroute.destinations import DYNAMIC, DestinationError, resolve
from fs_dynroute.models import (
    Audit,
    Change,
    Route,
    Rule,
    Source,
    SourceNumber,
    database,
    destination_map,
    source_map,
    utcnow,
)
from fs_dynroute.validation import Sources, UserError, clashes, rule_problems

log = logging.getLogger(__name__)
T = TypeVar("T")

# How long finding out about a COMMIT whose reply was lost may wait for the lost transaction's locks.
SETTLE_TIMEOUT = 5.0
# Change-log rows deleted per statement: one prune never holds locks or a statement for long.
PRUNE_CHUNK = 10_000


class DeadlineExceeded(Exception):
    """The call's deadline passed before the store finished; nothing was changed."""


class CommitLost(Exception):
    """The connection failed during a consume's COMMIT: the consume was undone if it had happened."""


def one_line(error: BaseException) -> str:
    """An error as one log line (psycopg2's messages span several)."""
    return " ".join(f"{type(error).__name__}: {error}".split())


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


def rule_view(rule: Rule, names: dict[str, str], default_context: str, sources: Sources) -> RuleView:
    """A Rule row as the call path sees it; raises UserError with every problem if validation rejects the row."""
    if problems := rule_problems(rule, names, default_context, sources):
        raise UserError("; ".join(problems))
    match = None if rule.match_destination == DYNAMIC else resolve(rule.match_destination, names, default_context)
    return RuleView(
        id=rule.id, name=rule.name, source=rule.source, digits_match=rule.digits_match,
        no_match_target=resolve(rule.no_match_destination, names, default_context),
        match_target=match, delete_after_use=bool(rule.delete_after_use), enabled=bool(rule.enabled),
        prefix=rule.prefix, source_numbers=tuple(sources[rule.source]) if rule.source in sources else None)


def route_target(destination: str, names: dict[str, str], default_context: str) -> str | None:
    """The transfer argument of a route's destination, or None if it is empty or unusable."""
    try:
        return resolve(destination, names, default_context) if destination else None
    except DestinationError:
        return None


def key_candidates(key: str, prefix: bool) -> list[str]:
    """The stored keys that can match ``key``: itself, or in prefix mode all its prefixes, longest first."""
    return [key[:n] for n in range(len(key), 0, -1)] if prefix else [key]


class _Reconnects:
    """Says "connection lost, retrying" once per outage (until a retry works), not once per statement."""

    def __init__(self) -> None:
        self.failing = False

    def lost(self, error: BaseException) -> None:
        if not self.failing:
            self.failing = True
            log.info("database connection lost (%s); retrying on a new one", one_line(error))

    def worked(self) -> None:
        if self.failing:
            self.failing = False
            log.info("database connection re-established")


_reconnects = _Reconnects()


def _healing(method: Callable[..., T]) -> Callable[..., T]:
    """On a lost connection, drop it and try once more on a fresh one from the pool.

    That is how the call after a database restart, or after the server killed our connection,
    is routed correctly without restarting fs_dynroute. Trying again is safe for a consume: a
    transaction cut off with its connection before its COMMIT was rolled back, and one cut off
    during its COMMIT is settled by consume itself (CommitLost is not retried). SQLite has no
    connection to lose: its errors (a locked file) are not retried.
    """
    @functools.wraps(method)
    def wrapper(self: Any, *args: object, **kwargs: object) -> T:
        try:
            return method(self, *args, **kwargs)
        except (pw.OperationalError, pw.InterfaceError) as exc:
            if _cut_off(exc):
                raise  # our own bound fired (a lock held too long): the connection is fine, trying again is not
            _drop_connection(self.db)
            if isinstance(self.db, pw.SqliteDatabase):
                raise
            _reconnects.lost(exc)
            try:
                result = method(self, *args, **kwargs)
            except pw.PeeweeException:
                _drop_connection(self.db)
                raise
            _reconnects.worked()
            return result
        except pw.PeeweeException:
            _drop_connection(self.db)
            raise
    return wrapper


# The errors a statement bound (database.bound_statements) raises on a connection that stays usable:
# PostgreSQL query_canceled and lock_not_available, MariaDB max_statement_time and lock wait timeout.
_BOUND_FIRED = {"57014", "55P03", 1969, 1205}


def _cut_off(error: BaseException) -> bool:
    """True if ``error`` (as peewee wraps the driver's) is a statement bound firing, not a lost connection."""
    driver = getattr(error, "orig", None) or error.__context__
    code = getattr(driver, "pgcode", None) or next(iter(getattr(driver, "args", ()) or ()), None)
    return code in _BOUND_FIRED


def _drop_connection(db: pw.Database) -> None:
    try:
        db.close()
    except pw.PeeweeException as exc:
        log.debug("closing a failed connection: %s", one_line(exc))


class SQLStore:
    """The store backed directly by the database (used by the CLI and as the server's source of truth)."""

    def __init__(self, db: pw.Database, default_context: str = "default") -> None:
        # The models go through one process-wide proxy; peewee's bind_ctx swaps bindings globally
        # and is not safe with several threads in the store at once.
        database.initialize(db)
        self.db = db
        self.default_context = default_context
        self.unsettled: list[tuple[dict[str, Any], int]] = []  # consumes whose COMMIT outcome is not known yet
        self.unreadable: set[int] = set()  # routes whose unreadable expiry was logged already

    @_healing
    def rule_for(self, *, name: str | None = None, source: str | None = None) -> RuleView | None:
        query = Rule.select()
        if name:
            query = query.where(Rule.name == name)
        else:  # the number itself (unless that is a named source's name), or a named source it belongs to
            named = Source.select(Source.name).join(SourceNumber).where(SourceNumber.number == source)
            query = query.where(((Rule.source == source) & Rule.source.not_in(Source.select(Source.name)))
                                | Rule.source.in_(named))
        sources = source_map()
        rows = list(query.order_by(Rule.enabled.desc(), Rule.id))
        if not name:  # as in the index: a rule that loses a number to an earlier rule serves none of its numbers
            clashing = clashes(Rule.select(), sources)
            rows = [r for r in rows if r.id not in clashing]
        return rule_view(rows[0], destination_map(), self.default_context, sources) if rows else None

    @_healing
    def lookup(self, rule: RuleView, key: str) -> RouteView | None:
        candidates = key_candidates(key, rule.prefix)
        query = (Route.select(Route.id, Route.caller_key, Route.destination, expiry.as_text(self.db), Route.notes)
                 .where((Route.rule == rule.id) & Route.caller_key.in_(candidates)).tuples())
        now, found = utcnow(), []
        for route_id, caller_key, destination, expires_text, notes in query:
            readable, expires = expiry.usable(route_id, rule.id, caller_key, expires_text, self.unreadable)
            if readable and (expires is None or expires > now):  # as in the index: unreadable is as if expired
                found.append((route_id, caller_key, destination, expires, notes))
        if not found:
            return None
        route_id, caller_key, destination, expires, notes = max(found, key=lambda r: len(r[1]))
        return RouteView(route_id, caller_key, route_target(destination, destination_map(), self.default_context),
                         expires, notes)

    @_healing
    def consume(self, rule: RuleView, decision: Decision, call_uuid: str | None,
                deadline: float | None = None) -> bool:
        if decision.route is None:
            raise ValueError(f"rule {rule.name}: only a matched route can be consumed")
        late = lambda: deadline is not None and time.monotonic() > deadline  # noqa: E731
        if late():  # queued behind other consumes until its caller had gone: touch nothing
            raise DeadlineExceeded("the call's deadline passed before the consume could start")
        bound_statements(self.db, None if deadline is None else deadline - time.monotonic())
        row: dict[str, Any] | None = None
        audit_id: int | None = None
        committing = False
        try:
            with self._write_transaction():
                row = Route.select().where(Route.id == decision.route.id).dicts().first()
                removed = Route.delete().where(Route.id == decision.route.id).execute() == 1
                if removed:
                    audit_id = Audit.insert(_audit_row(rule, decision, "consumed", call_uuid)).execute()
                if late():
                    raise DeadlineExceeded("consumed after the call's deadline; rolled back")
                committing = True
        except (pw.OperationalError, pw.InterfaceError) as exc:
            if not committing or row is None or audit_id is None or isinstance(self.db, pw.SqliteDatabase):
                raise  # rolled back with its connection (or nothing written): safe to retry
            _drop_connection(self.db)
            try:
                self.settle(row, audit_id, exc)
            except pw.PeeweeException as again:  # cannot ask now: ask again later, never retry the consume
                _drop_connection(self.db)
                self.unsettled.append((row, audit_id))
                log.error("route %s of rule %s: the COMMIT of its consume lost its reply and the database cannot "
                          "say yet whether it went through (%s); asking again later", row["caller_key"],
                          row["rule"], one_line(again))
            raise CommitLost(f"connection lost during COMMIT ({one_line(exc)})") from None
        if removed and late():  # the commit itself was slow: the caller has gone to No Match meanwhile
            self._put_back(row, audit_id)
            log.warning("route %s of rule %s consumed too late for its call; put back", row and row["caller_key"],
                        rule.name)
            raise DeadlineExceeded("committed after the call's deadline; the record was put back")
        return removed

    def settle(self, row: dict[str, Any], audit_id: int, error: BaseException | None = None) -> bool:
        """After a COMMIT whose reply was lost, find out on a fresh connection whether it happened; undo it if so.

        The consume's own ``consumed`` audit row says whether it committed. Locking the route row first
        waits for the lost transaction to end, should the server still be running it (its delete holds
        that lock), so the answer is final. Returns True if the record had been consumed and is back.
        """
        bound_statements(self.db, SETTLE_TIMEOUT)
        with self.db.atomic():
            list(Route.select(Route.id).where(Route.id == row["id"]).for_update())
            committed = Audit.select(Audit.id).where(Audit.id == audit_id).for_update().first() is not None
            if committed:
                self._put_back(row, audit_id)
        log.warning("route %s of rule %s: the COMMIT of its consume lost its reply (%s) and had %s; "
                    "its call went to No Match", row["caller_key"], row["rule"],
                    one_line(error) if error else "earlier",
                    "gone through: put back for the next call" if committed else "not gone through: kept")
        return committed

    def settle_pending(self) -> None:
        """Ask again about consumes whose COMMIT outcome could not be found out at the time (the server retries)."""
        while self.unsettled:
            row, audit_id = self.unsettled[0]
            try:
                self.settle(row, audit_id)
            except pw.PeeweeException:
                _drop_connection(self.db)
                raise
            self.unsettled.pop(0)

    def _write_transaction(self) -> pw._atomic:
        """A transaction that will write: on SQLite it takes the write lock first (BEGIN IMMEDIATE), so it
        waits for another writer instead of failing when its read snapshot cannot be upgraded."""
        return self.db.atomic("IMMEDIATE") if isinstance(self.db, pw.SqliteDatabase) else self.db.atomic()

    def _put_back(self, row: dict[str, Any] | None, audit_id: int | None) -> None:
        """Undo a consume whose caller was not sent to the record: the record waits for the next call."""
        with self.db.atomic():
            if row is not None:
                Route.insert(row).on_conflict_ignore().execute()
            Audit.delete().where(Audit.id == audit_id).execute()

    @_healing
    def record(self, rule: RuleView, decision: Decision, call_uuid: str | None) -> None:
        with self.db.atomic():
            if decision.route is not None and decision.result.value == "match":
                (Route.update(use_count=Route.use_count + 1, last_used=utcnow())
                 .where(Route.id == decision.route.id).execute())
            Audit.insert(_audit_row(rule, decision, decision.result.value, call_uuid)).execute()


class Snapshot(NamedTuple):
    """Everything but the routes, as the index loads it: rules by id, the named destinations and sources."""

    rules: list[Rule]
    names: dict[str, str]
    sources: dict[str, tuple[str, ...]]


RouteRow = tuple[int, str, str, "str | None"]  # id, caller_key, destination, expires_at as stored (text)


class ChangeFeed:
    """The SQL side of an in-memory index: bulk loads, the change log, and batched statistics.

    Every method bounds its statements first: ``timeout`` for the small ones the poller runs, so a
    lock cannot hold the poller past the time the index may go unrefreshed, ``load_timeout`` for
    reading whole rules.
    """

    def __init__(self, db: pw.Database, timeout: float | None = None, load_timeout: float | None = None) -> None:
        self.db = db
        self.timeout = timeout
        self.load_timeout = load_timeout

    @_healing
    def snapshot(self) -> Snapshot:
        bound_statements(self.db, self.timeout)
        with self.db.atomic():  # one snapshot: a rule and the source it names read together
            return Snapshot(list(Rule.select()), destination_map(), source_map())

    @_healing
    def last_change(self) -> int:
        bound_statements(self.db, self.timeout)
        return Change.select(pw.fn.COALESCE(pw.fn.MAX(Change.id), 0)).scalar()

    @_healing
    def routes(self, rule_id: int, keys: list[str] | None = None) -> list[RouteRow]:
        """A rule's routes (all, or those with ``keys``), the expiry as stored (see expiry.py)."""
        bound_statements(self.db, self.timeout if keys is not None else self.load_timeout)
        query = (Route.select(Route.id, Route.caller_key, Route.destination, expiry.as_text(self.db))
                 .where(Route.rule == rule_id))
        if keys is not None:
            query = query.where(Route.caller_key.in_(keys))
        return list(query.tuples().iterator())

    @_healing
    def changes(self, after: int, limit: int) -> list[tuple[int, int | None, str | None]]:
        """Up to ``limit`` + 1 change rows after id ``after``: (id, rule_id, caller_key)."""
        bound_statements(self.db, self.timeout)
        return list(Change.select(Change.id, Change.rule_id, Change.caller_key).where(Change.id > after)
                    .order_by(Change.id).limit(limit + 1).tuples())

    @_healing
    def prune(self, upto: int) -> int:
        """Delete change rows up to id ``upto``, at most PRUNE_CHUNK of them; returns how many went.

        In chunks: a night's bulk import leaves millions of rows, and one statement deleting them
        all would outlast its bound every time and never finish.
        """
        bound_statements(self.db, self.timeout)
        first = Change.select(pw.fn.MIN(Change.id)).scalar()
        if first is None or first > upto:
            return 0
        return Change.delete().where(Change.id <= min(upto, first + PRUNE_CHUNK - 1)).execute()

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
        bound_statements(self.db, self.timeout)
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
