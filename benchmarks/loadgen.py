"""A load generator that plays FreeSWITCH's SYNC outbound socket, many calls at once, in its own process.

Each call is a real TCP connection to the server under test, with the bytes and reply sequence of the SYNC
captures (``fs_dynroute/fakeswitch/recordings/sync/S18.repr``, ``multiset/S20*.repr``): it waits for ``connect``,
sends the channel's connect reply (the capture's ~3.8 KB header block with this call's caller ID and UUID, exactly
as ``fs_dynroute.fakeswitch`` builds it), answers each ``sendmsg`` with ``+OK`` (applying ``set`` and ``multiset``
to the call's variables as the fake does), answers ``exit`` with ``+OK bye`` plus the disconnect notice, and
closes. A server that closes without ``exit`` after setting variables has ended the call as well (S20).

The connect reply is recorded once from ``fs_dynroute.fakeswitch.place_call`` itself (against a throwaway recording
server in this process) and checked byte for byte against a second recording; per call only the caller ID
and the UUID are substituted. The hot loop is plain non-blocking sockets on ``epoll`` (no gevent), because the
load generator shares two cores with the server and must spend as little CPU per call as possible.

Per call it records the latency from ``connect()`` to the end of the socket application (``exit`` arriving, or
the server's close after it set variables), the ``dynroute_target`` the server set, the commands and bytes each
way (FreeSWITCH's side of the work), and failures (closed before setting anything, timeout, refused, reset).
``wrong`` counts calls whose target (or ``dynroute_key``/``dynroute_result``) differs from what
``benchmarks.workload`` says the call must get.

    python -m benchmarks.loadgen --port 8084 --concurrency 50 --duration 10 --routes 1000000
    python -m benchmarks.loadgen --port 8084 --rate 1000 --duration 10 --routes 1000000
"""

from __future__ import annotations

import argparse
import collections
import errno
import json
import os
import resource
import select
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from benchmarks.workload import NO_MATCH_TARGET, RULE, SOURCE, Calls, expected_target
from fs_dynroute import esl
from fs_dynroute.fakeswitch.switch import multiset_items

SENTINEL_CALLER = "+19998887766"
SENTINEL_UUID = "5e171e17-5e17-4e17-8e17-5e171e175e17"
RECV_SIZE = 65536
OK_REPLY = esl.command_reply("+OK")
ERR_REPLY = esl.command_reply("-ERR command not found")
MAX_WRONG_SAMPLES = 5
NL = b"\n"


# ---------------------------------------------------------------------------------------------------------------
# The bytes FreeSWITCH sends, recorded from the fake switch


def _record(caller_id: str, uuid: str, destination: str, default_target: str) -> tuple[bytes, str]:
    """The connect reply ``fs_dynroute.fakeswitch`` sends for this call, and the host:port it was sent to."""
    from gevent.server import StreamServer

    from fs_dynroute.fakeswitch.switch import Dialplan, place_call

    got: dict[str, bytes] = {}

    def handle(sock: socket.socket, _address: object) -> None:
        sock.sendall(esl.connect_command())
        buf = b""
        while b"\n\n" not in buf:
            data = sock.recv(RECV_SIZE)
            if not data:
                break
            buf += data
        got["reply"] = buf
        sock.sendall(esl.exit_command())
        while sock.recv(RECV_SIZE):
            pass
        sock.close()

    server = StreamServer(("127.0.0.1", 0), handle)
    server.start()
    hosts = "127.0.0.1:%d" % server.address[1]
    try:
        outcome = place_call(Dialplan.recommended(hosts, default_target), caller_id, destination, uuid=uuid,
                             stuck_after=2.0, first_command_timeout=2.0)
    finally:
        server.stop(timeout=1)
    reply = got.get("reply", b"")
    if outcome.ended != "transferred" or not reply.endswith(b"\n\n") or reply.count(b"\n\n") != 1:
        raise RuntimeError(f"could not record the fake switch's connect reply ({outcome.ended})")
    return reply, hosts


