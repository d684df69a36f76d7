"""A small client for FreeSWITCH's INBOUND event socket (port 8021): authenticate, run one ``api`` command, exit.

What ``dialplan --reload`` needs for ``reloadxml``. Blocking sockets with one timeout for the whole
exchange (a command-line tool); the framing is the sans-IO reader of ``fs_dynroute.esl``. The exchange,
as captured from FreeSWITCH 1.10 (``fakeswitch/recordings/inbound/``): on connect it sends ``auth/request``; ``auth
PASSWORD`` gets ``+OK accepted`` or ``-ERR invalid`` and a disconnect notice; ``api CMD`` gets an
``api/response`` whose body is the command's output; events, if any were subscribed, are skipped.
"""

from __future__ import annotations

import socket
import time

from fs_dynroute.admin import UserError
from fs_dynroute.esl import ESLProtocolError, Message, MessageReader
from fs_dynroute.esl_inbound import api_command, auth_command

DEFAULT_ESL = "127.0.0.1:8021"


class InboundError(UserError):
    """FreeSWITCH could not be reached, refused the password, or the command failed."""


def api(host: str, port: int, password: str, command: str, timeout: float = 5.0) -> str:
    """The output of ``api COMMAND``; raises InboundError on anything but a +OK answer."""
    try:
        auth, run = auth_command(password), api_command(command)
    except ValueError as exc:
        raise InboundError(f"esl: {exc}") from None
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            session = _Session(sock, deadline)
            session.expect("auth/request")
            sock.sendall(auth)
            reply = session.expect("command/reply").headers.get("Reply-Text", "")
            if not reply.startswith("+OK"):
                raise InboundError(f"esl {host}:{port}: FreeSWITCH refused the password ({reply})")
            sock.sendall(run)
            output = session.expect("api/response").body.decode("utf-8", "replace")
            sock.sendall(b"exit\n\n")
    except (OSError, ESLProtocolError) as exc:
        raise InboundError(f"esl {host}:{port}: {exc or type(exc).__name__}") from None
    if output.startswith("-ERR"):
        raise InboundError(f"esl {host}:{port}: {command}: {output.strip()}")
    return output.strip()


class _Session:
    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock, self.deadline, self.reader = sock, deadline, MessageReader()

    def expect(self, content_type: str) -> Message:
        """The next message of ``content_type``, skipping events; a disconnect notice or EOF is an error."""
        while True:
            message = self.reader.next_message()
            if message is None:
                self.sock.settimeout(max(0.001, self.deadline - time.monotonic()))
                data = self.sock.recv(65536)
                if not data:
                    raise ESLProtocolError(f"FreeSWITCH closed the connection while we waited for {content_type}")
                self.reader.feed(data)
            elif message.content_type == content_type:
                return message
            elif message.content_type == "text/disconnect-notice":
                raise ESLProtocolError(f"FreeSWITCH disconnected while we waited for {content_type}")
