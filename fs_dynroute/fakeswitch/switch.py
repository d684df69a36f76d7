"""A fake FreeSWITCH: runs one call through a dialplan and drives our outbound socket server as the captures show.

Built on ``gevent.socket``, so it runs in the same process as a gevent server (tests) and on its own (a
benchmark in another process, or ``python -m fs_dynroute.fakeswitch.switch``). It speaks through
``fs_dynroute.esl`` from FreeSWITCH's side: :class:`~fs_dynroute.esl.CommandReader` for what the server sends,
the encoders for replies.

What is modelled, each from a capture (``fs_dynroute/fakeswitch/recordings``) or from mod_event_socket's source:

* ``socket host:port[|host:port...]`` tries each host in turn; a refused connection moves on at once, none
  left means the dialplan continues. ``async``/``full`` in the data select those modes.
* The connect reply is the template capture's header block with this call's caller ID, destination, UUID and
  channel variables substituted, URL-encoded and sent in one send. An empty or missing caller ID goes out as
  FreeSWITCH's ``0000000000`` and ``variable_origination_caller_id_number`` is left out (captures e2/e5/g3);
  that variable only exists where the template has it (loopback calls; SIP calls never carry it).
* Replies: ``+OK``, ``+OK bye`` + disconnect notice then close, ``+OK Events Enabled``, ``getvar`` = the value
  (an unset variable gives an empty reply, which FreeSWITCH turns into ``-ERR command not found``), and
  ``-ERR command not found`` for ``linger``/``nolinger``/``event``/``api`` unless the socket is ``full``.
  As in mod_event_socket, the reply to the very first command is never sent (``connect`` answers by itself).
* Applications run by ``sendmsg execute`` (and by the dialplan): ``set``/``export`` as mod_dptools' ``base_set``
  (``name=value``, else ``name,value``; no value unsets), ``unset``, ``transfer``, ``hangup``, and ``multiset``
  (``^^X`` makes X the separator, else items split on spaces; quotes, escapes and trailing spaces as
  ``switch_separate_string`` treats them; each item through ``base_set``), checked against multiset/S20.
* Fates: SYNC ``exit`` or a close lets the dialplan continue (a close right after a ``multiset``'s ``+OK`` is how
  fs_dynroute ends every call, S20); SYNC ``resume`` (or ``socket_resume=true`` already
  on the channel) leaves the call stuck; a sendmsg ``transfer`` sends the call there; ASYNC without ``resume``
  is stuck. No first command within ``first_command_timeout``: disconnect notice, close, dialplan continues.
  Nothing decisive ``stuck_after`` seconds after the first command: the caller gives up in silence (``stuck``).

Not modelled: events (``myevents`` is acknowledged but no event is ever sent), API commands, the ASYNC
execution queue's timing (queued applications run when the socket session ends).
"""

from __future__ import annotations

import argparse
import json
import re
import socket as stdsocket
import struct
import sys
import time
import uuid as uuidlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from functools import lru_cache

from gevent import socket as gsocket

from fs_dynroute import esl
from fs_dynroute.fakeswitch import captures

DEFAULT_TEMPLATE = "sync/S18.repr"
DEFAULT_CALLER_NUMBER = "0000000000"  # what FreeSWITCH sends when the caller ID is empty or not set
DEFAULT_PORT = 8084
BEHAVIOURS = ("normal", "hangup", "reset", "stall", "inject")
ENDINGS = ("transferred", "hangup", "stuck", "dropped")

