"""Full reloads of a large index while calls are routed: how long each takes and how long the event loop stalls.

The server's IndexedStore is loaded with N routes (the demo rule), then made to reload R times, as its
5-minute safety net and a bulk change do. Meanwhile one greenlet routes dry-run calls from memory, checking
each target, and another ticks every millisecond to measure how long the event loop is held up. A reload
builds the new index in its own thread and swaps it in, so the calls meanwhile must all route correctly,
none may find the index stale, and no stall should be much longer than the GIL's switch interval (5 ms).

    python -m benchmarks.reload --routes 1000000 [--reloads 5] [--db benchmarks/.data/reload-1000000.db]
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import sys
import time
from pathlib import Path

import gevent

from benchmarks.make_routes import build, db_url
from benchmarks.workload import HIT_BASE, RULE, expected_target
from fs_dynroute.database import open_database
from fs_dynroute.index import OWN_THREADS, IndexedStore
from fs_dynroute.routing import route_call
from fs_dynroute.store import SQLStore

TICK = 0.001


def measure(url: str, routes: int, reloads: int) -> dict[str, float]:
    store = IndexedStore(SQLStore(open_database(url, pooled=True, max_connections=8 + OWN_THREADS)),
                         poll_interval=0.05)
    started = time.perf_counter()
    store.start()
    first_load = time.perf_counter() - started
    rule = store.rule_for(name=RULE)
    stalls: list[float] = []
    calls = {"routed": 0, "wrong": 0}
    running = True

    def ticker() -> None:
        while running:
            t0 = time.perf_counter()
            gevent.sleep(TICK)
            stalls.append(time.perf_counter() - t0 - TICK)

    def caller() -> None:
        rng = random.Random(1)
        while running:
            key = str(HIT_BASE + rng.randrange(routes * 2))  # half stored, half not
            decision = route_call(store, rule, key, dry_run=True)
            calls["routed"] += 1
            calls["wrong"] += decision.destination != expected_target(key, routes)
            gevent.sleep(0.0005)

    workers = [gevent.spawn(ticker), gevent.spawn(caller)]
    durations = []
    for _ in range(reloads):
        before = store.routes
        t0 = time.perf_counter()
        store.reload_at = 0.0  # due now: the poller starts a full load beside the serving index
        while store.routes is before:
            gevent.sleep(0.005)
        durations.append(time.perf_counter() - t0)
    running = False
    gevent.joinall(workers)
    store.stop()
    stalls.sort()
    return {"routes": routes, "first_load_s": first_load, "reloads": reloads,
            "reload_mean_s": statistics.mean(durations), "reload_max_s": max(durations),
            "loop_stall_max_ms": stalls[-1] * 1000, "loop_stall_p99_ms": stalls[int(len(stalls) * 0.99)] * 1000,
            "stalls_over_10ms": sum(s > 0.010 for s in stalls), "ticks": len(stalls),
            "calls_during": calls["routed"], "calls_wrong": calls["wrong"],
            "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reload", description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, default=1_000_000)
    parser.add_argument("--reloads", type=int, default=5)
    parser.add_argument("--db", help="an existing routes database made by benchmarks.make_routes with --routes "
                        "(default: benchmarks/.data/reload-<routes>.db, built if missing)")
    args = parser.parse_args(argv)
    target = args.db or f"benchmarks/.data/reload-{args.routes}.db"
    if args.db is None and not Path(target).exists():
        build(target, args.routes)
    figures = measure(db_url(target), args.routes, args.reloads)
    print(" ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()))
    return 0 if figures["calls_wrong"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
