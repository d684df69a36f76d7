"""Prometheus metrics: the definitions, small functions the call path calls, and the text exposition.

The call path calls :func:`call_decided`, :func:`consumed`, :func:`refused` and :func:`database_error`
(each one dictionary look-up and an add; the label children are cached so a call builds no new
objects); the server registers its live numbers once with :func:`watch_server`. ``web`` adds
:func:`watch_database`: rules and routes counted in the database at scrape time.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import peewee as pw
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from fs_dynroute.models import Route, Rule

CALLS = Counter("dynroute_calls", "Calls decided, by rule and result", ["rule", "result"])
DECISION_SECONDS = Histogram("dynroute_decision_seconds", "Time from the channel data to the decision",
                             buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
CONSUMED = Counter("dynroute_consumed", "Delete After Use records consumed, by rule", ["rule"])
REFUSED = Counter("dynroute_refused", "Calls closed at once because max-sessions were in flight")
DATABASE_ERRORS = Counter("dynroute_database_errors", "Database operations that failed")
SESSIONS = Gauge("dynroute_sessions_in_flight", "Calls being decided now")
OUTAGE = Gauge("dynroute_database_outage", "1 while the index cannot read the database, else 0")
INDEX_ROUTES = Gauge("dynroute_index_routes", "Routes held in the in-memory index")
CHANGE_LAG = Gauge("dynroute_change_log_lag_seconds", "Seconds since the index last read the change log")


@functools.lru_cache(maxsize=4096)
def _calls(rule: str, result: str) -> Any:
    return CALLS.labels(rule, result)


def call_decided(rule: str, result: str, seconds: float) -> None:
    """One decided call: counted by rule and result, its decision time observed."""
    _calls(rule, result).inc()
    DECISION_SECONDS.observe(seconds)


def consumed(rule: str) -> None:
    CONSUMED.labels(rule).inc()


def refused() -> None:
    REFUSED.inc()


def database_error() -> None:
    DATABASE_ERRORS.inc()


def watch_server(*, live: Callable[[], float], outage: Callable[[], bool], routes: Callable[[], float],
                 last_refresh: Callable[[], float]) -> None:
    """Read the server's own numbers at scrape time (no cost on the call path).

    ``last_refresh`` is the time.monotonic() of the index's last successful read of the change log.
    """
    SESSIONS.set_function(live)
    OUTAGE.set_function(lambda: 1.0 if outage() else 0.0)
    INDEX_ROUTES.set_function(routes)
    CHANGE_LAG.set_function(lambda: max(0.0, time.monotonic() - last_refresh()))


class DatabaseCollector(Collector):
    """Rules and routes as the database holds them, counted when Prometheus scrapes ``web``."""

    def describe(self) -> list[Any]:
        return []  # the families depend on the database; nothing to read when registering

    def collect(self) -> Any:
        rules = GaugeMetricFamily("dynroute_rules", "Rules in the database, by state", labels=["state"])
        routes = GaugeMetricFamily("dynroute_routes", "Routes in the database, by rule", labels=["rule"])
        try:
            names = {r.id: (r.name, r.enabled) for r in Rule.select(Rule.id, Rule.name, Rule.enabled)}
            counts = dict(Route.select(Route.rule, pw.fn.COUNT(Route.id)).group_by(Route.rule).tuples())
        except pw.PeeweeException:  # a scrape must not fail because the database does; /health says why
            return  # (not counted as a database error: those count the call path's, whatever scrapes when)
        for state, on in (("enabled", True), ("disabled", False)):
            rules.add_metric([state], sum(1 for _, enabled in names.values() if bool(enabled) is on))
        for rule_id, (name, _) in names.items():
            routes.add_metric([name], counts.get(rule_id, 0))
        yield rules
        yield routes


@functools.lru_cache(maxsize=1)
def watch_database() -> None:
    """Count rules and routes at each scrape (registered once per process, however many apps are built)."""
    REGISTRY.register(DatabaseCollector())


def exposition() -> tuple[bytes, str]:
    """The text format Prometheus scrapes, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
