"""Proves the fake FreeSWITCH behaves as the captures and the README's outcome table say the real one does."""

from __future__ import annotations

import json
import os
import socket as stdsocket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import gevent
import pytest
from gevent.event import Event
from gevent.server import StreamServer

from fs_dynroute import esl
from fs_dynroute.fakeswitch import captures
from fs_dynroute.fakeswitch.switch import CallOutcome, Dialplan, FakeFreeSWITCH, main, place_call

DEFAULT = "9999 XML default"
TARGET = "1001 XML default"
SHORT = 0.3  # stuck_after / first_command_timeout in tests: long enough for loopback, short for the suite


class Conn:
    """The server side of one connection: scripted sends, and a record of everything the fake sent back."""

    def __init__(self, sock: stdsocket.socket) -> None:
        self.sock = sock
        self.reader = esl.MessageReader()
        self.raw = bytearray()
        self.messages: list[esl.Message] = []
        self.eof = False
        self.reset = False
        self.send_errors: list[OSError] = []
        self.done = Event()

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as error:
            self.send_errors.append(error)

    def expect(self, count: int, timeout: float = 3.0) -> list[esl.Message]:
        """Read until ``count`` messages in all arrived, EOF, or the timeout."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and not self.eof and self._recv(deadline):
            pass
        return self.messages

    def wait_eof(self, timeout: float = 3.0) -> bool:
        deadline = time.monotonic() + timeout
        while not self.eof and self._recv(deadline):
            pass
        return self.eof

    def _recv(self, deadline: float) -> bool:
        try:
            self.sock.settimeout(max(0.001, deadline - time.monotonic()))
            data = self.sock.recv(65536)
        except (stdsocket.timeout, TimeoutError):
            return False
        except OSError:
            self.reset = self.eof = True
            return False
        if not data:
            self.eof = True
            return False
        self.raw += data
        self.reader.feed(data)
        while (message := self.reader.next_message()) is not None:
            self.messages.append(message)
        return True


class Player:
    """A tiny gevent StreamServer that runs ``script(conn)`` for each connection and keeps the records."""

    def __init__(self, script: Callable[[Conn], None]) -> None:
        self.script = script
        self.conns: list[Conn] = []
        self.server = StreamServer(("127.0.0.1", 0), self._handle)

    @property
    def port(self) -> int:
        return self.server.server_port

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _handle(self, sock: stdsocket.socket, _address: object) -> None:
        conn = Conn(sock)
        self.conns.append(conn)
        try:
            self.script(conn)
        finally:
            sock.close()
            conn.done.set()

    def conn(self, timeout: float = 3.0) -> Conn:
        """The only connection, once its script has finished."""
        assert len(self.conns) == 1, f"expected one connection, got {len(self.conns)}"
        assert self.conns[0].done.wait(timeout), "the scripted server did not finish"
        return self.conns[0]


@contextmanager
def playing(script: Callable[[Conn], None]) -> Iterator[Player]:
    player = Player(script)
    player.server.start()
    try:
        yield player
    finally:
        player.server.stop(timeout=1)


def refused_port() -> int:
    """A loopback port nobody listens on (bound then released)."""
    probe = stdsocket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def dialplan(hosts: str, *, unset_resume: bool = True) -> Dialplan:
    plan = Dialplan.recommended(hosts, DEFAULT)
    if not unset_resume:
        plan.actions = plan.actions[1:]
    return plan


# -- scripts: the server side of the README's experiments --


def set_exit(target: str) -> Callable[[Conn], None]:
    def script(conn: Conn) -> None:
        conn.send(esl.connect_command())
        conn.expect(1)
        conn.send(esl.set_variable("dynroute_target", target))
        conn.expect(2)
        conn.send(esl.exit_command())
        conn.wait_eof()

    return script


def connect_then(*commands: bytes, close: bool = False) -> Callable[[Conn], None]:
    def script(conn: Conn) -> None:
        conn.send(esl.connect_command())
        conn.expect(1)
        for command in commands:
            conn.send(command)
        if not close:
            conn.wait_eof()

    return script


def hold_open(conn: Conn) -> None:
    conn.send(esl.connect_command())
    conn.wait_eof(timeout=5.0)


# ---------------------------------------------------------------------------------------------------------------
# Replaying the captures: the fake must answer what FreeSWITCH answered, byte for byte after the connect reply
# (events left out: S12s's ``divert_events on`` makes FreeSWITCH send some even in SYNC mode).

SKIPPED = {
    "sync/S7b.repr": "the caller was gone before connect; FreeSWITCH sent a notice instead of the connect reply",
    "sync/S12a.repr": "async+full with myevents: FreeSWITCH emits events, which the fake does not model",
    "sync/S12f.repr": "full with divert_events: FreeSWITCH emits events, which the fake does not model",
    "sync/S13b.repr": "recording ended while the call was held open",
    "sync/S17.repr": "the recorder closed without reading the replies",
}
REPLAYED = [n for n in captures.names("sync", "multiset") if n not in SKIPPED and "_probe" not in n]

EXPECTED = {  # capture -> (ended, target), from the README table and the capture's own scenario note
    "S1": ("transferred", TARGET),
    "S1sip": ("transferred", TARGET),
    "S2": ("transferred", DEFAULT),
    "S3": ("transferred", DEFAULT),
    "S4": ("transferred", DEFAULT),
    "S5": ("transferred", DEFAULT),
    "S6": ("transferred", TARGET),
    "S6b": ("transferred", TARGET),
    "S7": ("transferred", TARGET),
    "S8a": ("hangup", None),
    "S8b": ("hangup", None),
    "S8sip": ("hangup", None),
    "S9a": ("transferred", TARGET),
    "S9b": ("transferred", TARGET),
    "S9c": ("transferred", TARGET),
    "S9d": ("transferred", TARGET),
    "S10a": ("transferred", "1001 XML latprobe"),
    "S10r": ("transferred", "1001 XML latprobe"),
    "S10s": ("transferred", "1001 XML latprobe"),
    "S11": ("transferred", TARGET),
    "S12s": ("transferred", TARGET),
    "S13a": ("stuck", None),
    "S13c": ("stuck", None),
    "S14": ("stuck", None),
    "S15": ("stuck", None),
    "S16": ("transferred", "1001 XML latprobe"),
    "S18": ("transferred", TARGET),
    "S18b": ("transferred", DEFAULT),
    "S18c": ("transferred", TARGET),
    "S18d": ("stuck", None),
    "S19a": ("dropped", "5559999 XML default"),
    "S19b": ("dropped", ""),
    "S20_multiset_close": ("transferred", TARGET),
    "S20b_multiset_exit": ("transferred", TARGET),
}


def parse_all(data: bytes) -> list[esl.Message]:
    reader = esl.MessageReader(max_buffer=4 * 1024 * 1024)
    reader.feed(data)
    messages = []
    while (message := reader.next_message()) is not None:
        messages.append(message)
    return messages


def without_events(data: bytes) -> tuple[list[esl.Message], bytes]:
    """The messages and raw bytes of a stream minus its text/event-plain events (which the fake never sends)."""
    kept, raw, rest = [], b"", data
    for message in parse_all(data):
        size = rest.index(b"\n\n") + 2 + len(message.body)
        if message.content_type != "text/event-plain":
            kept.append(message)
            raw += rest[:size]
        rest = rest[size:]
    return kept, raw


def capture_script(name: str) -> Callable[[Conn], None]:
    """Play the server's side of a capture: before each send, wait for the messages FreeSWITCH had sent by then."""
    steps: list[tuple[str, object]] = []
    received = b""
    for direction, _, data in captures.load(name):
        if direction == captures.RECEIVED:
            received += data
        else:
            steps += [("expect", len(without_events(received)[0])), ("send", data)]
    steps.append(("expect", len(without_events(received)[0])))
    saw_eof = any("EOF" in note for note in captures.notes(name))

    def script(conn: Conn) -> None:
        for kind, value in steps:
            if kind == "send":
                conn.send(value)  # type: ignore[arg-type]
            else:
                conn.expect(value)  # type: ignore[arg-type]
        if saw_eof:
            conn.wait_eof()

    return script


