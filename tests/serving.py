"""Running the real server in-process for tests, and checking it leaves nothing behind."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager

import gevent

from fs_dynroute.database import open_database
from fs_dynroute.fakeswitch.switch import Dialplan
from fs_dynroute.index import IndexedStore
from fs_dynroute.server import DynrouteServer, StoreRouter
from fs_dynroute.store import SQLStore


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
def running_server(db_url: str, *, stale_after: float = 3.0, **options: object) -> Iterator[DynrouteServer]:
    """What ``fs-dynroute serve`` runs, on 127.0.0.1:<free port> over ``db_url``, stopped afterwards."""
    db = open_database(db_url, pooled=True, busy_timeout=float(options.get("decision_timeout", 1.0)))
    store = IndexedStore(SQLStore(db), poll_interval=0.1, stale_after=stale_after)
    store.start()
    server = DynrouteServer(StoreRouter(store), listen=("127.0.0.1", 0), **options)  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.stop()
        store.stop()


def flush(server: DynrouteServer) -> None:
    """Write the server's batched use counts and audit rows now (it does so every poll_interval)."""
    server.router.store.flush()  # type: ignore[attr-defined]


def refresh(server: DynrouteServer) -> None:
    """Make the server's index see what the test just wrote (the poller would within poll_interval)."""
    server.router.store.refresh()  # type: ignore[attr-defined]


def hosts(server: DynrouteServer) -> str:
    return "{}:{}".format(*server.address)


def dialplan_for(server: DynrouteServer, default: str = "5000 XML default") -> Dialplan:
    return Dialplan.recommended(hosts(server), default)


def settle(server: DynrouteServer, timeout: float = 2.0) -> None:
    """Wait until the server has no session in flight (bounded)."""
    with gevent.Timeout(timeout, False):
        while len(server.sessions):
            gevent.sleep(0.005)
