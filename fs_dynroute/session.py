"""One outbound-socket session: FreeSWITCH connects, we read the channel, decide, set everything at once, close.

Two round trips per call: ``connect`` (its reply is the channel data), then ONE ``multiset`` carrying
``dynroute_target`` first and the CDR variables after it. In SYNC mode the application has run when its
``+OK`` comes back, and closing the socket ends the ``socket`` application: the dialplan goes on to
``transfer ${dynroute_target}`` (captures multiset/S20: right target every time). ``exit`` would add a third
round trip (``+OK bye`` and a disconnect notice) and change nothing for the call (S20b).

Every way this can fail (the caller hangs up, the peer resets, the store is slow, FreeSWITCH refuses, our
own bug) ends with the socket closed and nothing more sent, so the dialplan's default (the No Match
Destination, set before ``socket``) stands. The whole session runs under one hard deadline:
FreeSWITCH waits forever after ``connect``, so a stalled session would be a silent caller.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import gevent
from gevent import socket

from fs_dynroute import metrics
from fs_dynroute.decision import Decision, RuleView
from fs_dynroute.destinations import CONTROL
from fs_dynroute.esl import ESLProtocolError, Message, MessageReader, connect_command, multiset

log = logging.getLogger(__name__)

RECV_SIZE = 65536
_NOT_REPLIES = ("text/event-", "log/")


@dataclass(frozen=True)
class Channel:
    """What the call path needs from FreeSWITCH's channel data (values already URL-decoded)."""

    uuid: str
    caller_id: str
    destination_number: str
    rule_name: str | None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> Channel:
        return cls(uuid=headers.get("Unique-ID", ""), caller_id=headers.get("Caller-Caller-ID-Number", ""),
                   destination_number=headers.get("Caller-Destination-Number", ""),
                   rule_name=headers.get("variable_dynroute_rule") or None)


# (channel, monotonic deadline) -> (rule or None when no rule serves the call, its decision).
# Called in the session's greenlet: whatever blocks in it must yield to gevent (the store's threads do).
Router = Callable[[Channel, float], "tuple[RuleView | None, Decision | None]"]


class CallerGone(Exception):
    """FreeSWITCH said the caller left (disconnect notice or EOF): nothing more to say."""


class Refused(Exception):
    """FreeSWITCH answered a command with something other than +OK."""


class Conversation:
    """Blocking request/reply over one socket with the sans-IO reader underneath."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = MessageReader()

    def receive(self) -> Message:
        """The next reply; events (plain, JSON, XML) and log lines are skipped, never parsed or fatal."""
        while True:
            message = self.reader.next_message()
            if message is not None:
                kind = message.content_type
                if kind == "text/disconnect-notice":
                    raise CallerGone("disconnect notice")
                if not kind.startswith(_NOT_REPLIES):
                    return message
                continue
            data = self.sock.recv(RECV_SIZE)
            if not data:
                raise CallerGone("EOF")
            self.reader.feed(data)

    def send(self, data: bytes) -> None:
        """Write all of ``data``. Not gevent's sendall: it asks the kernel for the send buffer size on every
        call, a system call that cost 15% of the server's time for commands of a few hundred bytes."""
        view = memoryview(data)
        while view:
            view = view[self.sock.send(view):]

    def command(self, data: bytes) -> Message:
        """Send one command and wait for its reply (never pipeline: FreeSWITCH drops pipelined SYNC commands)."""
        self.send(data)
        reply = self.receive()
        if not reply.headers.get("Reply-Text", "").startswith("+OK"):
            raise Refused(reply.headers.get("Reply-Text", reply.content_type))
        return reply


def run_session(sock: socket.socket, router: Router, timeout: float) -> str:
    """Serve one call on ``sock`` (closing it); returns the outcome word logged for the call.

    ``done``: FreeSWITCH confirmed the variables. ``... after sending``: the command went out but no reply came
    (FreeSWITCH may or may not have run it). Anything else: nothing was set and the dialplan default stands.
    """
    started = time.monotonic()
    channel: Channel | None = None
    rule: RuleView | None = None
    decision: Decision | None = None
    outcome = "default"
    sent = False
    deciding = 0.0  # seconds from the channel data to the decision
    try:
        with gevent.Timeout(timeout):
            talk = Conversation(sock)
            talk.send(connect_command())
            channel = Channel.from_headers(talk.receive().headers)
            asked = time.monotonic()
            rule, decision = router(channel, started + timeout)
            deciding = time.monotonic() - asked
            if rule is None or decision is None:
                outcome = "norule"
            else:
                command = multiset(call_variables(rule, decision))
                sent = True
                talk.command(command)
                outcome = "done"
    except gevent.Timeout:
        outcome = "timeout"
    except CallerGone:
        outcome = "hangup"
    except Refused as exc:  # FreeSWITCH did not run the command: nothing was set
        outcome, sent = f"Refused: {exc}", False
    except (ESLProtocolError, OSError, ValueError) as exc:
        outcome = f"{type(exc).__name__}: {exc}"
    except Exception:  # our own bug must still leave the caller at the dialplan's default
        log.exception("session failed; the call falls back to the dialplan default")
        outcome = "bug"
    finally:
        sock.close()
    if rule is not None and decision is not None:  # counted once the caller is on the way, as the log line is
        metrics.call_decided(rule.name, decision.result.value, deciding)
    if sent and outcome != "done":
        outcome += " after sending"
    reached = decision.destination if decision and outcome == "done" else \
        "(unconfirmed)" if sent else "(dialplan default)"
    log_call(channel, rule, decision, outcome, reached, started)
    return outcome


def call_variables(rule: RuleView, decision: Decision) -> list[tuple[str, str]]:
    """The channel variables a decision sets, in the order they are set: the target first, as it matters most."""
    return [("dynroute_target", decision.destination), ("dynroute_result", decision.result.value),
            ("dynroute_rule", rule.name), ("dynroute_key", decision.key or "")]


def log_call(channel: Channel | None, rule: RuleView | None, decision: Decision | None, outcome: str, reached: str,
             started: float) -> None:
    """The one log line per call: who, which rule, the key, the result, where it went, how long."""
    ms = (time.monotonic() - started) * 1000
    log.info("call uuid=%s caller=%s rule=%s key=%s result=%s dest=%s outcome=%s ms=%.2f",
             printable(channel.uuid) if channel else "-", printable(channel.caller_id) if channel else "-",
             rule.name if rule else "-", decision.key if decision and decision.key else "-",
             decision.result.value if decision else "-", reached, outcome, ms)


def printable(text: str) -> str:
    """Caller-supplied text with control characters escaped: a ``%0A`` in a caller ID must not forge log lines."""
    return CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), text)