def dialplan_variables(connect: dict[str, str] | None) -> list[tuple[str, str]]:
    """The variables the capture's dialplan set before ``socket``: from dynroute_target to the socket's own."""
    if connect is None:
        return [("dynroute_target", DEFAULT)]
    names = [k for k in connect if k.startswith("variable_")]
    chosen = names[names.index("variable_dynroute_target") : names.index("variable_current_application_data")]
    return [(k.removeprefix("variable_"), connect[k]) for k in chosen]


def replay_call(name: str, player: Player) -> CallOutcome:
    """Place the capture's call against the player, with the capture itself as the connect-reply template."""
    messages = parse_all(b"".join(captures.received(name)))
    connect = next((m.headers for m in messages if m.headers.get("Event-Name") == "CHANNEL_DATA"), None)
    notice = next(m.headers for m in messages if m.content_type == "text/disconnect-notice") if not connect else {}
    data = connect["variable_current_application_data"] if connect else "127.0.0.1:8084"
    hosts, _, mode = data.partition(" ")
    answered = hosts if "|" not in hosts else next(spec for spec in hosts.split("|") if spec.endswith(":8084"))
    hosts = "|".join(
        player.hostport if spec == answered else f"127.0.0.1:{refused_port()}" for spec in hosts.split("|")
    )
    plan = Dialplan(
        [("set", f"{name}={value}") for name, value in dialplan_variables(connect)]
        + [("socket", f"{hosts} {mode}".strip()), ("transfer", "${dynroute_target}")]
    )
    return place_call(
        plan,
        connect["Caller-Caller-ID-Number"] if connect else "+15551111111",
        connect["Caller-Destination-Number"] if connect else "70004",
        uuid=connect["Unique-ID"] if connect else notice["Controlled-Session-UUID"],
        template=name if connect else "sync/S18.repr",
        behaviour="hangup" if name.split("/")[1].startswith("S8") else "normal",
        hangup_after=0.05,
        stuck_after=SHORT,
        first_command_timeout=SHORT,
        known_targets={TARGET, DEFAULT, "1001 XML latprobe"},
    )