_CALLER_ID_HEADERS = frozenset(
    {
        "Channel-Caller-ID-Number",
        "Channel-Orig-Caller-ID-Number",
        "Channel-ANI",
        "Caller-Caller-ID-Number",
        "Caller-Orig-Caller-ID-Number",
        "Caller-ANI",
    }
)
_DESTINATION_HEADERS = frozenset({"Channel-Destination-Number", "Caller-Destination-Number"})
_CHANNEL_NAME_HEADERS = frozenset({"Channel-Channel-Name", "Channel-Name", "Caller-Channel-Name"})
# Variables the template's own dialplan and socket app set; this call's dialplan sets its own.
_DIALPLAN_VARIABLES = frozenset({"dynroute_target", "current_application", "current_application_data", "socket_host"})
_TRUE_WORDS = frozenset({"yes", "on", "true", "t", "enabled", "active", "allow"})
_VARIABLE_REF = re.compile(r"\$\{([^}]*)\}")
_REPLY_LIMIT = 511  # mod_event_socket formats replies into char reply[512]


def _truthy(value: str | None) -> bool:
    """FreeSWITCH's switch_true()."""
    if not value:
        return False
    text = value.strip().lower()
    return text in _TRUE_WORDS or (text.lstrip("-").isdigit() and int(text) != 0)


def _header(headers: dict[str, str], name: str) -> str | None:
    """Case-insensitive lookup, first occurrence, like switch_event_get_header."""
    lowered = name.lower()
    return next((value for key, value in headers.items() if key.lower() == lowered), None)


# ---------------------------------------------------------------------------------------------------------------
# Dialplan


@dataclass
class Dialplan:
    """The actions of one matched extension, run in order: ``unset``, ``set``, ``socket``, ``transfer``..."""

    actions: list[tuple[str, str]]
    expression: str | None = None  # the destination_number regex, for DP_MATCH

    @classmethod
    def recommended(cls, hosts: str, default_target: str) -> Dialplan:
        """The README's pattern that never leaves a caller in silence."""
        return cls(
            [
                ("unset", "socket_resume"),
                ("set", f"dynroute_target={default_target}"),
                ("socket", hosts),
                ("transfer", "${dynroute_target}"),
            ]
        )

    @classmethod
    def from_xml(cls, xml_text: str, destination_number: str, context: str | None = None) -> Dialplan:
        """The actions of the first extension whose conditions all match (``continue="true"`` chains on)."""
        actions: list[tuple[str, str]] = []
        expression = None
        for extension in _extensions(ET.fromstring(xml_text), context):
            matched = _match_extension(extension, destination_number)
            if matched is None:
                continue
            actions += matched[0]
            expression = expression or matched[1]
            if extension.get("continue", "false").lower() != "true":
                return cls(actions, expression)
        if actions:
            return cls(actions, expression)
        raise LookupError(f"no extension matches destination_number {destination_number!r}")


def _extensions(root: ET.Element, context: str | None) -> list[ET.Element]:
    if context is None:
        return list(root.iter("extension"))
    scopes = [el for el in root.iter("context") if el.get("name") == context]
    if not scopes:
        raise LookupError(f"no context named {context!r}")
    return [ext for scope in scopes for ext in scope.iter("extension")]


def _match_extension(extension: ET.Element, destination: str) -> tuple[list[tuple[str, str]], str | None] | None:
    """All conditions must match; ``$1``.. in action data come from the destination_number regex."""
    conditions = extension.findall("condition")
    actions: list[tuple[str, str]] = []
    expression = None
    groups: tuple[str, ...] = ()
    for condition in conditions:
        field_name, regex = condition.get("field"), condition.get("expression")
        if field_name is not None or regex is not None:
            if field_name != "destination_number":
                raise ValueError(f"unsupported condition field {field_name!r} (only destination_number)")
            match = re.search(regex or "", destination)
            if match is None:
                return None
            expression, groups = regex, (match.group(0), *(g or "" for g in match.groups()))
        for action in condition.findall("action"):
            actions.append((action.get("application", ""), _captures(action.get("data", ""), groups)))
    return (actions, expression) if conditions else None


def _captures(data: str, groups: tuple[str, ...]) -> str:
    """Replace ``$1``..``$9`` with the destination_number regex's groups, as the XML dialplan does."""
    return re.sub(r"\$(\d)", lambda m: groups[int(m[1])] if int(m[1]) < len(groups) else "", data)


# ---------------------------------------------------------------------------------------------------------------
# multiset: mod_dptools' multiset_function and switch_utils' switch_separate_string

