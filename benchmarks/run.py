"""Run every benchmark of issue #5 on this machine and print one table: ``python -m benchmarks.run [--quick]``.

For each server (fs_dynroute, two bare gevent baselines: the classic six-step exchange and the minimal one of
issue 11, greenswitch 0.0.19's OutboundESLServer) it starts the server as a subprocess on a free loopback port,
warms it up, runs the same closed-loop load (and, except for greenswitch, a fixed-rate load from several load
generator processes, long enough to see the tail) from separate processes, reads the server's CPU time, open
descriptors and resident memory from /proc, and stops it. With ``--tail``, fs_dynroute's fixed-rate run is
repeated under ``benchmarks.serve_probe`` (garbage collections, event-loop stalls, poll and flush timings),
with the collector as it is and with ``gc.freeze()`` after the index load. Then the store microbenchmark, the
CSV import timing, the memory runs, and (with ``--db-url mysql://...``) fs_dynroute on MariaDB.

The routes database is cached in ``benchmarks/.data/`` (gitignored); each run works on a fresh copy in its own
``benchmarks/.data/run-<time>-<pid>/``, which keeps the server logs and ``results.json`` (every number).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from benchmarks import make_routes
from benchmarks.loadgen import Results
from benchmarks.procs import Server, cpu_seconds, fd_count, free_port, rss_kib, system_busy

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / ".data"
SERVERS = ("fs_dynroute", "bare", "minimal", "greenswitch")
BARE = ("bare", "minimal")  # constant targets: nothing to check
TAIL_PROBES = (("default", None), ("freeze", None), ("freeze", 0.0005))  # --tail: gc mode, GIL switch interval

TARGETS = {"vs_bare": 1.3, "vs_minimal": 0.7, "vs_greenswitch": 15.0, "p99_ms_at_rate": 2.0, "lookup_us": 10.0,
           "cpu_us_per_call": 100.0, "import_s_per_1m": 30.0, "mariadb_vs_sqlite": 0.5}


@dataclass
class Settings:
    routes: int = 1_000_000
    concurrency: int = 50
    duration: float = 10.0
    rate: float = 1000.0
    only: tuple[str, ...] = SERVERS
    db_url: str | None = None
    loadgens: int = 1
    rate_loadgens: int = 3
    rate_duration: float = 30.0
    tail: bool = False
    before: Path | None = None  # a source tree of an earlier fs_dynroute, benchmarked beside this one
    rounds: int = 0  # closed loop: also N interleaved rounds over every server at once (a shared machine)
    round_seconds: float = 3.0
    warmup: float = 1.0
    memory_calls: int = 100_000
    memory_concurrency: int = 1000
    memory_seconds: float = 5.0
    memory_max_seconds: float = 90.0  # the long run stops here even if it has not reached memory_calls
    lookup_samples: int = 10_000
    import_check: bool = True
    quiet_wait: float = 10.0
    quick: bool = False
    run_dir: Path = DATA


@dataclass
class Row:
    """One load run against one server."""

    server: str
    load: str
    summary: dict[str, Any]
    cpu_us_per_call: float | None
    server_cpu_pct: float
    other_cpu_cores: float
    fds_before: int
    fds_after: int
    rss_max_mib: float
    failures: dict[str, int]
    wrong_samples: list[list[str]]
    late_starts: int = 0
    max_lag_ms: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------------
# Servers


Probe = tuple[str, Path, "float | None"]  # serve_probe's --gc mode, its output file, --switch-interval


def server_argv(name: str, port: int, db_path: Path, db_url: str | None, probe: Probe | None = None) -> list[str]:
    if name == "fs_dynroute":
        serve = ["serve", "--db", db_url or make_routes.db_url(str(db_path)), "--listen", f"127.0.0.1:{port}",
                 "--max-sessions", "2000"]
        if probe is None:
            return [*make_routes.cli(), *serve]
        switch = ["--switch-interval", str(probe[2])] if probe[2] else []
        return [sys.executable, "-m", "benchmarks.serve_probe", "--gc", probe[0], "--probe-out", str(probe[1]),
                *switch, "--", *serve]
    if name in BARE:
        return [sys.executable, "-m", "benchmarks.bare_server", "--listen", f"127.0.0.1:{port}",
                "--exchange", "classic" if name == "bare" else "minimal"]
    if name == "greenswitch":
        return [sys.executable, "-m", "benchmarks.greenswitch_server", "--db", str(db_path),
                "--listen", f"127.0.0.1:{port}"]
    raise ValueError(name)


def start(name: str, label: str, s: Settings, db_path: Path, db_url: str | None = None,
          probe: Probe | None = None, source: Path | None = None) -> Server:
    """``source``: run fs_dynroute from that tree instead of this one (``--before``)."""
    port = free_port()
    argv = server_argv(name, port, db_path, db_url, probe)
    if source is not None:
        argv = [sys.executable, "-P", "-m", "fs_dynroute", *argv[argv.index("serve"):]]  # -P: not this tree
    path = f"{source}:{ROOT}" if source is not None else str(ROOT)
    return Server(label, argv, port, s.run_dir / "logs" / f"{label}.log", env={**os.environ, "PYTHONPATH": path})


# ---------------------------------------------------------------------------------------------------------------
# Load


def loadgen(server: Server, s: Settings, *, check: bool, rate: float | None = None, duration: float | None = None,
            calls: int | None = None, concurrency: int | None = None, processes: int | None = None,
            sample: float = 0.5, seed: int = 1) -> tuple[Results, list[tuple[float, int]], float]:
    """Run load generator processes against ``server`` at once; returns merged results, RSS samples
    (seconds, KiB) taken every ``sample`` seconds meanwhile, and the wall time."""
    processes = processes or s.loadgens
    concurrency = concurrency or s.concurrency
    start_at = time.time() + 1.0 + 0.2 * processes
    procs, outs = [], []
    tmp = Path(tempfile.mkdtemp(prefix="lg-", dir=s.run_dir))
    try:
        for i in range(processes):
            out = tmp / f"{i}.json"
            argv = [sys.executable, "-m", "benchmarks.loadgen", "--port", str(server.port), "--routes", str(s.routes),
                    "--seed", str(seed + i), "--start-at", f"{start_at:.3f}", "--out", str(out)]
            if rate:
                argv += ["--rate", str(rate / processes)]
            else:
                argv += ["--concurrency", str(max(1, concurrency // processes))]
            argv += ["--duration", str(duration)] if duration else []
            argv += ["--calls", str(calls // processes)] if calls else []
            argv += [] if check else ["--no-check"]
            procs.append(subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                          start_new_session=True))
            outs.append(out)
        limit = time.time() + 2.0 + 0.2 * processes + (duration or 120.0) + 30.0
        samples: list[tuple[float, int]] = []
        while any(p.poll() is None for p in procs):
            if time.time() > limit:
                raise RuntimeError("load generator overran its time limit")
            if time.time() >= start_at:
                samples.append((time.time() - start_at, rss_kib(server.pid)))
            time.sleep(sample)
        for p in procs:
            if p.returncode != 0:
                err = p.stderr.read().decode(errors="replace") if p.stderr else ""
                raise RuntimeError(f"load generator failed: {err[-2000:]}")
        wall = time.time() - start_at
        return Results.merge([json.loads(o.read_text()) for o in outs]), samples, wall
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, 9)
                p.wait()
            if p.stderr:
                p.stderr.close()
        shutil.rmtree(tmp, ignore_errors=True)


def crosscheck(server: Server, s: Settings, calls: int = 20) -> list[str]:
    """A few calls through fs_dynroute.fakeswitch itself, before the load: the fake and the load generator agree."""
    done = subprocess.run([sys.executable, "-m", "benchmarks.loadgen", "--port", str(server.port), "--routes",
                           str(s.routes), "--crosscheck", str(calls)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"crosscheck failed: {done.stderr[-2000:]}")
    mismatches = json.loads(done.stdout.strip().splitlines()[-1])["mismatches"]
    print(f"  {server.name}: {calls} calls through fs_dynroute.fakeswitch: "
          f"{'all ended where expected' if not mismatches else f'{len(mismatches)} MISMATCHES, e.g. {mismatches[:2]}'}",
          flush=True)
    return mismatches


def settle_fds(pid: int, baseline: int, timeout: float = 3.0) -> int:
    """The server's descriptor count once it is back to ``baseline`` or ``timeout`` has passed."""
    deadline = time.monotonic() + timeout
    count = fd_count(pid)
    while count > baseline and time.monotonic() < deadline:
        time.sleep(0.1)
        count = fd_count(pid)
    return count


