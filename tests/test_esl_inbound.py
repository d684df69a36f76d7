"""Proves the inbound event-socket codec against every byte of the inbound captures, however TCP chunks it."""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

import pytest

from fs_dynroute import esl, esl_inbound as ei
from fs_dynroute.esl import ESLProtocolError
from fs_dynroute.fakeswitch import captures

try:
    from hypothesis import given, settings, strategies as st
except ImportError:  # pragma: no cover - hypothesis is optional
    given = None

# The sessions of the tracker's kind (the *_control ones placed the calls with bgapi, which the tracker never uses).
SESSIONS = [n for n in captures.names("inbound") if "_control" not in n]
CAPTURE_LIMIT = 4 * 1024 * 1024


def read(chunks: Iterable[bytes]) -> list[ei.Item]:
    reader = ei.InboundReader(max_buffer=CAPTURE_LIMIT)
    out = []
    for chunk in chunks:
        reader.feed(chunk)
        while (item := reader.next_item()) is not None:
            out.append(item)
    assert reader.buffered == 0, "bytes left over: a message was cut or mis-framed"
    return out


def stream(name: str) -> bytes:
    return b"".join(captures.received(name))


@cache
def items(name: str) -> tuple[ei.Item, ...]:
    return tuple(read(captures.received(name)))


def events(name: str, event_name: str = "CHANNEL_HANGUP_COMPLETE") -> list[ei.Event]:
    return [i for i in items(name) if isinstance(i, ei.Event) and i.name == event_name]


def frames(name: str) -> list[tuple[esl.Message, bytes]]:
    """Each framed message with the exact bytes it came from."""
    reader, rest, out = esl.MessageReader(max_buffer=CAPTURE_LIMIT), stream(name), []
    reader.feed(rest)
    while (message := reader.next_message()) is not None:
        size = rest.index(b"\n\n") + 2 + len(message.body)
        out.append((message, rest[:size]))
        rest = rest[size:]
    return out


def test_there_are_sessions_of_every_kind() -> None:
    assert [n.split("/")[1].split("_")[0] for n in SESSIONS] == ["i1", "i1b", "i2", "i3", "i4", "i5"]


@pytest.mark.parametrize("name", SESSIONS)
def test_capture_reads_the_same_whole_chunked_or_byte_by_byte(name: str) -> None:
    as_captured = list(items(name))
    data = stream(name)
    assert read([data]) == as_captured
    assert read(data[i:i + 1] for i in range(len(data))) == as_captured


@pytest.mark.parametrize("name", SESSIONS)
def test_trailing_bytes_of_a_next_event_wait_for_more(name: str) -> None:
    event = esl.event_plain([("Event-Name", "HEARTBEAT"), ("Event-Info", "System Ready")])
    reader = ei.InboundReader(max_buffer=CAPTURE_LIMIT)
    reader.feed(stream(name) + event[:30])
    got = []
    while (item := reader.next_item()) is not None:
        got.append(item)
    assert got == list(items(name)) and reader.buffered == 30
    reader.feed(event[30:])
    heartbeat = reader.next_item()
    assert isinstance(heartbeat, ei.Event) and heartbeat.headers["Event-Info"] == "System Ready"


def test_the_captures_hold_split_and_glued_events() -> None:
    """The reason for the three-ways feeding: a recv() with several events, and events split across recv()s."""
    glued = [c for c in captures.received("inbound/i2_events_plain.repr") if c.count(b"Content-Length") > 1]
    cut = [c for c in captures.received("inbound/i3_events_json.repr") if c.endswith(b"text/event-json\n\n")]
    assert len(glued) >= 20 and cut


def test_what_each_session_says() -> None:
    assert items("inbound/i1_auth_bad.repr") == (
        ei.AuthRequest(), ei.Reply("-ERR invalid"), ei.Disconnect(esl.DISCONNECT_NOTICE_BODY))
    assert [i for i in items("inbound/i1b_cmd_before_auth.repr") if isinstance(i, ei.Reply)] == [
        ei.Reply("-ERR command not found"), ei.Reply("-ERR command not found"), ei.Reply("+OK accepted"),
        ei.Reply("+OK bye")]
    filters = [i.text for i in items("inbound/i4_filter.repr") if isinstance(i, ei.Reply)]
    assert filters[2:5] == ["+OK filter added. [Event-Name]=[CHANNEL_HANGUP_COMPLETE]",
                            "+OK filter deleted. [Event-Name][CHANNEL_HANGUP_COMPLETE]",
                            "+OK no longer listening for events"]
    assert not ei.Reply("-ERR invalid").ok and ei.Reply("+OK accepted").ok