_MULTISET_MAX_ITEMS = 256  # char *array[256] in multiset_function
_UNESCAPED = {"n": "\n", "r": "\r", "t": "\t", "s": " "}


def multiset_items(data: str) -> list[str]:
    """The items ``multiset`` hands to ``base_set``: ``^^X`` makes X the separator, else items split on spaces.

    As ``switch_separate_string``: a backslash escapes the next character, text between single quotes keeps
    its separators, and each item loses its leading and trailing spaces, its quotes and its escapes; an item
    past the 256th stays part of the last one.
    """
    delim = " "
    if data.startswith("^^"):
        delim, data = data[2:3], data[3:]
    if not delim:
        return []
    items: list[str] = []
    start, quoted, i = 0, False, 0
    while i < len(data):
        char = data[i]
        if char == "\\":
            i += 1
        elif char == "'" and (quoted or "'" in data[i + 1 :]):
            quoted = not quoted
        elif char == delim and not quoted and len(items) < _MULTISET_MAX_ITEMS - 1:
            items.append(data[start:i])
            start = i + 1
            if delim == " ":
                while start < len(data) and data[start] == " ":  # blank-delimited: a run of spaces is one
                    start += 1
                i = start - 1
        i += 1
    if start < len(data):
        items.append(data[start:])
    return [_cleanup_item(item, delim) for item in items]


def _cleanup_item(item: str, delim: str) -> str:
    """``cleanup_separated_string``: strip leading/trailing spaces and quotes, resolve escapes."""
    out: list[str] = []
    end = 0
    quoted = False
    text = item.lstrip(" ")
    i = 0
    while i < len(text):
        char = text[i]
        nxt = text[i + 1 : i + 2]
        if char == "\\" and nxt and (nxt in ("'", '"', "\\", delim) or nxt in _UNESCAPED):
            out.append(_UNESCAPED.get(nxt, nxt))
            end = len(out)
            i += 2
            continue
        if char == "'" and (quoted or "'" in text[i + 1 :]):
            quoted = not quoted
            if quoted:
                end = len(out)
        else:
            out.append(char)
            if char != " " or quoted:
                end = len(out)
        i += 1
    return "".join(out[:end])


# ---------------------------------------------------------------------------------------------------------------
# Outcome