def outcomes(log_path: Path, offset: int) -> tuple[dict[str, int], int]:
    """fs_dynroute's per-call ``outcome=`` words in its log from ``offset``; and the new offset."""
    with open(log_path, "rb") as f:
        f.seek(offset)
        text = f.read()
    counts = Counter(m.decode() for m in re.findall(rb" outcome=(\S+)", text))
    return dict(counts), offset + len(text)


def wait_quiet(max_wait: float, threshold: float = 0.15, window: float = 0.5) -> float:
    """Wait (at most ``max_wait`` s) until the machine's other work uses under ``threshold`` cores; returns the
    cores busy in the last window. Other engineers' test suites share these two cores."""
    deadline = time.monotonic() + max_wait
    while True:
        busy0, _ = system_busy()
        time.sleep(window)
        busy1, _ = system_busy()
        cores = (busy1 - busy0) / window
        if cores < threshold or time.monotonic() >= deadline:
            return cores


def measured(server: Server, name: str, load: str, s: Settings, **kwargs: Any) -> Row:
    """One measured load run: CPU, descriptors, memory and other processes' CPU around it."""
    time.sleep(0.3)
    wait_quiet(s.quiet_wait)
    log_offset = server.log_path.stat().st_size
    fds_before = fd_count(server.pid)
    cpu0, (busy0, _) = cpu_seconds(server.pid), system_busy()
    results, samples, wall = loadgen(server, s, check=name not in BARE, **kwargs)
    cpu1, (busy1, _) = cpu_seconds(server.pid), system_busy()
    fds_after = settle_fds(server.pid, fds_before)
    summary = results.summary()
    server_cpu = cpu1 - cpu0
    other = (busy1 - busy0) - server_cpu - results.loadgen_cpu
    found, _ = outcomes(server.log_path, log_offset) if name == "fs_dynroute" else ({}, 0)
    return Row(server=server.name, load=load, summary=summary,
               cpu_us_per_call=server_cpu / results.completed * 1e6 if results.completed else None,
               server_cpu_pct=100 * server_cpu / wall if wall else 0.0, other_cpu_cores=max(0.0, other / wall),
               fds_before=fds_before, fds_after=fds_after,
               rss_max_mib=max((kb for _, kb in samples), default=rss_kib(server.pid)) / 1024,
               failures=results.failures, wrong_samples=results.wrong_samples, late_starts=results.late_starts,
               max_lag_ms=results.max_lag * 1000, outcomes=found)


