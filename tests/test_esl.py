"""Proves the ESL codec against every byte FreeSWITCH sent in the captures, however TCP happens to chunk it."""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache

import pytest

from fs_dynroute import esl
from fs_dynroute.esl import (
    DISCONNECT_NOTICE_BODY,
    Command,
    CommandReader,
    ESLProtocolError,
    Message,
    MessageReader,
)
from fs_dynroute.fakeswitch import captures

try:
    from hypothesis import given, settings, strategies as st
except ImportError:  # pragma: no cover - hypothesis is optional
    given = None


ALL = captures.names("sync", "async", "multiset")
CAPTURE_LIMIT = 4 * 1024 * 1024  # whole captures fed at once; the default cap is for one call's live stream


def drain(reader: MessageReader | CommandReader) -> list:
    out = []
    while (item := reader.next_message()) is not None:
        out.append(item)
    return out


def read(chunks: Iterable[bytes], reader_type: type = MessageReader) -> list:
    """Feed chunks one by one, collecting whole messages; the stream must end on a message boundary."""
    reader = reader_type(max_buffer=CAPTURE_LIMIT)
    out = []
    for chunk in chunks:
        reader.feed(chunk)
        out += drain(reader)
    assert reader.buffered == 0, "bytes left over: a message was cut or mis-framed"
    return out


def one_byte_at_a_time(data: bytes) -> Iterable[bytes]:
    return (data[i : i + 1] for i in range(len(data)))


def stream(name: str) -> bytes:
    return b"".join(captures.received(name))


@cache
def messages(name: str) -> tuple[Message, ...]:
    return tuple(read(captures.received(name)))


def connect_reply(name: str) -> Message:
    return next(m for m in messages(name) if m.headers.get("Event-Name") == "CHANNEL_DATA")


def split_raw(data: bytes) -> list[tuple[Message, bytes]]:
    """Each message with the exact bytes it came from (block, blank line, body)."""
    out, rest = [], data
    for message in read([data]):
        size = rest.index(b"\n\n") + 2 + len(message.body)
        out.append((message, rest[:size]))
        rest = rest[size:]
    return out


# ---------------------------------------------------------------------------------------------------------------
# Framing: every capture, three ways


def test_there_are_captures_of_both_modes() -> None:
    assert len([n for n in ALL if n.startswith("sync/")]) > 30 and len([n for n in ALL if n.startswith("async/")]) > 10


@pytest.mark.parametrize("name", ALL)
def test_capture_parses_the_same_whole_chunked_or_byte_by_byte(name: str) -> None:
    as_captured = read(captures.received(name))
    assert as_captured
    assert read([stream(name)]) == as_captured
    assert read(one_byte_at_a_time(stream(name))) == as_captured


@pytest.mark.parametrize("name", ALL)
def test_trailing_bytes_of_a_next_message_wait_for_more(name: str) -> None:
    expected = list(messages(name))
    data = stream(name)
    first = len(split_raw(data)[0][1])
    for tail, rest, completed in [
        (data[:50], data[50:first], expected[0]),  # a header block cut short
        (b"Content-Length: 10\nContent-Type: text/event-plain\n\nabc", b"defghij", None),  # a body cut short
        (b"Content-Type: command/reply\nReply-Text: +OK\n", b"\n", None),  # cut just before the blank line
    ]:
        reader = MessageReader(max_buffer=CAPTURE_LIMIT)
        reader.feed(data + tail)
        assert drain(reader) == expected
        assert reader.next_message() is None and reader.buffered == len(tail)
        reader.feed(rest)
        message = reader.next_message()
        assert message is not None and reader.buffered == 0
        if completed is not None:
            assert message == completed
        elif tail.startswith(b"Content-Length"):
            assert message.body == b"abcdefghij"
        else:
            assert message.headers == {"Content-Type": "command/reply", "Reply-Text": "+OK"}


def test_freeswitch_never_sends_cr_so_a_cr_in_a_header_block_is_refused() -> None:
    assert not any(b"\r" in stream(name) for name in ALL)
    reader = MessageReader()
    reader.feed(b"Content-Type: command/reply\r\nReply-Text: +OK\r\n\r\n\n")
    with pytest.raises(ESLProtocolError, match="CR"):
        reader.next_message()


def test_several_messages_in_one_recv_are_all_returned() -> None:
    chunk = next(c for c in captures.received("sync/S18.repr") if b"+OK bye" in c)
    got = read([chunk])
    assert [m.content_type for m in got] == ["command/reply", "text/disconnect-notice"]