@dataclass
class CallOutcome:
    """How the call ended, as the caller would have experienced it."""

    target: str | None  # the transfer argument the call ended at (or was dropped at)
    ended: str  # one of ENDINGS
    variables: dict[str, str]  # final channel variables
    sent: list[esl.Command]  # every command the server sent, in order
    silence: float  # seconds from the socket application starting to it ending
    host: str | None  # the host:port that answered
    error: str | None = None  # a framing error the server committed, if any
    unanswered: list[str] = field(default_factory=list)  # "host:port: why" for each host that did not answer

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly view, for the CLI."""
        return {
            "target": self.target,
            "ended": self.ended,
            "host": self.host,
            "silence": round(self.silence, 6),
            "sent": [command.line for command in self.sent],
            "error": self.error,
            "unanswered": self.unanswered,
        }


# ---------------------------------------------------------------------------------------------------------------
# Template: the captured connect reply this call's reply is built from.


@dataclass(frozen=True)
class _Template:
    headers: tuple[tuple[str, str], ...]
    uuid: str
    destination: str


@lru_cache(maxsize=16)
def _load_template(path: str) -> _Template:
    reader = esl.MessageReader(max_buffer=4 * 1024 * 1024)
    reader.feed(b"".join(captures.received(path)))
    while (message := reader.next_message()) is not None:
        if message.headers.get("Event-Name") == "CHANNEL_DATA" and message.content_type == "command/reply":
            headers = message.headers
            return _Template(tuple(headers.items()), headers["Unique-ID"], headers.get("Caller-Destination-Number", ""))
    raise ValueError(f"{path} holds no connect reply")


# ---------------------------------------------------------------------------------------------------------------
# One call


class _Call:
    """The channel: its variables, its dialplan, and the outcome bookkeeping."""

    def __init__(self, dialplan: Dialplan, caller_id: str | None, destination: str, options: dict) -> None:
        self.dialplan = dialplan
        self.caller_id = caller_id or ""
        self.caller_number = self.caller_id or DEFAULT_CALLER_NUMBER
        self.destination = destination
        self.uuid = options["uuid"] or str(uuidlib.uuid4())
        self.options = options
        self.template = _load_template(str(options["template"]))
        self.variables: dict[str, str] = self._initial_variables()
        self.sent: list[esl.Command] = []
        self.silence = 0.0
        self.host: str | None = None
        self.error: str | None = None
        self.unanswered: list[str] = []
        for name, value in (options["variables"] or {}).items():
            self.set(name, value)
        if options["behaviour"] == "inject":
            self.set("sip_user_agent", f"FakeSwitch/1.0\nCaller-Caller-ID-Number: {options['forged_caller_id']}")

    # -- channel variables (an ordered, unique-header event: re-setting moves a variable to the end) --

    def set(self, name: str, value: str) -> None:
        self.variables.pop(name, None)
        if value:
            self.variables[name] = value

    def expand(self, text: str) -> str:
        return _VARIABLE_REF.sub(lambda m: self.variables.get(m[1], ""), text)

    def execute(self, app: str, data: str) -> str:
        """Run the channel-level part of an application (as switch_core_session_execute_application does)."""
        data = self.expand(data)
        self.set("current_application_data", data)
        self.set("current_application", app)
        if app in ("set", "export"):
            self.base_set(data)
        elif app == "multiset":
            for item in multiset_items(data):
                self.base_set(item)
        elif app == "unset":
            self.set(data, "")
        return data

    def base_set(self, data: str) -> None:
        """mod_dptools' ``base_set``: ``name=value``, else ``name,value``; no value (or no separator) unsets."""
        if not data:
            return  # FreeSWITCH logs "No variable name specified." and sets nothing
        name, _, value = data.partition("=" if "=" in data else ",")
        self.set(name, value)

    # -- the dialplan --

    def run(self) -> CallOutcome:
        for app, data in self.dialplan.actions:
            data = self.execute(app, data)
            if app == "socket":
                fate = self._socket(data)
                if fate is not None:
                    return self._finish(*fate)
            elif app == "transfer":
                return self._finish("transfer", data)
            elif app == "hangup":
                return self._finish("dropped", None)
        return self._finish("dropped", None)  # the dialplan ran out: FreeSWITCH hangs the call up

    def _finish(self, kind: str, target: str | None) -> CallOutcome:
        if kind == "transfer":
            target = (target or "").strip()
            known = self.options["known_targets"]
            kind = "dropped" if not target or (known is not None and target not in known) else "transferred"
        return CallOutcome(target, kind, dict(self.variables), self.sent, self.silence, self.host, self.error,
                           self.unanswered)

    def _socket(self, data: str) -> tuple[str, str | None] | None:
        tokens = data.split()
        if not tokens:
            return None
        started = time.monotonic()
        try:
            for spec in tokens[0].split("|"):
                sock = self._connect(spec)
                if sock is not None:
                    self.host = spec
                    self.set("socket_host", _split_host(spec)[0])
                    return _Session(self, sock, "async" in tokens[1:], "full" in tokens[1:]).run()
            return None  # no host answered: the socket application fails and the dialplan continues
        finally:
            self.silence += time.monotonic() - started

    def _connect(self, spec: str) -> gsocket.socket | None:
        host, port = _split_host(spec)
        try:
            sock = gsocket.create_connection((host, port), timeout=self.options["connect_timeout"])
        except OSError as exc:
            self.unanswered.append(f"{spec}: {_connect_error(exc)}")
            return None
        sock.setsockopt(stdsocket.IPPROTO_TCP, stdsocket.TCP_NODELAY, 1)
        return sock

    # -- the connect reply --

    def _initial_variables(self) -> dict[str, str]:
        variables: dict[str, str] = {}
        for name, value in self.template.headers:
            key = name[len("variable_") :]
            if not name.startswith("variable_") or key in _DIALPLAN_VARIABLES:
                continue
            if key == "origination_caller_id_number":
                value = self.caller_id
            elif key == "DP_MATCH":
                value = self._dp_match(value)
            elif key == "channel_name":
                value = self._rename(value)
            elif value == self.template.uuid:
                value = self.uuid
            if value:
                variables[key] = value
        return variables

    def _dp_match(self, template_value: str) -> str:
        if self.dialplan.expression:
            match = re.search(self.dialplan.expression, self.destination)
            if match:
                parts = [match.group(0), *(g or "" for g in match.groups())]
                return parts[0] if len(parts) == 1 else "ARRAY::" + "|:".join(parts)
        return template_value if self.destination == self.template.destination else self.destination

    def _rename(self, value: str) -> str:
        old = self.template.destination
        return value.replace(old, self.destination) if old else value

    def connect_headers(self, async_mode: bool, full: bool) -> list[tuple[str, str]]:
        """The template's headers in the template's order, with this call's values."""
        headers: list[tuple[str, str]] = []
        emitted = False
        for name, value in self.template.headers:
            if name.startswith("variable_") or (name == "Content-Type" and not emitted):
                if not emitted:
                    headers += [(f"variable_{key}", val) for key, val in self.variables.items()]
                    emitted = True
                if name.startswith("variable_"):
                    continue
            headers.append((name, self._substitute(name, value, async_mode, full)))
        return headers

    def _substitute(self, name: str, value: str, async_mode: bool, full: bool) -> str:
        if name in _CALLER_ID_HEADERS:
            return self.caller_number
        if name in _DESTINATION_HEADERS:
            return self.destination
        if name in _CHANNEL_NAME_HEADERS:
            return self._rename(value)
        if name == "Reply-Text":
            return "+OK\n"
        if name == "Socket-Mode":
            return "async" if async_mode else "static"
        if name == "Control":
            return "full" if full else "single-channel"
        return self.uuid if value == self.template.uuid else value


