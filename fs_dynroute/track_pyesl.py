"""The tracker's second client (``track --client python-esl``): python-ESL, FreeSWITCH's SWIG binding of libesl.

libesl is blocking C, so one connection runs in a thread of its own (SWIG's ``-threads`` releases the GIL while it
waits); each event's few fields the tracker reads are handed to the event loop with
``loop.run_callback_threadsafe``, so :class:`~fs_dynroute.track.Tracker` sees the same calls from both clients.

libesl cannot say why a connection failed: ``connected()`` is false after a refused TCP connection and after a
refused password alike. A plain TCP connection is tried first, so "FreeSWITCH is down" (reconnect) is told from
"the password is wrong" (an error, not retried).

Build recipe (PyPI's 1.4.18 passes ``-classic``, which SWIG 4 removed; SWIG 3.0.12 is on PyPI as a wheel)::

    pip install swig==3.0.12 wheel
    PATH="$VIRTUAL_ENV/bin:$PATH" pip install --no-build-isolation python-ESL==1.4.18
"""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING, Any

import gevent
from gevent.threadpool import ThreadPool

from fs_dynroute.tracker import FIELDS, HANGUP_EVENT

if TYPE_CHECKING:
    from fs_dynroute.track import Tracker

HEARTBEAT_EVENT = "HEARTBEAT"
POLL_MS = 250  # how often the thread looks at the clock and at Tracker.halted


def available() -> bool:
    try:
        import ESL  # noqa: F401
    except ImportError:
        return False
    return True


def run_session(tracker: Tracker, password: str) -> None:
    """One connection, until it is lost (raises Lost/OSError) or the password is refused (raises AuthError)."""
    threads = ThreadPool(1)
    try:
        ok, value = threads.spawn(_capture, tracker, password, gevent.get_hub().loop).get()
    finally:
        threads.kill()
    if not ok:
        raise value


def _capture(tracker: Tracker, password: str, loop: Any) -> tuple[bool, BaseException | None]:
    try:
        _session(tracker, password, loop)
    except Exception as exc:  # raised again in the greenlet, not reported by the hub as a crash
        return False, exc
    return True, None


def _ok(reply: Any) -> bool:
    """``events()`` answers a status (0 = ESL_SUCCESS), ``filter()`` the reply itself."""
    if isinstance(reply, int):
        return reply == 0
    return reply is not None and (reply.getHeader("Reply-Text") or "").startswith("+OK")


def _session(tracker: Tracker, password: str, loop: Any) -> None:
    import ESL

    from fs_dynroute.track import Lost

    socket.create_connection(tracker.esl, timeout=5).close()  # down: OSError, and the tracker reconnects
    connection = ESL.ESLconnection(tracker.esl[0], str(tracker.esl[1]), password)
    try:
        if not connection.connected():
            raise tracker.refused("libesl could not log in")
        subscribed = [connection.events(tracker.fmt, f"{HANGUP_EVENT} {HEARTBEAT_EVENT}"),
                      connection.filter("Event-Name", HANGUP_EVENT), connection.filter("Event-Name", HEARTBEAT_EVENT)]
        if not all(_ok(reply) for reply in subscribed):
            raise Lost("subscription refused")
        loop.run_callback_threadsafe(tracker.subscribed)
        _read(tracker, connection, loop)
    finally:
        connection.disconnect()


def _read(tracker: Tracker, connection: Any, loop: Any) -> None:
    from fs_dynroute.track import Lost

    last = time.monotonic()
    while not tracker.halted.is_set():
        event = connection.recvEventTimed(POLL_MS)
        if event is None or not event.getHeader("Event-Name"):
            if not connection.connected():
                raise Lost("connection closed by FreeSWITCH")
            if time.monotonic() - last > tracker.heartbeat_timeout:
                raise Lost(f"nothing for {tracker.heartbeat_timeout:.0f} s, not even a HEARTBEAT: connection dead")
            continue
        last = time.monotonic()
        fields = {name: value for name in FIELDS if (value := event.getHeader(name)) is not None}
        loop.run_callback_threadsafe(tracker.event, fields["Event-Name"], fields)
