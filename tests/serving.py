"""The tests' one helpers module: the CLI as a process, the service in-process and as a process, waits and locks.

Test files import from here (and take fixtures from conftest.py), never from one another.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gevent

from fs_dynroute.config import ServeConfig
from fs_dynroute.database import backend_of, open_database
from fs_dynroute.fakeswitch.switch import Dialplan
from fs_dynroute.models import MODELS
from fs_dynroute.service import Service

SCRIPT = shutil.which("fs-dynroute", path=str(Path(sys.executable).parent)) or "fs-dynroute"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (a process started on it should retry if it is taken meanwhile)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(condition: Callable[[], object], timeout: float = 5.0, what: str = "") -> None:
    """Wait (cooperatively) until ``condition()`` is true; fail saying what was awaited past ``timeout``."""
    with gevent.Timeout(timeout, AssertionError(f"timed out after {timeout} s waiting for {what or condition}")):
        while not condition():
            gevent.sleep(0.002)


class CLI:
    """The installed ``fs-dynroute`` console script on one database (``--db`` after the command, as before)."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url

    def __call__(self, *args: str, ok: bool = True, env: dict[str, str] | None = None
                 ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([SCRIPT, *args, "--db", self.db_url], capture_output=True, text=True, timeout=60,
                              env=env)
        if ok:
            assert proc.returncode == 0, proc.stderr
        return proc

    def json(self, *args: str) -> object:
        return json.loads(self(*args, "--json").stdout)

    def refused(self, *args: str) -> str:
        """Run a command that must fail cleanly: exit 2, one line on stderr, no traceback, nothing written."""
        before = table_contents(self.db_url)
        proc = self(*args, ok=False)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert proc.stderr.startswith("fs-dynroute: error: ") and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert table_contents(self.db_url) == before
        return proc.stderr


def table_contents(db_url: str) -> dict[str, list[tuple]]:
    """Every row of every table, read straight from the database."""
    db = open_database(db_url)
    with db.connection_context():
        return {m._meta.table_name: sorted(map(tuple, m.select().tuples().execute(db)), key=repr)
                for m in MODELS}


NO_MATCH = "5000 XML default"  # the demo rule's No Match Destination (main-ivr)

# The decision table every front door answers the same way (tests/test_inprocess.py runs it through mod_python3).
CALLS = [
    ("+15551111111", "1001 XML default"),
    ("15552222222", "1002 XML default"),
    ("+1 (555) 222-2222", "1002 XML default"),
    ("+15559999999", NO_MATCH),
    ("anonymous", NO_MATCH),
    (None, NO_MATCH),  # FreeSWITCH sends 0000000000
    ("", NO_MATCH),
]


# -- the service in-process ------------------------------------------------------------------------------------

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
def running_server(db_url: str, *, store_options: dict[str, Any] | None = None,
                   **settings: object) -> Iterator[Service]:
    """What ``fs-dynroute serve`` runs, on 127.0.0.1:<free port> over ``db_url`` (polling every 0.1 s).

    ``settings`` are ServeConfig's; ``store_options`` more IndexedStore keywords (full_reload, ...)."""
    config = ServeConfig(db=db_url, listen=("127.0.0.1", 0), poll_interval=0.1)
    with Service(config.replace(**settings), store_options) as service:
        yield service


def hosts(service: Service) -> str:
    return "%s:%d" % service.address


def dialplan_for(service: Service, default: str = "5000 XML default") -> Dialplan:
    return Dialplan.recommended(hosts(service), default)


def settle(service: Service, timeout: float = 2.0) -> None:
    """Wait until the server has no session in flight (bounded)."""
    with gevent.Timeout(timeout, False):
        while len(service.server.sessions):
            gevent.sleep(0.005)


# -- the service as a process ----------------------------------------------------------------------------------

class ServeProcess:
    """``fs-dynroute serve``, listening when this returns (on 127.0.0.1:<free port> unless ``listen`` is False:
    then where the environment says); ``port`` is where it said it listens, ``log`` its output."""

    def __init__(self, db_url: str, *extra: str, env: dict[str, str] | None = None,
                 preexec_fn: Callable[[], None] | None = None, listen: bool = True) -> None:
        where = ["--listen", f"127.0.0.1:{free_port()}"] if listen else []
        self.proc = subprocess.Popen([SCRIPT, "serve", "--db", db_url, *where, *extra], env=env,
                                     preexec_fn=preexec_fn, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.log: list[str] = []
        assert self.proc.stdout is not None
        watchdog = threading.Timer(10, self.proc.kill)  # a server that never says it listens is killed
        watchdog.start()
        try:
            for line in self.proc.stdout:
                self.log.append(line)
                if "listening on" in line:
                    self.port = int(line.split("listening on ", 1)[1].split()[0].rsplit(":", 1)[1])
                    break
            else:
                raise AssertionError(f"server did not start: {''.join(self.log)}")
        finally:
            watchdog.cancel()
        # Keep reading: a server whose log pipe fills up would block on its next log line.
        self.reader = threading.Thread(target=lambda: self.log.extend(self.proc.stdout), daemon=True)
        self.reader.start()

    def text(self) -> str:
        return "".join(self.log)

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=10)
        self.reader.join(timeout=5)
        return self.proc.returncode, self.text()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


# -- holding the database ----------------------------------------------------------------------------------------

class write_locked:
    """Hold the database's write lock from another connection, as a long CRM import would."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self.release = threading.Event()
        self.held = threading.Event()
        self.thread = threading.Thread(target=self._hold, daemon=True)

    def _hold(self) -> None:
        backend = backend_of(self.db_url)
        if backend == "sqlite":
            conn = sqlite3.connect(self.db_url[len("sqlite:///"):], isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
        else:
            conn = open_database(self.db_url).connection()
            cur = conn.cursor()
            cur.execute("BEGIN")
            cur.execute("SELECT * FROM dynroute_route FOR UPDATE")
        self.held.set()
        self.release.wait(10)
        conn.rollback()
        conn.close()

    def __enter__(self) -> write_locked:
        self.thread.start()
        assert self.held.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.thread.join(5)
