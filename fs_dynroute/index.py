"""The server's store: rules and routes held in memory, kept coherent with the database's change log.

Loading apart from matching, as Kamailio's drouting does: a call never waits on the database
to find its route. The database stays the source of truth: a poller applies the change log
(written by triggers, so the CLI, other nodes and CRMs are all seen) every ``poll_interval``;
Delete After Use is still consumed in the database, so it stays exactly once across nodes;
use counts and audit rows are written in batches off the call path. When the database cannot
be polled for ``stale_after`` seconds the index stops answering and calls go to No Match.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import gevent
from gevent.threadpool import ThreadPool

from fs_dynroute.decision import Decision, RouteView, RuleView
from fs_dynroute.models import utcnow
from fs_dynroute.store import ChangeFeed, RouteRow, SQLStore, key_candidates, route_target, rule_view

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

Entry = tuple[int, str, "float | None"]  # route id, destination as stored, expiry as a UTC timestamp


class StaleIndex(Exception):
    """The index has not been refreshed from the database recently enough to be trusted."""


class Outage:
    """Logs a database outage once when it starts and once when it ends, not once per call."""

    def __init__(self) -> None:
        self.since: float | None = None

    def failed(self, error: BaseException) -> None:
        if self.since is None:
            self.since = time.monotonic()
            log.error("routes database unavailable; calls go to No Match: %s: %s", type(error).__name__, error)

    def succeeded(self) -> None:
        if self.since is not None:
            log.warning("routes database back after %.1f s", time.monotonic() - self.since)
            self.since = None


def _capture(fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[bool, Any]:
    try:
        return True, fn(*args)
    except Exception as exc:  # handed back to the waiting greenlet
        return False, exc


def _timestamp(when: dt.datetime | None) -> float | None:
    return when.replace(tzinfo=dt.timezone.utc).timestamp() if when else None


class IndexedStore:
    """A Store answering rule_for and lookup from memory; consume goes to the database in a thread."""

    def __init__(self, sql: SQLStore, *, threads: int = 8, poll_interval: float = 0.5,
                 stale_after: float = 3.0, bulk_changes: int = BULK_CHANGES,
                 change_retention: float = CHANGE_RETENTION, settle: float = SETTLE,
                 full_reload: float = FULL_RELOAD) -> None:
        self.sql = sql
        self.feed = ChangeFeed(sql.db)
        self.threads = ThreadPool(threads)
        self.poll_interval = poll_interval
        self.stale_after = stale_after
        self.bulk_changes = bulk_changes
        self.change_retention = change_retention
        self.settle = settle
        self.full_reload = full_reload
        self.outage = Outage()
        self.rules: dict[int, RuleView] = {}
        self.by_name: dict[str, RuleView] = {}
        self.by_source: dict[str, RuleView] = {}
        self.routes: dict[int, dict[str, Entry]] = {}
        self.names: dict[str, str] = {}
        self._targets: dict[str, str | None] = {}
        self.cursor = 0  # the highest change id applied
        self.applied: set[int] = set()  # change ids above the settle window's low-water mark, applied
        self._history: list[tuple[float, int]] = []  # (time, cursor) after each load and poll
        self.reload_at = 0.0
        self.fresh_until = 0.0
        self._pending: list[tuple[RuleView, Decision, str | None, dt.datetime]] = []
        self._loops: list[gevent.Greenlet] = []

    # -- running -------------------------------------------------------------------------------------------

    def offload(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking database call in a worker thread; the calling greenlet waits cooperatively.

        Errors come back as values and are raised here, in the caller, instead of being reported
        by gevent's hub as a crash of the worker.
        """
        ok, value = self.threads.spawn(_capture, fn, args).get()
        if not ok:
            raise value
        return value

    def start(self) -> None:
        """Load everything, then keep refreshing and flushing in the background.

        A database that cannot be read at start does not stop the server: calls go to No Match
        while the poller keeps trying, and routing starts on its own once the database answers.
        """
        try:
            self.reload()
        except Exception as exc:
            self.outage.failed(exc)
        self._loops = [gevent.spawn(self._every, self.poll_interval, self.refresh),
                       gevent.spawn(self._every, self.poll_interval, self.flush)]

    def stop(self) -> None:
        gevent.killall(self._loops)
        self.flush()
        self.threads.kill()
        self.sql.db.close_all() if hasattr(self.sql.db, "close_all") else self.sql.db.close()

    def _every(self, interval: float, step: Callable[[], None]) -> None:
        while True:
            gevent.sleep(interval)
            try:
                step()
            except Exception as exc:  # keep polling: the next round may succeed
                self.outage.failed(exc)

    # -- loading -------------------------------------------------------------------------------------------

    def reload(self) -> None:
        """Load all rules and routes; the cursor is read first so changes made meanwhile are applied after."""
        cursor = self.offload(self.feed.last_change)
        self._load_rules()
        loaded = {rule_id: self._entries(self.offload(self.feed.routes, rule_id)) for rule_id in self.rules}
        self.routes = loaded
        self.cursor, self.applied = cursor, set()
        self._history = [(time.monotonic(), cursor)]
        self.reload_at = time.monotonic() + self.full_reload
        self._fresh()
        log.info("index loaded: %d rules, %d routes", len(self.rules), sum(map(len, loaded.values())))

    def _load_rules(self) -> None:
        snapshot = self.offload(self.feed.snapshot)
        self.names, self._targets = snapshot.names, {}
        rules = {}
        for row in snapshot.rules:
            try:
                rules[row.id] = rule_view(row, self.names, self.sql.default_context)
            except ValueError as exc:  # a broken rule serves no call; `fs-dynroute check` reports it
                log.error("rule %r ignored: %s", row.name, exc)
        self.rules = rules
        self.by_name = {r.name: r for r in rules.values()}
        self.by_source = {}
        for rule in sorted(rules.values(), key=lambda r: (r.enabled, -r.id)):
            self.by_source[rule.source] = rule  # an enabled rule wins over a disabled one

    @staticmethod
    def _entries(rows: list[RouteRow]) -> dict[str, Entry]:
        # Thousands of routes share a destination: one string object each (1M routes: ~50 MB less).
        return {key: (route_id, sys.intern(dest), _timestamp(expires)) for route_id, key, dest, expires in rows}

    def refresh(self) -> None:
        """Apply the change log: whole rules, or only the keys that changed, for every change not yet applied."""
        if self.fresh_until == 0.0 or time.monotonic() >= self.reload_at:  # never loaded, or the safety net
            self.reload()
            return
        low_water = self._low_water()
        rows = [r for r in self.offload(self.feed.changes, low_water, self.bulk_changes + len(self.applied))
                if r[0] not in self.applied]
        if len(rows) > self.bulk_changes:
            log.info("more than %d changes: reloading the index", self.bulk_changes)
            self.reload()
            return
        self._apply(rows)
        self.applied.update(r[0] for r in rows)
        self.cursor = max([self.cursor, *(r[0] for r in rows)])
        self._history.append((time.monotonic(), self.cursor))
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
                self.routes[rule_id] = self._entries(self.offload(self.feed.routes, rule_id)) \
                    if rule_id in self.rules else {}
        keys: dict[int, set[str]] = {}
        for _, rule_id, key in rows:
            if key is not None and rule_id not in whole_rules:
                keys.setdefault(rule_id, set()).add(key)
        for rule_id, changed in keys.items():
            found = self._entries(self.offload(self.feed.routes, rule_id, sorted(changed)))
            table = self.routes.setdefault(rule_id, {})
            for key in changed:
                table.pop(key, None)
            table.update(found)

    def _low_water(self) -> int:
        """The cursor as it was ``settle`` seconds ago: changes above it are read again on every poll."""
        horizon = time.monotonic() - self.settle
        return max((c for at, c in self._history if at <= horizon), default=self._history[0][1])

    def _fresh(self) -> None:
        self.fresh_until = time.monotonic() + self.stale_after
        self.outage.succeeded()

    def _prune(self) -> None:
        """Delete change rows this node had read ``change_retention`` seconds ago; forget older history."""
        horizon = time.monotonic() - max(self.change_retention, self.settle)
        old = [(at, c) for at, c in self._history if at <= horizon]
        if old:
            self.offload(self.feed.prune, old[-1][1])
            self._history = old[-1:] + [(at, c) for at, c in self._history if at > horizon]

    # -- the Store interface -------------------------------------------------------------------------------

    def _check_fresh(self) -> None:
        if time.monotonic() > self.fresh_until:
            raise StaleIndex("the routes database has not been reachable for "
                             f"more than {self.stale_after:.1f} s")

    def rule_for(self, *, name: str | None = None, source: str | None = None) -> RuleView | None:
        self._check_fresh()
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
        # logged with it; whether the database is reachable is the poller's to say.
        removed = self.offload(self.sql.consume, rule, decision, call_uuid, deadline)
        if decision.route is not None:
            self.routes.get(rule.id, {}).pop(decision.route.key, None)  # gone either way
        return removed

    def record(self, rule: RuleView, decision: Decision, call_uuid: str | None) -> None:
        if len(self._pending) >= MAX_PENDING:
            log.warning("statistics buffer full (%d calls): dropping the oldest", MAX_PENDING)
            del self._pending[: MAX_PENDING // 10]
        self._pending.append((rule, decision, call_uuid, utcnow()))

    def flush(self) -> None:
        """Write the batched use counts and audit rows (kept for the next flush if the database is down)."""
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        try:
            self.offload(self.feed.record_many, batch)
        except Exception:
            self._pending = batch + self._pending
            raise