@pytest.mark.parametrize("name", REPLAYED)
def test_fake_replays_capture(name: str) -> None:
    with playing(capture_script(name)) as player:
        outcome = replay_call(name, player)
        conn = player.conn()
    expected, captured = without_events(b"".join(captures.received(name)))
    got = conn.messages
    assert [m.content_type for m in got] == [m.content_type for m in expected]
    assert conn.eof == any("EOF" in note for note in captures.notes(name))
    if expected and expected[0].headers.get("Event-Name") == "CHANNEL_DATA":
        want, have = expected[0].headers, got[0].headers
        assert list(have) == list(want), "connect reply header names or order differ"
        differing = {k for k in want if want[k] != have[k]}
        assert differing <= {"variable_current_application_data"}, differing  # only the ports differ
        captured = captured[captured.index(b"\n\n") + 2 :]
        raw = bytes(conn.raw[conn.raw.index(b"\n\n") + 2 :])
    else:
        raw = bytes(conn.raw)
    assert raw == captured, "replies and notices differ from FreeSWITCH's bytes"
    short = name.split("/")[1].removesuffix(".repr")
    assert (outcome.ended, outcome.target) == EXPECTED[short]


def test_every_replayable_capture_has_an_expected_outcome() -> None:
    assert {n.split("/")[1].removesuffix(".repr") for n in REPLAYED} == set(EXPECTED)


# ---------------------------------------------------------------------------------------------------------------
# The connect reply built from the default template (S18) for a different call


UUID = "11111111-2222-3333-4444-555555555555"


