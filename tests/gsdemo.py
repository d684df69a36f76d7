"""Helpers for tests/test_greenswitch_defects.py.

* :class:`RawSwitch`: FreeSWITCH's side of one outbound-socket session driven step by step, for the tests that
  need byte-level control the fake does not offer (a reset at an exact moment, an event before a reply).
  The connect reply comes from the fake's own builder, so it is the captured block with this call's values.
* :func:`greenswitch_server`: greenswitch 0.0.19's ``OutboundESLServer`` run in-process on 127.0.0.1, always torn
  down (its accept loop, its per-session greenlets, its sockets), for the tests that show its defects.
"""

from __future__ import annotations

import gc
import inspect
import json
import socket as stdsocket
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import gevent
from gevent import socket as gsocket
from gevent.event import Event
from greenswitch import esl as gsesl

from fs_dynroute import esl
from fs_dynroute.fakeswitch import captures, switch as fakeswitch
from fs_dynroute.session import Channel
from tests.serving import free_port, live_greenlets, open_fds

EVENT_CAPTURE = "async/a_transfer.repr"  # a loopback call's event-plain stream (async full socket)


# ---------------------------------------------------------------------------------------------------------------
# What FreeSWITCH sends


def connect_reply(caller_id: str, destination: str, *, hosts: str = "127.0.0.1:8084",
                  default_target: str = "5000 XML default", **call_options: object) -> bytes:
    """The connect reply of a SYNC socket call from ``caller_id`` to ``destination`` under the recommended dialplan,
    built by the fake exactly as it builds its own (template capture, this call's values, URL-encoded).

    ``call_options`` are ``place_call``'s keyword options (``uuid``, ``variables``, ``behaviour="inject"``...).
    """
    options = {name: p.default for name, p in inspect.signature(fakeswitch.place_call).parameters.items()
               if p.kind is inspect.Parameter.KEYWORD_ONLY}
    unknown = set(call_options) - set(options)
    if unknown:
        raise TypeError(f"unknown call options {sorted(unknown)}")
    options.update(call_options)
    call = fakeswitch._Call(fakeswitch.Dialplan.recommended(hosts, default_target), caller_id, destination, options)
    for app, data in call.dialplan.actions:  # what has run when the socket application connects
        call.execute(app, data)
        if app == "socket":
            break
    return esl.encode_headers(call.connect_headers(async_mode=False, full=False))


@cache
def _captured_events() -> tuple[tuple[tuple[str, str], ...], ...]:
    reader = esl.MessageReader(max_buffer=4 * 1024 * 1024)
    reader.feed(b"".join(captures.received(EVENT_CAPTURE)))
    events = []
    while (message := reader.next_message()) is not None:
        if message.content_type == "text/event-plain":
            events.append(tuple(message.body_headers().items()))
    return tuple(events)


def captured_event(name: str, uuid: str, **replace: str) -> dict[str, str]:
    """The first captured ``name`` event's headers (decoded, in wire order), re-addressed to ``uuid``;
    ``replace`` overrides headers by name (``Application="set"``; underscores stand for dashes)."""
    headers = next(dict(event) for event in _captured_events() if dict(event)["Event-Name"] == name)
    original = headers["Unique-ID"]
    headers = {key: uuid if value == original else value for key, value in headers.items()}
    headers.update({key.replace("_", "-"): value for key, value in replace.items()})
    return headers


