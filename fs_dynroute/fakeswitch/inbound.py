"""A fake FreeSWITCH event socket (the INBOUND side, port 8021), built from the captures in ``recordings/inbound``.

It listens on 127.0.0.1 and speaks through :mod:`fs_dynroute.esl_inbound` from FreeSWITCH's side. Modelled, each
from a capture (README there):

* ``Content-Type: auth/request`` at once; ``auth <password>``: ``+OK accepted``, or ``-ERR invalid`` and the
  disconnect notice in ONE send, then close (i1). Anything else before auth: ``-ERR command not found``, socket
  kept open (i1b).
* ``event plain|json NAMES`` adds to the subscription (``ALL`` = every event) and sets the format (i2, i3, i5);
  ``filter H V`` / ``filter delete H V`` with mod_event_socket's reply texts; events pass when any filter
  matches (i4); ``noevents``; ``api ...`` answers ``+OK``; ``exit``: ``+OK bye``, disconnect notice, close.
* HEARTBEAT (the i5 template) every ``heartbeat_interval`` seconds to each connection subscribed to it, the
  first one after one interval.
* CHANNEL_HANGUP_COMPLETE of the six scenarios, as captured (plain from i2, JSON from i3: the encoders rebuild
  both byte for byte), delivered ``glued`` (one send), ``each`` (one send per event) or ``split`` (cut every
  ``split`` bytes, across event boundaries); or a whole capture's event chunks replayed exactly as recorded
  (:meth:`InboundSwitch.replay`). :func:`variant` makes synthetic events from a captured one for bursts.

Not modelled: every other command (``bgapi``, ``sendevent``, ``myevents``...), the XML format, event bodies.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import uuid as uuidlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache

import gevent
import gevent.lock
from gevent.server import StreamServer

from fs_dynroute import esl, esl_inbound as ei
from fs_dynroute.fakeswitch import captures

PASSWORD = "ClueCon"
SCENARIOS = ("s1", "s2", "s3", "s4", "s5", "s6")
HANGUP = "CHANNEL_HANGUP_COMPLETE"
CAPTURE_OF = {"plain": "inbound/i2_events_plain.repr", "json": "inbound/i3_events_json.repr"}
CHUNKINGS = ("glued", "each", "split")
Pairs = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class FakeEvent:
    """One event as (name, value) pairs in wire order, repeats kept; encodes to either format."""

    pairs: Pairs

    @property
    def name(self) -> str:
        return self.get("Event-Name") or ""

    def get(self, name: str) -> str | None:
        return next((v for k, v in self.pairs if k == name), None)

    def encode(self, fmt: str) -> bytes:
        return esl.event_plain(list(self.pairs)) if fmt == "plain" else ei.event_json(list(self.pairs))


def _frames(chunks: Sequence[tuple[str, bytes]]) -> list[tuple[str, esl.Message]]:
    """Each message of a capture with the scenario of the chunk it began in."""
    reader, out, pending = esl.MessageReader(max_buffer=4 * 1024 * 1024), [], []
    for scenario, chunk in chunks:
        pending.append(scenario)
        reader.feed(chunk)
        while (message := reader.next_message()) is not None:
            out.append((pending[0], message))
            pending = pending[-1:] if reader.buffered else []
    return out


@cache
def captured_hangups(fmt: str = "plain") -> dict[str, tuple[FakeEvent, ...]]:
    """Scenario -> its CHANNEL_HANGUP_COMPLETE events in captured order (4 legs: X, A, B, W in some order)."""
    out: dict[str, list[FakeEvent]] = {s: [] for s in SCENARIOS}
    for scenario, message in _frames(captures.scenario_chunks(CAPTURE_OF[fmt])):
        if message.content_type == f"text/event-{fmt}":
            pairs = ei.plain_pairs(message.body) if fmt == "plain" else ei.json_pairs(message.body)
            event = FakeEvent(tuple(pairs))
            if event.name == HANGUP:
                out[scenario].append(event)
    return {s: tuple(events) for s, events in out.items()}


def bridged_leg(scenario: str, fmt: str = "plain") -> FakeEvent:
    """The scenario's B leg (outbound, with Other-Leg-Unique-ID): the leg that carries the call's outcome."""
    return next(e for e in captured_hangups(fmt)[scenario]
                if e.get("Call-Direction") == "outbound" and e.get("Other-Leg-Unique-ID"))


@cache
def heartbeat_template() -> FakeEvent:
    for _, message in _frames([("", c) for c in captures.received("inbound/i5_idle.repr")]):
        if message.content_type == "text/event-plain":
            return FakeEvent(tuple(ei.plain_pairs(message.body)))
    raise LookupError("no HEARTBEAT in i5_idle")


def variant(event: FakeEvent, replace: Mapping[str, str]) -> FakeEvent:
    """A synthetic event: ``replace`` substituted in every value (a new UUID, another customer's number...)."""
    def swap(value: str) -> str:
        for old, new in replace.items():
            value = value.replace(old, new)
        return value

    return FakeEvent(tuple((name, swap(value)) for name, value in event.pairs))


def with_header(event: FakeEvent, name: str, value: str) -> FakeEvent:
    """The event with every ``name`` header set to ``value``."""
    return FakeEvent(tuple((k, value if k == name else v) for k, v in event.pairs))


@dataclass
class Connection:
    """One client connection as the fake sees it: authenticated or not, what it subscribed to, what it sent."""

    sock: object
    authenticated: bool = False
    fmt: str | None = None
    names: set[str] = field(default_factory=set)
    filters: list[tuple[str, str]] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    closed: bool = False
    # Held for a whole delivery: FreeSWITCH never puts a HEARTBEAT in the middle of another event's bytes.
    lock: gevent.lock.RLock = field(default_factory=gevent.lock.RLock)

    def wants(self, event: FakeEvent) -> bool:
        if not self.authenticated or self.fmt is None or not ({"ALL", event.name} & self.names):
            return False
        return not self.filters or any(event.get(h) == v for h, v in self.filters)

    def send(self, data: bytes) -> bool:
        if self.closed:
            return False
        try:
            with self.lock:
                self.sock.sendall(data)  # type: ignore[attr-defined]
            return True
        except OSError:
            self.close()
            return False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.sock.close()  # type: ignore[attr-defined]


class InboundSwitch:
    """The fake event socket: ``start()``, connect clients, then ``deliver()``/``replay()`` events; ``stop()``."""

    def __init__(self, *, password: str = PASSWORD, port: int = 0, heartbeat_interval: float = 20.0,
                 on_subscribe: Iterable[FakeEvent] = ()) -> None:
        """``on_subscribe``: events sent glued to the reply to ``event`` (before any ``filter`` is answered), as a
        busy FreeSWITCH does: the subscription is on from that reply, whatever the client sends next."""
        self.on_subscribe = tuple(on_subscribe)
        self.password = password
        self.port = port
        self.heartbeat_interval = heartbeat_interval
        self.connections: list[Connection] = []
        self._server: StreamServer | None = None
        self._sequence = itertools.count(1)

    @property
    def address(self) -> tuple[str, int]:
        return "127.0.0.1", self.port

    def start(self) -> InboundSwitch:
        self._server = StreamServer(("127.0.0.1", self.port), self._serve)
        self._server.start()
        self.port = self._server.address[1]
        return self

    def stop(self) -> None:
        """Stop listening and drop every connection (FreeSWITCH stopping); ``start()`` again reuses the port."""
        if self._server is not None:
            self._server.stop(timeout=1)
            self._server = None
        self.drop()

    def drop(self) -> None:
        """Close every connection at once, without a notice (a crash or a network cut)."""
        for connection in self.connections:
            connection.close()

    def live(self) -> list[Connection]:
        return [c for c in self.connections if not c.closed]

    def subscribed(self) -> list[Connection]:
        return [c for c in self.live() if c.authenticated and c.fmt and c.names]

    # -- delivering events ----------------------------------------------------------------------------------------

    def deliver(self, events: Iterable[FakeEvent], chunking: str = "glued", split: int = 1000) -> int:
        """Send the events each connection wants, in its format; returns how many connections got some."""
        if chunking not in CHUNKINGS:
            raise ValueError(f"chunking must be one of {CHUNKINGS}")
        events = list(events)
        reached = 0
        for connection in self.subscribed():
            wire = [e.encode(connection.fmt) for e in events if connection.wants(e)]  # type: ignore[arg-type]
            if chunking == "glued":
                wire = [b"".join(wire)]
            elif chunking == "split":
                data = b"".join(wire)
                wire = [data[i:i + split] for i in range(0, len(data), split)]
            with connection.lock:
                sent = all(connection.send(chunk) for chunk in wire if chunk)
            reached += bool(wire) and sent
        return reached

    def burst(self, template: FakeEvent, customer: str, count: int, fmt: str = "plain",
              chunk: int = 65536, only: Connection | None = None) -> int:
        """``count`` calls shaped like ``template``, each with a fresh UUID and ``customer`` replaced by another
        number of the same length, sent back to back in ``chunk``-byte sends to each connection subscribed in
        ``fmt``. Substituted in the encoded bytes (same lengths, URL-safe), so a burst costs the fake little; it
        yields after every send, so what it does costs other greenlets of the process as little as it can."""
        wire, old_uuid = template.encode(fmt), (template.get("Unique-ID") or "").encode()
        head = customer[:-7].encode()

        def call(i: int) -> bytes:
            return wire.replace(old_uuid, uuidlib.UUID(int=i + 1).__str__().encode()).replace(
                customer.encode(), head + b"%07d" % i)

        targets = [c for c in self.subscribed() if c.fmt == fmt and c.wants(template) and only in (None, c)]
        for connection in targets:
            with connection.lock:
                pending = bytearray()
                for i in range(count):
                    pending += call(i)
                    if len(pending) >= chunk:
                        connection.send(bytes(pending))
                        pending.clear()
                        gevent.sleep(0)  # FreeSWITCH is another process: it must not take this one's time
                connection.send(bytes(pending))
        return len(targets)

    def replay(self, name: str) -> int:
        """A capture's event chunks exactly as recorded (from the first event to the next reply to a command) to
        each connection subscribed in that capture's format; returns how many connections got them."""
        chunks = captures.received(name)
        first = next(i for i, c in enumerate(chunks) if c.startswith(b"Content-Length: "))
        last = next(i for i, c in enumerate(chunks) if i > first and c.startswith(b"Content-Type: command/reply"))
        fmt = "json" if b"text/event-json" in chunks[first] else "plain"
        targets = [c for c in self.subscribed() if c.fmt == fmt]
        for connection in targets:
            with connection.lock:
                for chunk in chunks[first:last]:
                    connection.send(chunk)
        return len(targets)

    # -- one connection -------------------------------------------------------------------------------------------

    def _serve(self, sock: object, address: tuple[str, int]) -> None:
        connection = Connection(sock)
        self.connections.append(connection)
        beats = gevent.spawn(self._heartbeats, connection)
        try:
            self._converse(connection)
        finally:
            beats.kill(block=False)
            connection.close()

    def _converse(self, connection: Connection) -> None:
        reader = esl.CommandReader()
        if not connection.send(ei.auth_request()):
            return
        while not connection.closed:
            try:
                data = connection.sock.recv(65536)  # type: ignore[attr-defined]
            except OSError:
                return
            if not data:
                return
            try:
                reader.feed(data)
                while (command := reader.next_command()) is not None:
                    connection.commands.append(command.line)
                    if not self._answer(connection, command.line):
                        return
            except esl.ESLProtocolError:
                return

    def _answer(self, connection: Connection, line: str) -> bool:
        """Reply to one command; False once the connection is to be closed."""
        word, _, rest = line.partition(" ")
        if not connection.authenticated:
            if word != "auth":
                return connection.send(esl.command_reply("-ERR command not found"))
            if rest != self.password:
                connection.send(esl.command_reply("-ERR invalid") + ei.inbound_disconnect_notice())
                return False
            connection.authenticated = True
            return connection.send(esl.command_reply("+OK accepted"))
        if word == "exit":
            connection.send(esl.command_reply("+OK bye") + ei.inbound_disconnect_notice())
            return False
        return connection.send(self._reply(connection, word, rest))

    def _reply(self, connection: Connection, word: str, rest: str) -> bytes:
        if word == "event":
            fmt, _, names = rest.partition(" ")
            if fmt not in ei.EVENT_FORMATS or not names:
                return esl.command_reply("-ERR invalid event format")
            connection.fmt = fmt
            connection.names.update(names.split())
            return esl.command_reply(f"+OK event listener enabled {fmt}") + b"".join(
                e.encode(fmt) for e in self.on_subscribe if connection.wants(e))
        if word == "filter":
            return esl.command_reply(self._filter(connection, rest))
        if word == "noevents":
            connection.fmt, connection.names, connection.filters = None, set(), []
            return esl.command_reply("+OK no longer listening for events")
        if word == "api":
            return esl.api_response(b"+OK\n")
        return esl.command_reply("-ERR command not found")

    @staticmethod
    def _filter(connection: Connection, rest: str) -> str:
        words = rest.split(" ")
        if words[0] == "delete" and len(words) == 3:
            connection.filters = [f for f in connection.filters if f != (words[1], words[2])]
            return f"+OK filter deleted. [{words[1]}][{words[2]}]"
        if len(words) != 2:
            return "-ERR invalid syntax"
        connection.filters.append((words[0], words[1]))
        return f"+OK filter added. [{words[0]}]=[{words[1]}]"

    def _heartbeats(self, connection: Connection) -> None:
        while not connection.closed:
            gevent.sleep(self.heartbeat_interval)
            beat = with_header(heartbeat_template(), "Event-Sequence", str(next(self._sequence)))
            if connection.wants(beat):
                connection.send(beat.encode(connection.fmt))  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    """``python -m fs_dynroute.fakeswitch.inbound --port 8021 [--scenarios s1,s5] [--burst N]``: serve the fake
    event socket until killed; each client that subscribes gets the captured hangups of the scenarios, then N
    synthetic missed calls (scenario s2's B leg with fresh UUIDs and customers), in its format."""
    parser = argparse.ArgumentParser(prog="python -m fs_dynroute.fakeswitch.inbound", description=main.__doc__)
    parser.add_argument("--port", type=int, default=8021)
    parser.add_argument("--password", default=PASSWORD)
    parser.add_argument("--heartbeat-interval", type=float, default=20.0)
    parser.add_argument("--scenarios", default="", help="comma-separated, from " + ",".join(SCENARIOS))
    parser.add_argument("--burst", type=int, default=0, help="synthetic missed calls after the scenarios")
    args = parser.parse_args(argv)
    scenarios = [s for s in args.scenarios.split(",") if s]
    switch = InboundSwitch(password=args.password, port=args.port, heartbeat_interval=args.heartbeat_interval).start()
    print(f"fake event socket on 127.0.0.1:{switch.port}", flush=True)
    served: set[int] = set()
    while True:
        for connection in switch.subscribed():
            if id(connection) not in served:
                served.add(id(connection))
                gevent.spawn(_play, switch, connection, scenarios, args.burst)
        gevent.sleep(0.01)


def _play(switch: InboundSwitch, connection: Connection, scenarios: list[str], burst: int) -> None:
    fmt = connection.fmt or "plain"
    events = [e for s in scenarios for e in captured_hangups(fmt)[s]]
    with connection.lock:
        connection.send(b"".join(e.encode(fmt) for e in events if connection.wants(e)))
        if burst:
            switch.burst(bridged_leg("s2", fmt), "5551000002", burst, fmt, only=connection)


if __name__ == "__main__":
    sys.exit(main())