def test_connect_reply_keeps_s18_header_order_with_this_calls_values() -> None:
    with playing(set_exit(TARGET)) as player:
        outcome = place_call(dialplan(player.hostport), "+15557654321", "5550100", uuid=UUID)
        conn = player.conn()
    s18 = parse_all(b"".join(captures.received("sync/S18.repr")))[0].headers
    reply = conn.messages[0].headers
    assert list(reply) == list(s18)
    for name in ("Channel-Caller-ID-Number", "Channel-ANI", "Caller-Caller-ID-Number", "Caller-ANI"):
        assert reply[name] == "+15557654321"
    assert reply["variable_origination_caller_id_number"] == "+15557654321"
    assert reply["Caller-Destination-Number"] == reply["Channel-Destination-Number"] == "5550100"
    assert reply["variable_DP_MATCH"] == "5550100"
    assert reply["Channel-Name"] == "loopback/5550100-b"
    uuid_headers = [k for k, v in s18.items() if v == s18["Unique-ID"]]
    assert len(uuid_headers) >= 5 and all(reply[k] == UUID for k in uuid_headers)
    assert reply["variable_dynroute_target"] == DEFAULT
    assert reply["variable_current_application_data"] == player.hostport
    assert (reply["Socket-Mode"], reply["Control"], reply["Reply-Text"]) == ("static", "single-channel", "+OK\n")
    assert b"Reply-Text: %2BOK%0A\n" in conn.raw and b"Caller-Caller-ID-Number: %2B15557654321\n" in conn.raw
    assert outcome.variables["dynroute_target"] == TARGET


@pytest.mark.parametrize(
    ("caller", "wire"),
    [
        ("+15551111111", b"%2B15551111111"),
        ("15552222222", b"15552222222"),
        ("+1 (555) 222-2222", b"%2B1%20(555)%20222-2222"),
        ("anonymous", b"anonymous"),
        ("", b"0000000000"),
        (None, b"0000000000"),
    ],
)
def test_caller_id_goes_on_the_wire_as_freeswitch_sends_it(caller: str | None, wire: bytes) -> None:
    with playing(set_exit(TARGET)) as player:
        place_call(dialplan(player.hostport), caller, "5550100")
        conn = player.conn()
    assert b"\nCaller-Caller-ID-Number: " + wire + b"\n" in conn.raw
    assert conn.messages[0].headers["Caller-Caller-ID-Number"] == (caller or "0000000000")
    assert ("variable_origination_caller_id_number" in conn.messages[0].headers) == bool(caller)  # as e2/e5


# ---------------------------------------------------------------------------------------------------------------
# The README's outcome table


def test_set_then_exit_routes_to_the_target() -> None:
    with playing(set_exit(TARGET)) as player:
        outcome = place_call(dialplan(player.hostport), "+15551111111", "5550100")
        conn = player.conn()
    assert (outcome.ended, outcome.target, outcome.host) == ("transferred", TARGET, player.hostport)
    assert [c.name for c in outcome.sent] == ["connect", "sendmsg", "exit"]
    assert conn.messages[1].headers == {"Content-Type": "command/reply", "Reply-Text": "+OK"}
    assert conn.messages[2].headers["Reply-Text"] == "+OK bye"
    assert conn.messages[3].body == esl.DISCONNECT_NOTICE_BODY and conn.eof
    assert outcome.silence < 1.0


MULTISET = captures.sent("multiset/S20_multiset_close.repr")[1]  # the captured command, byte for byte


def multiset_close(*commands: bytes) -> Callable[[Conn], None]:
    """connect, then each command awaiting its reply, then close without exit (S20)."""
    def script(conn: Conn) -> None:
        conn.send(esl.connect_command())
        conn.expect(1)
        for n, command in enumerate(commands, 2):
            conn.send(command)
            conn.expect(n)

    return script


def test_multiset_then_close_without_exit_routes_with_every_variable_set() -> None:
    with playing(multiset_close(MULTISET)) as player:
        outcome = place_call(dialplan(player.hostport), "+15551111111", "5550100")
        conn = player.conn()
    assert (outcome.ended, outcome.target) == ("transferred", TARGET)
    assert {k: outcome.variables[k] for k in ("dynroute_result", "dynroute_rule", "dynroute_key")} == {
        "dynroute_result": "match", "dynroute_rule": "Customer Routing", "dynroute_key": "5551111111"}
    assert [c.name for c in outcome.sent] == ["connect", "sendmsg"]
    assert [m.headers.get("Reply-Text") for m in conn.messages[1:]] == ["+OK"] and not conn.eof


