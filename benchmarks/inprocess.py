"""In-process mode: time per mod_python3 call with FreeSWITCH's threads calling ``fs_dynroute.fsapp`` at once.

A call is what mod_python3 does for ``<action application="python" data="fs_dynroute.fsapp"/>``: import and
reload the module, then ``handler(session, args)`` with a session to read and set (fs_dynroute.fakeswitch.modpython).
Two figures per run: ``handler`` (the call into our code alone) and ``mod_python3`` (with the reload mod_python3
does before every call). Keys are the load generator's, half stored and half not, each answer checked against
its expected target. ``--pause`` sleeps between one thread's calls, as a FreeSWITCH thread is busy with the
call's media and signalling between two routing decisions (and does not hold Python's GIL meanwhile);
``--pause 0`` calls back to back, so the threads queue for the GIL.

    python -m benchmarks.make_routes --routes 1000000 --db /tmp/routes-1000000.db
    python -m benchmarks.inprocess --db /tmp/routes-1000000.db --routes 1000000 --threads 8
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from benchmarks.make_routes import db_url
from benchmarks.procs import rss_kib
from benchmarks.workload import SOURCE, Calls, expected_target
from fs_dynroute.fakeswitch import modpython

APP = "fs_dynroute.fsapp"


def percentiles(samples: list[int]) -> dict[str, float]:
    """Nanosecond samples -> microseconds: median, p99, p99.9, max."""
    samples = sorted(samples)
    at = lambda q: samples[min(len(samples) - 1, int(len(samples) * q))] / 1000  # noqa: E731
    return {"median_us": at(0.5), "p99_us": at(0.99), "p999_us": at(0.999), "max_us": samples[-1] / 1000}


def one_thread(call: Callable[[modpython.Session], None], calls: list[tuple[str, str]], routes: int, pause: float,
               times: list[int], wrong: list[str]) -> None:
    clock = time.perf_counter_ns
    for caller, key in calls:
        session = modpython.Session(caller, SOURCE)
        started = clock()
        call(session)
        times.append(clock() - started)
        if session.variables.get("dynroute_target") != expected_target(key, routes):
            wrong.append(f"{caller} -> {session.variables.get('dynroute_target')}")
        if pause:
            time.sleep(pause)


def measure(call: Callable[[modpython.Session], None], threads: int, per_thread: int, routes: int,
            pause: float) -> dict[str, Any]:
    """``threads`` threads making ``per_thread`` calls each at once; per-call figures over all of them."""
    times: list[list[int]] = [[] for _ in range(threads)]
    wrong: list[str] = []
    streams = [Calls(routes, 0.5, seed=seed) for seed in range(threads)]
    workers = [threading.Thread(target=one_thread, args=(call, [streams[n].next() for _ in range(per_thread)], routes,
                                                         pause, times[n], wrong)) for n in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    every = [t for thread_times in times for t in thread_times]
    return {"threads": threads, "calls": len(every), "calls_per_s": round(len(every) / elapsed),
            "wrong": len(wrong), "first_wrong": wrong[:3], **percentiles(every)}


def run(db: str, routes: int, threads: int, per_thread: int, pause: float) -> dict[str, Any]:
    os.environ["DYNROUTE_DB"] = db_url(db)
    freeswitch = modpython.install()
    from fs_dynroute import fsapp, inprocess  # after the fake freeswitch module is in place

    started = time.perf_counter()
    router = inprocess.shared(freeswitch.consoleLog)
    router.index.loaded.wait()
    ready = time.perf_counter() - started
    logged = len(freeswitch.lines)
    calls: dict[str, Callable[[modpython.Session], None]] = {
        "handler": lambda session: fsapp.handler(session, ""),
        "mod_python3": lambda session: modpython.run_python_app(APP, session),
    }
    report: dict[str, Any] = {"routes": routes, "ready_s": round(ready, 2),
                              "rss_mib": round(rss_kib(os.getpid()) / 1024), "pause_s": pause, "runs": []}
    try:
        for name, call in calls.items():
            measure(call, 1, min(per_thread, 2000), routes, 0.0)  # warm up
            for n in (1, threads):
                report["runs"].append({"call": name, **measure(call, n, per_thread, routes, pause)})
    finally:
        errors = [text for level, text in freeswitch.lines[logged:] if level in ("ERR", "WARNING")]
        report["log_errors"] = errors[:5]
        inprocess.shutdown()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.inprocess", description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="SQLite path or database URL built by benchmarks.make_routes")
    parser.add_argument("--routes", type=int, required=True, help="routes in that database")
    parser.add_argument("--threads", type=int, default=8, help="FreeSWITCH threads calling at once (default 8)")
    parser.add_argument("--calls", type=int, default=20000, help="calls per thread (default 20000)")
    parser.add_argument("--pause", type=float, default=0.001,
                        help="seconds a thread waits between two calls (default 0.001; 0: back to back)")
    args = parser.parse_args(argv)
    report = run(args.db, args.routes, args.threads, args.calls, args.pause)
    print(f"{report['routes']} routes loaded in {report['ready_s']} s, RSS {report['rss_mib']} MiB; "
          f"pause between a thread's calls {report['pause_s']} s")
    for r in report["runs"]:
        print(f"{r['call']:12} {r['threads']} threads {r['calls']:7} calls {r['calls_per_s']:7} calls/s  "
              f"median {r['median_us']:7.1f} us  p99 {r['p99_us']:7.1f} us  p99.9 {r['p999_us']:8.1f} us  "
              f"max {r['max_us']:8.1f} us  wrong {r['wrong']}")
    for line in report["log_errors"]:
        print("log:", line.rstrip())
    if not sys.stdout.isatty():
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