# ---------------------------------------------------------------------------------------------------------------
# What the messages say


def test_s18_connect_reply_decodes_the_routing_fields() -> None:
    reply = connect_reply("sync/S18.repr")
    headers = reply.headers
    assert reply.content_type == "command/reply" and reply.body == b""
    assert next(iter(headers)) == "Event-Name"
    assert list(headers)[-4:] == ["Content-Type", "Reply-Text", "Socket-Mode", "Control"]
    assert headers["Caller-Caller-ID-Number"] == "+15551111111"
    assert headers["variable_dynroute_target"] == "9999 XML default"
    assert headers["Socket-Mode"] == "static" and headers["Control"] == "single-channel"
    assert headers["Reply-Text"] == "+OK\n"  # "+" decoded from %2B, never turned into a space
    assert headers["Event-Date-GMT"] == "Thu, 26 Nov 2026 05:36:12 GMT"
    assert headers["variable_current_application_data"] == "127.0.0.1:8084|127.0.0.1:8085"
    assert 110 <= len(headers) <= 165


@pytest.mark.parametrize(
    ("name", "number"),
    [
        ("async/e1_cid_anonymous.repr", "anonymous"),
        ("async/e2_cid_empty.repr", "0000000000"),
        ("async/e3_cid_15552222222.repr", "15552222222"),
        ("async/e4_cid_plus1_paren_space.repr", "+1 (555) 222-2222"),
        ("async/e5_cid_not_set.repr", "0000000000"),
        ("async/g1_sip_transfer.repr", "+15551111111"),
        ("async/g2_sip_cid_anonymous.repr", "anonymous"),
        ("async/g3_sip_cid_empty.repr", "0000000000"),
        ("async/g4_sip_cid_plus1_paren_space.repr", "+1 (555) 222-2222"),
        ("async/g5_sip_cid_15552222222.repr", "15552222222"),
    ],
)
def test_every_caller_id_shape_decodes_to_what_the_caller_sent(name: str, number: str) -> None:
    headers = connect_reply(name).headers
    for field in ("Caller-Caller-ID-Number", "Channel-Caller-ID-Number", "Caller-ANI", "Caller-Orig-Caller-ID-Number"):
        assert headers[field] == number
    if name.startswith(("async/e2", "async/e5")):
        assert "variable_origination_caller_id_number" not in headers  # FreeSWITCH never adds an empty header


def test_api_response_body_is_exactly_content_length_bytes_with_no_blank_line_after() -> None:
    got = list(messages("async/b_api_uuid_transfer.repr"))
    index = next(i for i, m in enumerate(got) if m.content_type == "api/response")
    assert got[index].body == b"+OK\n" and got[index].headers["Content-Length"] == "4"
    assert got[index + 1].content_type == "text/event-plain"
    status = list(messages("sync/S12f.repr"))
    index = next(i for i, m in enumerate(status) if m.content_type == "api/response")
    assert len(status[index].body) == 378 and status[index].body.startswith(b"UP 0 years")
    assert status[index + 1].headers["Reply-Text"] == "9999 XML default"


def test_disconnect_notice_has_the_67_byte_body_and_reproduces_byte_for_byte() -> None:
    seen = 0
    for name in ALL:
        for message, raw in split_raw(stream(name)):
            if message.headers.get("Content-Disposition") == "disconnect":
                assert message.content_type == "text/disconnect-notice"
                assert message.body == DISCONNECT_NOTICE_BODY and len(message.body) == 67
                assert raw == esl.disconnect_notice(message.headers["Controlled-Session-UUID"])
                seen += 1
    assert seen > 40
    notice = messages("sync/S18.repr")[-1]
    assert notice.headers["Controlled-Session-UUID"] == connect_reply("sync/S18.repr").headers["Unique-ID"]


def test_linger_notice_has_an_empty_body_and_raw_unencoded_values() -> None:
    notices = [(m, raw) for m, raw in split_raw(stream("async/g4_sip_cid_plus1_paren_space.repr"))
               if m.headers.get("Content-Disposition") == "linger"]
    assert len(notices) == 1
    message, raw = notices[0]
    assert message.body == b"" and message.headers["Content-Length"] == "0"
    assert message.headers["Channel-Name"] == "sofia/internal/+1 (555) 222-2222@127.0.0.1"  # not URL-encoded
    assert raw == esl.linger_notice(message.headers["Controlled-Session-UUID"], message.headers["Channel-Name"])