def test_multiset_then_exit_says_bye_and_routes_the_same() -> None:
    with playing(multiset_close(MULTISET, esl.exit_command())) as player:
        outcome = place_call(dialplan(player.hostport), "+15551111111", "5550100")
        conn = player.conn()
    assert (outcome.ended, outcome.target) == ("transferred", TARGET)
    assert [m.headers.get("Reply-Text") for m in conn.messages[1:3]] == ["+OK", "+OK bye"]
    assert conn.messages[3].body == esl.DISCONNECT_NOTICE_BODY


@pytest.mark.parametrize(("arg", "expected"), [
    ("^^|a=1|b=2 3|c=x=y", {"a": "1", "b": "2 3", "c": "x=y"}),  # ^^X: X is the separator
    ("^^;a=1;b=2|3", {"a": "1", "b": "2|3"}),
    ("a=1 b=2   c=3", {"a": "1", "b": "2", "c": "3"}),  # no ^^: items split on spaces
    ("^^|dynroute_target=|b=2", {"b": "2"}),  # an empty value unsets (the dialplan's default is gone)
    ("^^|dynroute_target|b=2", {"b": "2"}),  # an item without = (nor ,) unsets too
    ("^^|a,1|b=2,3", {"a": "1", "b": "2,3"}),  # without =, a comma separates name and value
    ("^^|a=1 |b=' x|y '|c=\\|d", {"a": "1", "b": " x|y ", "c": "|d"}),  # trailing spaces, quotes, escapes
    ("^^|a=1||b=2|", {"a": "1", "b": "2"}),  # empty items set nothing
])
def test_multiset_splits_and_sets_as_mod_dptools_does(arg: str, expected: dict[str, str]) -> None:
    with playing(multiset_close(esl.sendmsg_execute("multiset", arg))) as player:
        outcome = place_call(dialplan(player.hostport), "+1555", "5550100")
    got = {k: v for k, v in outcome.variables.items() if k in expected or k == "dynroute_target"}
    assert got == (expected if "dynroute_target" in arg else {**expected, "dynroute_target": DEFAULT})


def test_exit_at_once_falls_back_to_the_default() -> None:
    with playing(connect_then(esl.exit_command())) as player:
        outcome = place_call(dialplan(player.hostport), "+15551111111", "5550100")
    assert (outcome.ended, outcome.target) == ("transferred", DEFAULT)


def test_close_at_once_falls_back_to_the_default() -> None:
    with playing(connect_then(close=True)) as player:
        outcome = place_call(dialplan(player.hostport), "+15551111111", "5550100")
    assert (outcome.ended, outcome.target) == ("transferred", DEFAULT)


def test_resume_in_sync_mode_leaves_the_call_stuck() -> None:
    script = connect_then(b"resume\n\n", esl.set_variable("dynroute_target", TARGET), esl.exit_command())
    with playing(script) as player:
        outcome = place_call(dialplan(player.hostport), "+15551111111", "5550100")
        conn = player.conn()
    assert (outcome.ended, outcome.target) == ("stuck", None)
    assert [m.headers.get("Reply-Text") for m in conn.messages[1:4]] == ["+OK", "+OK", "+OK bye"]
    assert outcome.variables["socket_resume"] == "true"


def test_nothing_listening_falls_back_at_once() -> None:
    outcome = place_call(dialplan(f"127.0.0.1:{refused_port()}"), "+15551111111", "5550100")
    assert (outcome.ended, outcome.target, outcome.host) == ("transferred", DEFAULT, None)
    assert outcome.silence < 1.0 and outcome.sent == []


def test_first_host_refused_second_answers() -> None:
    with playing(set_exit(TARGET)) as player:
        hosts = f"127.0.0.1:{refused_port()}|{player.hostport}"
        outcome = place_call(dialplan(hosts), "+15551111111", "5550100")
    assert (outcome.ended, outcome.target, outcome.host) == ("transferred", TARGET, player.hostport)


