"""The server's store: rules and routes held in memory, kept coherent with the database's change log.

Loading apart from matching, as Kamailio's drouting does: a call never waits on the database
to find its route. The database stays the source of truth: a poller applies the change log
(written by triggers, so the CLI, other nodes and CRMs are all seen) every ``poll_interval``;
Delete After Use is still consumed in the database, so it stays exactly once across nodes;
use counts and audit rows are written in batches off the call path. When the database cannot
be polled for ``stale_after`` seconds the index stops answering and calls go to No Match.

Each kind of database work has threads of its own, so none can starve another: consumes (as many
as ``threads``, each bounded by its call's deadline), the poller, the statistics writer and the
full loader (one each). A full load builds a whole new index in its thread while the poller keeps
the current one fresh, and the new one replaces it in one step.
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any, NamedTuple

import gevent
from gevent.threadpool import ThreadPool

from fs_dynroute import expiry, metrics
from fs_dynroute.decision import Decision, RouteView, RuleView
from fs_dynroute.models import utcnow
from fs_dynroute.store import (
    ChangeFeed,
    RouteRow,
    Snapshot,
    SQLStore,
    key_candidates,
    one_line,
    route_target,
    rule_view,
)
from fs_dynroute.validation import clashes, raise_first

log = logging.getLogger(__name__)

# More changes than this in one poll: reload everything rather than key by key (a bulk import).
BULK_CHANGES = 20_000
# Change-log rows are pruned once every node has had this long to read them.
CHANGE_RETENTION = 600.0
# Ids are handed out when a row is written, not when its transaction commits: a change can become
# visible after one with a higher id. Every poll re-reads the ids of the last SETTLE seconds.
SETTLE = 10.0
# A transaction open longer than SETTLE is caught by a full reload this often.
FULL_RELOAD = 300.0

# Use counts and audit rows waiting for the database, at most (a long outage must not eat memory).
MAX_PENDING = 100_000
# Each statement of a full load may take this long (1M routes take a few seconds).
RELOAD_TIMEOUT = 60.0
# Threads the index keeps beside the consumes' (poller, statistics, loader): the connection pool needs
# ``threads + OWN_THREADS`` connections.
OWN_THREADS = 3

Entry = tuple[int, str, "float | None"]  # route id, destination as stored, expiry as a UTC timestamp


class StaleIndex(Exception):
    """The index has not been refreshed from the database recently enough to be trusted."""


class Outage:
    """Logs a database outage once when it starts and once when it ends, not once per call."""

    def __init__(self) -> None:
        self.since: float | None = None

    def failed(self, error: BaseException) -> None:
        metrics.database_error()  # every failed read, logged or not
        if self.since is None:
            self.since = time.monotonic()
            log.error("routes database unavailable; calls go to No Match: %s", one_line(error))

    def succeeded(self) -> None:
        if self.since is not None:
            log.warning("routes database back after %.1f s", time.monotonic() - self.since)
            self.since = None


def _capture(fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[bool, Any]:
    try:
        return True, fn(*args)
    except Exception as exc:  # handed back to the waiting greenlet
        _clear_frames(exc)
        return False, exc


def _clear_frames(error: BaseException | None) -> None:
    """Free the locals of a worker's failed frames in the worker itself.

    They hold database cursors. Were the error dropped in the event loop's thread, freeing a SQLite
    cursor would wait there for its connection's mutex, which the worker holds again by then while it
    waits out a lock, and it would wait with the GIL held: every call in the process would stop.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        traceback.clear_frames(error.__traceback__)
        error = error.__cause__ or error.__context__


def _timestamp(when: dt.datetime | None) -> float | None:
    return when.replace(tzinfo=dt.timezone.utc).timestamp() if when else None