def test_events_put_content_length_first_and_carry_a_header_block_body() -> None:
    events = [m for name in ALL for m in messages(name) if m.content_type == "text/event-plain"]
    assert len(events) > 100
    for event in events:
        assert next(iter(event.headers)) == "Content-Length"
        assert len(event.body) == int(event.headers["Content-Length"]) and event.body.endswith(b"\n\n")
        assert event.body_headers()["Event-Name"].startswith("CHANNEL_")
    park = next(m for m in messages("async/a_transfer.repr") if m.content_type == "text/event-plain")
    assert park.body_headers()["Event-Name"] == "CHANNEL_PARK"
    assert park.body_headers()["Caller-Caller-ID-Number"] == "+15551111111"


def test_body_headers_of_a_message_without_body_is_empty() -> None:
    assert Message({"Content-Type": "command/reply"}).body_headers() == {}


# ---------------------------------------------------------------------------------------------------------------
# Decoding rules


FORGED = b"variable_sip_user_agent: x%0ACaller-Caller-ID-Number%3A%205559999999\n"


@pytest.mark.parametrize("where", ["before", "after"])
def test_an_encoded_newline_cannot_forge_the_caller_id(where: str) -> None:
    block = stream("sync/S18.repr").split(b"\n\n", 1)[0] + b"\n\n"
    real = b"Caller-Caller-ID-Number: "
    at = block.index(real) if where == "before" else block.index(b"Content-Type: ")
    forged = block[:at] + FORGED + block[at:]
    headers = read([forged])[0].headers
    assert headers["Caller-Caller-ID-Number"] == "+15551111111"
    assert headers["variable_sip_user_agent"] == "x\nCaller-Caller-ID-Number: 5559999999"
    # what decoding the whole block first (greenswitch 0.0.19) would have believed:
    naive = [line.partition(": ") for line in esl.decode_value(forged[:-2].decode()).split("\n")]
    fooled = next(v for k, _, v in naive if k == "Caller-Caller-ID-Number")
    assert fooled == ("5559999999" if where == "before" else "+15551111111")


def test_duplicate_header_names_keep_the_first_occurrence() -> None:
    got = read([b"Content-Type: command/reply\nReply-Text: +OK\nReply-Text: -ERR no\n\n"])[0]
    assert got.headers == {"Content-Type": "command/reply", "Reply-Text": "+OK"}


def test_values_decode_like_unquote_not_unquote_plus() -> None:
    got = read([b"A: +OK%20x\nB: 100%25\nC: %E6%9D%9C\nD: 50%zz\nE:   spaced\nF:\n\n"])[0].headers
    assert got == {"A": "+OK x", "B": "100%", "C": "\u675c", "D": "50%zz", "E": "spaced", "F": ""}


def test_header_names_are_never_decoded() -> None:
    assert read([b"X%41: 1\n\n"])[0].headers == {"X%41": "1"}


# ---------------------------------------------------------------------------------------------------------------
# Refusing what FreeSWITCH never sends


def test_buffer_cap_turns_a_runaway_header_block_into_a_protocol_error() -> None:
    reader = MessageReader(max_buffer=1024)
    reader.feed(b"A: " + b"x" * 1000)
    with pytest.raises(ESLProtocolError, match="buffered"):
        reader.feed(b"y" * 100)
    with pytest.raises(ESLProtocolError):  # poisoned: no resync on garbage
        reader.next_message()


def test_buffer_cap_counts_a_parsed_head_waiting_for_its_body() -> None:
    reader = MessageReader(max_buffer=100)
    reader.feed(b"Content-Length: 60\nX: " + b"y" * 40 + b"\n\n")
    assert reader.next_message() is None
    with pytest.raises(ESLProtocolError):
        reader.feed(b"z" * 40)


def test_default_cap_is_256_kib() -> None:
    reader = MessageReader()
    reader.feed(b"x" * (256 * 1024))
    with pytest.raises(ESLProtocolError):
        reader.feed(b"x")


@pytest.mark.parametrize(
    "value", [b"-1", b"abc", b"1e3", b"+5", b"0x10", b"", b"1 2", "\u0661".encode(), b"999999999999999"]
)
def test_invalid_content_length_is_a_protocol_error(value: bytes) -> None:
    reader = MessageReader()
    reader.feed(b"Content-Length: " + value + b"\n\n")
    with pytest.raises(ESLProtocolError, match="Content-Length"):
        reader.next_message()