def test_socket_held_open_is_stuck_after_stuck_after() -> None:
    with playing(hold_open) as player:
        outcome = place_call(dialplan(player.hostport), "+15551111111", "5550100", stuck_after=SHORT)
        conn = player.conn()
    assert (outcome.ended, outcome.target) == ("stuck", None)
    assert SHORT <= outcome.silence < SHORT + 1.0
    assert conn.messages[-1].content_type == "text/disconnect-notice" and conn.eof  # the caller gave up (S13a)


def test_empty_target_is_dropped() -> None:
    with playing(set_exit("")) as player:
        outcome = place_call(dialplan(player.hostport), "+15551111111", "5550100")
    assert (outcome.ended, outcome.target) == ("dropped", "")
    assert "dynroute_target" not in outcome.variables  # set with an empty value unsets: the default is gone


def test_unknown_target_is_dropped_when_known_targets_given() -> None:
    with playing(set_exit("5559999 XML default")) as player:
        outcome = place_call(dialplan(player.hostport), "+1555", "5550100", known_targets={TARGET, DEFAULT})
    assert (outcome.ended, outcome.target) == ("dropped", "5559999 XML default")


def test_socket_resume_on_the_channel_strands_the_call_unless_unset() -> None:
    resume = {"socket_resume": "true"}
    with playing(set_exit(TARGET)) as player:
        stuck = place_call(dialplan(player.hostport, unset_resume=False), "+1555", "5550100", variables=resume)
    with playing(set_exit(TARGET)) as player:
        fine = place_call(dialplan(player.hostport), "+1555", "5550100", variables=resume)
    assert (stuck.ended, fine.ended, fine.target) == ("stuck", "transferred", TARGET)


def test_sendmsg_transfer_wins_over_the_rest_of_the_dialplan() -> None:
    script = connect_then(esl.sendmsg_execute("transfer", TARGET), esl.exit_command())
    with playing(script) as player:
        outcome = place_call(dialplan(player.hostport), "+15551111111", "5550100")
    assert (outcome.ended, outcome.target) == ("transferred", TARGET)
    assert outcome.variables["current_application"] == "transfer"


def test_no_first_command_times_out_with_a_notice_and_falls_back() -> None:
    with playing(lambda conn: conn.wait_eof()) as player:
        outcome = place_call(dialplan(player.hostport), "+1555", "5550100", first_command_timeout=SHORT, uuid="u-1")
        conn = player.conn()
    assert (outcome.ended, outcome.target) == ("transferred", DEFAULT)
    assert bytes(conn.raw) == esl.disconnect_notice("u-1") and conn.eof  # as S4


def test_async_exit_without_resume_is_stuck_and_with_resume_continues() -> None:
    def plan(hosts: str) -> Dialplan:
        socket = ("socket", f"{hosts} async full")
        return Dialplan([("set", f"dynroute_target={DEFAULT}"), socket, ("transfer", "${dynroute_target}")])

    with playing(connect_then(esl.exit_command())) as player:
        stuck = place_call(plan(player.hostport), "+1555", "5550100")
        reply = player.conn().messages[0].headers
    script = connect_then(b"resume\n\n", esl.set_variable("dynroute_target", TARGET), esl.exit_command())
    with playing(script) as player:
        resumed = place_call(plan(player.hostport), "+1555", "5550100")
    assert (reply["Socket-Mode"], reply["Control"]) == ("async", "full")
    assert stuck.ended == "stuck"
    assert (resumed.ended, resumed.target) == ("transferred", TARGET)


# ---------------------------------------------------------------------------------------------------------------
# Command replies that mirror mod_event_socket


def test_first_command_gets_no_reply_like_mod_event_socket() -> None:
    def script(conn: Conn) -> None:
        conn.send(esl.set_variable("dynroute_target", TARGET))
        conn.send(b"getvar dynroute_target\n\n")
        conn.send(esl.exit_command())
        conn.wait_eof()

    with playing(script) as player:
        outcome = place_call(dialplan(player.hostport), "+1555", "5550100")
        conn = player.conn()
    assert [m.headers.get("Reply-Text") for m in conn.messages] == [TARGET, "+OK bye", None]
    assert (outcome.ended, outcome.target) == ("transferred", TARGET)


