"""Serving the web application: gevent's WSGIServer in front, the application in worker threads.

Each request's body is read in its greenlet, then the whole request runs in a thread of a small
pool, so a slow page (a big import, a locked database) holds one thread and never the event loop:
inside ``serve`` the calls keep flowing. Peewee keeps one connection per thread.
"""

from __future__ import annotations

import io
import logging
import signal
from collections.abc import Callable, Iterable
from typing import Any

import gevent
from gevent.pywsgi import WSGIServer
from gevent.threadpool import ThreadPool

log = logging.getLogger(__name__)
MAX_BODY = 256 * 1024 * 1024  # a CSV of several million routes; the body is held in memory
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class WebServer:
    """``app`` on ``listen`` (host, port); start() returns at once, stop() closes it."""

    def __init__(self, app: WSGIApp, listen: tuple[str, int], threads: int = 8,
                 label: str = "web page and API") -> None:
        """``label`` names what is served, in the log line that says where."""
        self.app = app
        self.label = label
        self.threads = ThreadPool(threads)
        self.server = WSGIServer(listen, self._handle, log=logging.getLogger("fs_dynroute.web.access"),
                                 error_log=log)

    @property
    def address(self) -> tuple[str, int]:
        return self.server.address[:2]

    def start(self) -> None:
        self.server.start()
        log.info("%s on http://%s:%d/", self.label, *self.address)

    def stop(self, timeout: float = 5.0) -> None:
        """Close, give requests in flight ``timeout`` seconds, and let the worker threads end."""
        self.server.stop(timeout=timeout)
        self.threads.kill()

    def serve_until_signalled(self) -> None:
        """Serve until SIGTERM or SIGINT; requests in flight get a few seconds to finish."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(sig, self.stop)
        self.start()
        self.server.serve_forever()

    def _handle(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        # The socket belongs to this greenlet's hub: read the body here, before the thread runs.
        length = environ.get("CONTENT_LENGTH") or ""
        too_large = length.isdigit() and int(length) > MAX_BODY
        body = b"" if too_large else environ["wsgi.input"].read(MAX_BODY + 1)  # a chunked body is capped too
        if too_large or len(body) > MAX_BODY:
            start_response("413 Request Entity Too Large", [("Content-Type", "text/plain")])
            return [b"request body larger than %d bytes\n" % MAX_BODY]
        environ["wsgi.input"] = io.BytesIO(body)
        status, headers, body = self.threads.spawn(_run, self.app, environ).get()
        start_response(status, headers)
        return [body]


def _run(app: WSGIApp, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    """The whole response, produced in a worker thread."""
    started: list[tuple[str, list[tuple[str, str]]]] = []
    written: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        started[:] = [(status, headers)]
        return written.append

    result = app(environ, start_response)
    try:
        written.extend(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    return started[0][0], started[0][1], b"".join(written)