def test_hangup_events_per_session_and_format() -> None:
    assert len(events("inbound/i2_events_plain.repr")) == 24 and len(events("inbound/i4_filter.repr")) == 4
    assert len(events("inbound/i3_events_json.repr")) == 24
    assert {e.format for e in events("inbound/i3_events_json.repr")} == {"json"}
    heartbeats = events("inbound/i5_idle.repr", "HEARTBEAT")
    assert len(heartbeats) == 3 and heartbeats[0].headers["Event-Info"] == "System Ready"


def test_plain_values_are_decoded_and_json_values_are_not_encoded() -> None:
    plain = {e.headers["Unique-ID"][:8]: e.headers for e in events("inbound/i2_events_plain.repr")}
    assert plain["7c4ee9f8"]["Caller-Caller-ID-Number"] == "+15551000005"  # %2B on the wire
    assert plain["7c4ee9f8"]["Caller-Destination-Number"] == "1101"
    assert plain["7c4ee9f8"]["Caller-Channel-Answered-Time"] == "0"
    json_s5 = [e.headers for e in events("inbound/i3_events_json.repr")
               if e.headers["Call-Direction"] == "outbound" and e.headers["Caller-Destination-Number"] == "1101"]
    assert json_s5[0]["Caller-Caller-ID-Number"] == "+15551000005"
    assert json_s5[0]["Caller-Caller-ID-Name"] == "Customer 5005"


def test_json_and_plain_carry_the_same_headers_with_arrays_written_alike() -> None:
    """Same scenarios, other calls: the same header names, and arrays read the same in both formats."""
    plain, as_json = events("inbound/i2_events_plain.repr"), events("inbound/i3_events_json.repr")
    assert [e.headers["Hangup-Cause"] for e in plain] and sorted(
        (e.headers["Call-Direction"], e.headers["Hangup-Cause"]) for e in plain) == sorted(
        (e.headers["Call-Direction"], e.headers["Hangup-Cause"]) for e in as_json)
    assert set(plain[0].headers) - set(as_json[0].headers) <= {"Content-Length"}
    dp_plain = next(e.headers["variable_DP_MATCH"] for e in plain if "variable_DP_MATCH" in e.headers)
    dp_json = next(e.headers["variable_DP_MATCH"] for e in as_json if "variable_DP_MATCH" in e.headers)
    assert dp_plain.startswith("ARRAY::") and dp_json.startswith("ARRAY::")
    assert dp_json.split("|:")[0] == "ARRAY::" + dp_json.split("|:")[1]


def test_a_repeated_header_keeps_the_first_value_in_both_formats() -> None:
    raw = next(r for m, r in frames("inbound/i2_events_plain.repr") if b"CHANNEL_HANGUP_COMPLETE" in r[:120])
    assert raw.count(b"\nHangup-Cause: ") == 2  # FreeSWITCH really repeats it in HANGUP_COMPLETE
    body = b'{"Event-Name":"X","A":"first","A":"second"}'
    got = read([b"Content-Length: %d\nContent-Type: text/event-json\n\n" % len(body) + body])[0]
    assert isinstance(got, ei.Event) and got.headers["A"] == "first"


@pytest.mark.parametrize("name", SESSIONS)
def test_the_fake_side_encoders_rebuild_every_session_byte_for_byte(name: str) -> None:
    rebuilt = b""
    for message, raw in frames(name):
        item = ei.interpret(message)
        if isinstance(item, ei.AuthRequest):
            built = ei.auth_request()
        elif isinstance(item, ei.Reply):
            built = esl.command_reply(item.text)
        elif isinstance(item, ei.Event):
            built = (esl.event_plain(ei.plain_pairs(message.body)) if item.format == "plain"
                     else ei.event_json(ei.json_pairs(message.body)))
        elif isinstance(item, ei.Disconnect):
            built = ei.inbound_disconnect_notice()
        else:
            built = esl.api_response(item.body)
        assert built == raw
        rebuilt += built
    assert rebuilt == stream(name)


def test_an_encoded_newline_in_an_event_cannot_forge_the_caller_id() -> None:
    forged = [("Event-Name", "CHANNEL_HANGUP_COMPLETE"),
              ("variable_sip_user_agent", "x\nCaller-Caller-ID-Number: 5559999999"),
              ("Caller-Caller-ID-Number", "+15551000005")]
    for wire in (esl.event_plain(forged), ei.event_json(forged)):
        event = read([wire])[0]
        assert isinstance(event, ei.Event) and event.headers["Caller-Caller-ID-Number"] == "+15551000005"


