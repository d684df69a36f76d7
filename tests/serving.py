"""Running the real server in-process for tests, and checking it leaves nothing behind."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager

import gevent
import peewee as pw

from fs_dynroute.database import open_database
from fs_dynroute.server import DynrouteServer, StoreRouter
from fs_dynroute.store import SQLStore
from tests.fakeswitch import Dialplan


def open_fds() -> set[str]:
    """This process's open sockets (what a leaked session would leave)."""
    fds = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            fds.add(target)
    return fds


def live_greenlets() -> list[gevent.Greenlet]:
    """Spawned greenlets still running (sessions, server loops); the hub itself is not one."""
    return [o for o in gc.get_objects() if isinstance(o, gevent.Greenlet) and not o.dead]


@contextmanager
def running_server(db_url: str, **options: object) -> Iterator[DynrouteServer]:
    """fs-dynroute serve on 127.0.0.1:<free port> over ``db_url``, stopped and closed afterwards."""
    db = open_database(db_url, pooled=True, busy_timeout=float(options.get("decision_timeout", 1.0)))
    server = DynrouteServer(StoreRouter(SQLStore(db)), listen=("127.0.0.1", 0), **options)  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.stop()
        close_pool(db)


def close_pool(db: pw.Database) -> None:
    """Close every pooled connection, including those worker threads still hold."""
    db.close_all() if hasattr(db, "close_all") else db.close()


def hosts(server: DynrouteServer) -> str:
    return "%s:%d" % server.address


def dialplan_for(server: DynrouteServer, default: str = "5000 XML default") -> Dialplan:
    return Dialplan.recommended(hosts(server), default)


def settle(server: DynrouteServer, timeout: float = 2.0) -> None:
    """Wait until the server has no session in flight (bounded)."""
    with gevent.Timeout(timeout, False):
        while len(server.sessions):
            gevent.sleep(0.005)
