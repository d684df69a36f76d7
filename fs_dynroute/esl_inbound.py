"""Sans-IO codec for the INBOUND event socket (we connect to FreeSWITCH's port 8021): what it says, what we send.

Built on :class:`fs_dynroute.esl.MessageReader` (the same framing, the same per-value decoding, the same poisoning
after an error); this module only names what each message means on an inbound connection, and builds the commands
a client sends there. Wire rules, from the byte-exact captures in ``fakeswitch/recordings/inbound/`` (README there):

* On connect FreeSWITCH sends ``Content-Type: auth/request`` and nothing else until ``auth <password>``; before
  that every other command gets ``-ERR command not found`` and the socket stays open (i1b).
* A wrong password gets ``-ERR invalid`` and, in the SAME recv(), a disconnect notice without
  ``Controlled-Session-UUID``; then EOF (i1).
* Replies are ``command/reply`` with an unencoded ``Reply-Text`` (``+OK accepted``, ``+OK event listener enabled
  plain``, ``+OK filter added. [Event-Name]=[CHANNEL_HANGUP_COMPLETE]``...).
* ``text/event-plain``: the body is a header block, values URL-encoded one by one, ended by a blank line.
  ``text/event-json``: the body is ONE flat JSON object whose values are all strings, NOT URL-encoded, with no
  newline after it. Either way an event is a mapping of header name to decoded value; the first of two equal
  names wins, as in :mod:`fs_dynroute.esl`.
* ``api/response``: the body is the command's output, exactly Content-Length bytes, no blank line after.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Union

from fs_dynroute.esl import (
    DISCONNECT_NOTICE_BODY,
    ESLProtocolError,
    Message,
    MessageReader,
    _split_header as split_header,  # the one ``Name: value`` rule, shared
    decode_value,
)

__all__ = [
    "ApiResponse",
    "AuthRequest",
    "DEFAULT_INBOUND_BUFFER",
    "Disconnect",
    "Event",
    "InboundReader",
    "Item",
    "Reply",
    "api_command",
    "auth_command",
    "auth_request",
    "event_command",
    "event_json",
    "json_pairs",
    "plain_pairs",
    "filter_command",
    "inbound_disconnect_notice",
    "noevents_command",
]

# One recv() held up to 46 KB of events in the captures and a HANGUP_COMPLETE is 5.5-12 KB; a switch with
# long variables can send more. The cap still turns a runaway peer into a protocol error.
DEFAULT_INBOUND_BUFFER = 1024 * 1024
EVENT_FORMATS = ("plain", "json")
# An array variable (``variable_DP_MATCH``): a JSON array in json, ``ARRAY::a|:b`` (encoded) in plain.
ARRAY_PREFIX, ARRAY_SEPARATOR = "ARRAY::", "|:"

_EVENT_NAME = re.compile(r"[A-Z][A-Z0-9_]*|ALL|CUSTOM(?: [A-Za-z0-9_:.\-]+)+")
_FILTER_WORD = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]*")
_FILTER_VALUE = re.compile(r"[^\x00-\x20\x7f]+")
_API_COMMAND = re.compile(r"[A-Za-z0-9_][^\x00-\x1f\x7f]*")
_PASSWORD = re.compile(r"[^\x00-\x20\x7f]+")


@dataclass(frozen=True)
class AuthRequest:
    """``Content-Type: auth/request``: FreeSWITCH waits for ``auth <password>``."""


@dataclass(frozen=True)
class Reply:
    """A ``command/reply``; ``ok`` when Reply-Text starts ``+OK``."""

    text: str

    @property
    def ok(self) -> bool:
        return self.text.startswith("+OK")


@dataclass(frozen=True)
class Event:
    """One event, plain or JSON, as header name -> decoded value."""

    name: str
    headers: Mapping[str, str]
    format: str


@dataclass(frozen=True)
class ApiResponse:
    """The output of ``api <command>``."""

    body: bytes


@dataclass(frozen=True)
class Disconnect:
    """``text/disconnect-notice``: FreeSWITCH closes the socket next."""

    body: bytes


Item = Union[AuthRequest, Reply, Event, ApiResponse, Disconnect]


def _array(items: list[object]) -> str:
    """A JSON array header as the plain format writes it (``switch_event_add_array``): ``ARRAY::a|:b``."""
    if not all(isinstance(item, str) for item in items):
        raise ESLProtocolError("text/event-json array holds a non-string")
    return ARRAY_PREFIX + ARRAY_SEPARATOR.join(items)  # type: ignore[arg-type]


class _Pairs(list):  # type: ignore[type-arg]
    """A JSON object read as its (name, value) pairs, so repeated names are kept as FreeSWITCH sent them."""


def json_pairs(body: bytes) -> list[tuple[str, str]]:
    """A ``text/event-json`` body as (name, value) pairs in order, repeats kept, arrays written as in plain."""
    try:
        pairs = json.loads(body, object_pairs_hook=_Pairs)
    except (ValueError, RecursionError) as exc:
        raise ESLProtocolError(f"text/event-json body is not JSON: {exc}") from None
    if not isinstance(pairs, _Pairs) or not all(isinstance(v, (str, list)) for _, v in pairs):
        raise ESLProtocolError("text/event-json body is not a flat object of strings and arrays")
    return [(name, value if isinstance(value, str) else _array(value)) for name, value in pairs]


def plain_pairs(body: bytes) -> list[tuple[str, str]]:
    """A ``text/event-plain`` body as (name, decoded value) pairs in order, repeats kept (the fake replays them)."""
    block = body.split(b"\n\n", 1)[0]
    return [(name, decode_value(raw.decode("utf-8", "replace"))) for name, raw in
            (split_header(line) for line in block.split(b"\n") if line)]


def _first_wins(pairs: list[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in pairs:
        out.setdefault(name, value)
    return out


def interpret(message: Message) -> Item:
    """What one framed message means on an inbound connection; ESLProtocolError for anything else."""
    kind = message.content_type
    if kind == "auth/request":
        return AuthRequest()
    if kind == "command/reply":
        return Reply(message.headers.get("Reply-Text", ""))
    if kind in ("text/event-plain", "text/event-json"):
        headers = message.body_headers() if kind == "text/event-plain" else _first_wins(json_pairs(message.body))
        name = headers.get("Event-Name")
        if not name:
            raise ESLProtocolError(f"{kind} without Event-Name")
        return Event(name, headers, kind[len("text/event-"):])
    if kind == "api/response":
        return ApiResponse(message.body)
    if kind == "text/disconnect-notice":
        return Disconnect(message.body)
    raise ESLProtocolError(f"unexpected Content-Type {kind!r} on an inbound socket")


class InboundReader:
    """FreeSWITCH -> us on port 8021: ``feed()`` what recv() returned, ``next_item()`` until None.

    After an error every later call raises it again, like :class:`~fs_dynroute.esl.MessageReader`.
    """

    def __init__(self, max_buffer: int = DEFAULT_INBOUND_BUFFER) -> None:
        self._reader = MessageReader(max_buffer=max_buffer)
        self._error: ESLProtocolError | None = None

    @property
    def buffered(self) -> int:
        return self._reader.buffered

    def feed(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._reader.feed(data)

    def next_item(self) -> Item | None:
        """The next complete message, interpreted, or None when more bytes are needed."""
        if self._error is not None:
            raise self._error
        message = self._reader.next_message()
        if message is None:
            return None
        try:
            return interpret(message)
        except ESLProtocolError as error:
            self._error = error
            raise


# ---------------------------------------------------------------------------------------------------------------
# Commands a client sends. Each argument is checked: a newline would end the command and start another.


def auth_command(password: str) -> bytes:
    """``auth <password>``; the password is one word of printable characters (mod_event_socket reads to the end
    of the line and compares; a space or newline could never be part of a working one)."""
    if not _PASSWORD.fullmatch(password):
        raise ValueError("password: must be one word of printable characters")
    return f"auth {password}\n\n".encode()


def event_command(fmt: str, names: Iterable[str]) -> bytes:
    """``event plain|json NAME...``: subscribe (FreeSWITCH adds to the set already subscribed)."""
    names = list(names)
    if fmt not in EVENT_FORMATS:
        raise ValueError(f"event format must be one of {EVENT_FORMATS}, got {fmt!r}")
    if not names or not all(_EVENT_NAME.fullmatch(n) for n in names):
        raise ValueError(f"event names must be upper-case words such as CHANNEL_HANGUP_COMPLETE, got {names!r}")
    return f"event {fmt} {' '.join(names)}\n\n".encode("ascii")


def filter_command(header: str, value: str, *, delete: bool = False) -> bytes:
    """``filter [delete] <header> <value>``: only events whose header has that value pass (filters OR together)."""
    if not _FILTER_WORD.fullmatch(header) or header.lower() == "delete":
        raise ValueError(f"filter header must be a header name, got {header!r}")
    if not _FILTER_VALUE.fullmatch(value):
        raise ValueError(f"filter value must be one word of printable characters, got {value!r}")
    return f"filter {'delete ' if delete else ''}{header} {value}\n\n".encode()


def api_command(command: str) -> bytes:
    """``api <command> [args]``: run an API command and wait for its ``api/response``."""
    if not _API_COMMAND.fullmatch(command):
        raise ValueError(f"api command must be printable text without control characters, got {command!r}")
    return f"api {command}\n\n".encode()


def noevents_command() -> bytes:
    """``noevents``: stop all event delivery on this connection."""
    return b"noevents\n\n"


# ---------------------------------------------------------------------------------------------------------------
# FreeSWITCH's side, for the fake.


def auth_request() -> bytes:
    """The first bytes FreeSWITCH sends on an inbound connection."""
    return b"Content-Type: auth/request\n\n"


def inbound_disconnect_notice() -> bytes:
    """The disconnect notice of an inbound connection (after ``exit`` or a wrong password): no session UUID."""
    return (b"Content-Type: text/disconnect-notice\nContent-Length: %d\n\n" % len(DISCONNECT_NOTICE_BODY)
            + DISCONNECT_NOTICE_BODY)


def event_json(pairs: list[tuple[str, str]]) -> bytes:
    """A ``text/event-json`` event as mod_event_socket sends it: cJSON's unformatted print in header order,
    repeated names repeated, ``ARRAY::`` values as arrays, raw UTF-8."""
    def value(text: str) -> object:
        return text[len(ARRAY_PREFIX):].split(ARRAY_SEPARATOR) if text.startswith(ARRAY_PREFIX) else text

    dump = functools.partial(json.dumps, ensure_ascii=False, separators=(",", ":"))
    body = ("{" + ",".join(f"{dump(name)}:{dump(value(text))}" for name, text in pairs) + "}").encode("utf-8")
    return b"Content-Length: %d\nContent-Type: text/event-json\n\n" % len(body) + body