def test_content_length_beyond_the_cap_is_a_protocol_error() -> None:
    reader = MessageReader(max_buffer=1000)
    reader.feed(b"Content-Length: 1001\n\n")
    with pytest.raises(ESLProtocolError, match="exceeds"):
        reader.next_message()


@pytest.mark.parametrize("block", [b"\n\n", b"A: 1\n\nB: 2\n\n\n\n", b"A: 1\r\n\n"])
def test_malformed_blocks_are_protocol_errors(block: bytes) -> None:
    reader = MessageReader()
    reader.feed(block)
    with pytest.raises(ESLProtocolError):
        drain(reader)


@pytest.mark.parametrize("bad", [b"no colon here", b"Caller-Caller-ID-Number 5559999999", b": nameless"])
def test_a_malformed_line_is_refused_when_the_block_is_listed_and_never_read_as_a_value(bad: bytes) -> None:
    block = stream("sync/S18.repr").split(b"\n\n", 1)[0]
    reader = MessageReader()
    reader.feed(block.replace(b"\nContent-Type: ", b"\n" + bad + b"\nContent-Type: ", 1) + b"\n\n")
    headers = reader.next_message().headers
    assert headers["Caller-Caller-ID-Number"] == "+15551111111" and headers["Reply-Text"] == "+OK\n"
    with pytest.raises(ESLProtocolError, match="malformed header line"):
        dict(headers)


# ---------------------------------------------------------------------------------------------------------------
# Commands we send: the builders reproduce the captured bytes


def test_builders_reproduce_every_captured_command_they_can_express() -> None:
    checked = 0
    for name in ALL:
        for raw in captures.sent(name):
            commands = read([raw], CommandReader)
            if len(commands) != 1:
                continue
            command = commands[0]
            if command.name in ("connect", "exit") and not command.args:
                built = esl.connect_command() if command.name == "connect" else esl.exit_command()
            elif command.name == "sendmsg" and list(command.headers) == [
                "call-command", "execute-app-name", "execute-app-arg"
            ]:
                built = esl.sendmsg_execute(command.headers["execute-app-name"], command.headers["execute-app-arg"])
            else:
                continue
            assert built == raw
            checked += 1
    assert checked > 100


def test_s18_set_and_exit_are_byte_identical() -> None:
    sent = captures.sent("sync/S18.repr")
    assert sent == [esl.connect_command(), esl.set_variable("dynroute_target", "1001 XML default"), esl.exit_command()]
    assert esl.set_variable("dynroute_target", "") == captures.sent("sync/S19b.repr")[1]
    assert esl.sendmsg_execute("transfer", "1001 XML default") == captures.sent("sync/S6.repr")[1]


def test_multiset_is_byte_identical_to_the_captured_one_target_first() -> None:
    variables = (("dynroute_target", "1001 XML default"), ("dynroute_result", "match"),
                 ("dynroute_rule", "Customer Routing"), ("dynroute_key", "5551111111"))
    for name in ("multiset/S20_multiset_close.repr", "multiset/S20b_multiset_exit.repr"):
        assert captures.sent(name)[:2] == [esl.connect_command(), esl.multiset(variables)]
    assert captures.sent("multiset/S20b_multiset_exit.repr")[2] == esl.exit_command()
    assert esl.multiset([("dynroute_key", "")]).endswith(b"execute-app-arg: ^^|dynroute_key=\n\n")  # unsets


@pytest.mark.parametrize("value", ["1001|XML default", "Bob's rule", "a\\b", "trailing ", "a|", "|"])
def test_multiset_refuses_a_value_freeswitch_would_split_or_alter_naming_the_variable(value: str) -> None:
    assert esl.MULTISET_SEPARATOR == "|"
    with pytest.raises(ValueError, match="dynroute_rule"):
        esl.multiset([("dynroute_target", "1001 XML default"), ("dynroute_rule", value)])


@pytest.mark.parametrize("name", ["", "a b", "a=b", "a|b", "\u00e4"])
def test_multiset_refuses_names_outside_word_characters(name: str) -> None:
    with pytest.raises(ValueError, match="name"):
        esl.multiset([(name, "1")])


