"""The outbound-socket server: a thin gevent StreamServer that hands each connection to a session.

It holds no protocol logic. It owns what a session cannot: who may connect (a peer outside
``--allow`` is closed before anything is sent), the capacity limit (over capacity a call is closed
at once, never queued) and graceful shutdown (stop accepting, finish calls in flight).
"""

from __future__ import annotations

import ipaddress
import logging
import time
from typing import Any

import gevent
from gevent.pool import Pool
from gevent.server import StreamServer

from fs_dynroute import metrics
from fs_dynroute.config import ServeConfig
from fs_dynroute.decision import Decision, RuleView
from fs_dynroute.routing import route_call
from fs_dynroute.session import Channel, Router, run_session
from fs_dynroute.store import Store

log = logging.getLogger(__name__)

BACKLOG = 4096  # a burst of calls never waits for a SYN retry
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


class Tally:
    """A warning said once when a run of refusals starts, then as a count every ``window`` seconds.

    A flood of 2,000 connections is a few lines ("refused 812 calls over capacity in the last
    10 s"), not 2,000: the log stays readable and writing it never slows the server down.
    """

    def __init__(self, what: str, window: float = 10.0) -> None:
        self.what = what
        self.window = window
        self.total = 0  # since start
        self.unreported = 0
        self.since = 0.0
        self._timer: gevent.Greenlet | None = None

    def add(self, detail: str) -> None:
        self.total += 1
        if self._timer is None:  # the first of a run: say so at once
            log.warning("refused a call %s: peer %s", self.what, detail)
            self._restart()
        else:
            self.unreported += 1

    def _restart(self) -> None:
        self.since = time.monotonic()
        self._timer = gevent.spawn_later(self.window, self._report)

    def _report(self) -> None:
        self._timer = None
        if self.unreported:
            self.close()
            self._restart()  # still refusing: keep counting

    def close(self) -> None:
        """Say what is still unreported (on stop, or at the end of a window)."""
        if self._timer is not None:
            self._timer.kill()
            self._timer = None
        if self.unreported:
            log.warning("refused %d calls %s in the last %.0f s", self.unreported, self.what,
                        time.monotonic() - self.since)
            self.unreported = 0


def _peer_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.ip_address(host.split("%", 1)[0])
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:10.0.0.5 on a dual-stack listener
    return mapped or ip


class DynrouteServer:
    """Accepts FreeSWITCH's outbound connections on ``config.listen`` and serves each as one session."""

    def __init__(self, router: Router, config: ServeConfig) -> None:
        self.router = router
        self.config = config
        self.max_sessions = config.max_sessions
        self.decision_timeout = config.decision_timeout
        self.allowed = config.allowed
        # Capacity is enforced by refusing (self.live), never by queueing. The pool's bound is for descriptors:
        # the calls in flight plus one batch accepted before its handlers run, as serve budgets for (a loaded
        # loop may poll again before a batch's handlers ran, and would otherwise accept another batch).
        self.sessions = Pool(config.max_sessions + StreamServer.max_accept)
        self.live = 0  # sessions running now
        self.over_capacity = Tally(f"over capacity ({config.max_sessions} sessions, sent to the dialplan default)")
        self.not_allowed = Tally("from an address outside --allow (closed before anything was sent)")
        self.server = StreamServer(config.listen, self._handle, spawn=self.sessions, backlog=BACKLOG)

    @property
    def address(self) -> tuple[str, int]:
        return self.server.address[:2]

    def _handle(self, sock: Any, address: tuple[str, int]) -> None:
        if not any(_peer_ip(address[0]) in net for net in self.allowed):
            sock.close()
            self.not_allowed.add(f"{address[0]}:{address[1]}")
            return
        # Counted here, not by len(self.sessions): the pool forgets a finished greenlet only later,
        # in a callback, and under load would count dead sessions as live ones.
        if self.live >= self.max_sessions:
            sock.close()
            self.over_capacity.add(f"{address[0]}:{address[1]}")
            metrics.refused()
            return
        self.live += 1
        try:
            run_session(sock, self.router, self.decision_timeout)
        finally:
            self.live -= 1

    def start(self) -> None:
        self.server.start()
        log.info("listening on %s:%d (max %d sessions, deadline %.3f s, allow %s)", *self.address,
                 self.max_sessions, self.decision_timeout, ",".join(map(str, self.allowed)))

    def stop(self, grace: float | None = None) -> None:
        """Stop listening, then let calls in flight finish (each is bounded by the deadline)."""
        self.stop_listening()
        self.sessions.join(timeout=grace if grace is not None else self.decision_timeout + 1)
        self.sessions.kill(timeout=1)
        self.over_capacity.close()
        self.not_allowed.close()

    def stop_listening(self) -> None:
        """Close the listener without resetting a call that has already connected.

        The kernel completes handshakes into the accept queue until the listener closes, and
        closing it resets whatever is queued: FreeSWITCH saw those calls connect, so it would not
        try the next host and would play the dialplan default instead of the right destination.
        So: stop the accept watcher, accept what is queued and serve it, and only then close, without
        yielding between the last accept and the close. New calls are refused and go to the next host.
        A full queue (a flood) is taken ``max_accept`` at a time, yielding in between so the handlers
        run and refused calls give their descriptors back: accepting it all at once could pass the
        open-file limit, and what is left in the queue when accept fails would be reset.
        """
        if self.server.closed:
            return
        self.server.stop_accepting()
        while True:
            batch = 0
            while batch < self.server.max_accept and (accepted := self.server.do_read()):
                self.server.do_handle(*accepted)
                batch += 1
            if batch < self.server.max_accept:  # the queue is empty: close before anything else runs
                break
            gevent.sleep(0)
        self.server.close()
