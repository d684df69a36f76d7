"""Sans-IO codec for FreeSWITCH's event socket: bytes in, whole messages out, and the bytes of every command we send.

No sockets, no clocks, no logging: the server feeds what recv() returned and sends what the builders return,
and the test fake uses the same module from FreeSWITCH's side (readers for our commands, encoders for its replies).

Wire rules, checked against byte-exact captures from FreeSWITCH 1.10.12 (see tests/test_esl.py):

* A message is a header block ended by a blank line (``\\n\\n``); if the block has ``Content-Length`` the next
  exactly that many BYTES are its body. FreeSWITCH never sends ``\\r``: a CR in a header block is a protocol error.
* Values in the connect reply and in events are URL-encoded one value at a time (``switch_url_encode``); header
  names never are. We split the block into lines FIRST and only then decode each value, so an encoded ``%0A``
  inside one value (a SIP User-Agent, say) cannot forge another header line such as ``Caller-Caller-ID-Number``.
  Values are decoded like :func:`urllib.parse.unquote` (never ``unquote_plus``: ``+OK`` stays ``+OK``).
* Duplicate header names: the FIRST occurrence wins. That is what FreeSWITCH itself reads
  (``switch_event_get_header`` and libesl's ``esl_event_get_header`` walk the list from its head), and in a block
  FreeSWITCH builds, the core headers (``Channel-*``, ``Caller-*``) come before ``variable_*`` lines and before
  anything appended later, so nothing appended can shadow a routing field. The captures hold no duplicates.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

__all__ = [
    "DEFAULT_MAX_BUFFER",
    "DISCONNECT_NOTICE_BODY",
    "Command",
    "CommandReader",
    "ESLProtocolError",
    "Message",
    "MessageReader",
    "api_response",
    "command_reply",
    "connect_command",
    "decode_value",
    "disconnect_notice",
    "encode_headers",
    "event_plain",
    "exit_command",
    "linger_notice",
    "multiset",
    "parse_header_block",
    "sendmsg_execute",
    "set_variable",
    "url_encode",
]

DEFAULT_MAX_BUFFER = 256 * 1024
MULTISET_SEPARATOR = "|"

#: The 67-byte body FreeSWITCH sends with every ``Content-Disposition: disconnect`` notice (captured, verbatim).
DISCONNECT_NOTICE_BODY = b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"

# SWITCH_URL_UNSAFE from switch_utils.h; switch_url_encode also escapes every byte < 0x20 or > 0x7E.
_URL_UNSAFE = frozenset(b'\r\n #%&+:;<=>?@[\\]^`{|}"')
_UPPER_HEX = b"0123456789ABCDEF"
_NEEDS_ENCODING = re.compile(r'[^\x20-\x7e]|[ #%&+:;<=>?@\[\\\]^`{|}"]')
# The one set of control characters: C0, DEL, C1 (U+0080-U+009F, NEL among them) and the line and paragraph
# separators, i.e. everything str.splitlines splits on. Never sent, stored or logged raw.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_VARIABLE_NAME = re.compile(r"[A-Za-z0-9_]+")
# What switch_separate_string would change in a multiset item: the separator, quotes, escapes, trailing spaces.
_MULTISET_UNSAFE = re.compile(f"[{re.escape(MULTISET_SEPARATOR)}'\\\\]| +$")
_APP_NAME = re.compile(r"[A-Za-z0-9_]+")
_DIGITS = re.compile(rb"[0-9]{1,12}")
_BLANK_LINE = b"\n\n"
# The end of a header block. A compiled pattern finds it in a 3.8 KB connect reply in 1.3 us, bytes.find in 3.0
# (sre looks for the first byte with memchr; bytes.find's skip table barely skips with LF every 30 bytes).
_END_OF_BLOCK = re.compile(re.escape(_BLANK_LINE))
# One ``Name: value`` line: a non-empty name without a colon, then the value after any spaces.
_HEADER_LINE = re.compile(r"([^:\n]+):[ ]*([^\n]*)")
_HEADER_BLOCK = re.compile(r"[^:\n]+:[^\n]*(?:\n[^:\n]+:[^\n]*)*")


class ESLProtocolError(Exception):
    """The peer broke ESL framing; the only safe reaction is to close this call's socket."""