# ---------------------------------------------------------------------------------------------------------------
# Commands: the builders reproduce every captured command of these kinds


def test_builders_reproduce_the_captured_commands() -> None:
    sent = [c for name in SESSIONS for c in captures.sent(name)]
    built = {
        b"auth ClueCon\n\n": ei.auth_command("ClueCon"),
        b"auth WrongPassword\n\n": ei.auth_command("WrongPassword"),
        b"event plain ALL\n\n": ei.event_command("plain", ["ALL"]),
        b"api status\n\n": ei.api_command("status"),
        b"event json CHANNEL_HANGUP_COMPLETE\n\n": ei.event_command("json", ["CHANNEL_HANGUP_COMPLETE"]),
        b"event plain HEARTBEAT\n\n": ei.event_command("plain", ["HEARTBEAT"]),
        b"event plain CHANNEL_HANGUP_COMPLETE\n\n": ei.event_command("plain", ["CHANNEL_HANGUP_COMPLETE"]),
        b"filter Event-Name CHANNEL_HANGUP_COMPLETE\n\n": ei.filter_command("Event-Name", "CHANNEL_HANGUP_COMPLETE"),
        b"filter delete Event-Name CHANNEL_HANGUP_COMPLETE\n\n":
            ei.filter_command("Event-Name", "CHANNEL_HANGUP_COMPLETE", delete=True),
        b"noevents\n\n": ei.noevents_command(),
        b"exit\n\n": esl.exit_command(),
    }
    assert all(wire == command for wire, command in built.items())
    long_event = next(c for c in sent if c.startswith(b"event plain CHANNEL_CREATE"))
    assert ei.event_command("plain", long_event[12:-2].decode().split(" ")) == long_event
    assert set(sent) <= set(built) | {long_event}


@pytest.mark.parametrize("bad", ["", "Clue Con", "ClueCon\nevent plain ALL", "x\x00", "\x7f"])
def test_auth_refuses_what_could_break_the_command(bad: str) -> None:
    with pytest.raises(ValueError, match="password"):
        ei.auth_command(bad)


def test_other_builders_refuse_injection() -> None:
    for call in (lambda: ei.event_command("xml", ["ALL"]), lambda: ei.event_command("plain", []),
                 lambda: ei.event_command("plain", ["CHANNEL_HANGUP\n\napi status"]),
                 lambda: ei.filter_command("Event-Name", "A B"), lambda: ei.filter_command("delete", "x"),
                 lambda: ei.filter_command("Event-Name", "x\n"), lambda: ei.api_command("status\n\nexit")):
        with pytest.raises(ValueError):
            call()


# ---------------------------------------------------------------------------------------------------------------
# Refusing what FreeSWITCH never sends; a refused message poisons the reader


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'{"Event-Name": 5}', b'{"A": "b"}',
                                  b'{"Event-Name": "X", "A": ["ok", 1]}', b'{"Event-Name": "X", "A": {"b": "c"}}'])
def test_bad_json_events_are_protocol_errors_and_poison_the_reader(body: bytes) -> None:
    reader = ei.InboundReader()
    reader.feed(b"Content-Length: %d\nContent-Type: text/event-json\n\n" % len(body) + body)
    with pytest.raises(ESLProtocolError):
        reader.next_item()
    with pytest.raises(ESLProtocolError):
        reader.feed(ei.auth_request())


def test_unknown_content_types_and_nameless_events_are_protocol_errors() -> None:
    for wire in (b"Content-Type: text/rude-rejection\n\n", esl.event_plain([("Core-UUID", "x")])):
        reader = ei.InboundReader()
        reader.feed(wire)
        with pytest.raises(ESLProtocolError):
            reader.next_item()


if given is not None:

    @settings(max_examples=50, deadline=None)
    @given(st.sampled_from(SESSIONS), st.lists(st.integers(min_value=1, max_value=20000), min_size=1, max_size=60))
    def test_capture_split_at_random_points_reads_the_same(name: str, cuts: list[int]) -> None:
        data, pieces = stream(name), []
        for size in cuts:
            pieces.append(data[:size])
            data = data[size:]
        pieces.append(data)
        assert read(pieces) == list(items(name))

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=2048), st.lists(st.integers(min_value=1, max_value=64), max_size=40))
    def test_random_bytes_raise_nothing_but_protocol_errors(data: bytes, cuts: list[int]) -> None:
        reader, rest = ei.InboundReader(max_buffer=1024), data
        try:
            for size in cuts + [len(rest)]:
                reader.feed(rest[:size])
                rest = rest[size:]
                while reader.next_item() is not None:
                    pass
        except ESLProtocolError:
            pass
