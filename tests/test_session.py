"""One session against FreeSWITCH's captured bytes: what the server sends, byte for byte, and when it stops."""

from __future__ import annotations

import logging

import gevent
import pytest
from gevent import socket

from fs_dynroute import esl
from fs_dynroute.decision import Decision, Result, RuleView
from fs_dynroute.fakeswitch import captures
from fs_dynroute.session import Channel, run_session

S20 = "multiset/S20_multiset_close.repr"
RULE = RuleView(id=1, name="Customer Routing", source="5550100", digits_match=10, no_match_target="5000 XML default",
                match_target=None)
MATCH = Decision(Result.MATCH, "1001 XML default", "5551111111", None, "route found")


def converse(rule: RuleView | None, reply: bytes | None = esl.command_reply("+OK")) -> tuple[str, bytes, bool]:
    """Run one session against S20's connect reply; answer its next command with ``reply`` (None: hang up).

    Returns the outcome, every byte the server sent, and whether it then closed on its own."""
    ours, theirs = socket.socketpair()
    seen: list[Channel] = []

    def router(channel: Channel, _deadline: float) -> tuple[RuleView | None, Decision | None]:
        seen.append(channel)
        return (rule, MATCH) if rule else (None, None)

    session = gevent.spawn(run_session, ours, router, 2.0)
    reader, raw = esl.CommandReader(), b""
    closed = False
    for answer in (captures.received(S20)[0], reply):
        while not closed and reader.next_command() is None:
            data = theirs.recv(65536)
            reader.feed(data)
            raw, closed = raw + data, not data
        if answer is None:
            theirs.close()
            return session.get(timeout=3), raw, False
        if not closed:
            theirs.sendall(answer)
    closed = closed or theirs.recv(65536) == b""
    theirs.close()
    assert seen and seen[0].caller_id == "+15551111111"
    return session.get(timeout=3), raw, closed


def test_a_decided_call_is_connect_one_multiset_then_close_as_captured_in_s20() -> None:
    outcome, sent, closed = converse(RULE)
    assert sent == b"".join(captures.sent(S20))  # byte for byte, target first
    assert outcome == "done" and closed  # closed after +OK, no exit


def test_a_refusal_sends_nothing_more_and_leaves_the_default(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fs_dynroute")
    outcome, sent, closed = converse(RULE, esl.command_reply("-ERR invalid session id [x]"))
    assert outcome.startswith("Refused: -ERR") and closed and sent == b"".join(captures.sent(S20))
    assert "dest=(dialplan default)" in caplog.records[-1].getMessage()


def test_a_value_holding_the_separator_is_an_error_and_the_default_stands(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fs_dynroute")
    outcome, sent, closed = converse(RuleView(**{**vars(RULE), "name": "Customer|dynroute_target=666"}))
    assert sent == esl.connect_command() and closed  # nothing after connect: the dialplan's default stands
    assert outcome.startswith("ValueError") and "dynroute_rule" in outcome
    line = caplog.records[-1].getMessage()
    assert "dest=(dialplan default)" in line and "outcome=ValueError" in line


def test_no_rule_sends_nothing_after_connect() -> None:
    outcome, sent, closed = converse(None)
    assert (outcome, sent, closed) == ("norule", esl.connect_command(), True)


def test_a_caller_gone_before_the_reply_is_logged_as_unconfirmed(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fs_dynroute")
    outcome, sent, _ = converse(RULE, None)
    assert outcome == "hangup after sending" and sent == b"".join(captures.sent(S20))
    assert "dest=(unconfirmed)" in caplog.records[-1].getMessage()