@dataclass(frozen=True)
class Message:
    """One message from FreeSWITCH: decoded headers in wire order, and the raw body bytes."""

    headers: Mapping[str, str]
    body: bytes = b""

    @property
    def content_type(self) -> str:
        """``command/reply``, ``api/response``, ``text/event-plain``, ``text/disconnect-notice``..."""
        return self.headers.get("Content-Type", "")

    def body_headers(self) -> Mapping[str, str]:
        """Parse a ``text/event-plain`` body as a header block, with the same per-value decoding rules."""
        block = self.body.split(_BLANK_LINE, 1)[0].rstrip(b"\n")
        return parse_header_block(block) if block else {}


@dataclass(frozen=True)
class Command:
    """One command we sent (as FreeSWITCH reads it): ``getvar dynroute_target`` is name ``getvar``, args
    ``dynroute_target``; header values are raw, because mod_event_socket does not URL-decode them."""

    name: str
    args: str
    headers: dict[str, str]
    body: bytes = b""

    @property
    def line(self) -> str:
        """The command line as sent, which is what mod_event_socket matches its prefixes against."""
        return f"{self.name} {self.args}" if self.args else self.name


def decode_value(raw: str) -> str:
    """Decode one header value (as read off its own line) like ``urllib.parse.unquote``: ``+`` is never a space,
    and bytes that are not UTF-8 become U+FFFD. The only decoder: :class:`Headers` reads every value through it."""
    return unquote_to_bytes(raw).decode("utf-8", "replace") if "%" in raw else raw


def _split_header(line: bytes) -> tuple[str, bytes]:
    """Split ``Name: value`` at the first colon, skipping the spaces after it as FreeSWITCH does."""
    name, sep, value = line.partition(b":")
    if not sep or not name:
        raise ESLProtocolError(f"malformed header line {line[:80]!r}")
    return name.decode("utf-8", "replace"), value.lstrip(b" ")


class Headers(Mapping[str, str]):
    """A header block; a value is found on its own line and URL-decoded on its own when read.

    Reading finds the line that starts with ``Name:`` (the first such line: FreeSWITCH's rule), so the
    3.8-7 KB connect reply costs a call only the four values it reads, and no decoded value can ever be
    taken for a line of its own. Every line is checked when the block is listed (``iter``, ``len``,
    ``items``): a malformed line raises ESLProtocolError then; a call reading its four values never walks
    the other ~130 lines (that check cost 11 us per call, more than the rest of the parse).
    """

    __slots__ = ("_text", "_all")

    def __init__(self, text: str) -> None:
        self._text = text
        self._all: dict[str, str] | None = None

    def _raw(self, name: str) -> str | None:
        key = name + ":"
        if self._text.startswith(key):
            start = len(key)
        else:
            at = self._text.find("\n" + key)
            if at < 0:
                return None
            start = at + 1 + len(key)
        end = self._text.find("\n", start)
        return self._text[start:end if end >= 0 else len(self._text)].lstrip(" ")

    def __getitem__(self, name: str) -> str:
        value = self._raw(name)
        if value is None:
            raise KeyError(name)
        return decode_value(value)

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        """As Mapping.get, without raising and catching KeyError for a missing header (the call path's case)."""
        value = self._raw(name)
        return default if value is None else decode_value(value)

    def _names(self) -> dict[str, str]:
        if self._all is None:
            if not _HEADER_BLOCK.fullmatch(self._text):
                bad = next(line for line in self._text.split("\n") if not _HEADER_LINE.fullmatch(line))
                raise ESLProtocolError(f"malformed header line {bad[:80]!r}")
            self._all = {}
            for name, value in _HEADER_LINE.findall(self._text):
                self._all.setdefault(name, value)
        return self._all

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def __repr__(self) -> str:
        return f"Headers({dict(self)!r})"