def _connect_error(exc: OSError) -> str:
    """Why a host did not answer, in the words of a socket error (``connection refused``)."""
    if isinstance(exc, (stdsocket.timeout, TimeoutError)):
        return "no answer (connect timed out)"
    return (exc.strerror or str(exc) or type(exc).__name__).lower()


def _split_host(spec: str) -> tuple[str, int]:
    """``host[:port]`` (``[v6]:port`` too), port 8084 by default, as mod_event_socket parses it."""
    host, sep, port = spec.rpartition(":")
    if not sep or "]" in port or (":" in host and not host.endswith("]")):
        host, port = spec, str(DEFAULT_PORT)
    return host.strip("[]"), int(port)


# ---------------------------------------------------------------------------------------------------------------
# One socket session (mod_event_socket's listener_run for an outbound socket)


class _Session:
    def __init__(self, call: _Call, sock: gsocket.socket, async_mode: bool, full: bool) -> None:
        self.call = call
        self.sock = sock
        self.async_mode = async_mode
        self.full = full
        self.behaviour = call.options["behaviour"]
        self.reader = esl.CommandReader()
        self.started = time.monotonic()
        self.commands = 0
        self.stuck_at = float("inf")
        self.hangup_at: float | None = None
        self.resume = False
        self.myevents = False
        self.transfer: str | None = None
        self.ended_by: str | None = None  # "hangup" (caller), "dropped" (hangup app), "stuck"
        self.queue: list[tuple[str, str]] = []

    def run(self) -> tuple[str, str | None] | None:
        try:
            self._loop()
        finally:
            self.sock.close()
        return self._fate()

    def _loop(self) -> None:
        while True:
            try:
                command = self.reader.next_command()
            except esl.ESLProtocolError as error:
                self.call.error = f"server broke framing: {error}"
                return
            if command is None:
                if not self._receive():
                    return
            elif self._handle(command):
                return

    # -- waiting --

    def _deadline(self) -> tuple[float, str]:
        options = [(self.stuck_at, "stuck")]
        if self.commands == 0:
            options = [(self.started + self.call.options["first_command_timeout"], "first")]
        if self.hangup_at is not None:
            options.append((self.hangup_at, "hangup"))
        return min(options)

    def _receive(self) -> bool:
        """Read more bytes; False when the session is over (timeout, EOF, reset)."""
        deadline, why = self._deadline()
        if deadline <= time.monotonic():
            self._timed_out(why)
            return False
        try:
            self.sock.settimeout(max(0.001, deadline - time.monotonic()))
            data = self.sock.recv(65536)
        except (stdsocket.timeout, TimeoutError):
            self._timed_out(why)
            return False
        except OSError:
            return False  # reset by the server: the socket application just ends
        if not data:
            self._send(esl.disconnect_notice(self.call.uuid))  # FreeSWITCH tries, even after EOF
            return False
        try:
            self.reader.feed(data)
        except esl.ESLProtocolError as error:
            self.call.error = f"server broke framing: {error}"
            return False
        return True

    def _timed_out(self, why: str) -> None:
        """First-command timeout (S4), caller hung up (S8a) or gave up in silence (S13a): notice, then close."""
        self._send(esl.disconnect_notice(self.call.uuid))
        if why != "first":
            self.ended_by = why

    def _send(self, data: bytes) -> bool:
        try:
            self.sock.settimeout(self.call.options["send_timeout"])
            self.sock.sendall(data)
        except OSError:
            return False  # FreeSWITCH ignores send errors; the next recv sees the EOF or reset
        return True

    # -- commands --

    def _handle(self, command: esl.Command) -> bool:
        """Act on one command; True when the session is over."""
        self.call.sent.append(command)
        first = self.commands == 0
        self.commands += 1
        if first:
            self.stuck_at = time.monotonic() + self.call.options["stuck_after"]
        if self.behaviour == "stall":
            return False
        line = command.line.lower()
        if line.startswith(("exit", "...")):
            reply = b"" if first else esl.command_reply("+OK bye")
            self._send(reply + esl.disconnect_notice(self.call.uuid))
            return True
        if line.startswith("connect"):
            return self._connect_reply()
        reply = self._reply_text(command, line)
        if reply is not None and not first:
            self._send(_reply(reply))
        if self.ended_by == "dropped":  # a hangup app ran: the channel is down, FreeSWITCH says goodbye
            self._send(esl.disconnect_notice(self.call.uuid))
            return True
        return False

    def _connect_reply(self) -> bool:
        self._send(esl.encode_headers(self.call.connect_headers(self.async_mode, self.full)))
        if self.behaviour == "reset":
            self.sock.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_LINGER, struct.pack("ii", 1, 0))
            return True
        if self.behaviour == "hangup" and self.hangup_at is None:
            self.hangup_at = time.monotonic() + (self.call.options["hangup_after"] or 0.0)
        return False

    def _reply_text(self, command: esl.Command, line: str) -> str | None:
        """The Reply-Text mod_event_socket's parse_command would produce; "" becomes -ERR command not found."""
        if line.startswith("filter "):
            return _filter_reply(command.line[7:])
        if line.startswith("resume"):
            self.resume = True
            self.call.set("socket_resume", "true")
            return "+OK"
        if line.startswith("getvar"):
            _, _, name = command.line.partition(" ")
            return self.call.variables.get(name, "")
        if line.startswith("myevents"):
            if self.myevents:
                return "-ERR aready enabled."  # sic
            self.myevents = True
            return "+OK Events Enabled"
        if line.startswith("divert_events"):
            value = command.line[13:].strip().lower()
            if not value:
                return "-ERR missing value."
            return "+OK events diverted" if value == "on" else "+OK events not diverted"
        if line.startswith("sendmsg"):
            return self._sendmsg(command)
        if not self.full:
            return ""
        return self._full_reply(command, line)

    def _full_reply(self, command: esl.Command, line: str) -> str | None:
        if line.startswith("api "):
            name = command.line[4:].split(" ", 1)[0]
            self._send(esl.api_response(f"-ERR {name} Command not found!\n".encode()))
            return None
        if line.startswith("linger"):
            seconds = command.line[7:].strip() if command.line[6:7] == " " else ""
            return f"+OK will linger {int(seconds or 0)} seconds" if seconds else "+OK will linger"
        if line.startswith("nolinger"):
            return "+OK will not linger"
        if line.startswith("event"):
            words = command.line.split()[1:]
            fmt = words[0].lower() if words and words[0].lower() in ("plain", "xml", "json") else "plain"
            return f"+OK event listener enabled {fmt}" if words else "-ERR no keywords supplied"
        return ""

    def _sendmsg(self, command: esl.Command) -> str:
        headers = command.headers
        target = command.args.strip() or _header(headers, "session-id") or ""
        if target and target != self.call.uuid:
            return f"-ERR invalid session id [{target}]"
        call_command = (_header(headers, "call-command") or "").lower()
        if call_command == "execute":
            app = _header(headers, "execute-app-name") or ""
            arg = _header(headers, "execute-app-arg") or ""
            if (_header(headers, "content-type") or "").lower() == "text/plain" and command.body:
                arg = command.body.decode("utf-8", "replace")
            self._run_app(app, arg, self.async_mode or _truthy(_header(headers, "async")))
        elif call_command == "hangup":
            self._run_app("hangup", "", self.async_mode)
        return "+OK"

    def _run_app(self, app: str, arg: str, queued: bool) -> None:
        if queued:
            self.queue.append((app, arg))
            return
        data = self.call.execute(app, arg)
        if app == "transfer":
            self.transfer = data
        elif app == "hangup":
            self.ended_by = "dropped"

    # -- the end --

    def _fate(self) -> tuple[str, str | None] | None:
        """What the call does once the socket application returns; None = the dialplan continues."""
        for app, arg in self.queue:  # ASYNC: the park loop runs what was queued
            self._run_app(app, arg, queued=False)
        if self.ended_by is not None:
            return self.ended_by, None
        resumed = self.resume or _truthy(self.call.variables.get("socket_resume"))
        if self.async_mode:
            if self.transfer is not None:
                return "transfer", self.transfer
            return None if resumed else ("stuck", None)
        if resumed:
            return "stuck", None  # listener_run sets CS_RESET and nothing ever moves the channel again
        if self.transfer is not None:
            return "transfer", self.transfer
        return None


