"""A fake of FreeSWITCH's inbound event socket (127.0.0.1:<free port>) for ``dialplan --reload``, speaking the
captured bytes.

Greeting, auth replies and the goodbye are the chunks FreeSWITCH 1.10 sent in recordings/inbound/; an
``api`` answer is framed as the captured ``api uuid_kill`` answer is (esl.api_response, checked against it).
It runs in a thread with plain sockets: the client under test is a CLI process.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType

from fs_dynroute.esl import CommandReader, api_response
from fs_dynroute.fakeswitch import captures

_EVENTS = captures.received("inbound/i2_events_plain.repr")
GREETING, ACCEPTED, GOODBYE = _EVENTS[0], _EVENTS[1], _EVENTS[-1]
REFUSED = captures.received("inbound/i1_auth_bad.repr")[1]
CAPTURED_API_ANSWER = next(c for c in captures.received("inbound/i2_events_plain_control.repr")
                           if c.startswith(b"Content-Type: api/response"))
# FreeSWITCH's answers to the api commands the fake knows; anything else is refused as FreeSWITCH does.
API = {"reloadxml": b"+OK [Success]\n"}


class FakeInbound:
    """Accepts inbound event-socket clients; ``commands`` lists every command line received, in order."""

    def __init__(self, password: str = "ClueCon") -> None:
        self.password = password
        self.commands: list[str] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.address = "127.0.0.1:%d" % self.listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> FakeInbound:
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(5)
        self.listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                self._session(conn)

    def _session(self, conn: socket.socket) -> None:
        conn.sendall(GREETING)
        reader, authed = CommandReader(), False
        while data := conn.recv(65536):
            reader.feed(data)
            while (command := reader.next_command()) is not None:
                self.commands.append(command.line)
                if command.name == "auth":
                    authed = command.args == self.password
                    conn.sendall(ACCEPTED if authed else REFUSED)
                    if not authed:
                        return
                elif command.name == "api" and authed:
                    conn.sendall(api_response(API.get(command.args,
                                                      f"-ERR {command.args} Command not found!\n".encode())))
                elif command.name == "exit":
                    conn.sendall(GOODBYE)
                    return
