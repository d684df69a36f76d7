"""The outbound-socket server: a thin gevent StreamServer that hands each connection to a session.

It holds no protocol logic. It owns the two things a session cannot: the capacity limit
(over capacity a call is closed at once, never queued) and graceful shutdown (stop accepting,
finish calls in flight).
"""

from __future__ import annotations

import logging
import signal
from typing import Any

import gevent
from gevent.pool import Pool
from gevent.server import StreamServer

from fs_dynroute.decision import Decision, RuleView
from fs_dynroute.routing import route_call
from fs_dynroute.session import Channel, Router, run_session
from fs_dynroute.store import Store

log = logging.getLogger(__name__)

DEFAULT_LISTEN = ("127.0.0.1", 8084)
# Time kept back from the deadline for telling FreeSWITCH the target once a route is consumed
# (and for the event loop to get back to the call on a busy machine).
SEND_RESERVE = 0.1


class StoreRouter:
    """The Router a session calls: find the rule, route the call through the store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __call__(self, channel: Channel, deadline: float) -> tuple[RuleView | None, Decision | None]:
        try:
            rule = self.store.rule_for(name=channel.rule_name, source=channel.destination_number)
        except Exception as exc:  # no rule known: the dialplan default (No Match) stands
            log.debug("call %s: no rule: %s", channel.uuid, exc)
            return None, None
        if rule is None:
            return None, None
        return rule, route_call(self.store, rule, channel.caller_id, channel.uuid, deadline=deadline - SEND_RESERVE)


class DynrouteServer:
    """Accepts FreeSWITCH's outbound connections on ``listen`` and serves each as one session."""

    def __init__(self, router: Router, *,
                 listen: tuple[str, int] = DEFAULT_LISTEN, max_sessions: int = 1000,
                 decision_timeout: float = 1.0, backlog: int = 4096) -> None:
        self.router = router
        self.max_sessions = max_sessions
        self.decision_timeout = decision_timeout
        self.sessions = Pool()  # unbounded: capacity is enforced by refusing, never by queueing
        self.live = 0  # sessions running now
        self.server = StreamServer(listen, self._handle, spawn=self.sessions, backlog=backlog)

    @property
    def address(self) -> tuple[str, int]:
        return self.server.address[:2]

    def _handle(self, sock: Any, address: tuple[str, int]) -> None:
        # Counted here, not by len(self.sessions): the pool forgets a finished greenlet only later,
        # in a callback, and under load would count dead sessions as live ones.
        if self.live >= self.max_sessions:
            sock.close()
            log.warning("over capacity (%d sessions): call from %s:%d sent to the dialplan default",
                        self.max_sessions, *address[:2])
            return
        self.live += 1
        try:
            run_session(sock, self.router, self.decision_timeout)
        finally:
            self.live -= 1

    def start(self) -> None:
        self.server.start()
        log.info("listening on %s:%d (max %d sessions, deadline %.3f s)", *self.address,
                 self.max_sessions, self.decision_timeout)

    def stop(self, grace: float | None = None) -> None:
        """Stop listening, then let calls in flight finish (each is bounded by the deadline)."""
        self.stop_listening()
        self.sessions.join(timeout=grace if grace is not None else self.decision_timeout + 1)
        self.sessions.kill(timeout=1)

    def stop_listening(self) -> None:
        """Close the listener without resetting a call that has already connected.

        The kernel completes handshakes into the accept queue until the listener closes, and
        closing it resets whatever is queued: FreeSWITCH saw those calls connect, so it would not
        try the next host and would play the dialplan default instead of the right destination.
        So: stop the accept watcher, accept what is queued and serve it, and only then close, all
        without yielding to another greenlet. New calls are refused and go to the next host.
        """
        if self.server.closed:
            return
        self.server.stop_accepting()
        while accepted := self.server.do_read():
            self.server.do_handle(*accepted)
        self.server.close()

    def serve_until_signalled(self) -> None:
        """Run until SIGTERM or SIGINT, then stop gracefully."""
        stopping = gevent.event.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(sig, stopping.set)
        self.start()
        stopping.wait()
        self.stop_listening()
        log.info("signal received: no new calls; finishing %d in flight", self.live)
        self.stop()
        log.info("stopped")
