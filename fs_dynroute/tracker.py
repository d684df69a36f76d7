"""Call outcomes to route changes: the pure decisions of the tracker (no I/O, no clock, no database).

A CHANNEL_HANGUP_COMPLETE event becomes a :class:`Hangup`; :func:`decide` says what one tracked rule does with
it: write ``customer -> agent``, clear it, or skip it with a reason that is counted. Which leg tells what, from
the inbound captures (``fakeswitch/recordings/inbound/README.md``):

* Only the BRIDGED leg (B: ``Call-Direction: outbound`` with ``Other-Leg-Unique-ID`` or ``variable_originator``)
  carries the outcome. The A leg's Hangup-Cause is not the outcome (NORMAL_CLEARING after a NO_ANSWER bridge);
  originate's own legs (X) and the far phones (W) are not part of a real PBX's call.
* On the B leg the caller is ``Caller-Caller-ID-Number`` and the callee ``Caller-Destination-Number``, in both
  directions: an agent dialling a customer (caller = agent) and a customer ringing an agent (callee = agent).
  Which one is the agent is the rule's agent pattern; a call with no agent, or with two, is not tracked.
* Answered or not is ``Caller-Channel-Answered-Time`` (``0`` = never), never Answer-State (``hangup`` on every
  row) nor billsec (0 for an answered call under a second). The cause of an unanswered call is the B leg's
  Hangup-Cause: NO_ANSWER (rang out), USER_BUSY, ORIGINATOR_CANCEL (the caller gave up).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Union

HANGUP_EVENT = "CHANNEL_HANGUP_COMPLETE"
MODES = ("missed", "last-agent")
DEFAULT_CAUSES = ("NO_ANSWER", "USER_BUSY", "ORIGINATOR_CANCEL")
DEFAULT_TTL = {"missed": "72h", "last-agent": "30d"}
_NOTE = {"missed": "missed call", "last-agent": "answered call"}
#: Every header :func:`hangup_of` reads (a client that fetches headers one by one fetches these).
FIELDS = ("Event-Name", "Call-Direction", "Other-Leg-Unique-ID", "variable_originator", "Unique-ID",
          "Caller-Caller-ID-Number", "Caller-Destination-Number", "Caller-Channel-Answered-Time", "Hangup-Cause",
          "Event-Date-Local")


@dataclass(frozen=True)
class TrackSpec:
    """How one rule is fed: ``missed`` (pending returns) or ``last-agent``; ``ttl`` is a duration like 72h."""

    rule: str
    mode: str
    agents: re.Pattern[str]
    ttl: str
    causes: frozenset[str]


@dataclass(frozen=True)
class Hangup:
    """What the tracker needs of one CHANNEL_HANGUP_COMPLETE, small enough to queue by the hundred thousand."""

    uuid: str
    bridged: bool
    caller: str
    callee: str
    answered: bool
    cause: str
    when: str  # "2026-12-02 14:40", the switch's local time (Event-Date-Local)


@dataclass(frozen=True)
class Write:
    """Store ``customer -> agent`` in ``rule`` with ``notes``, expiring ``ttl`` from now ('' = never)."""

    rule: str
    customer: str
    agent: str
    notes: str
    ttl: str


@dataclass(frozen=True)
class Clear:
    """Remove ``customer -> agent`` from ``rule`` if it is there (the return happened)."""

    rule: str
    customer: str
    agent: str


@dataclass(frozen=True)
class Skip:
    reason: str


Action = Union[Write, Clear, Skip]


def hangup_of(headers: Mapping[str, str]) -> Hangup | None:
    """The hangup in an event's headers (plain or JSON), or None for any other event."""
    if headers.get("Event-Name") != HANGUP_EVENT:
        return None
    bridged = headers.get("Call-Direction") == "outbound" and bool(
        headers.get("Other-Leg-Unique-ID") or headers.get("variable_originator"))
    return Hangup(
        uuid=headers.get("Unique-ID", ""),
        bridged=bridged,
        caller=headers.get("Caller-Caller-ID-Number", ""),
        callee=headers.get("Caller-Destination-Number", ""),
        answered=headers.get("Caller-Channel-Answered-Time", "0") not in ("", "0"),
        cause=headers.get("Hangup-Cause", ""),
        when=headers.get("Event-Date-Local", "")[:16],
    )


def parties(hangup: Hangup, agents: re.Pattern[str]) -> tuple[str, str] | Skip:
    """(agent, customer) of a bridged leg, by the agent pattern; a Skip when it is not agent <-> customer."""
    caller_is_agent = bool(agents.search(hangup.caller))
    callee_is_agent = bool(agents.search(hangup.callee))
    if caller_is_agent == callee_is_agent:
        return Skip("two agents" if caller_is_agent else "no agent")
    return (hangup.caller, hangup.callee) if caller_is_agent else (hangup.callee, hangup.caller)


def decide(hangup: Hangup, spec: TrackSpec) -> Action:
    """What ``spec``'s rule does with one hangup; every Skip names its reason."""
    if not hangup.bridged:
        return Skip("not the bridged leg")
    found = parties(hangup, spec.agents)
    if isinstance(found, Skip):
        return found
    agent, customer = found
    notes = f"{_NOTE[spec.mode]} {hangup.when} uuid={hangup.uuid}"
    if spec.mode == "last-agent":
        return Write(spec.rule, customer, agent, notes, spec.ttl) if hangup.answered else Skip("not answered")
    if hangup.answered:
        return Clear(spec.rule, customer, agent)
    if hangup.cause not in spec.causes:
        return Skip(f"cause {hangup.cause or 'none'}")
    return Write(spec.rule, customer, agent, notes, spec.ttl)
