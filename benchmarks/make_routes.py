"""Build the benchmark's routes database: the demo rule plus N generated routes, on SQLite or MariaDB.

Two ways in, both timed: ``fs-dynroute route import`` on a generated CSV (what an operator runs; the issue's
target is 1M rows in 30 s or less) and a raw ``executemany`` straight into ``dynroute_route`` (fast, for the
databases the server runs use). The schema always comes from ``fs-dynroute initdb --demo``.

    python -m benchmarks.make_routes --routes 1000000 --db benchmarks/.data/routes.db [--method import|bulk]
    python -m benchmarks.make_routes --routes 1000000 --db mysql://root@127.0.0.1/dynroute_bench
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from benchmarks.workload import HIT_BASE, MAX_ROUTES, RULE, route_destination

CHUNK = 50_000


def cli() -> list[str]:
    """The ``fs-dynroute`` console script next to this interpreter (the project's virtualenv)."""
    script = Path(sys.executable).with_name("fs-dynroute")
    return [str(script)] if script.exists() else [sys.executable, "-m", "fs_dynroute"]


def db_url(target: str) -> str:
    """A database URL for a path or URL."""
    return target if "://" in target else f"sqlite:///{Path(target).resolve()}"


def run_cli(*args: str, timeout: float = 600) -> float:
    """Run ``fs-dynroute ARGS``; returns its wall time; raises with its stderr if it fails."""
    started = time.perf_counter()
    done = subprocess.run([*cli(), *args], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"fs-dynroute {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return time.perf_counter() - started


def rows(n: int) -> Iterator[tuple[str, str]]:
    for i in range(n):
        yield str(HIT_BASE + i), route_destination(i)


def write_csv(path: Path, n: int) -> float:
    """``caller_id,destination,notes`` with a header; returns seconds taken."""
    started = time.perf_counter()
    with open(path, "w", encoding="ascii") as f:
        f.write("caller_id,destination,notes\n")
        for start in range(0, n, CHUNK):
            chunk = range(start, min(n, start + CHUNK))
            f.write("".join(f"{HIT_BASE + i},{route_destination(i)},bench\n" for i in chunk))
    return time.perf_counter() - started


def initdb(url: str) -> None:
    run_cli("initdb", "--db", url, "--demo")


def import_csv(url: str, csv_path: Path) -> float:
    """``fs-dynroute route import`` of the file into the demo rule; returns its wall time in seconds."""
    return run_cli("route", "import", RULE, str(csv_path), "--db", url)


def bulk_sqlite(path: Path, n: int) -> float:
    """Raw sqlite3 executemany (one transaction, triggers and indexes as the schema has them)."""
    started = time.perf_counter()
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA synchronous=OFF")
        (rule_id,) = con.execute("SELECT id FROM dynroute_rule WHERE name = ?", (RULE,)).fetchone()
        with con:
            con.executemany("INSERT INTO dynroute_route (rule_id, caller_key, destination, notes) VALUES (?, ?, ?, ?)",
                            ((rule_id, key, dest, "bench") for key, dest in rows(n)))
    finally:
        con.close()
    return time.perf_counter() - started


def _mysql_params(url: str) -> dict[str, object]:
    parts = urlparse(url)
    return {"host": parts.hostname or "127.0.0.1", "port": parts.port or 3306, "user": parts.username or "root",
            "password": parts.password or "", "connect_timeout": 5}


def create_mysql_database(url: str) -> None:
    """Drop and create the database the URL names (it must be a benchmark database)."""
    import pymysql

    name = urlparse(url).path.lstrip("/")
    if not name.replace("_", "").isalnum() or "bench" not in name:
        raise ValueError(f"refusing to recreate database {name!r}: its name must contain 'bench'")
    con = pymysql.connect(autocommit=True, **_mysql_params(url))
    try:
        with con.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    finally:
        con.close()


def bulk_mysql(url: str, n: int) -> float:
    """pymysql executemany (multi-row INSERTs) in chunks."""
    import pymysql

    started = time.perf_counter()
    con = pymysql.connect(database=urlparse(url).path.lstrip("/"), **_mysql_params(url))
    try:
        with con.cursor() as cur:
            cur.execute("SELECT id FROM dynroute_rule WHERE name = %s", (RULE,))
            (rule_id,) = cur.fetchone()
            batch: list[tuple[object, ...]] = []
            for key, dest in rows(n):
                batch.append((rule_id, key, dest, "bench"))
                if len(batch) >= CHUNK:
                    cur.executemany("INSERT INTO dynroute_route (rule_id, caller_key, destination, notes) "
                                    "VALUES (%s, %s, %s, %s)", batch)
                    batch = []
            if batch:
                cur.executemany("INSERT INTO dynroute_route (rule_id, caller_key, destination, notes) "
                                "VALUES (%s, %s, %s, %s)", batch)
        con.commit()
    finally:
        con.close()
    return time.perf_counter() - started


def build(target: str, n: int, method: str = "bulk", csv_path: Path | None = None) -> dict[str, float]:
    """Create the database at ``target`` (path or URL) from scratch; returns the timings in seconds."""
    if n > MAX_ROUTES:
        raise ValueError(f"at most {MAX_ROUTES} routes")
    url = db_url(target)
    timings: dict[str, float] = {}
    if url.startswith("sqlite:///"):
        path = Path(urlparse(url).path)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
    elif url.startswith("mysql://"):
        create_mysql_database(url)
    else:
        raise ValueError(f"unsupported database {url!r} (sqlite path or mysql:// URL)")
    started = time.perf_counter()
    initdb(url)
    timings["initdb_s"] = time.perf_counter() - started
    if method == "import":
        csv_path = csv_path or Path(f"{target}.csv" if "://" not in target else "routes.csv")
        timings["csv_write_s"] = write_csv(csv_path, n)
        timings["csv_import_s"] = import_csv(url, csv_path)
        csv_path.unlink(missing_ok=True)
    elif url.startswith("sqlite:///"):
        timings["bulk_insert_s"] = bulk_sqlite(Path(urlparse(url).path), n)
    else:
        timings["bulk_insert_s"] = bulk_mysql(url, n)
    return timings


def time_csv_import(n: int, workdir: Path) -> dict[str, float]:
    """The issue's import target alone: a fresh SQLite database, then ``route import`` of an N-row CSV."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"import-check-{os.getpid()}.db"
    try:
        return build(str(path), n, method="import", csv_path=workdir / f"import-check-{os.getpid()}.csv")
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.make_routes", description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, default=1_000_000, help="number of routes (default 1,000,000)")
    parser.add_argument("--db", required=True, help="SQLite file path, or mysql://user@host/<name with 'bench'>")
    parser.add_argument("--method", choices=("bulk", "import"), default="bulk",
                        help="bulk: raw executemany; import: fs-dynroute route import of a generated CSV")
    args = parser.parse_args(argv)
    timings = build(args.db, args.routes, args.method)
    print(" ".join(f"{k}={v:.2f}" for k, v in timings.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