def _reply(text: str) -> bytes:
    """``Content-Type: command/reply`` exactly as mod_event_socket formats it (truncated like its buffer)."""
    text = text or "-ERR command not found"
    raw = text.encode("utf-8")[:_REPLY_LIMIT]
    try:
        return esl.command_reply(raw.decode("utf-8", "ignore"))
    except ValueError:  # a getvar of a value holding a newline: FreeSWITCH sends it raw and breaks framing too
        return b"Content-Type: command/reply\nReply-Text: " + raw + b"\n\n"


def _filter_reply(rest: str) -> str:
    name, _, value = rest.lstrip(" ").partition(" ")
    if name.lower() == "delete" and value:
        name, _, value = value.partition(" ")
        return f"+OK filter deleted. [{name}][{value}]"
    if not value:
        return "-ERR invalid syntax"
    if name.lower() == "add":
        name, _, value = value.partition(" ")
    return f"+OK filter added. [{name}]=[{value}]"


# ---------------------------------------------------------------------------------------------------------------
# Public entry points


def place_call(
    dialplan: Dialplan,
    caller_id: str | None,
    destination_number: str,
    *,
    variables: dict[str, str] | None = None,
    uuid: str | None = None,
    behaviour: str = "normal",
    hangup_after: float | None = None,
    stuck_after: float = 5.0,
    first_command_timeout: float = 25.0,
    template: str = DEFAULT_TEMPLATE,
    known_targets: set[str] | frozenset[str] | None = None,
    forged_caller_id: str = "5559999999",
    connect_timeout: float = 3.0,
    send_timeout: float = 5.0,
) -> CallOutcome:
    """Run one call through ``dialplan`` and report how it ended.

    ``behaviour``: ``normal``; ``hangup`` (the caller hangs up ``hangup_after`` s after the connect reply, 0 or
    None = at once: disconnect notice then EOF, as S8a); ``reset`` (abort with a TCP RST right after the connect
    reply); ``stall`` (read commands, never answer nor act on them); ``inject`` (a ``sip_user_agent`` variable
    whose raw value holds ``\\nCaller-Caller-ID-Number: <forged_caller_id>``).
    Every wait is bounded by ``connect_timeout``, ``send_timeout``, ``first_command_timeout`` or ``stuck_after``.
    """
    if behaviour not in BEHAVIOURS:
        raise ValueError(f"behaviour must be one of {BEHAVIOURS}, got {behaviour!r}")
    options = {
        "variables": variables,
        "uuid": uuid,
        "behaviour": behaviour,
        "hangup_after": hangup_after,
        "stuck_after": stuck_after,
        "first_command_timeout": first_command_timeout,
        "template": template,
        "known_targets": known_targets,
        "forged_caller_id": forged_caller_id,
        "connect_timeout": connect_timeout,
        "send_timeout": send_timeout,
    }
    return _Call(dialplan, caller_id, destination_number, options).run()


