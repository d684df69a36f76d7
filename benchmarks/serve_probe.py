"""``fs-dynroute serve`` with probes for the latency tail: garbage collections, event-loop stalls, store loops.

    python -m benchmarks.serve_probe --probe-out probe.json [--gc default|freeze|off] -- serve --db ... --listen ...

Runs the CLI unchanged in this process, after installing (measurement only, nothing changes for a call):

* ``gc.callbacks``: the duration of every collection, by generation;
* a loop-lag monitor: a greenlet asking to wake every 1 ms, recording each time it woke more than 2 ms late,
  which is how long nothing else (no call) could run on the event loop: GIL held by a thread, a collection,
  a long callback;
* the start and duration of every change-log poll (``refresh``) and statistics flush (``flush``);
* ``--gc freeze``: ``gc.freeze()`` after each full index load (what a one-line change in ``index.py`` would
  do), or ``--gc off``: no cyclic collector at all, for comparison;
* ``--switch-interval S``: ``sys.setswitchinterval(S)``: how long the event loop may wait for the GIL while a
  worker thread (the poll, the flush) runs Python code (CPython's default is 5 ms).

The probe results are written to ``--probe-out`` as JSON when the server exits (SIGTERM).
"""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import sys
import time
from collections import defaultdict
from typing import Any

LAG_TICK = 0.001
LAG_REPORT = 0.002


class Probe:
    def __init__(self) -> None:
        self.gc: dict[int, list[tuple[float, float]]] = defaultdict(list)  # generation -> (start, seconds)
        self.stalls: list[tuple[float, float]] = []  # (when, seconds late)
        self.steps: dict[str, list[tuple[float, float]]] = defaultdict(list)  # refresh/flush -> (start, seconds)
        self._gc_started = 0.0

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc[info["generation"]].append((self._gc_started, time.perf_counter() - self._gc_started))

    def timed(self, name: str, fn: Any) -> Any:
        def step(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.steps[name].append((started, time.perf_counter() - started))

        return step

    def watch_loop(self) -> None:
        import gevent

        while True:
            asked = time.perf_counter()
            gevent.sleep(LAG_TICK)
            late = time.perf_counter() - asked - LAG_TICK
            if late > LAG_REPORT:
                self.stalls.append((asked, late))

    def report(self) -> dict[str, Any]:
        def stats(samples: list[tuple[float, float]]) -> dict[str, Any]:
            durations = sorted(d for _, d in samples)
            return {"count": len(durations), "total_ms": sum(durations) * 1000,
                    "max_ms": durations[-1] * 1000 if durations else 0.0,
                    "p99_ms": durations[int(0.99 * (len(durations) - 1))] * 1000 if durations else 0.0}

        return {"gc": {str(g): stats(v) for g, v in sorted(self.gc.items())},
                "steps": {k: stats(v) for k, v in self.steps.items()},
                "stalls": stats(self.stalls), "stalls_over_5ms": sum(1 for _, d in self.stalls if d > 0.005),
                "gc_frozen": gc.get_freeze_count(), "gc_enabled": gc.isenabled()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve_probe", description=__doc__.splitlines()[0])
    parser.add_argument("--probe-out", required=True)
    parser.add_argument("--gc", choices=("default", "freeze", "off"), default="default")
    parser.add_argument("--switch-interval", type=float, help="sys.setswitchinterval (default: CPython's 0.005)")
    parser.add_argument("cli", nargs=argparse.REMAINDER, help="-- then the fs-dynroute arguments")
    args = parser.parse_args(argv)
    import gevent

    from fs_dynroute import cli, index

    probe = Probe()
    gc.callbacks.append(probe.on_gc)
    store = index.IndexedStore
    store.refresh = probe.timed("refresh", store.refresh)  # type: ignore[method-assign]
    store.flush = probe.timed("flush", store.flush)  # type: ignore[method-assign]
    if args.gc == "freeze":
        load = store.reload

        def reload_then_freeze(self: index.IndexedStore) -> None:
            load(self)
            gc.freeze()

        store.reload = reload_then_freeze  # type: ignore[method-assign]
    elif args.gc == "off":
        gc.disable()
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    atexit.register(lambda: open(args.probe_out, "w").write(json.dumps(probe.report())))
    gevent.spawn(probe.watch_loop)
    return cli.main([a for a in args.cli if a != "--"])


if __name__ == "__main__":
    sys.exit(main())
