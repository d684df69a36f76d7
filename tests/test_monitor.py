"""``serve``'s /health and /metrics (fs_dynroute.monitor) over a running server and its index, on each backend."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import gevent
import peewee as pw
import pytest

from fs_dynroute import demo
from fs_dynroute.fakeswitch.switch import place_call
from fs_dynroute.monitor import monitor_app
from fs_dynroute.web.server import WebServer
from tests.backends import BACKENDS, DatabaseOutage
from tests.serving import dialplan_for, running_server, wait_until


def get(url: str) -> tuple[int, str]:
    """A GET from a worker thread, so the server on this process's event loop keeps running."""
    def fetch() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()
    return gevent.get_hub().threadpool.spawn(fetch).get()


@contextmanager
def monitored(db_url: str) -> Iterator[tuple[object, str]]:
    with running_server(db_url, stale_after=1.0) as server:
        web = WebServer(monitor_app(server.server, server.store), ("127.0.0.1", 0), threads=2)
        web.start()
        try:
            yield server, "http://127.0.0.1:%d" % web.address[1]
        finally:
            web.stop()


def test_health_and_metrics_of_a_serving_process(db: pw.Database, db_url: str) -> None:
    demo.load()
    with monitored(db_url) as (server, base):
        status, body = get(base + "/health")
        assert (status, json.loads(body)["status"]) == (200, "ok")
        assert place_call(dialplan_for(server), "+15551111111", "5550100").target == "1001 XML default"
        status, text = get(base + "/metrics")
        assert status == 200
        assert "dynroute_index_routes 2.0" in text and "dynroute_sessions_in_flight 0.0" in text
        assert "dynroute_database_outage 0.0" in text and "dynroute_change_log_lag_seconds" in text


@pytest.mark.parametrize("db_url", [b for b in BACKENDS if b != "sqlite"], indirect=True)  # a server to stop
def test_health_is_503_with_the_reason_while_the_database_is_down(db: pw.Database, db_url: str) -> None:
    demo.load()
    switch = DatabaseOutage(db_url)
    try:
        with monitored(switch.url) as (_, base):
            switch.down()
            wait_until(lambda: get(base + "/health")[0] == 503, timeout=10)  # once stale_after (1 s) has passed
            status, body = get(base + "/health")
            assert status == 503 and "has not answered for" in json.loads(body)["reason"]
            assert "dynroute_database_outage 1.0" in get(base + "/metrics")[1]
            switch.up()
            wait_until(lambda: get(base + "/health")[0] == 200, timeout=10)
    finally:
        switch.close()