def test_replies_for_getvar_myevents_and_refused_commands() -> None:
    commands = [
        b"getvar dynroute_target\n\n", b"getvar nosuchvar\n\n", b"myevents\n\n", b"myevents\n\n", b"linger\n\n",
        b"api status\n\n", b"divert_events on\n\n", b"sendmsg other-uuid\ncall-command: execute\n\n",
    ]
    with playing(connect_then(*commands, esl.exit_command())) as player:
        place_call(dialplan(player.hostport), "+1555", "5550100", uuid="my-uuid")
        conn = player.conn()
    assert [m.headers.get("Reply-Text") for m in conn.messages[1:9]] == [
        DEFAULT, "-ERR command not found", "+OK Events Enabled", "-ERR aready enabled.", "-ERR command not found",
        "-ERR command not found", "+OK events diverted", "-ERR invalid session id [other-uuid]",
    ]


# ---------------------------------------------------------------------------------------------------------------
# Behaviours


def test_hangup_sends_the_notice_then_eof() -> None:
    with playing(hold_open) as player:
        plan = dialplan(player.hostport)
        outcome = place_call(plan, "+1555", "5550100", behaviour="hangup", hangup_after=0, uuid="u-2")
        conn = player.conn()
    assert (outcome.ended, outcome.target) == ("hangup", None)
    assert [m.content_type for m in conn.messages] == ["command/reply", "text/disconnect-notice"] and conn.eof
    assert conn.messages[1] == parse_all(esl.disconnect_notice("u-2"))[0]


def test_hangup_after_a_fast_server_changes_nothing() -> None:
    with playing(set_exit(TARGET)) as player:
        outcome = place_call(dialplan(player.hostport), "+1555", "5550100", behaviour="hangup", hangup_after=2.0)
    assert (outcome.ended, outcome.target) == ("transferred", TARGET)


def test_reset_aborts_the_connection_and_the_dialplan_continues() -> None:
    def script(conn: Conn) -> None:
        conn.send(esl.connect_command())
        conn.expect(2)
        gevent.sleep(0.05)
        conn.send(esl.exit_command())
        conn.wait_eof()

    with playing(script) as player:
        outcome = place_call(dialplan(player.hostport), "+1555", "5550100", behaviour="reset")
        conn = player.conn()
    assert conn.eof and (conn.reset or conn.send_errors)
    assert (outcome.ended, outcome.target) == ("transferred", DEFAULT)


def test_stall_never_answers_so_the_servers_deadline_must_hold() -> None:
    def script(conn: Conn) -> None:
        conn.send(esl.connect_command())
        conn.expect(1, timeout=0.2)  # the server's own deadline

    with playing(script) as player:
        outcome = place_call(dialplan(player.hostport), "+1555", "5550100", behaviour="stall")
        conn = player.conn()
    assert conn.raw == b"" and conn.messages == []
    assert (outcome.ended, outcome.target) == ("transferred", DEFAULT)  # the server gave up and closed


def test_inject_puts_an_encoded_forged_line_in_a_variable() -> None:
    with playing(set_exit(TARGET)) as player:
        plan = dialplan(player.hostport)
        outcome = place_call(plan, "+15551111111", "5550100", behaviour="inject", forged_caller_id="5559999999")
        conn = player.conn()
    assert b"%0ACaller-Caller-ID-Number%3A%205559999999" in conn.raw
    headers = conn.messages[0].headers
    assert headers["Caller-Caller-ID-Number"] == "+15551111111"
    assert headers["variable_sip_user_agent"].endswith("\nCaller-Caller-ID-Number: 5559999999")
    assert outcome.ended == "transferred"


def test_unknown_behaviour_is_refused() -> None:
    with pytest.raises(ValueError, match="behaviour"):
        place_call(dialplan("127.0.0.1:1"), "+1555", "5550100", behaviour="explode")