def bench_server(name: str, s: Settings, db_path: Path, db_url: str | None = None, label: str | None = None,
                 probe: Probe | None = None, closed: bool = True, source: Path | None = None
                 ) -> tuple[list[Row], dict[str, Any]]:
    """Closed loop (and fixed rate, except greenswitch) against one freshly started server."""
    rows: list[Row] = []
    with start(name, label or name, s, db_path, db_url, probe, source) as server:
        info: dict[str, Any] = {"ready_s": round(server.ready_after, 2), "rss_ready_mib": rss_kib(server.pid) / 1024,
                                   "fds_ready": fd_count(server.pid)}
        print(f"  {server.name}: listening after {server.ready_after:.1f} s, RSS {info['rss_ready_mib']:.0f} MiB",
              flush=True)
        if name not in BARE:
            info["crosscheck"] = crosscheck(server, s)
        loadgen(server, s, check=False, duration=s.warmup)
        if closed and not s.rounds:  # with --rounds, the interleaved rounds are the closed loop
            rows.append(measured(server, name, f"closed c={s.concurrency}", s, duration=s.duration))
            _progress(rows[-1])
        if name != "greenswitch" and s.rate_duration > 0:
            rows.append(measured(server, name, f"rate {s.rate:g}/s", s, rate=s.rate, duration=s.rate_duration,
                                 processes=s.rate_loadgens))
            _progress(rows[-1])
        info["exit_status"] = server.stop()
    if probe is not None and probe[1].exists():
        info["probe"] = json.loads(probe[1].read_text())
    return rows, info