@dataclass(frozen=True)
class Wire:
    """Everything the load generator sends, for one server address; per call only caller ID and UUID vary."""

    connect_reply: bytes  # holds the encoded SENTINEL_CALLER and SENTINEL_UUID
    bye: bytes  # "+OK bye" + disconnect notice, holds SENTINEL_UUID
    caller_token: bytes = field(default=esl.url_encode(SENTINEL_CALLER).encode())
    uuid_token: bytes = field(default=SENTINEL_UUID.encode())

    def reply_for(self, caller_id: str, uuid: bytes) -> bytes:
        caller = esl.url_encode(caller_id).encode() if caller_id else b"0000000000"
        return self.connect_reply.replace(self.caller_token, caller).replace(self.uuid_token, uuid)

    def bye_for(self, uuid: bytes) -> bytes:
        return self.bye.replace(self.uuid_token, uuid)


def build_wire(host: str, port: int, destination: str = SOURCE, default_target: str = NO_MATCH_TARGET) -> Wire:
    """Record the fake switch's connect reply, make it a template, and prove the template reproduces it."""
    raw, hosts = _record(SENTINEL_CALLER, SENTINEL_UUID, destination, default_target)
    ours = f"{host}:{port}"
    template = raw.replace(esl.url_encode(hosts).encode(), esl.url_encode(ours).encode())
    wire = Wire(template, esl.command_reply("+OK bye") + esl.disconnect_notice(SENTINEL_UUID))
    if template.count(wire.caller_token) < 6 or template.count(wire.uuid_token) < 3 or template == raw:
        raise RuntimeError("sentinels not found where expected in the recorded connect reply")
    check_caller, check_uuid = "+1 (555) 000-1234", "0d9a8b3e-1111-4222-8333-444455556666"
    check, check_hosts = _record(check_caller, check_uuid, destination, default_target)
    check = check.replace(esl.url_encode(check_hosts).encode(), esl.url_encode(ours).encode())
    if wire.reply_for(check_caller, check_uuid.encode()) != check:
        raise RuntimeError("the connect reply template does not reproduce the fake switch's bytes")
    return wire


# ---------------------------------------------------------------------------------------------------------------
# The hot loop


class _Call:
    __slots__ = ("sock", "fd", "t0", "caller", "key", "uuid", "buf", "connected", "vars", "done", "set_any")

    def __init__(self, sock: socket.socket, t0: float, caller: str, key: str, uuid: bytes) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.t0 = t0
        self.caller = caller
        self.key = key
        self.uuid = uuid
        self.buf = b""
        self.connected = False
        self.vars: dict[bytes, bytes] = {}
        self.done = False
        self.set_any = False  # a set or multiset arrived: closing now ends the call at its target (S20)


@dataclass
class Results:
    """One load generator's tallies; ``merge`` combines processes."""

    mode: str
    duration: float
    started: int = 0
    completed: int = 0  # exit arrived (right or wrong target)
    in_window: int = 0  # completed before the end of the measured window
    wrong: int = 0
    failed: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    wrong_samples: list[list[str]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # seconds, completed calls
    max_lag: float = 0.0  # fixed rate: worst delay of a call start behind its schedule
    late_starts: int = 0  # fixed rate: starts more than 1 ms behind schedule
    loadgen_cpu: float = 0.0  # seconds of this process's CPU during the run
    commands: int = 0  # commands the server sent (connect included): what FreeSWITCH executes
    bytes_from_server: int = 0
    bytes_to_server: int = 0
    wall: float = 0.0
    checked: bool = True

    def fail(self, reason: str) -> None:
        self.failed += 1
        self.failures[reason] = self.failures.get(reason, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))

    @classmethod
    def merge(cls, parts: list[dict[str, Any]]) -> Results:
        first = parts[0]
        merged = cls(mode=str(first["mode"]), duration=float(first["duration"]), checked=bool(first["checked"]))
        for p in parts:
            for name in ("started", "completed", "in_window", "wrong", "failed", "late_starts", "commands",
                         "bytes_from_server", "bytes_to_server"):
                setattr(merged, name, getattr(merged, name) + int(p[name]))
            for reason, n in p["failures"].items():
                merged.failures[reason] = merged.failures.get(reason, 0) + n
            merged.wrong_samples += p["wrong_samples"][: MAX_WRONG_SAMPLES - len(merged.wrong_samples)]
            merged.latencies += p["latencies"]
            merged.max_lag = max(merged.max_lag, float(p["max_lag"]))
            merged.loadgen_cpu += float(p["loadgen_cpu"])
            merged.wall = max(merged.wall, float(p["wall"]))
        return merged

    def summary(self) -> dict[str, float | int | None]:
        lat = sorted(self.latencies)
        def pct(q: float) -> float | None:
            return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else None

        per_call = (lambda n: n / self.started if self.started else None)  # noqa: E731
        return {"calls_per_s": self.in_window / self.duration if self.duration else None,
                "p50_ms": pct(0.50), "p95_ms": pct(0.95), "p99_ms": pct(0.99), "p999_ms": pct(0.999),
                "max_ms": pct(1.0), "commands_per_call": per_call(self.commands),
                "bytes_from_server_per_call": per_call(self.bytes_from_server),
                "bytes_to_server_per_call": per_call(self.bytes_to_server),
                "completed": self.completed, "wrong": self.wrong if self.checked else None, "failed": self.failed,
                "loadgen_cpu_us_per_call": self.loadgen_cpu / self.completed * 1e6 if self.completed else None}


