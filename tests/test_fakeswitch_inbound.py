"""The fake event socket answers as the inbound captures show, byte for byte where the capture defines the bytes."""

from __future__ import annotations

from collections.abc import Iterator

import gevent
import pytest
from gevent import socket

from fs_dynroute import esl_inbound as ei
from fs_dynroute.fakeswitch import captures
from fs_dynroute.fakeswitch.inbound import SCENARIOS, InboundSwitch, bridged_leg, captured_hangups, variant


@pytest.fixture
def switch() -> Iterator[InboundSwitch]:
    fake = InboundSwitch(heartbeat_interval=0.2).start()
    yield fake
    fake.stop()


def connect(switch: InboundSwitch) -> socket.socket:
    sock = socket.create_connection(switch.address, timeout=5)
    return sock


def receive(sock: socket.socket, size: int) -> bytes:
    data = b""
    with gevent.Timeout(5):
        while len(data) < size:
            chunk = sock.recv(size - len(data))
            if not chunk:
                break
            data += chunk
    return data


def read_items(sock: socket.socket, count: int) -> list[ei.Item]:
    """Exactly ``count`` messages (and nothing after them so far)."""
    reader, out = ei.InboundReader(), []
    with gevent.Timeout(5):
        while len(out) < count:
            reader.feed(sock.recv(65536))
            while (item := reader.next_item()) is not None:
                out.append(item)
    assert len(out) == count and reader.buffered == 0
    return out


def items_of(data: bytes) -> list[ei.Item]:
    reader, out = ei.InboundReader(max_buffer=4 * 1024 * 1024), []
    reader.feed(data)
    while (item := reader.next_item()) is not None:
        out.append(item)
    return out


def wait_for(condition, timeout: float = 5.0) -> None:
    with gevent.Timeout(timeout):
        while not condition():
            gevent.sleep(0.01)


@pytest.mark.parametrize("name", ["inbound/i1_auth_bad.repr", "inbound/i1b_cmd_before_auth.repr",
                                  "inbound/i2_events_plain.repr", "inbound/i3_events_json.repr",
                                  "inbound/i4_filter.repr"])
def test_a_capture_replayed_against_the_fake_gets_the_captured_bytes(switch: InboundSwitch, name: str) -> None:
    """Our side's commands from the capture, in order; the fake's answers, byte for byte (events as recorded)."""
    sock = connect(switch)
    got, expected, replayed = b"", b"", False
    for direction, _, data in captures.load(name):
        if direction == captures.SENT:
            got += receive(sock, len(expected) - len(got))
            sock.sendall(data)
        else:
            if data.startswith(b"Content-Length: ") and not replayed:
                got += receive(sock, len(expected) - len(got))
                wait_for(lambda: switch.subscribed())
                assert switch.replay(name) == 1
                replayed = True
            expected += data
    got += receive(sock, len(expected) - len(got) + 1)  # and then EOF: nothing more
    assert got == expected
    sock.close()


def test_a_wrong_password_gets_the_error_and_the_notice_in_one_send_then_eof(switch: InboundSwitch) -> None:
    sock = connect(switch)
    assert receive(sock, 28) == ei.auth_request()
    sock.sendall(ei.auth_command("WrongPassword"))
    assert sock.recv(4096) == captures.received("inbound/i1_auth_bad.repr")[1]
    assert receive(sock, 1) == b""


def test_heartbeats_come_only_when_subscribed_and_pass_the_filters(switch: InboundSwitch) -> None:
    sock = connect(switch)
    sock.sendall(ei.auth_command("ClueCon") + ei.event_command("plain", ["CHANNEL_HANGUP_COMPLETE"]))
    assert [type(i) for i in read_items(sock, 3)] == [ei.AuthRequest, ei.Reply, ei.Reply]
    sock.settimeout(0.5)
    with pytest.raises(socket.timeout):
        sock.recv(1)  # subscribed, but not to HEARTBEAT: nothing (i5's first 30 s)
    sock.sendall(ei.event_command("plain", ["HEARTBEAT"]) + ei.filter_command("Event-Name", "HEARTBEAT"))
    sock.settimeout(5)
    data = b""
    while len([i for i in items_of(data) if isinstance(i, ei.Event)]) < 2:
        data += sock.recv(65536)
    beats = [i for i in items_of(data) if isinstance(i, ei.Event)]
    assert {b.name for b in beats} == {"HEARTBEAT"} and beats[0].headers["Event-Info"] == "System Ready"
    assert beats[0].headers["Event-Sequence"] != beats[1].headers["Event-Sequence"]


def test_captured_hangups_are_the_four_legs_of_six_scenarios_in_both_formats() -> None:
    for fmt in ("plain", "json"):
        hangups = captured_hangups(fmt)
        assert list(hangups) == list(SCENARIOS) and all(len(legs) == 4 for legs in hangups.values())
    assert bridged_leg("s5").get("Caller-Caller-ID-Number") == "+15551000005"
    assert bridged_leg("s5", "json").get("Hangup-Cause") == "NO_ANSWER"
    assert [bridged_leg(s).get("Caller-Channel-Answered-Time") != "0" for s in SCENARIOS] == [
        True, False, False, False, False, True]


@pytest.mark.parametrize("fmt", ["plain", "json"])
@pytest.mark.parametrize("chunking", ["glued", "each", "split"])
def test_deliver_sends_what_the_subscription_and_filter_let_through(switch: InboundSwitch, fmt: str,
                                                                    chunking: str) -> None:
    sock = connect(switch)
    sock.sendall(ei.auth_command("ClueCon") + ei.event_command(fmt, ["ALL"])
                 + ei.filter_command("Call-Direction", "outbound"))
    assert read_items(sock, 4)[3] == ei.Reply("+OK filter added. [Call-Direction]=[outbound]")
    events = [e for s in SCENARIOS for e in captured_hangups(fmt)[s]]
    assert switch.deliver(events, chunking, split=777) == 1
    outbound = [e for e in events if e.get("Call-Direction") == "outbound"]
    data = receive(sock, sum(len(e.encode(fmt)) for e in outbound))
    assert data == b"".join(e.encode(fmt) for e in outbound)
    got = items_of(data)
    assert len(got) == 12 and {i.format for i in got} == {fmt}  # type: ignore[union-attr]


def test_a_variant_is_a_new_call_in_the_captured_shape() -> None:
    b = bridged_leg("s2")
    new = variant(b, {b.get("Unique-ID"): "00000000-0000-4000-8000-000000000001", "5551000002": "5557654321"})
    assert new.get("Unique-ID") == "00000000-0000-4000-8000-000000000001"
    assert new.get("Caller-Destination-Number") == "5557654321" and len(new.pairs) == len(b.pairs)
    event = items_of(new.encode("plain"))[0]
    assert isinstance(event, ei.Event) and event.headers["Hangup-Cause"] == "NO_ANSWER"


def test_drop_closes_every_connection_without_a_notice(switch: InboundSwitch) -> None:
    sock = connect(switch)
    sock.sendall(ei.auth_command("ClueCon"))
    assert read_items(sock, 2)[1] == ei.Reply("+OK accepted")
    switch.drop()
    assert receive(sock, 1) == b""