def event_json(headers: dict[str, str]) -> bytes:
    """The event as mod_event_socket sends it in ``json`` format: ``cJSON_PrintUnformatted`` of the headers (raw
    values, not URL-encoded, UTF-8 as is), framed by a Content-Length in BYTES, no blank line after the body."""
    body = json.dumps(headers, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return b"Content-Length: %d\nContent-Type: text/event-json\n\n" % len(body) + body


# ---------------------------------------------------------------------------------------------------------------
# A raw FreeSWITCH side


class RawSwitch:
    """One outbound-socket session from FreeSWITCH's side, one step at a time. Every wait is bounded."""

    def __init__(self, address: tuple[str, int], timeout: float = 2.0) -> None:
        self.sock = gsocket.create_connection(address, timeout=timeout)
        self.sock.setsockopt(stdsocket.IPPROTO_TCP, stdsocket.TCP_NODELAY, 1)
        self.reader = esl.CommandReader()
        self.commands: list[esl.Command] = []

    def __enter__(self) -> RawSwitch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def command(self, timeout: float | None = None) -> esl.Command | None:
        """The server's next command; None at EOF or (with ``timeout``) when none comes in time."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.sock.gettimeout() or 2.0)
        while (command := self.reader.next_command()) is None:
            self.sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except stdsocket.timeout:
                return None
            if not data:
                return None
            self.reader.feed(data)
        self.commands.append(command)
        return command

    def send(self, *chunks: bytes, pause: float = 0.0) -> None:
        """Send each chunk in its own segment (``pause`` seconds apart, so the peer reads them separately)."""
        for n, chunk in enumerate(chunks):
            if n and pause:
                gevent.sleep(pause)
            self.sock.sendall(chunk)

    def eof_after(self, timeout: float) -> float | None:
        """Seconds until the server closes its side (reading and dropping anything it still sends), or None."""
        started = time.monotonic()
        while (left := started + timeout - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                if not self.sock.recv(65536):
                    return time.monotonic() - started
            except stdsocket.timeout:
                return None
            except OSError:
                return time.monotonic() - started
        return None

    def reset(self) -> None:
        """Abort the connection: SO_LINGER (1, 0) then close sends a TCP RST instead of a FIN."""
        self.sock.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        self.sock.close()


# ---------------------------------------------------------------------------------------------------------------
# greenswitch 0.0.19, run the way its README shows, torn down without trusting its own stop()


Router = Callable[[Channel, float], Any]


def routing_app(router: Router) -> type:
    """A greenswitch application doing what our session does: read the channel, route, set ``dynroute_target``.

    Set the class's ``hold_until`` to make each call wait (at most ``hold_timeout``) until that many calls are
    inside the application at once, to show how many it lets in. The class records every call's Channel, its
    sessions, and the peak number of calls inside at once.
    """

    class RoutingApp:
        channels: list[Channel] = []
        sessions: list[gsesl.OutboundSession] = []
        active = 0
        peak = 0
        hold_until: int | None = None
        hold_timeout = 1.0
        everyone_in = Event()

        def __init__(self, session: gsesl.OutboundSession) -> None:
            self.session = session
            RoutingApp.sessions.append(session)

        def run(self) -> None:
            cls = RoutingApp
            cls.active += 1
            cls.peak = max(cls.peak, cls.active)
            try:
                channel = Channel.from_headers(self.session.session_data)
                cls.channels.append(channel)
                if cls.hold_until is not None:
                    if cls.active >= cls.hold_until:
                        cls.everyone_in.set()
                    cls.everyone_in.wait(cls.hold_timeout)
                _, decision = router(channel, time.monotonic() + 1.0)
                if decision is not None:
                    self.session.call_command("set", f"dynroute_target={decision.destination}")
            finally:
                cls.active -= 1

    return RoutingApp


@contextmanager
def greenswitch_server(application: type, *, max_connections: int = 100) -> Iterator[gsesl.OutboundESLServer]:
    """greenswitch's OutboundESLServer on 127.0.0.1:<free port>, listening when this yields (``.bound_port``).

    Afterwards its accept loop and every greenlet it spawned are killed (its own stop() waits up to 100 ms for the
    loop and forever for a stuck session), its sockets are closed, and nothing may be left behind.
    """
    greenlets, sockets = set(live_greenlets()), open_fds()
    server = gsesl.OutboundESLServer(bind_address="127.0.0.1", bind_port=free_port(), application=application,
                                     max_connections=max_connections)
    loop = gevent.spawn(server.listen)
    try:
        with gevent.Timeout(2):
            while not server._running:
                gevent.sleep(0.001)
        yield server
    finally:
        server.stop()
        gevent.killall([loop, *(g for g in live_greenlets() if g not in greenlets)], timeout=2)
        if server.server is not None:
            server.server.close()
        for obj in gc.get_objects():
            if isinstance(obj, gsesl.OutboundSession):
                obj.sock_file.close()
                obj.sock.close()
    left = [g for g in live_greenlets() if g not in greenlets]
    assert not left, f"greenswitch left greenlets running: {left}"
    assert open_fds() <= sockets, "greenswitch left a socket open"
