"""What ``serve --metrics HOST:PORT`` answers: /metrics (Prometheus text) and /health, for the serving process.

The serving process builds it with :func:`monitor_app` over its server and index and runs it on
``fs_dynroute.web.server.WebServer`` (worker threads: a scrape never holds the event loop). The numbers
are read when scraped, so the call path pays nothing for them; the counters it does pay for are the
functions of ``fs_dynroute.metrics``.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Flask, Response, jsonify

from fs_dynroute import metrics


def health(store: Any) -> tuple[bool, str]:
    """Healthy while the index has been refreshed from the database within its ``stale_after`` window:
    that is when calls are routed from it; otherwise they go to No Match."""
    if time.monotonic() < store.fresh_until:
        return True, "index fresh: the routes database answers"
    since = store.outage.since
    why = f"the routes database has not answered for {time.monotonic() - since:.1f} s" if since is not None \
        else "the index has not been loaded yet"
    return False, f"index stale: {why}; calls go to their No Match Destination"


def watch(server: Any, store: Any) -> None:
    """Have /metrics (this app's or the admin page's: one registry) read the serving process's own numbers."""
    metrics.watch_server(live=lambda: server.live, outage=lambda: store.outage.since is not None,
                         routes=lambda: sum(len(table) for table in list(store.routes.values())),
                         last_refresh=lambda: store.fresh_until - store.stale_after)


def monitor_app(server: Any, store: Any) -> Flask:
    """/metrics and /health over a running DynrouteServer and its IndexedStore."""
    watch(server, store)
    app = Flask(__name__)

    @app.get("/health")
    def _health() -> tuple[Response, int]:
        ok, reason = health(store)
        return jsonify(status="ok" if ok else "unavailable", reason=reason), 200 if ok else 503

    @app.get("/metrics")
    def _metrics() -> Response:
        body, content_type = metrics.exposition()
        return Response(body, content_type=content_type)

    return app