def interleaved(s: Settings, db_path: Path) -> dict[str, Any]:
    """Closed loop in ``s.rounds`` rounds, each server in turn for ``s.round_seconds``, all servers running.

    On a machine shared with other work the load drifts within minutes; servers measured minutes apart are
    compared under different loads. Round-robin slices see the same drift, and the median per server of its
    rounds gives ratios that hold still. Returns calls/s and CPU per call per round, and the medians.
    """
    plan = [(name, name, None) for name in SERVERS if name in s.only]
    if s.before is not None:
        plan.append(("fs_dynroute", "fs_dynroute (before)", s.before))
    out: dict[str, Any] = {"rounds": s.rounds, "seconds": s.round_seconds, "servers": {}}
    s = replace(s, quiet_wait=min(s.quiet_wait, 1.0))  # the rounds share the drift; waiting would only stretch it
    with ExitStack() as stack:
        servers = [(name, stack.enter_context(start(name, f"{label} rounds", s, db_path, source=source)), label)
                   for name, label, source in plan]
        for _name, server, _label in servers:
            loadgen(server, s, check=False, duration=s.warmup)
        for n in range(s.rounds):
            for name, server, label in servers:
                row = measured(server, name, "closed", s, duration=s.round_seconds)
                got = out["servers"].setdefault(label, {"calls_per_s": [], "cpu_us_per_call": [], "other_cpu": []})
                got["calls_per_s"].append(round(row.summary["calls_per_s"] or 0))
                got["cpu_us_per_call"].append(round(row.cpu_us_per_call or 0))
                got["other_cpu"].append(round(row.other_cpu_cores, 2))
            print(f"  round {n + 1}: " + ", ".join(f"{label} {v['calls_per_s'][-1]:,}/s"
                                                  for label, v in out["servers"].items()), flush=True)
    for got in out["servers"].values():
        got["median_calls_per_s"] = statistics.median(got["calls_per_s"])
        got["median_cpu_us_per_call"] = statistics.median(got["cpu_us_per_call"])
    return out


def _progress(row: Row) -> None:
    m = row.summary
    print(f"    {row.load:14} {_f(m['calls_per_s'], 0):>7} calls/s  p99 {_f(m['p99_ms'], 2)} ms  "
          f"p99.9 {_f(m['p999_ms'], 2)} ms  max {_f(m['max_ms'], 2)} ms  "
          f"CPU {_f(row.cpu_us_per_call, 0)} us/call  wrong {m['wrong']}  failed {m['failed']}", flush=True)


def memory_runs(s: Settings, db_path: Path) -> dict[str, Any]:
    """fs_dynroute's RSS: loaded and idle, over many calls (growth), and with many sessions at once."""
    with start("fs_dynroute", "fs_dynroute-memory", s, db_path) as server:
        report: dict[str, Any] = {"rss_ready_mib": rss_kib(server.pid) / 1024, "fds_ready": fd_count(server.pid)}
        print(f"  memory: loaded and idle {report['rss_ready_mib']:.0f} MiB; {s.memory_calls} calls...", flush=True)
        wait_quiet(s.quiet_wait)
        results, samples, wall = loadgen(server, s, check=True, calls=s.memory_calls, duration=s.memory_max_seconds,
                                         sample=2.0, seed=101)
        report["long_run"] = {"calls": results.completed, "failed": results.failed, "wrong": results.wrong,
                              "seconds": round(wall, 1),
                              "rss_mib_samples": [(round(t, 1), round(kb / 1024, 1)) for t, kb in samples]}
        report["rss_after_long_mib"] = rss_kib(server.pid) / 1024
        report["fds_after_long"] = settle_fds(server.pid, int(report["fds_ready"]))
        print(f"  memory: {s.memory_concurrency} sessions at once for {s.memory_seconds:g} s...", flush=True)
        wait_quiet(s.quiet_wait)
        results, samples, wall = loadgen(server, s, check=True, concurrency=s.memory_concurrency,
                                         duration=s.memory_seconds, sample=0.25, seed=201)
        report["concurrent"] = {"sessions": s.memory_concurrency, "calls": results.completed,
                                "failed": results.failed, "failures": results.failures, "wrong": results.wrong,
                                "p99_ms": results.summary()["p99_ms"],
                                "rss_max_mib": max((kb for _, kb in samples), default=0) / 1024}
        report["rss_end_mib"] = rss_kib(server.pid) / 1024
        report["fds_end"] = settle_fds(server.pid, int(report["fds_after_long"]))
        report["exit_status"] = server.stop()
    return report


# ---------------------------------------------------------------------------------------------------------------
# Databases


def sqlite_db(s: Settings) -> tuple[Path, dict[str, float]]:
    """A fresh working copy of the cached routes database (built by raw executemany when missing)."""
    from fs_dynroute.schema import CURRENT_VERSION

    cached = DATA / f"routes-{s.routes}-schema{CURRENT_VERSION}.db"
    timings: dict[str, float] = {}
    if not cached.exists():
        print(f"building {cached.name} ({s.routes} routes)...", flush=True)
        partial = cached.with_suffix(f".partial-{os.getpid()}")
        timings = make_routes.build(str(partial), s.routes, "bulk")
        partial.rename(cached)  # atomic: a concurrent run sees the whole file or none
    work = s.run_dir / "work.db"
    shutil.copyfile(cached, work)
    return work, timings