def test_every_socket_is_closed() -> None:
    fds = lambda: len(os.listdir("/proc/self/fd"))  # noqa: E731
    with playing(set_exit(TARGET)) as player:
        place_call(dialplan(player.hostport), "+1555", "5550100")  # warm up imports and caches
        before = fds()
        for behaviour in ("normal", "hangup", "reset", "inject"):
            place_call(dialplan(player.hostport), "+1555", "5550100", behaviour=behaviour)
        place_call(dialplan(f"127.0.0.1:{refused_port()}"), "+1555", "5550100")
        gevent.sleep(0.1)
        for conn in player.conns:
            conn.done.wait(3)
        assert fds() <= before


# ---------------------------------------------------------------------------------------------------------------
# Dialplan XML

XML = """<include>
  <context name="public">
    <extension name="other"><condition field="destination_number" expression="^5550100$">
      <action application="transfer" data="wrong XML public"/></condition></extension>
  </context>
  <context name="default">
    <extension name="logger" continue="true"><condition field="destination_number" expression="^555(\\d+)$">
      <action application="set" data="dialed_suffix=$1"/></condition></extension>
    <extension name="dynroute"><condition field="destination_number" expression="^(555)0100$">
      <action application="unset" data="socket_resume"/>
      <action application="set" data="dynroute_target=9999 XML default"/>
      <action application="socket" data="127.0.0.1:8084|127.0.0.1:8085"/>
      <action application="transfer" data="${dynroute_target}"/></condition></extension>
    <extension name="late"><condition field="destination_number" expression="^5550100$">
      <action application="transfer" data="never XML default"/></condition></extension>
  </context>
</include>"""


def test_from_xml_picks_the_first_matching_extension_of_the_context() -> None:
    plan = Dialplan.from_xml(XML, "5550100", "default")
    recommended = Dialplan.recommended("127.0.0.1:8084|127.0.0.1:8085", DEFAULT).actions
    assert plan.actions == [("set", "dialed_suffix=0100"), *recommended]
    assert plan.expression == "^555(\\d+)$"
    assert Dialplan.from_xml(XML, "5550100", "public").actions == [("transfer", "wrong XML public")]
    assert Dialplan.from_xml(XML, "5550100").actions == [("transfer", "wrong XML public")]  # no context: document order


def test_from_xml_accepts_a_bare_include_of_extensions() -> None:
    bare = '<include><extension name="x"><condition field="destination_number" expression="^1$">' \
           '<action application="transfer" data="a"/></condition></extension></include>'
    assert Dialplan.from_xml(bare, "1").actions == [("transfer", "a")]
    with pytest.raises(LookupError):
        Dialplan.from_xml(bare, "2")
    with pytest.raises(LookupError):
        Dialplan.from_xml(bare, "1", "nosuchcontext")


def test_dp_match_comes_from_the_regex_groups() -> None:
    plan = Dialplan.from_xml(XML, "5550100", "default")
    with playing(set_exit(TARGET)) as player:
        plan.actions = [(a, player.hostport if a == "socket" else d) for a, d in plan.actions]
        outcome = place_call(plan, "+1555", "5550100")
        conn = player.conn()
    assert conn.messages[0].headers["variable_DP_MATCH"] == "ARRAY::5550100|:0100"
    assert outcome.variables["dialed_suffix"] == "0100" and outcome.target == TARGET


# ---------------------------------------------------------------------------------------------------------------
# Entry points


def test_fakefreeswitch_wrapper_and_cli(capsys: pytest.CaptureFixture[str]) -> None:
    with playing(set_exit(TARGET)) as player:
        fake = FakeFreeSWITCH(dialplan(player.hostport), {"stuck_after": SHORT})
        assert fake.call("+1555", "5550100").target == TARGET
        argv = ["--hosts", player.hostport, "--caller", "+15551111111", "--dest", "5550100"]
        argv += ["--default", "5000 XML default"]
        assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["target"] == TARGET and printed["sent"] == ["connect", "sendmsg", "exit"]
