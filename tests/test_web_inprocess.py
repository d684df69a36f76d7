"""The web application inside the serving process (what ``serve --web`` runs): a slow page never delays a call.

The page and the calls share one process, one event loop and one database pool, as they will when
``serve`` hosts the page; the page runs in WebServer's worker threads, so the calls keep their deadlines.
"""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

import gevent
import gevent.pool
import gevent.socket

from fs_dynroute import demo, tokens
from fs_dynroute.admin import ValidRoute, get_rule, upsert_routes
from fs_dynroute.database import open_database
from fs_dynroute.fakeswitch.switch import place_call
from fs_dynroute.models import database
from fs_dynroute.schema import initdb
from fs_dynroute.web import create_app
from fs_dynroute.web.server import MAX_BODY, WebServer
from tests.serving import dialplan_for, running_server

SLOW_PAGE_ROUTES = 300_000
CALLS = 100
DEADLINE = 1.0


def test_a_slow_page_in_the_serving_process_never_delays_a_call(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'routes.db'}"
    setup = open_database(url)
    database.initialize(setup)
    with setup.connection_context(), setup.atomic():
        initdb(setup)
        demo.load()
        upsert_routes(get_rule(demo.RULE), (ValidRoute(f"444{n:07d}", "1001", "bulk", None)
                                            for n in range(SLOW_PAGE_ROUTES)), batch=1000)
        token = tokens.add("crm")
    setup.close()

    with running_server(url, decision_timeout=DEADLINE) as server:
        web = WebServer(create_app(server.store.sql.db), ("127.0.0.1", 0), threads=2)
        web.start()
        try:
            request = urllib.request.Request(f"http://127.0.0.1:{web.address[1]}/api/rules/{quote(demo.RULE)}/routes:export",
                                             headers={"Authorization": f"Bearer {token}"})
            started = time.monotonic()
            # The HTTP client blocks, so it runs in a thread; the calls run on the event loop meanwhile.
            page = gevent.get_hub().threadpool.spawn(lambda: urllib.request.urlopen(request, timeout=60).read())
            plan = dialplan_for(server)
            calls = []
            while not page.ready() or len(calls) < CALLS:  # calls flow for as long as the page takes
                calls += gevent.pool.Pool(10).map(
                    lambda _: place_call(plan, "+15551111111", "5550100", stuck_after=3.0), range(10))
                assert time.monotonic() - started < 60
            body = page.get()
            page_took = time.monotonic() - started
        finally:
            web.stop()
    assert len(body.splitlines()) == SLOW_PAGE_ROUTES + 3  # header and the two demo routes
    assert page_took > 1.0, "the page was not slow enough to prove anything"
    assert [c.target for c in calls] == ["1001 XML default"] * len(calls)
    assert max(c.silence for c in calls) < DEADLINE


def test_a_body_over_the_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    web = WebServer(create_app(open_database(f"sqlite:///{tmp_path / 'routes.db'}")), ("127.0.0.1", 0))
    web.start()
    try:
        with gevent.socket.create_connection(web.address, timeout=5) as sock:
            sock.sendall(b"POST /api/rules HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
                         b"Content-Length: %d\r\n\r\nsome" % (MAX_BODY + 1))
            answer = sock.recv(65536)
    finally:
        web.stop()
    assert answer.startswith(b"HTTP/1.1 413 ")