class LoadGenerator:
    """Drives calls against ``address`` until the stop condition; closed loop or fixed rate."""

    def __init__(self, address: tuple[str, int], wire: Wire, calls: Calls, *, check: bool = True,
                 timeout: float = 5.0, max_in_flight: int = 5000, uuid_prefix: int = 0) -> None:
        self.address = address
        self.wire = wire
        self.calls = calls
        self.check = check
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self.uuid_prefix = uuid_prefix & 0xFFFFFFFF
        self.epoll = select.epoll()
        self.live: dict[int, _Call] = {}
        self.order: collections.deque[_Call] = collections.deque()
        self.counter = 0
        self.results = Results(mode="", duration=0.0, checked=check)
        self.window_end = float("inf")

    # -- one call --

    def start_call(self) -> None:
        caller, key = self.calls.next()
        self.counter += 1
        uuid = b"%08x-0000-4000-8000-%012x" % (self.uuid_prefix, self.counter)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t0 = time.perf_counter()
        self.results.started += 1
        rc = sock.connect_ex(self.address)
        if rc not in (0, errno.EINPROGRESS):
            sock.close()
            self.results.fail(f"connect: {errno.errorcode.get(rc, rc)}")
            return
        call = _Call(sock, t0, caller, key, uuid)
        self.live[call.fd] = call
        self.order.append(call)
        self.epoll.register(call.fd, select.EPOLLIN)

    def end_call(self, call: _Call, failure: str | None = None) -> None:
        if call.done:
            return
        call.done = True
        del self.live[call.fd]
        try:
            self.epoll.unregister(call.fd)
        except OSError:
            pass
        call.sock.close()
        if failure is not None:
            self.results.fail(failure)

    def on_readable(self, call: _Call) -> None:
        try:
            data = call.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            step = "recv" if call.connected else "connect"
            self.end_call(call, f"{step}: {errno.errorcode.get(exc.errno or 0, exc)}")
            return
        if not data:
            if call.set_any:
                self.on_end(call)
            else:
                self.end_call(call, "closed before setting anything" if call.connected else "closed before connect")
            return
        self.results.bytes_from_server += len(data)
        buf = call.buf + data if call.buf else data
        handled = 0
        while not call.done:
            end = buf.find(b"\n\n")
            if end < 0:
                break
            block, buf = buf[:end], buf[end + 2:]
            block = block.lstrip(b"\n")  # mod_event_socket skips stray newlines between commands
            if block:
                handled += 1
                if handled > 1:  # a second command before our reply to the first: SYNC needs one at a time
                    self.end_call(call, "server pipelined commands")
                    return
                self.on_command(call, block)
        call.buf = buf

    def send(self, call: _Call, data: bytes) -> bool:
        try:
            sent = call.sock.send(data)
        except OSError as exc:
            self.end_call(call, f"send: {errno.errorcode.get(exc.errno or 0, exc)}")
            return False
        if sent != len(data):
            self.end_call(call, "short send")
            return False
        self.results.bytes_to_server += sent
        return True

    def on_command(self, call: _Call, block: bytes) -> None:
        self.results.commands += 1
        if not call.connected:
            if block.startswith(b"connect"):
                call.connected = True
                self.send(call, self.wire.reply_for(call.caller, call.uuid))
            else:  # FreeSWITCH answers a first command with nothing: here it is a server bug
                self.send(call, esl.disconnect_notice(call.uuid.decode()))
                self.end_call(call, "first command not connect")
            return
        if block.startswith(b"sendmsg"):
            self.on_sendmsg(call, block)
        elif block.startswith(b"exit"):
            if self.send(call, self.wire.bye_for(call.uuid)):
                self.on_end(call)
        else:
            self.send(call, ERR_REPLY)
            self.end_call(call, f"unexpected command {block.partition(NL)[0][:30]!r}")

    def on_sendmsg(self, call: _Call, block: bytes) -> None:
        first, _, rest = block.partition(b"\n")
        headers: dict[bytes, bytes] = {}
        for line in rest.split(b"\n"):
            name, _, value = line.partition(b":")
            headers.setdefault(name.lower(), value.lstrip(b" "))
        if b"content-length" in headers:  # a body: legal ESL, but nothing fs_dynroute should send here
            self.end_call(call, "sendmsg with a body")
            return
        target = first[7:].strip()
        if target and target != call.uuid:
            self.send(call, esl.command_reply(f"-ERR invalid session id [{target.decode()}]"))
            return
        app = headers.get(b"execute-app-name")
        if headers.get(b"call-command") == b"execute" and app in (b"set", b"multiset"):
            arg = headers.get(b"execute-app-arg", b"")
            for item in ([arg] if app == b"set" else [i.encode() for i in multiset_items(arg.decode())]):
                name, _, value = item.partition(b"=")
                if value:
                    call.vars[name] = value
                else:
                    call.vars.pop(name, None)
            call.set_any = True
        self.send(call, OK_REPLY)

    def on_end(self, call: _Call) -> None:
        """The socket application is over (exit, or a close after the variables were set): tally the call."""
        if call.done:
            return
        now = time.perf_counter()
        results = self.results
        results.latencies.append(now - call.t0)
        results.completed += 1
        if now <= self.window_end:
            results.in_window += 1
        if self.check:
            self.verify(call)
        self.end_call(call)

    def verify(self, call: _Call) -> None:
        expected = expected_target(call.key, self.calls.routes)
        got = call.vars.get(b"dynroute_target", b"").decode()
        result = "nomatch" if expected == NO_MATCH_TARGET else "match"
        if (got != expected or call.vars.get(b"dynroute_key", b"").decode() != call.key
                or call.vars.get(b"dynroute_result", b"").decode() != result
                or call.vars.get(b"dynroute_rule", b"").decode() != RULE):
            self.results.wrong += 1
            if len(self.results.wrong_samples) < MAX_WRONG_SAMPLES:
                self.results.wrong_samples.append(
                    [call.caller, got, expected] + [f"{k.decode()}={v.decode()}" for k, v in call.vars.items()])

    # -- the loop --

    def poll(self, timeout: float) -> None:
        live = self.live
        for fd, _events in self.epoll.poll(timeout):
            call = live.get(fd)
            if call is not None:
                self.on_readable(call)
        self.expire()

    def expire(self) -> None:
        order = self.order
        limit = time.perf_counter() - self.timeout
        while order and (order[0].done or order[0].t0 < limit):
            call = order.popleft()
            if not call.done:
                self.end_call(call, "timeout")

    def closed_loop(self, concurrency: int, duration: float | None, calls: int | None) -> Results:
        self.results.mode, self.results.duration = "closed", duration or 0.0
        t_start = time.perf_counter()
        self.window_end = t_start + duration if duration else float("inf")
        hard_stop = self.window_end + self.timeout + 1

        def more() -> bool:
            return time.perf_counter() < self.window_end and (calls is None or self.results.started < calls)

        while len(self.live) < concurrency and more():
            self.start_call()
        while self.live and time.perf_counter() < hard_stop:
            self.poll(0.05)
            while len(self.live) < concurrency and more():
                self.start_call()
        if not duration:
            self.results.duration = time.perf_counter() - t_start
            self.results.in_window = self.results.completed
        return self.results

    def fixed_rate(self, rate: float, duration: float, calls: int | None) -> Results:
        self.results.mode, self.results.duration = "rate", duration
        t_start = time.perf_counter()
        self.window_end = t_start + duration
        hard_stop = self.window_end + self.timeout + 1
        n = 0
        while True:
            now = time.perf_counter()
            if now >= hard_stop or (not self.live and (now >= self.window_end or (calls and n >= calls))):
                break
            due = t_start + n / rate
            while due <= now and due < self.window_end and (calls is None or n < calls):
                lag = now - due
                self.results.max_lag = max(self.results.max_lag, lag)
                self.results.late_starts += lag > 0.001
                if len(self.live) < self.max_in_flight:
                    self.start_call()
                else:
                    self.results.fail("loadgen in-flight cap")
                n += 1
                due = t_start + n / rate
            self.poll(min(max(0.0, due - time.perf_counter()), 0.05))
        return self.results