@dataclass
class FakeFreeSWITCH:
    """A dialplan plus default ``place_call`` options, for code that places many calls the same way."""

    dialplan: Dialplan
    defaults: dict[str, object] = field(default_factory=dict)

    def call(self, caller_id: str | None, destination_number: str, **options: object) -> CallOutcome:
        merged = {**self.defaults, **options}
        return place_call(self.dialplan, caller_id, destination_number, **merged)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    """``python -m fs_dynroute.fakeswitch.switch --hosts 127.0.0.1:8084 --caller +15551111111 --dest 5550100
    --default '5000 XML default'``: place one call, print its outcome as JSON."""
    parser = argparse.ArgumentParser(prog="python -m fs_dynroute.fakeswitch.switch", description=main.__doc__)
    parser.add_argument("--hosts", default=f"127.0.0.1:{DEFAULT_PORT}", help="socket data: host:port[|host:port]")
    parser.add_argument("--caller", default=None, help="caller ID number (omit for none)")
    parser.add_argument("--dest", default="5550100", help="destination number")
    parser.add_argument("--default", default="9999 XML default", help="the dialplan's No Match Destination")
    parser.add_argument("--xml", help="run this dialplan XML file instead of the recommended pattern")
    parser.add_argument("--context", help="context to use in --xml")
    parser.add_argument("--behaviour", choices=BEHAVIOURS, default="normal")
    parser.add_argument("--hangup-after", type=float, default=None)
    parser.add_argument("--stuck-after", type=float, default=5.0)
    parser.add_argument("--first-command-timeout", type=float, default=25.0)
    parser.add_argument("--var", action="append", default=[], metavar="NAME=VALUE", help="channel variable")
    parser.add_argument("--uuid")
    args = parser.parse_args(argv)
    if args.xml:
        with open(args.xml, encoding="utf-8") as handle:
            dialplan = Dialplan.from_xml(handle.read(), args.dest, args.context)
    else:
        dialplan = Dialplan.recommended(args.hosts, args.default)
    outcome = place_call(
        dialplan,
        args.caller,
        args.dest,
        variables=dict(item.partition("=")[::2] for item in args.var),
        uuid=args.uuid,
        behaviour=args.behaviour,
        hangup_after=args.hangup_after,
        stuck_after=args.stuck_after,
        first_command_timeout=args.first_command_timeout,
    )
    print(json.dumps(outcome.as_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