@pytest.mark.parametrize("bad", ["\n", "\r", "\x00", "\x1b", "\x7f", "\x85", "\x9f"])
def test_builders_refuse_control_characters_naming_the_field(bad: str) -> None:
    with pytest.raises(ValueError, match="execute-app-arg"):
        esl.sendmsg_execute("set", f"a=1{bad}exit")
    with pytest.raises(ValueError, match="value"):
        esl.set_variable("dynroute_target", f"1001{bad}XML default")
    with pytest.raises(ValueError, match="execute-app-name"):
        esl.sendmsg_execute(f"set{bad}", "a=1")
    with pytest.raises(ValueError, match="execute-app-arg"):
        esl.multiset([("dynroute_target", f"1001{bad}XML default")])


@pytest.mark.parametrize("name", ["", "a b", "a=b", "dynroute-target", "\u00e4", "a\n"])
def test_set_variable_refuses_names_outside_word_characters(name: str) -> None:
    with pytest.raises(ValueError, match="name"):
        esl.set_variable(name, "1")


def test_sendmsg_refuses_a_leading_space_freeswitch_would_strip() -> None:
    with pytest.raises(ValueError, match="space"):
        esl.sendmsg_execute("set", " a=1")


# ---------------------------------------------------------------------------------------------------------------
# Reading our commands (the fake's side)


def test_command_reader_splits_name_args_and_headers() -> None:
    commands = read(captures.sent("sync/S12s.repr"), CommandReader)
    assert [(c.name, c.args) for c in commands] == [
        ("connect", ""), ("myevents", ""), ("linger", ""), ("nolinger", ""), ("linger", "5"),
        ("event", "plain CHANNEL_HANGUP"), ("api", "status"), ("getvar", "dynroute_target"), ("sendmsg", ""),
        ("getvar", "dynroute_target"), ("divert_events", "on"), ("exit", ""),
    ]
    assert commands[8].headers == {
        "call-command": "execute", "execute-app-name": "set", "execute-app-arg": "dynroute_target=1001 XML default",
    }
    assert commands[4].line == "linger 5"


@pytest.mark.parametrize("name", [n for n in ALL if captures.sent(n)])
def test_command_streams_parse_the_same_however_chunked(name: str) -> None:
    data = b"".join(captures.sent(name))
    as_sent = read(captures.sent(name), CommandReader)
    assert read([data], CommandReader) == as_sent == read(one_byte_at_a_time(data), CommandReader)


def test_command_reader_skips_stray_newlines_rejects_cr_and_reads_bodies() -> None:
    reader = CommandReader()
    reader.feed(b"\n\nexit\n\nsendmsg\ncontent-type: text/plain\ncontent-length: 5\n\nhello")
    body_headers = {"content-type": "text/plain", "content-length": "5"}
    assert drain(reader) == [Command("exit", "", {}), Command("sendmsg", "", body_headers, b"hello")]
    reader.feed(b"exit\r\n\r\n\n")
    with pytest.raises(ESLProtocolError, match="CR"):
        reader.next_command()


def test_command_reader_has_the_same_cap() -> None:
    reader = CommandReader(max_buffer=10)
    with pytest.raises(ESLProtocolError):
        reader.feed(b"sendmsg\nexecute-app-arg: long")


# ---------------------------------------------------------------------------------------------------------------
# FreeSWITCH's encoders (the fake's side)


@pytest.mark.parametrize(
    ("plain", "wire"),
    [
        ("+", "%2B"), (" ", "%20"), (":", "%3A"), ("@", "%40"), ("\n", "%0A"), ("\r", "%0D"), ('"', "%22"),
        ("<", "%3C"), (">", "%3E"), ("|", "%7C"), ("=", "%3D"), (";", "%3B"), ("[", "%5B"), ("]", "%5D"),
        (",()-/~._!*'$", ",()-/~._!*'$"), ("\x7f", "%7F"), ("\t", "%09"), ("\u00e9", "%C3%A9"),
        ("+1 (555) 222-2222", "%2B1%20(555)%20222-2222"),
        # FreeSWITCH's own unit test (tests/unit/switch_utils.c):
        ("&bry\u00e4n#!\u675c\u91d1\u623f", "%26bry%C3%A4n%23!%E6%9D%9C%E9%87%91%E6%88%BF"),
        # switch_url_encode does not double-encode: a '%' with two UPPERCASE hex digits after it is copied through
        ("50% off", "50%25%20off"), ("50%20off", "50%20off"), ("x%22y", "x%22y"),
        ("abc%2", "abc%252"), ("%2a", "%252a"),
        ("cut\x00here", "cut"),  # a C string ends at NUL
        ("", ""),
    ],
)
def test_url_encode_matches_switch_url_encode(plain: str, wire: str) -> None:
    assert esl.url_encode(plain) == wire