def parse_header_block(block: bytes) -> Headers:
    """A header block whose values are decoded one at a time when read; its lines are checked when listed.

    A CR anywhere is refused at once (one memchr); anything else wrong with a line surfaces when the block is
    listed (see :class:`Headers`), and can never change a value read by name.
    """
    if b"\r" in block:
        raise ESLProtocolError("CR in a header block: FreeSWITCH frames with bare LF")
    return Headers(block.decode("utf-8", "replace"))


def _content_length(raw: str | None, limit: int) -> int:
    """A body length in bytes: plain ASCII digits, at most ``limit``."""
    if raw is None:
        return 0
    data = raw.encode("utf-8", "replace")
    if not _DIGITS.fullmatch(data):
        raise ESLProtocolError(f"invalid Content-Length {raw[:40]!r}")
    length = int(data)
    if length > limit:
        raise ESLProtocolError(f"Content-Length {length} exceeds the {limit}-byte buffer cap")
    return length


class _Framer:
    """Shared buffering for both directions: a header block up to a blank line, then an optional body.

    An error poisons the reader: every later call raises it again, so nobody resyncs on garbage.
    """

    def __init__(self, max_buffer: int = DEFAULT_MAX_BUFFER) -> None:
        self._max = max_buffer
        self._buf = bytearray()
        self._scan = 0
        self._head: tuple[object, int, int] | None = None  # (parsed head, body length, head size)
        self._error: ESLProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held that are not yet part of a returned message (non-zero at EOF = a truncated message)."""
        return len(self._buf) + (self._head[2] if self._head else 0)

    def feed(self, data: bytes) -> None:
        """Append bytes from recv(); raise ESLProtocolError once more than ``max_buffer`` bytes wait here.

        The cap counts every byte not yet returned, so drain ``next_message()`` after each feed.
        """
        self._raise_if_failed()
        self._buf += data
        if self.buffered > self._max:
            self._error = ESLProtocolError(f"more than {self._max} bytes buffered without a complete message")
            raise self._error

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _skip_leading(self) -> None:
        """Hook: the command reader drops stray newlines between commands, as mod_event_socket does."""

    def _parse_head(self, block: bytes) -> tuple[object, int]:
        raise NotImplementedError

    def _next_frame(self) -> tuple[object, bytes] | None:
        """(parsed head, body) once both are complete, else None (need more data)."""
        self._raise_if_failed()
        try:
            if self._head is None and not self._take_head():
                return None
        except ESLProtocolError as error:
            self._error = error
            raise
        parsed, length, _ = self._head  # type: ignore[misc]
        if len(self._buf) < length:
            return None
        body = bytes(self._buf[:length])
        del self._buf[:length]
        self._head = None
        return parsed, body

    def _take_head(self) -> bool:
        self._skip_leading()
        found = _END_OF_BLOCK.search(self._buf, self._scan)
        if found is None:
            self._scan = max(0, len(self._buf) - 1)
            return False
        end = found.start()
        block = bytes(self._buf[:end])
        del self._buf[: end + 2]
        self._scan = 0
        parsed, length = self._parse_head(block)
        self._head = (parsed, length, end + 2)
        return True


class MessageReader(_Framer):
    """FreeSWITCH -> us. ``feed()`` what recv() returned; ``next_message()`` until it says None (need more data)."""

    def _parse_head(self, block: bytes) -> tuple[object, int]:
        if not block:
            raise ESLProtocolError("empty header block")
        headers = parse_header_block(block)
        return headers, _content_length(headers.get("Content-Length"), self._max)

    def next_message(self) -> Message | None:
        """The next complete message, or None when more bytes are needed."""
        frame = self._next_frame()
        if frame is None:
            return None
        headers, body = frame
        return Message(headers, body)  # type: ignore[arg-type]


class CommandReader(_Framer):
    """Us -> FreeSWITCH, for the fake: the same feed/next API, returning :class:`Command`.

    Stricter than mod_event_socket on one point: it rejects ``\\r`` (FreeSWITCH would strip it), because our
    builders never send one and the fake exists to catch a server that does.
    """

    def _skip_leading(self) -> None:
        stray = len(self._buf) - len(self._buf.lstrip(b"\n"))
        if stray:
            del self._buf[:stray]

    def _parse_head(self, block: bytes) -> tuple[object, int]:
        if b"\r" in block:
            raise ESLProtocolError("CR in a command block")
        first, *lines = block.split(b"\n")
        name, _, args = first.decode("utf-8", "replace").partition(" ")
        headers: dict[str, str] = {}
        for line in lines:
            key, raw = _split_header(line)
            headers.setdefault(key, raw.decode("utf-8", "replace"))
        length = next((v for k, v in headers.items() if k.lower() == "content-length"), None)
        return Command(name, args, headers), _content_length(length, self._max)

    def next_command(self) -> Command | None:
        """The next complete command, or None when more bytes are needed."""
        frame = self._next_frame()
        if frame is None:
            return None
        command, body = frame
        assert isinstance(command, Command)
        return Command(command.name, command.args, command.headers, body) if body else command

    next_message = next_command


# ---------------------------------------------------------------------------------------------------------------
# Commands we send. Every value is checked: a CR, LF, NUL or other control character would end a line early and
# let caller-influenced text (a routing target from the database, say) inject another header or command.


def _refuse_controls(field_name: str, value: str) -> None:
    match = CONTROL.search(value)
    if match:
        raise ValueError(f"{field_name} contains control character {match.group()!r}")


def connect_command() -> bytes:
    """The first thing to send on an outbound socket; FreeSWITCH answers with the channel's header block."""
    return b"connect\n\n"