def _entries(rule_id: int, rows: list[RouteRow], unreadable: set[int]) -> dict[str, Entry]:
    """A rule's table; a route whose expiry cannot be read is left out (logged once, see expiry.py).

    Takes ``rows`` apart as it goes: a million rows freed at once, when the list goes, would hold the GIL
    (and so the event loop) for a quarter of a second.
    """
    table: dict[str, Entry] = {}
    while rows:
        route_id, key, dest, text = rows.pop()
        # Thousands of routes share a destination: one string object each (1M routes: ~50 MB less).
        if text is None:
            table[key] = (route_id, sys.intern(dest), None)
            continue
        readable, when = expiry.usable(route_id, rule_id, key, text, unreadable)
        if readable:
            table[key] = (route_id, sys.intern(dest), _timestamp(when))
    return table


def _rule_views(snapshot: Snapshot, default_context: str) -> dict[int, RuleView]:
    rules, clashing = {}, clashes(snapshot.rules, snapshot.sources)
    for row in snapshot.rules:
        try:
            raise_first(clashing.get(row.id, []))
            rules[row.id] = rule_view(row, snapshot.names, default_context, snapshot.sources)
        except ValueError as exc:  # a broken rule serves no call; `fs-dynroute check` reports it
            log.error("rule %r ignored: %s", row.name, exc)
    return rules


def _release(tables: dict[int, dict[str, Entry]]) -> None:
    """Free a replaced index entry by entry, in a worker thread: dropping a million entries in one
    statement would hold the GIL, and so the event loop, for a tenth of a second."""
    while tables:
        _, table = tables.popitem()
        while table:
            table.popitem()


class Loaded(NamedTuple):
    """A whole index as a full load builds it, off to the side of the one serving calls."""

    cursor: int
    rules: dict[int, RuleView]
    names: dict[str, str]
    routes: dict[int, dict[str, Entry]]


class Staleness:
    """Logs the index going stale once, and once when it is fresh again, whatever the cause."""

    def __init__(self) -> None:
        self.since: float | None = None

    def check(self, fresh_until: float, stale_after: float) -> None:
        if self.since is None and 0.0 < fresh_until < time.monotonic():
            self.since = fresh_until - stale_after
            log.warning("routes index stale: not refreshed from the database for %.1f s; "
                        "calls go to No Match until it is", time.monotonic() - self.since)

    def fresh(self) -> None:
        if self.since is not None:
            log.warning("routes index fresh again after %.1f s without a refresh", time.monotonic() - self.since)
            self.since = None


