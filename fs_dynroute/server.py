"""The outbound-socket server: a thin gevent StreamServer that hands each connection to a session.

It holds no protocol logic. It owns the three things a session cannot: the capacity limit
(over capacity a call is closed at once, never queued), the thread pool that keeps database
calls off the event loop, and graceful shutdown (stop accepting, finish calls in flight).
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from typing import Any

import gevent
from gevent.pool import Pool
from gevent.server import StreamServer
from gevent.threadpool import ThreadPool

from fs_dynroute.decision import Decision, RuleView
from fs_dynroute.routing import route_call
from fs_dynroute.session import Channel, run_session
from fs_dynroute.store import Store

log = logging.getLogger(__name__)

DEFAULT_LISTEN = ("127.0.0.1", 8084)
# Time kept back from the deadline for telling FreeSWITCH the target once a route is consumed.
SEND_RESERVE = 0.05


class Outage:
    """Logs a store outage once when it starts and once when it ends, not once per call."""

    def __init__(self) -> None:
        self.since: float | None = None

    def failed(self, error: str) -> None:
        if self.since is None:
            self.since = time.monotonic()
            log.error("routes database unavailable, calls go to No Match: %s", error)

    def succeeded(self) -> None:
        if self.since is not None:
            log.warning("routes database back after %.1f s", time.monotonic() - self.since)
            self.since = None


class StoreRouter:
    """The Router a session calls (in a worker thread): find the rule, route the call through the store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.outage = Outage()

    def __call__(self, channel: Channel, deadline: float) -> tuple[RuleView | None, Decision | None]:
        try:
            rule = self.store.rule_for(name=channel.rule_name, source=channel.destination_number)
        except Exception as exc:  # no rule known: the dialplan default (No Match) stands
            self.outage.failed(f"{type(exc).__name__}: {exc}")
            return None, None
        if rule is None:
            return None, None
        decision = route_call(self.store, rule, channel.caller_id, channel.uuid, deadline=deadline - SEND_RESERVE)
        if decision.result.value == "error":
            self.outage.failed(decision.reason)
        else:
            self.outage.succeeded()
        return rule, decision


class DynrouteServer:
    """Accepts FreeSWITCH's outbound connections on ``listen`` and serves each as one session."""

    def __init__(self, router: Callable[[Channel, float], tuple[RuleView | None, Decision | None]], *,
                 listen: tuple[str, int] = DEFAULT_LISTEN, max_sessions: int = 1000,
                 decision_timeout: float = 1.0, backlog: int = 4096, db_threads: int = 8) -> None:
        self.router = router
        self.max_sessions = max_sessions
        self.decision_timeout = decision_timeout
        self.sessions = Pool()  # unbounded: capacity is enforced by refusing, never by queueing
        self.threads = ThreadPool(db_threads)
        self.server = StreamServer(listen, self._handle, spawn=self.sessions, backlog=backlog)

    @property
    def address(self) -> tuple[str, int]:
        return self.server.address[:2]

    def _offload(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.threads.spawn(fn, *args).get()

    def _handle(self, sock: Any, address: tuple[str, int]) -> None:
        if len(self.sessions) > self.max_sessions:  # this greenlet is already counted
            sock.close()
            log.warning("over capacity (%d sessions): call from %s:%d sent to the dialplan default",
                        self.max_sessions, *address[:2])
            return
        run_session(sock, self.router, self._offload, self.decision_timeout)

    def start(self) -> None:
        self.server.start()
        log.info("listening on %s:%d (max %d sessions, deadline %.3f s)", *self.address,
                 self.max_sessions, self.decision_timeout)

    def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let calls in flight finish (each is bounded by the deadline), release threads."""
        self.server.stop(timeout=grace if grace is not None else self.decision_timeout + 1)
        self.threads.kill()

    def serve_until_signalled(self) -> None:
        """Run until SIGTERM or SIGINT, then stop gracefully."""
        stopping = gevent.event.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(sig, stopping.set)
        self.start()
        stopping.wait()
        log.info("signal received: no new calls; finishing %d in flight", len(self.sessions))
        self.stop()
        log.info("stopped")