def lookup_bench(db: str, s: Settings) -> dict[str, Any]:
    """The store microbenchmark in its own process (it loads the whole index)."""
    done = subprocess.run([sys.executable, "-m", "benchmarks.lookup", "--db", db, "--routes", str(s.routes),
                           "--samples", str(s.lookup_samples)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"benchmarks.lookup failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------------------
# Report


def _f(value: object, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def table(rows: list[Row]) -> str:
    by = {(r.server, r.load.split()[0]): r for r in rows}
    head = ("server", "load", "calls/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "CPU us/call", "srv CPU",
            "LG us/call", "other CPU", "wrong", "failed", "cmds/call", "bytes out/in", "ratio")
    lines = [head]
    for r in rows:
        m = r.summary
        ratio = ""
        if r.server.startswith("fs_dynroute") and r.load.startswith("closed"):
            parts = []
            for base in ("bare", "minimal", "greenswitch", "fs_dynroute", "fs_dynroute (before)"):
                other = by.get((base, "closed"))
                if other is not None and other is not r:
                    q = _ratio(m["calls_per_s"], other.summary["calls_per_s"])
                    parts.append(f"{q:.2f}x {base}" if q else "")
            ratio = ", ".join(p for p in parts if p)
        lines.append((r.server, r.load, _f(m["calls_per_s"], 0), _f(m["p50_ms"], 2), _f(m["p99_ms"], 2),
                       _f(m["p999_ms"], 2), _f(m["max_ms"], 2), _f(r.cpu_us_per_call, 0),
                       f"{r.server_cpu_pct:.0f}%", _f(m["loadgen_cpu_us_per_call"], 0), f"{r.other_cpu_cores:.2f}",
                       "-" if m["wrong"] is None else str(m["wrong"]), str(m["failed"]),
                       _f(m["commands_per_call"], 2),
                       f"{_f(m['bytes_from_server_per_call'], 0)}/{_f(m['bytes_to_server_per_call'], 0)}", ratio))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = ["| " + " | ".join(c.ljust(w) for c, w in zip(line, widths)) + " |" for line in lines]
    out.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def verdicts(rows: list[Row], extra: dict[str, Any], s: Settings) -> list[str]:
    by = {(r.server, r.load.split()[0]): r for r in rows}
    out: list[str] = []

    def check(label: str, value: float | None, target: float, higher: bool, unit: str = "") -> None:
        if value is None:
            out.append(f"- {label}: not measured")
            return
        met = value >= target if higher else value <= target
        out.append(f"- {label}: {value:,.2f}{unit} (target {'>=' if higher else '<='} {target:g}{unit}) "
                   f"{'MET' if met else 'NOT MET'}")

    fs, bare, gs = by.get(("fs_dynroute", "closed")), by.get(("bare", "closed")), by.get(("greenswitch", "closed"))
    rate = by.get(("fs_dynroute", "rate"))

    def cps(row: Row | None) -> float | None:
        return row.summary["calls_per_s"] if row else None

    check("fs_dynroute / classic bare calls/s", _ratio(cps(fs), cps(bare)), TARGETS["vs_bare"], True, "x")
    check("fs_dynroute / minimal bare calls/s", _ratio(cps(fs), cps(by.get(("minimal", "closed")))),
          TARGETS["vs_minimal"], True, "x")
    check("fs_dynroute / greenswitch calls/s", _ratio(cps(fs), cps(gs)), TARGETS["vs_greenswitch"], True, "x")
    medians = {k: v["median_calls_per_s"] for k, v in (extra.get("interleaved") or {}).get("servers", {}).items()}
    for base, target in (("bare", "vs_bare"), ("minimal", "vs_minimal"), ("greenswitch", "vs_greenswitch")):
        if base in medians and "fs_dynroute" in medians:
            check(f"fs_dynroute / {base} calls/s, interleaved rounds (medians)",
                  _ratio(medians["fs_dynroute"], medians[base]), TARGETS[target], True, "x")
    check(f"fs_dynroute p99 at {s.rate:g} calls/s", rate.summary["p99_ms"] if rate else None,
          TARGETS["p99_ms_at_rate"], False, " ms")
    for r in (extra.get("lookup") or {}).get("results", []):
        check(f"{r['store']} median lookup", r["lookup"]["median_us"], TARGETS["lookup_us"], False, " us")
    check("fs_dynroute server CPU per call (closed loop)", fs.cpu_us_per_call if fs else None,
          TARGETS["cpu_us_per_call"], False, " us")
    imp = extra.get("import")
    if isinstance(imp, dict) and "csv_import_s" in imp:
        scaled = imp["csv_import_s"] * 1_000_000 / s.routes
        label = f"CSV import of {s.routes:,} routes" + (", scaled to 1M" if s.routes != 1_000_000 else "")
        check(label, scaled, TARGETS["import_s_per_1m"], False, " s")
    maria = by.get(("fs_dynroute (MariaDB)", "closed"))
    if maria is not None:
        check("MariaDB-backed / SQLite-backed calls/s", _ratio(cps(maria), cps(fs)), TARGETS["mariadb_vs_sqlite"],
              True, "x")
    return out


def facts() -> dict[str, str]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except OSError:
            return "?"

    def proc_field(path: str, name: str) -> str:
        with open(path, encoding="ascii", errors="replace") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith(name)), "?")

    model = proc_field("/proc/cpuinfo", "model name")
    dirty = git("status", "--porcelain", "--", "fs_dynroute")
    return {"nproc": str(os.cpu_count()), "cpu": model, "python": platform.python_version(),
            "kernel": platform.release(),
            "commit": git("rev-parse", "--short", "HEAD") + (" + uncommitted fs_dynroute changes" if dirty else ""),
            "mem_total": proc_field("/proc/meminfo", "MemTotal")}


# ---------------------------------------------------------------------------------------------------------------


def run(s: Settings) -> dict[str, Any]:
    """Everything in a directory of its own (working database, server logs, results), so that two runs at
    once cannot clobber each other's files (they still share the CPUs: see the other CPU column)."""
    s.run_dir = DATA / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    s.run_dir.mkdir(parents=True)
    try:
        return _run(s)
    finally:
        for suffix in ("", "-wal", "-shm"):  # the working copy is 100 MB at 1M routes; logs and results stay
            Path(f"{s.run_dir / 'work.db'}{suffix}").unlink(missing_ok=True)


def _run(s: Settings) -> dict[str, Any]:
    started = time.monotonic()
    info = facts()
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()), flush=True)
    db_path, build = sqlite_db(s)
    extra: dict[str, Any] = {"facts": info, "settings": vars(s), "build": build}
    rows: list[Row] = []
    sequential = not s.rounds or s.rate_duration > 0
    for name in SERVERS if sequential else ():
        if name in s.only:
            print(f"{name}:", flush=True)
            got, extra[f"{name}_server"] = bench_server(name, s, db_path)
            rows += got
    if s.before is not None and sequential:
        print("fs_dynroute (before):", flush=True)
        got, extra["before_server"] = bench_server("fs_dynroute", s, db_path, label="fs_dynroute (before)",
                                                   source=s.before)
        rows += got
    if s.rounds:
        print(f"closed loop, {s.rounds} interleaved rounds of {s.round_seconds:g} s:", flush=True)
        extra["interleaved"] = interleaved(s, db_path)
    for mode, switch in TAIL_PROBES if s.tail else ():
        key = f"{mode}" + (f"-switch{switch * 1000:g}ms" if switch else "")
        label = f"fs_dynroute probe gc={mode}" + (f" switch={switch * 1000:g}ms" if switch else "")
        print(f"{label}:", flush=True)
        got, extra[f"probe_{key}_server"] = bench_server("fs_dynroute", s, db_path, label=label, closed=False,
                                                         probe=(mode, s.run_dir / f"probe-{key}.json", switch))
        rows += got
    if s.db_url:
        print(f"fs_dynroute on {s.db_url}: loading {s.routes} routes...", flush=True)
        extra["mariadb_build"] = make_routes.build(s.db_url, s.routes, "bulk")
        got, extra["mariadb_server"] = bench_server("fs_dynroute", s, db_path, s.db_url, label="fs_dynroute (MariaDB)")
        rows += got
    print("store microbenchmark...", flush=True)
    extra["lookup"] = lookup_bench(str(db_path), s)
    if s.db_url:
        extra["lookup_mariadb"] = lookup_bench(s.db_url, s)
    if "fs_dynroute" in s.only and s.memory_calls:
        extra["memory"] = memory_runs(s, db_path)
    if s.import_check:
        print(f"timing fs-dynroute route import of {s.routes} routes...", flush=True)
        wait_quiet(s.quiet_wait)
        extra["import"] = make_routes.time_csv_import(s.routes, s.run_dir)
    extra["elapsed_s"] = round(time.monotonic() - started, 1)
    extra["rows"] = [vars(r) for r in rows]
    report = render(rows, extra, s)
    print(report)
    out = s.run_dir / "results.json"
    out.write_text(json.dumps({**extra, "report": report}, indent=1, default=str))
    print(f"\nfull results: {out.relative_to(ROOT)}")
    return extra


