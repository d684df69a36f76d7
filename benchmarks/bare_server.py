"""Baselines: bare gevent StreamServers doing an exchange with no lookup, the limit of this stack.

``--exchange classic`` (the usual exchange, fs_dynroute's before issue 11): send ``connect``, read the connect
reply (one header block), send four ``set`` sendmsgs (constant values: the No Match Destination) each awaiting
its ``+OK``, send ``exit``, await ``+OK bye``, close. ``--exchange minimal`` (fs_dynroute's exchange now, S20):
send ``connect``, read the reply, send ONE ``multiset`` carrying the same four variables, await ``+OK``, close.
No parsing beyond framing, no deadline, no thread pool, no logging, no database. Same StreamServer settings as
fs_dynroute (unbounded pool, backlog 4096).

    python -m benchmarks.bare_server --listen 127.0.0.1:8090 [--exchange minimal]
"""

from __future__ import annotations

import argparse
import signal
import sys

import gevent
from gevent.pool import Pool
from gevent.server import StreamServer

from benchmarks.workload import NO_MATCH_TARGET, RULE
from fs_dynroute import esl

VARIABLES = (("dynroute_target", NO_MATCH_TARGET), ("dynroute_result", "nomatch"), ("dynroute_rule", RULE),
             ("dynroute_key", "5559000000"))
EXCHANGES = {  # the commands after connect, each awaiting its reply
    "classic": (*(esl.set_variable(name, value) for name, value in VARIABLES), esl.exit_command()),
    "minimal": (esl.multiset(VARIABLES),),
}
CONNECT = esl.connect_command()
BLANK = b"\n\n"


def read_block(sock, buf: bytes) -> bytes:
    """Read until one message's header block is complete; returns what follows it."""
    while True:
        end = buf.find(BLANK)
        if end >= 0:
            return buf[end + 2:]
        data = sock.recv(65536)
        if not data:
            raise EOFError
        buf += data


def handler(commands: tuple[bytes, ...]):
    def handle(sock, _address) -> None:
        try:
            sock.sendall(CONNECT)
            buf = read_block(sock, b"")
            for command in commands:
                sock.sendall(command)
                buf = read_block(sock, buf)
        except (OSError, EOFError):
            pass
        finally:
            sock.close()

    return handle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bare_server", description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:8090", help="host:port")
    parser.add_argument("--exchange", choices=sorted(EXCHANGES), default="classic")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    server = StreamServer((host, int(port)), handler(EXCHANGES[args.exchange]), spawn=Pool(), backlog=4096)
    stopping = gevent.event.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(sig, stopping.set)
    server.start()
    print(f"bare server ({args.exchange}) listening on {host}:{server.address[1]}", flush=True)
    stopping.wait()
    server.stop(timeout=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
