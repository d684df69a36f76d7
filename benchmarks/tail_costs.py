"""What can stall the event loop of a server holding N routes, measured in CPU time (robust to a busy machine).

    python -m benchmarks.tail_costs --db benchmarks/.data/routes-1000000-schema2.db

Loads the index as ``fs-dynroute serve`` does, then times (process CPU, best of a few): a full collection by the
cyclic garbage collector, before and after ``gc.freeze()``; a change-log poll with nothing to apply; a statistics
flush of 500 calls (half a second at 1,000 calls/s, half of them matches); and the full reload the index does every
``FULL_RELOAD`` seconds (its CPU, and the longest the event loop was held meanwhile). Each of these holds the
GIL: while it runs, no call makes progress.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Callable

import gevent

from benchmarks import make_routes
from benchmarks.workload import RULE, route_key


def cpu_ms(fn: Callable[[], object], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        fn()
        best = min(best, time.process_time() - started)
    return best * 1000


def longest_stall(fn: Callable[[], object]) -> float:
    """The longest the event loop went without running a 1 ms ticker greenlet while ``fn`` ran (wall ms)."""
    worst = [0.0]

    def tick() -> None:
        while True:
            asked = time.perf_counter()
            gevent.sleep(0.001)
            worst[0] = max(worst[0], time.perf_counter() - asked - 0.001)

    ticker = gevent.spawn(tick)
    gevent.sleep(0.01)
    fn()
    gevent.sleep(0.01)
    ticker.kill()
    return worst[0] * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tail_costs", description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    args = parser.parse_args(argv)
    from fs_dynroute.database import open_database
    from fs_dynroute.index import IndexedStore
    from fs_dynroute.routing import route_call
    from fs_dynroute.store import SQLStore

    store = IndexedStore(SQLStore(open_database(make_routes.db_url(args.db), pooled=True)))
    out: dict[str, object] = {"reload_ms": cpu_ms(store.reload, repeat=1)}
    out["reload_loop_stall_ms"] = longest_stall(store.reload)
    out["tracked_objects"] = len(gc.get_objects())
    out["gc_thresholds"] = gc.get_threshold()
    out["full_collection_ms"] = cpu_ms(lambda: gc.collect(2))
    out["refresh_nothing_to_apply_ms"] = cpu_ms(store.refresh)
    rule = store.rule_for(name=RULE)

    def flush_500() -> None:
        for i in range(500):
            route_call(store, rule, "+1" + (route_key(i) if i % 2 else f"555900{i:04d}"), f"uuid-{i}")
        store.flush()

    out["route_500_calls_and_flush_ms"] = cpu_ms(flush_500)
    out["route_500_calls_ms"] = cpu_ms(lambda: [route_call(store, rule, "+1" + route_key(i), f"u{i}", dry_run=True)
                                                for i in range(500)])
    for interval in (0.005, 0.0005):  # the default switch interval, and a tenth of it
        sys.setswitchinterval(interval)
        stalls = []
        for _ in range(5):
            for i in range(500):
                route_call(store, rule, "+1" + (route_key(i) if i % 2 else f"555900{i:04d}"), f"uuid-{i}")
            stalls.append(longest_stall(store.flush))  # the flush thread holds the GIL; how long does the loop wait?
        out[f"flush_500_loop_stall_ms_switchinterval_{interval * 1000:g}ms"] = max(stalls)
        out[f"refresh_loop_stall_ms_switchinterval_{interval * 1000:g}ms"] = max(
            longest_stall(store.refresh) for _ in range(5))
    sys.setswitchinterval(0.005)
    gc.freeze()
    out["frozen_objects"] = gc.get_freeze_count()
    out["full_collection_after_freeze_ms"] = cpu_ms(lambda: gc.collect(2))
    store.stop()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