def render(rows: list[Row], extra: dict[str, Any], s: Settings) -> str:
    setup = (f"routes {s.routes:,}, closed loop c={s.concurrency} for {s.duration:g} s ({s.loadgens} load generator "
             f"process(es)), fixed rate {s.rate:g}/s for {s.rate_duration:g} s ({s.rate_loadgens} processes); "
             "times in ms, CPU in us per completed call")
    lines = ["", setup, "", table(rows), ""]
    lines.append("srv CPU = server process CPU / wall time (100% = one core); LG = load generator CPU per call; "
                 "other CPU = cores used by everything else on the machine during the run.")
    for r in rows:
        notes = []
        if r.failures:
            notes.append(f"failures {r.failures}")
        if r.wrong_samples:
            notes.append(f"wrong e.g. {r.wrong_samples[:2]}")
        if r.outcomes and set(r.outcomes) != {"done"}:
            notes.append(f"server outcomes {r.outcomes}")
        if r.late_starts:
            notes.append(f"{r.late_starts} starts >1 ms late (max {r.max_lag_ms:.1f} ms)")
        if notes:
            lines.append(f"- {r.server} {r.load}: " + "; ".join(notes))
    rounds = extra.get("interleaved")
    if isinstance(rounds, dict):
        medians = {label: v["median_calls_per_s"] for label, v in rounds["servers"].items()}
        lines.append(f"- closed loop c={s.concurrency}, {rounds['rounds']} interleaved rounds of "
                     f"{rounds['seconds']:g} s (median calls/s; CPU us/call; rounds):")
        for label, v in rounds["servers"].items():
            ratios = ", ".join(f"{_ratio(medians[label], m):.2f}x {other}" for other, m in medians.items()
                               if other != label and label.startswith("fs_dynroute") and m)
            lines.append(f"  - {label}: {v['median_calls_per_s']:,.0f}/s; {v['median_cpu_us_per_call']:.0f} us; "
                         f"{v['calls_per_s']}; other CPU {v['other_cpu']}" + (f"; {ratios}" if ratios else ""))
    for key in [k for k in extra if k.startswith("probe_")]:
        probe = (extra.get(key) or {}).get("probe")
        if isinstance(probe, dict):
            gcs = ", ".join(f"gen{g} {v['count']}x max {v['max_ms']:.1f} ms" for g, v in probe["gc"].items())
            steps = ", ".join(f"{k} {v['count']}x max {v['max_ms']:.1f} ms" for k, v in probe["steps"].items())
            lines.append(f"- {key.removesuffix('_server')}: collections {gcs}; {steps}; loop stalls >2 ms "
                         f"{probe['stalls']['count']} (>5 ms {probe['stalls_over_5ms']}, max "
                         f"{probe['stalls']['max_ms']:.1f} ms); frozen objects {probe['gc_frozen']:,}")
    for key in ("fs_dynroute_server", "greenswitch_server", "mariadb_server"):
        srv = extra.get(key)
        if isinstance(srv, dict) and srv.get("crosscheck"):
            lines.append(f"- {key.replace('_server', '')}: fs_dynroute.fakeswitch calls that ended elsewhere "
                         f"than expected: {srv['crosscheck']}")
    for key in ("fs_dynroute_server", "mariadb_server"):
        srv = extra.get(key)
        if isinstance(srv, dict):
            lines.append(f"- {key.replace('_server', '')}: listening {srv['ready_s']} s after start "
                         f"(index load), RSS when ready {srv['rss_ready_mib']:.0f} MiB")
    for key, where in (("lookup", "SQLite"), ("lookup_mariadb", "MariaDB")):
        lk = extra.get(key)
        if not isinstance(lk, dict):
            continue
        for r in lk["results"]:
            lines.append(f"- store {r['store']} on {where}: lookup median {r['lookup']['median_us']:.2f} us, p99 "
                         f"{r['lookup']['p99_us']:.2f} us; "
                         f"dry-run route_call median {r['route_call_dry_run']['median_us']:.2f} us"
                         f" (ready in {r['ready_s']} s)")
        lines += [f"- note: {n}" for n in lk["notes"]]
    mem = extra.get("memory")
    if isinstance(mem, dict):
        long_run, conc = mem["long_run"], mem["concurrent"]
        series = ", ".join(f"{mib:.0f}" for _, mib in long_run["rss_mib_samples"])
        lines.append(f"- memory: RSS loaded+idle {mem['rss_ready_mib']:.0f} MiB; over {long_run['calls']:,} calls in "
                     f"{long_run['seconds']} s every 2 s: [{series}] MiB; after {mem['rss_after_long_mib']:.0f} MiB")
        lines.append(f"- memory: {conc['sessions']} sessions at once: peak RSS {conc['rss_max_mib']:.0f} MiB, "
                     f"{conc['calls']:,} calls, failed {conc['failed']}, wrong {conc['wrong']}, "
                     f"p99 {_f(conc['p99_ms'], 1)} ms; fds when ready / after the long run / at the end "
                     f"{mem['fds_ready']}/{mem['fds_after_long']}/{mem['fds_end']}")
    imp = extra.get("import")
    if isinstance(imp, dict):
        lines.append(f"- fs-dynroute route import of {s.routes:,} routes: {imp['csv_import_s']:.1f} s "
                     f"(CSV written in {imp['csv_write_s']:.1f} s)")
    lines += ["", "targets:", *verdicts(rows, extra, s), f"\nelapsed {extra['elapsed_s']} s"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, help="routes in the database (default 1,000,000; --quick 10,000)")
    parser.add_argument("--concurrency", type=int, default=50, help="closed loop: calls in flight (default 50)")
    parser.add_argument("--duration", type=float, help="seconds per load run (default 10; --quick 3)")
    parser.add_argument("--rate", type=float, default=1000.0, help="fixed-rate run, calls/s (default 1000)")
    parser.add_argument("--only", default=",".join(SERVERS), help="servers: fs_dynroute,bare,minimal,greenswitch")
    parser.add_argument("--db-url", help="also benchmark fs_dynroute on this MariaDB database, e.g. "
                        "mysql://root@127.0.0.1/dynroute_bench (dropped and recreated; name must contain 'bench')")
    parser.add_argument("--loadgens", type=int, default=1, help="load generator processes for closed loop (default 1)")
    parser.add_argument("--rate-loadgens", type=int, default=3, help="load generator processes for the fixed rate "
                        "(default 3: one process's own pauses would hide or fake a tail)")
    parser.add_argument("--rate-duration", type=float, help="seconds of the fixed-rate run (default 30; --quick 5; "
                        "0: none)")
    parser.add_argument("--before", type=Path, help="also benchmark the fs_dynroute in this source tree (e.g. "
                        "`git archive <commit> | tar -x -C DIR`), in the same run")
    parser.add_argument("--rounds", type=int, default=0, help="also run the closed loop in N interleaved rounds "
                        "over all servers at once (ratios that hold on a shared machine)")
    parser.add_argument("--round-seconds", type=float, default=3.0, help="seconds per server per round (default 3)")
    parser.add_argument("--tail", action="store_true", help="also run fs_dynroute's fixed rate under "
                        "benchmarks.serve_probe, with the collector as is and with gc.freeze() after the load")
    parser.add_argument("--memory-calls", type=int, help="calls in the RSS growth run (default 100,000; 0 = no "
                        "memory runs)")
    parser.add_argument("--no-import", action="store_true", help="skip timing fs-dynroute route import")
    parser.add_argument("--quiet-wait", type=float, default=10.0, help="before each measured run, wait up to this "
                        "many seconds for the rest of the machine to go idle (default 10; 0 = never wait)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 10k routes, 3 s runs, small memory runs")
    args = parser.parse_args(argv)
    only = tuple(x.strip() for x in args.only.split(",") if x.strip())
    if set(only) - set(SERVERS):
        parser.error(f"--only takes {','.join(SERVERS)}")
    s = Settings(concurrency=args.concurrency, rate=args.rate, only=only, db_url=args.db_url, loadgens=args.loadgens,
                 rate_loadgens=args.rate_loadgens, tail=args.tail, before=args.before, rounds=args.rounds,
                 round_seconds=args.round_seconds, import_check=not args.no_import,
                 quiet_wait=args.quiet_wait, quick=args.quick)
    if args.quick:
        s.routes, s.duration, s.warmup, s.memory_calls, s.memory_seconds, s.lookup_samples, s.rate_duration = \
            10_000, 3.0, 0.5, 10_000, 2.0, 3000, 5.0
    s.routes = args.routes or s.routes
    s.duration = args.duration or s.duration
    s.rate_duration = s.rate_duration if args.rate_duration is None else args.rate_duration
    if args.memory_calls is not None:
        s.memory_calls = args.memory_calls
    run(s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