def exit_command() -> bytes:
    """End the socket session; in SYNC mode the dialplan then continues after the ``socket`` action."""
    return b"exit\n\n"


def sendmsg_execute(app: str, arg: str) -> bytes:
    """Run one dialplan application on the controlled channel (SYNC: before the reply comes back)."""
    if not _APP_NAME.fullmatch(app):
        raise ValueError(f"execute-app-name must match [A-Za-z0-9_]+, got {app!r}")
    _refuse_controls("execute-app-arg", arg)
    if arg.startswith(" "):
        raise ValueError("execute-app-arg starts with a space, which FreeSWITCH would strip")
    return (
        "sendmsg\ncall-command: execute\n"
        f"execute-app-name: {app}\nexecute-app-arg: {arg}\n\n"
    ).encode()


def set_variable(name: str, value: str) -> bytes:
    """``set name=value`` on the channel. An empty value UNSETS the variable in FreeSWITCH."""
    if not _VARIABLE_NAME.fullmatch(name):
        raise ValueError(f"variable name must match [A-Za-z0-9_]+, got {name!r}")
    _refuse_controls("value", value)
    return sendmsg_execute("set", f"{name}={value}")


def multiset(variables: Sequence[tuple[str, str]]) -> bytes:
    """Set several channel variables with ONE command: ``multiset ^^|a=1|b=2`` (mod_dptools), in order.

    An argument starting ``^^`` takes its third character as the separator (:data:`MULTISET_SEPARATOR`); each item
    then goes through ``set``'s own code, so an empty value UNSETS the variable, as with :func:`set_variable`.
    mod_dptools splits the items with ``switch_separate_string``, which also strips an item's trailing spaces and
    treats ``'`` and ``\\`` as quoting and escaping, so a value holding any of those would not arrive as sent:
    such a value is refused (ValueError naming the variable), never sent altered.
    """
    items = []
    for name, value in variables:
        if not _VARIABLE_NAME.fullmatch(name):
            raise ValueError(f"variable name must match [A-Za-z0-9_]+, got {name!r}")
        bad = _MULTISET_UNSAFE.search(value)
        if bad:
            raise ValueError(f"value of {name} contains {bad.group()!r}, which multiset would not pass through")
        items.append(f"{name}={value}")
    return sendmsg_execute("multiset", "^^" + MULTISET_SEPARATOR + MULTISET_SEPARATOR.join(items))