class IndexedStore:
    """A Store answering rule_for and lookup from memory; consume goes to the database in a thread."""

    def __init__(self, sql: SQLStore, *, threads: int = 8, poll_interval: float = 0.5,
                 stale_after: float = 3.0, bulk_changes: int = BULK_CHANGES,
                 change_retention: float = CHANGE_RETENTION, settle: float = SETTLE,
                 full_reload: float = FULL_RELOAD, reload_timeout: float = RELOAD_TIMEOUT) -> None:
        self.sql = sql
        # The poller's statements may wait no longer than the index may go unrefreshed.
        self.feed = ChangeFeed(sql.db, timeout=stale_after, load_timeout=reload_timeout)
        self.threads = ThreadPool(threads)  # consumes, each bounded by its call's deadline
        self.poller = ThreadPool(1)
        self.flusher = ThreadPool(1)
        self.loader = ThreadPool(1)
        self.poll_interval = poll_interval
        self.stale_after = stale_after
        self.bulk_changes = bulk_changes
        self.change_retention = change_retention
        self.settle = settle
        self.full_reload = full_reload
        self.outage = Outage()
        self.staleness = Staleness()
        self.rules: dict[int, RuleView] = {}
        self.by_name: dict[str, RuleView] = {}
        self.by_source: dict[str, RuleView] = {}
        self.routes: dict[int, dict[str, Entry]] = {}
        self.names: dict[str, str] = {}
        self._targets: dict[str, str | None] = {}
        self.cursor = 0  # the highest change id applied
        self.applied: set[int] = set()  # change ids above the settle window's low-water mark, applied
        self._history: list[tuple[float, int]] = []  # (time, cursor) since the last load: the settle window
        self._read: list[tuple[float, int]] = []  # (time, cursor) of every load and poll: what may be pruned
        self._loading: gevent.event.AsyncResult | None = None  # a full load running in the loader thread
        self.reload_at = 0.0
        self.fresh_until = 0.0
        self._pending: list[tuple[RuleView, Decision, str | None, dt.datetime]] = []
        self._flush_failing = False
        self._loops: list[gevent.Greenlet] = []

    # -- running -------------------------------------------------------------------------------------------

    @staticmethod
    def _run(pool: ThreadPool, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking database call in one of ``pool``'s threads; the calling greenlet waits cooperatively.

        Errors come back as values and are raised here, in the caller, instead of being reported
        by gevent's hub as a crash of the worker.
        """
        ok, value = pool.spawn(_capture, fn, args).get()
        if not ok:
            raise value
        return value

    def offload(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a call's database work (a consume) in the calls' threads."""
        return self._run(self.threads, fn, *args)

    def start(self) -> None:
        """Load everything, then keep refreshing and flushing in the background.

        A database that cannot be read at start does not stop the server: calls go to No Match
        while the poller keeps trying, and routing starts on its own once the database answers.
        """
        try:
            self.reload()
        except Exception as exc:
            self.outage.failed(exc)
        self._loops = [gevent.spawn(self._every, self.poll_interval, self.refresh, self.outage.failed),
                       gevent.spawn(self._every, self.poll_interval, self.flush, self._flush_failed),
                       gevent.spawn(self._every, self.poll_interval, self._watch, log.exception)]

    def stop(self) -> None:
        gevent.killall(self._loops)
        try:
            self.flush()
        except Exception as exc:
            log.warning("statistics of %d calls not written at stop: %s", len(self._pending), one_line(exc))
        for pool in (self.threads, self.poller, self.flusher, self.loader):
            pool.kill()
        self.sql.db.close_all() if hasattr(self.sql.db, "close_all") else self.sql.db.close()

    @staticmethod
    def _every(interval: float, step: Callable[[], None], failed: Callable[[Exception], None]) -> None:
        while True:
            gevent.sleep(interval)
            try:
                step()
            except Exception as exc:  # keep going: the next round may succeed
                failed(exc)

    def _watch(self) -> None:
        self.staleness.check(self.fresh_until, self.stale_after)

    # -- loading -------------------------------------------------------------------------------------------

    def reload(self) -> None:
        """Load all rules and routes now (in the loader thread) and serve from them."""
        self._swap(self._run(self.loader, self._load))

    def _load(self) -> Loaded:
        """A whole new index, built in the loader thread; the cursor is read first, so changes made
        meanwhile are applied after it replaces the current one."""
        cursor = self.feed.last_change()
        snapshot = self.feed.snapshot()
        rules = _rule_views(snapshot, self.sql.default_context)
        # No cyclic collection while a million entries are made, and none that walks them afterwards: a
        # collection holds the GIL, and so stalls the event loop, for as long as it walks (~0.3 s for 1M).
        # Frozen before collecting is enabled again, they are left out of every later collection.
        gc.disable()
        try:
            routes = {rule_id: _entries(rule_id, self.feed.routes(rule_id), self.sql.unreadable) for rule_id in rules}
        finally:
            gc.freeze()
            gc.enable()
        return Loaded(cursor, rules, snapshot.names, routes)

    def _start_load(self, why: str) -> None:
        if self._loading is None:
            log.info("%s: loading the whole index beside the current one", why)
            self._loading = self.loader.spawn(_capture, self._load, ())

    def _finish_load(self) -> None:
        """Put a finished full load in service (or raise what stopped it)."""
        if self._loading is None or not self._loading.ready():
            return
        (ok, value), self._loading = self._loading.get(), None
        if not ok:
            self.reload_at = time.monotonic() + self.poll_interval  # try again soon
            raise value
        self._swap(value)

    def _swap(self, loaded: Loaded) -> None:
        """Serve from a new index in one step; the old one is freed in the loader thread."""
        old = self.routes
        self._install_rules(loaded.rules, loaded.names)
        self.routes = loaded.routes
        now = time.monotonic()
        self.cursor, self.applied = loaded.cursor, set()
        self._history = [(now, loaded.cursor)]
        self._read.append((now, loaded.cursor))
        self.reload_at = now + self.full_reload
        self._fresh()
        if old:
            self.loader.spawn(_release, old)
        log.info("index loaded: %d rules, %d routes", len(self.rules), sum(map(len, self.routes.values())))

    def _install_rules(self, rules: dict[int, RuleView], names: dict[str, str]) -> None:
        self.names, self._targets, self.rules = names, {}, rules
        self.by_name = {r.name: r for r in rules.values()}
        by_source = {}
        for rule in sorted(rules.values(), key=lambda r: (r.enabled, -r.id)):
            by_source.update(dict.fromkeys(rule.numbers, rule))  # an enabled rule wins over a disabled one
        self.by_source = by_source  # in one step: the in-process mode reads it from other threads

    def _load_rules(self) -> None:
        snapshot = self._run(self.poller, self.feed.snapshot)
        self._install_rules(_rule_views(snapshot, self.sql.default_context), snapshot.names)

    def refresh(self) -> None:
        """Apply the change log: whole rules, or only the keys that changed, for every change not yet applied.

        A full load (every ``full_reload`` seconds, or after a bulk change) runs beside this: the
        current index keeps being refreshed, so it is not stale while the new one is built.
        """
        if self.fresh_until == 0.0:  # never loaded
            self.reload()
            return
        self._finish_load()
        if time.monotonic() >= self.reload_at:  # the safety net for transactions held open past SETTLE
            self._start_load("periodic reload")
        low_water = self._low_water()
        rows = [r for r in self._run(self.poller, self.feed.changes, low_water, self.bulk_changes + len(self.applied))
                if r[0] not in self.applied]
        if len(rows) > self.bulk_changes:
            self._start_load(f"more than {self.bulk_changes} changes")
            self._fresh()  # the database answers; the current index serves until the new one replaces it
            return
        self._apply(rows)
        self.applied.update(r[0] for r in rows)
        self.cursor = max([self.cursor, *(r[0] for r in rows)])
        now = time.monotonic()
        self._history.append((now, self.cursor))
        self._read.append((now, self.cursor))
        low_water = self._low_water()
        self.applied = {i for i in self.applied if i > low_water}
        self._prune()
        self._fresh()

    def _apply(self, rows: list[tuple[int, int | None, str | None]]) -> None:
        """Re-read what the changes name: a rule with its routes, or single keys (applying twice is harmless)."""
        whole_rules = {rule_id for _, rule_id, key in rows if key is None}
        if whole_rules:
            self._load_rules()
            for rule_id in whole_rules - {None}:
                found = self._run(self.poller, self.feed.routes, rule_id) if rule_id in self.rules else []
                self.routes[rule_id] = _entries(rule_id, found, self.sql.unreadable)
        keys: dict[int, set[str]] = {}
        for _, rule_id, key in rows:
            if key is not None and rule_id not in whole_rules:
                keys.setdefault(rule_id, set()).add(key)
        for rule_id, changed in keys.items():
            found = _entries(rule_id, self._run(self.poller, self.feed.routes, rule_id, sorted(changed)),
                             self.sql.unreadable)
            table = self.routes.setdefault(rule_id, {})
            for key in changed:  # replaced in place, never missing meanwhile (other threads read in-process)
                if key in found:
                    table[key] = found[key]
                else:
                    table.pop(key, None)

    def _low_water(self) -> int:
        """The cursor as it was ``settle`` seconds ago: changes above it are read again on every poll.

        Forgets what is older than that (however rarely full loads reset the history)."""
        horizon = time.monotonic() - self.settle
        older = [(at, c) for at, c in self._history if at <= horizon]
        self._history = older[-1:] + self._history[len(older):]
        return older[-1][1] if older else self._history[0][1]

    def _fresh(self) -> None:
        self.fresh_until = time.monotonic() + self.stale_after
        self.outage.succeeded()
        self.staleness.fresh()

    def _prune(self) -> None:
        """Delete change rows this node had read ``change_retention`` seconds ago (a chunk per poll).

        Kept apart from the settle window, which each full load resets: pruning must see reads
        older than the time between two loads.
        """
        horizon = time.monotonic() - max(self.change_retention, self.settle)
        old = [(at, c) for at, c in self._read if at <= horizon]
        if old:
            self._run(self.poller, self.feed.prune, max(c for _, c in old))
            self._read = old[-1:] + [(at, c) for at, c in self._read if at > horizon]

    # -- the Store interface -------------------------------------------------------------------------------

    def _check_fresh(self) -> None:
        if time.monotonic() > self.fresh_until:
            raise StaleIndex("the routes index has not been refreshed from the database for "
                             f"more than {self.stale_after:.1f} s")

    def rule_for(self, *, name: str | None = None, source: str | None = None) -> RuleView | None:
        # From memory even when stale: the call then fails at lookup, as an error that says why,
        # and goes to its rule's No Match Destination.
        return self.by_name.get(name) if name else self.by_source.get(source or "")

    def lookup(self, rule: RuleView, key: str) -> RouteView | None:
        self._check_fresh()
        table = self.routes.get(rule.id, {})
        now = time.time()
        for candidate in key_candidates(key, rule.prefix):
            entry = table.get(candidate)
            if entry is not None and (entry[2] is None or entry[2] > now):
                expires = (dt.datetime.fromtimestamp(entry[2], dt.timezone.utc).replace(tzinfo=None)
                           if entry[2] else None)
                return RouteView(entry[0], candidate, self._target(entry[1]), expires)
        return None

    def _target(self, destination: str) -> str | None:
        if destination not in self._targets:
            self._targets[destination] = route_target(destination, self.names, self.sql.default_context)
        return self._targets[destination]

    def consume(self, rule: RuleView, decision: Decision, call_uuid: str | None,
                deadline: float | None = None) -> bool:
        # A failed consume (a lock held past the deadline, say) costs that call its record and is
        # logged with it; the record stays in memory, as it stays in the database. Whether the
        # database is reachable is the poller's to say.
        removed = self.offload(self.sql.consume, rule, decision, call_uuid, deadline)
        if decision.route is not None:
            self.routes.get(rule.id, {}).pop(decision.route.key, None)  # ours now, or another caller's
        return removed

    def record(self, rule: RuleView, decision: Decision, call_uuid: str | None) -> None:
        if len(self._pending) >= MAX_PENDING:
            log.warning("statistics buffer full (%d calls): dropping the oldest", MAX_PENDING)
            del self._pending[: MAX_PENDING // 10]
        self._pending.append((rule, decision, call_uuid, utcnow()))

    def flush(self) -> None:
        """Write the batched use counts and audit rows (kept for the next flush if the database is down),
        and settle any consume whose COMMIT outcome was not known."""
        if self.sql.unsettled:
            self._run(self.flusher, self.sql.settle_pending)
        if self._pending:
            batch, self._pending = self._pending, []
            try:
                self._run(self.flusher, self.feed.record_many, batch)
            except Exception:
                self._pending = batch + self._pending
                raise
        if self._flush_failing:
            self._flush_failing = False
            log.warning("statistics written again")

    def _flush_failed(self, error: Exception) -> None:
        if not self._flush_failing:
            self._flush_failing = True
            log.warning("could not write statistics of %d calls (kept, trying again every %.1f s): %s",
                        len(self._pending), self.poll_interval, one_line(error))