def run(host: str, port: int, *, routes: int, concurrency: int = 50, rate: float | None = None,
        duration: float | None = 10.0, calls: int | None = None, hit_ratio: float = 0.5, seed: int = 1,
        check: bool = True, timeout: float = 5.0, start_at: float | None = None) -> Results:
    """One load generator run in this process; ``start_at`` (time.time()) lines up several processes."""
    wire = build_wire(host, port)
    gen = LoadGenerator((host, port), wire, Calls(routes, hit_ratio, seed), check=check, timeout=timeout,
                        uuid_prefix=(os.getpid() << 8) ^ seed)
    if start_at is not None:
        time.sleep(max(0.0, start_at - time.time()))
    cpu0 = _cpu()
    wall0 = time.perf_counter()
    if rate:
        results = gen.fixed_rate(rate, duration or 10.0, calls)
    else:
        results = gen.closed_loop(concurrency, duration, calls)
    results.wall = time.perf_counter() - wall0
    results.loadgen_cpu = _cpu() - cpu0
    gen.epoll.close()
    return results


def crosscheck(host: str, port: int, routes: int, calls: int = 20, seed: int = 99) -> list[str]:
    """Place ``calls`` calls through ``fs_dynroute.fakeswitch`` itself (the whole recommended dialplan) and compare
    where each ended with ``benchmarks.workload``'s expectation: proves the load generator's notion of a
    right call is the fake switch's. Returns the mismatches."""
    from fs_dynroute.fakeswitch.switch import Dialplan, place_call

    dialplan = Dialplan.recommended(f"{host}:{port}", NO_MATCH_TARGET)
    stream = Calls(routes, 0.5, seed)
    problems = []
    for _ in range(calls):
        caller, key = stream.next()
        outcome = place_call(dialplan, caller, SOURCE, stuck_after=3.0)
        expected = expected_target(key, routes)
        if (outcome.ended, outcome.target) != ("transferred", expected):
            problems.append(f"{caller}: {outcome.ended} {outcome.target!r}, expected {expected!r}")
    return problems


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loadgen", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--routes", type=int, required=True, help="routes in the database (for expected targets)")
    parser.add_argument("--concurrency", type=int, default=50, help="closed loop: calls in flight (default 50)")
    parser.add_argument("--rate", type=float, help="fixed rate: calls per second (instead of closed loop)")
    parser.add_argument("--duration", type=float, default=None, help="seconds (default 10 unless --calls)")
    parser.add_argument("--calls", type=int, help="stop after starting this many calls")
    parser.add_argument("--hit-ratio", type=float, default=0.5, help="share of callers that have a route")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=5.0, help="a call without exit after this is failed")
    parser.add_argument("--no-check", action="store_true", help="do not check targets (the bare server)")
    parser.add_argument("--start-at", type=float, help="wall-clock time.time() to start at")
    parser.add_argument("--out", help="write the full results (with every latency) as JSON here")
    parser.add_argument("--crosscheck", type=int, metavar="N", help="instead of load: place N calls through "
                        "fs_dynroute.fakeswitch and check each ends where benchmarks.workload expects")
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("load goes to loopback only")
    if args.crosscheck:
        problems = crosscheck(args.host, args.port, args.routes, args.crosscheck)
        print(json.dumps({"calls": args.crosscheck, "mismatches": problems}))
        return 1 if problems else 0
    duration = args.duration if args.duration is not None else (None if args.calls else 10.0)
    results = run(args.host, args.port, routes=args.routes, concurrency=args.concurrency, rate=args.rate,
                  duration=duration, calls=args.calls, hit_ratio=args.hit_ratio, seed=args.seed,
                  check=not args.no_check, timeout=args.timeout, start_at=args.start_at)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(results.as_dict(), f)
    print(json.dumps({**results.summary(), "failures": results.failures, "wrong_samples": results.wrong_samples}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