# ---------------------------------------------------------------------------------------------------------------
# FreeSWITCH's side, for the fake.


def url_encode(value: str) -> str:
    """Exactly FreeSWITCH's ``switch_url_encode`` (``switch_url_encode_opt(..., double_encode=SWITCH_FALSE)``).

    UTF-8 bytes; every byte below 0x20 or above 0x7E and every byte of SWITCH_URL_UNSAFE becomes ``%XX``
    (uppercase). One quirk kept on purpose: a ``%`` already followed by two UPPERCASE hex digits is copied as is,
    so ``50%20off`` goes out unchanged and decodes to ``50 off``; encoding is therefore not injective. The value
    is a C string, so it ends at the first NUL.
    """
    if not _NEEDS_ENCODING.search(value):
        return value
    data = value.encode("utf-8").split(b"\0", 1)[0]
    out = bytearray()
    last = len(data) - 1
    for i, byte in enumerate(data):
        escaped = (
            byte == 0x25 and last - i > 1 and data[i + 1] in _UPPER_HEX and data[i + 2] in _UPPER_HEX
        )
        if not escaped and (byte < 0x20 or byte > 0x7E or byte in _URL_UNSAFE):
            out += b"%" + bytes((_UPPER_HEX[byte >> 4], _UPPER_HEX[byte & 0x0F]))
        else:
            out.append(byte)
    return out.decode("ascii")


def encode_headers(headers: list[tuple[str, str]]) -> bytes:
    """A header block as ``switch_event_serialize`` writes it: encoded values, a blank line at the end.

    An empty encoded value is written ``_undef_``, as FreeSWITCH does.
    """
    lines = []
    for name, value in headers:
        if not name or ":" in name or CONTROL.search(name):
            raise ValueError(f"invalid header name {name!r}")
        lines.append(f"{name}: {url_encode(value) or '_undef_'}\n")
    return ("".join(lines) + "\n").encode("ascii")


def command_reply(text: str) -> bytes:
    """``Content-Type: command/reply`` with an unencoded Reply-Text, as mod_event_socket sends replies."""
    _refuse_controls("Reply-Text", text)
    return f"Content-Type: command/reply\nReply-Text: {text}\n\n".encode()


def api_response(body: bytes) -> bytes:
    """An ``api/response``; its body is NOT followed by a blank line."""
    return b"Content-Type: api/response\nContent-Length: %d\n\n" % len(body) + body


def event_plain(headers: list[tuple[str, str]]) -> bytes:
    """A ``text/event-plain`` event: Content-Length first, then the encoded header block as the body."""
    body = encode_headers(headers)
    return b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % len(body) + body


def disconnect_notice(uuid: str) -> bytes:
    """The notice FreeSWITCH sends before it closes (after ``exit``, on hangup, or on the 25 s first-command
    timeout), byte-identical to the captures."""
    _refuse_controls("Controlled-Session-UUID", uuid)
    head = (
        "Content-Type: text/disconnect-notice\n"
        f"Controlled-Session-UUID: {uuid}\n"
        "Content-Disposition: disconnect\n"
        f"Content-Length: {len(DISCONNECT_NOTICE_BODY)}\n\n"
    )
    return head.encode("utf-8") + DISCONNECT_NOTICE_BODY


def linger_notice(uuid: str, channel_name: str, linger_time: int = -1) -> bytes:
    """The ``linger`` notice (``full`` mode only). Its values are NOT URL-encoded, unlike event headers."""
    _refuse_controls("Channel-Name", channel_name)
    return (
        "Content-Type: text/disconnect-notice\n"
        f"Controlled-Session-UUID: {uuid}\n"
        "Content-Disposition: linger\n"
        f"Channel-Name: {channel_name}\n"
        f"Linger-Time: {linger_time}\n"
        "Content-Length: 0\n\n"
    ).encode()
