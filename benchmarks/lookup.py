"""Store-only microbenchmark: microseconds per ``lookup`` (and per dry-run ``route_call``) on the routes database.

The stores measured are those in ``STORES`` below: a name, where the class lives, and how to build one from a
database URL. Store-like classes found in ``fs_dynroute.store``/``fs_dynroute.index`` but missing from it are
listed so that nobody forgets to add them. Keys are the load generator's: half stored, half not.

    python -m benchmarks.lookup --db benchmarks/.data/routes-1000000.db --routes 1000000
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks.make_routes import db_url
from benchmarks.workload import RULE, Calls
from fs_dynroute.database import open_database

MODULES = ("fs_dynroute.store", "fs_dynroute.index")


def _sql_store(url: str) -> Any:
    from fs_dynroute.store import SQLStore

    return SQLStore(open_database(url))


def _indexed_store(url: str) -> Any:
    """As ``fs-dynroute serve`` builds it (the service's store, with serve's defaults), loaded into memory."""
    from fs_dynroute.config import ServeConfig
    from fs_dynroute.service import Service

    store = Service(ServeConfig(db=url)).store
    store.start()
    return store


@dataclass(frozen=True)
class Entry:
    module: str
    cls: str
    factory: Callable[[str], Any]


# Add a store here: name -> where its class lives, and how to build a ready one from a database URL.
STORES: dict[str, Entry] = {
    "SQLStore": Entry("fs_dynroute.store", "SQLStore", _sql_store),
    "IndexedStore": Entry("fs_dynroute.index", "IndexedStore", _indexed_store),
}


def discovered() -> dict[str, str]:
    """Classes in MODULES that look like a Store (rule_for + lookup), name -> module."""
    found = {}
    for module_name in MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and obj.__module__ == module_name and name != "Store"
                    and callable(getattr(obj, "lookup", None)) and callable(getattr(obj, "rule_for", None))):
                found[name] = module_name
    return found


def _timer_overhead() -> float:
    clock = time.perf_counter_ns
    samples = []
    for _ in range(20000):
        t0 = clock()
        samples.append(clock() - t0)
    return statistics.median(samples)


def measure(fn: Callable[[str], object], keys: list[str], overhead: float) -> dict[str, float]:
    """Per-call times in microseconds (timer overhead subtracted): median, p99, mean."""
    clock = time.perf_counter_ns
    for key in keys[:1000]:
        fn(key)
    samples = []
    for key in keys:
        t0 = clock()
        fn(key)
        samples.append(clock() - t0 - overhead)
    samples.sort()
    return {"median_us": samples[len(samples) // 2] / 1000, "p99_us": samples[int(len(samples) * 0.99)] / 1000,
            "mean_us": sum(samples) / len(samples) / 1000}


def bench_store(name: str, entry: Entry, url: str, keys: list[tuple[str, str]], overhead: float) -> dict[str, Any]:
    from fs_dynroute.routing import route_call

    started = time.perf_counter()
    store = entry.factory(url)
    ready = time.perf_counter() - started
    try:
        rule = store.rule_for(name=RULE)
        if rule is None:
            raise RuntimeError(f"rule {RULE!r} not found through {name}")
        hits = sum(store.lookup(rule, key) is not None for _, key in keys[:2000])
        result = {"store": name, "ready_s": round(ready, 3), "hits_in_first_2000": hits,
                  "lookup": measure(lambda key: store.lookup(rule, key), [k for _, k in keys], overhead),
                  "route_call_dry_run": measure(lambda caller: route_call(store, rule, caller, dry_run=True),
                                                [c for c, _ in keys], overhead)}
    finally:
        stop = getattr(store, "stop", None)
        if callable(stop):
            stop()
    return result


def run(db: str, routes: int, samples: int = 20000, only: list[str] | None = None) -> dict[str, Any]:
    url = db_url(db)
    calls = Calls(routes, 0.5, seed=7)
    keys = [calls.next() for _ in range(samples)]
    overhead = _timer_overhead()
    results: list[dict[str, Any]] = []
    notes: list[str] = []
    available = discovered()
    for name, entry in STORES.items():
        if only and name not in only:
            continue
        if available.get(entry.cls) != entry.module:
            notes.append(f"{name}: {entry.module}.{entry.cls} not found; skipped")
            continue
        results.append(bench_store(name, entry, url, keys, overhead))
    registered = {(e.cls, e.module) for e in STORES.values()}
    for cls, module in available.items():
        if (cls, module) not in registered:
            notes.append(f"{module}.{cls} looks like a Store but is not in benchmarks.lookup.STORES; not measured")
    return {"results": results, "notes": notes, "timer_overhead_ns": overhead, "samples": samples}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lookup", description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="SQLite path or database URL built by benchmarks.make_routes")
    parser.add_argument("--routes", type=int, required=True, help="routes in that database")
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--only", help="comma-separated store names from STORES")
    args = parser.parse_args(argv)
    report = run(args.db, args.routes, args.samples, args.only.split(",") if args.only else None)
    for r in report["results"]:
        print(f"{r['store']:14} lookup median {r['lookup']['median_us']:8.2f} us  "
              f"p99 {r['lookup']['p99_us']:8.2f} us   "
              f"route_call median {r['route_call_dry_run']['median_us']:8.2f} us   (ready in {r['ready_s']} s)")
    for note in report["notes"]:
        print("note:", note)
    if not sys.stdout.isatty():
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
