"""The tracker's two event-socket clients side by side: ``python -m benchmarks.track_clients [--events N]``.

The fake event socket runs in its own process (``python -m fs_dynroute.fakeswitch.inbound --burst N``) and
sends N missed calls (scenario s2's captured B leg, fresh UUIDs and customers) as soon as a tracker subscribes.
For each client this process runs a Tracker over a fresh SQLite file with one tracked rule and prints: events read
per second and this process's CPU per 1,000 events (every thread: python-ESL reads in its own, the database
writer in another), read and then also written; how long a killed switch takes to be noticed, and how long after
the switch listens again the tracker is subscribed (its backoff is 0.1 s here).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import gevent

from benchmarks.procs import Server, free_port
from fs_dynroute import admin
from fs_dynroute.database import open_database
from fs_dynroute.models import database
from fs_dynroute.schema import initdb
from fs_dynroute.track import Tracker
from fs_dynroute.track_pyesl import available
from fs_dynroute.track_store import TrackOptions, set_track


def _until(condition: Callable[[], bool], timeout: float = 300.0) -> float:
    started = time.perf_counter()
    while not condition():
        if time.perf_counter() - started > timeout:
            raise TimeoutError("benchmark condition not reached")
        gevent.sleep(0.001)
    return time.perf_counter() - started


def _database(path: Path) -> object:
    db = open_database(f"sqlite:///{path}")
    database.initialize(db)
    with db.connection_context():
        initdb(db)
        admin.add_destination("main-ivr", "5000 XML default")
        admin.add_rule("Callbacks", admin.RuleSpec(source="5550310", digits_match=10, no_match_destination="main-ivr",
                                                   delete_after_use=True))
        set_track("Callbacks", TrackOptions("missed", r"^1\d{3}$"))
    return db


def measure(client: str, events: int, work: Path) -> dict[str, float]:
    port = free_port()
    fake = [sys.executable, "-m", "fs_dynroute.fakeswitch.inbound", "--port", str(port), "--burst", str(events)]
    db = _database(work / f"{client}.db")
    with Server("fake event socket", fake, port, work / f"fake-{client}.log") as switch:
        tracker = Tracker(db, ("127.0.0.1", port), "ClueCon", client=client, backoff=(0.1, 0.1)).start()
        _until(lambda: tracker.stats.connected)
        cpu, started = time.process_time(), time.perf_counter()
        _until(lambda: tracker.stats.events >= events)
        read, read_cpu = time.perf_counter() - started, time.process_time() - cpu
        tracker.wait_idle()
        written, all_cpu = time.perf_counter() - started, time.process_time() - cpu
        assert tracker.stats.written == events, tracker.stats
        switch.stop()
        noticed = _until(lambda: not tracker.stats.connected, 30)
    with Server("fake event socket", fake[:-2], port, work / f"fake-{client}-2.log"):
        back = _until(lambda: tracker.stats.connected, 30)
    tracker.stop()
    return {"events/s read": events / read, "CPU ms per 1,000 events read": read_cpu / events * 1e6,
            "s until all written": written, "CPU ms per 1,000 events read and written": all_cpu / events * 1e6,
            "ms to notice a killed switch": noticed * 1000, "ms to resubscribe once it listens again": back * 1000}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.track_clients", description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args(argv)
    clients = ["builtin"] + (["python-esl"] if available() else [])
    work = Path(tempfile.mkdtemp(prefix="track-clients-"))
    results = {client: measure(client, args.events, work) for client in clients}
    print(f"{args.events} CHANNEL_HANGUP_COMPLETE (plain) through each client\n")
    print("| | " + " | ".join(clients) + " |\n|---|" + "---|" * len(clients))
    for row in results[clients[0]]:
        print(f"| {row} | " + " | ".join(f"{results[c][row]:,.2f}" for c in clients) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