def test_url_encode_shortcut_for_safe_values_agrees_with_the_byte_loop() -> None:
    for code in [*range(0x300), 0x2028, 0x675C, 0x1F600]:
        char = chr(code)
        escaped = esl.url_encode(f"a{char}b") != f"a{char}b"
        assert escaped == (code < 0x20 or code > 0x7E or char in '\r\n #%&+:;<=>?@[\\]^`{|}"'), hex(code)


def test_url_encode_reproduces_every_captured_value() -> None:
    checked = 0
    for name in ALL:
        data = stream(name)
        blocks = [data.split(b"\n\n", 1)[0]] if data.startswith(b"Event-Name: CHANNEL_DATA") else []
        blocks += [m.body.split(b"\n\n", 1)[0] for m in messages(name) if m.content_type == "text/event-plain"]
        for block in blocks:
            for line in block.split(b"\n"):
                raw = line.split(b": ", 1)[1]
                assert esl.url_encode(esl.decode_value(raw.decode())).encode() == raw, line
                checked += 1
    assert checked > 25000


def test_encode_headers_round_trips_and_writes_undef_for_empty() -> None:
    headers = [
        ("Caller-Caller-ID-Number", "+15551111111"),
        ("variable_sip_user_agent", "x\nCaller-Caller-ID-Number: 1"),
        ("variable_empty", ""),
        ("Reply-Text", "+OK\n"),
    ]
    data = esl.encode_headers(headers)
    assert data.endswith(b"Reply-Text: %2BOK%0A\n\n") and b"variable_empty: _undef_\n" in data
    got = read([data])[0].headers
    assert got == {**dict(headers), "variable_empty": "_undef_"}
    with pytest.raises(ValueError):
        esl.encode_headers([("Bad: name", "1")])


def test_replies_and_events_built_for_the_fake_parse_back() -> None:
    event = esl.event_plain([("Event-Name", "CHANNEL_PARK"), ("A", "b c")])
    got = read([esl.command_reply("+OK") + esl.api_response(b"+OK\n") + event])
    assert got[0].headers == {"Content-Type": "command/reply", "Reply-Text": "+OK"}
    assert got[1].body == b"+OK\n"
    assert got[2].body_headers() == {"Event-Name": "CHANNEL_PARK", "A": "b c"}
    assert esl.command_reply("+OK bye") == b"Content-Type: command/reply\nReply-Text: +OK bye\n\n"
    with pytest.raises(ValueError):
        esl.command_reply("+OK\nForged: 1")


# ---------------------------------------------------------------------------------------------------------------
# Fuzz

if given is not None:

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=2048), st.lists(st.integers(min_value=1, max_value=64), max_size=40))
    def test_random_bytes_raise_nothing_but_protocol_errors(data: bytes, cuts: list[int]) -> None:
        for reader_type in (MessageReader, CommandReader):
            reader = reader_type(max_buffer=1024)
            rest = data
            try:
                for size in cuts + [len(rest)]:
                    reader.feed(rest[:size])
                    rest = rest[size:]
                    drain(reader)
            except ESLProtocolError:
                pass

    @settings(max_examples=300, deadline=None)
    @given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200))
    def test_url_encode_round_trips_text_without_existing_escapes(text: str) -> None:
        if "\x00" in text or re.search("%[0-9A-F]{2}", text):
            return  # the two documented non-injective cases (C string; switch_url_encode's no-double-encode rule)
        encoded = esl.url_encode(text)
        assert encoded.isascii() and "\n" not in encoded and ": " not in encoded
        assert esl.decode_value(encoded) == text
        assert read([esl.encode_headers([("V", text)])])[0].headers["V"] == (text or "_undef_")

    @settings(max_examples=50, deadline=None)
    @given(st.sampled_from(ALL), st.lists(st.integers(min_value=1, max_value=5000), min_size=1, max_size=60))
    def test_capture_split_at_random_points_parses_the_same(name: str, cuts: list[int]) -> None:
        data, pieces = stream(name), []
        for size in cuts:
            pieces.append(data[:size])
            data = data[size:]
        pieces.append(data)
        assert read(pieces) == list(messages(name))
