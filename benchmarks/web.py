"""The web side's figures: API keyset paging at 1M routes over real HTTP, and what a metric costs a call.

Starts ``fs-dynroute web`` on a free loopback port over the routes database (built by benchmarks.make_routes
when missing, cached in benchmarks/.data/), then times ``GET /api/rules/{rule}/routes?limit=50`` for the
first page and for page 5,000 (``after`` = the 250,000th key), each the median of repeated requests. The
target (issue 12): both under 50 ms on SQLite. Then the cost per call of ``metrics.call_decided``.

    python -m benchmarks.web [--routes 1000000] [--samples 50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
import timeit
import urllib.parse
import urllib.request
from pathlib import Path

from benchmarks import make_routes
from benchmarks.procs import free_port
from benchmarks.workload import RULE
from fs_dynroute import metrics
from fs_dynroute.schema import CURRENT_VERSION

DATA = Path(__file__).resolve().parent / ".data"
PAGE = 50
TARGET_MS = 50.0


def database(routes: int) -> Path:
    path = DATA / f"routes-{routes}-schema{CURRENT_VERSION}.db"
    if not path.exists():
        DATA.mkdir(exist_ok=True)
        partial = path.with_suffix(".partial")
        make_routes.build(str(partial), routes, "bulk")
        partial.rename(path)
    return path


def _get(url: str, token: str) -> tuple[float, dict]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as answer:
        body = json.loads(answer.read())
    return (time.perf_counter() - started) * 1000, body


def page_times(base: str, token: str, after: str, samples: int) -> dict[str, float]:
    url = f"{base}/api/rules/{urllib.parse.quote(RULE)}/routes?limit={PAGE}&after={urllib.parse.quote(after)}"
    times = []
    for _ in range(samples):
        took, body = _get(url, token)
        assert len(body["routes"]) == PAGE
        times.append(took)
    times.sort()
    return {"median_ms": round(statistics.median(times), 2), "p95_ms": round(times[int(len(times) * 0.95)], 2)}


def paging(routes: int, samples: int) -> dict[str, object]:
    url = make_routes.db_url(str(database(routes)))
    token = subprocess.run([*make_routes.cli(), "token", "add", f"bench-{time.time_ns()}", "--db", url],
                           capture_output=True, text=True, check=True).stdout.strip()
    port = free_port()
    web = subprocess.Popen([*make_routes.cli(), "web", "--db", url, "--listen", f"127.0.0.1:{port}"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or web.poll() is not None:
                    raise RuntimeError("fs-dynroute web did not start") from None
                time.sleep(0.1)
        # The key before page 5,000: walk there once with big pages (what a client holding `next` has).
        after, walked = "", 0
        while walked < PAGE * 4999:
            step = min(1000, PAGE * 4999 - walked)
            _, body = _get(f"{base}/api/rules/{urllib.parse.quote(RULE)}/routes?limit={step}&after={after}", token)
            after, walked = body["routes"][-1]["caller_id"], walked + step
        return {"routes": routes, "page_size": PAGE, "first_page": page_times(base, token, "", samples),
                "page_5000": page_times(base, token, after, samples), "target_ms": TARGET_MS}
    finally:
        web.terminate()
        web.wait(10)


def metric_cost(calls: int = 200_000) -> dict[str, float]:
    """Microseconds per ``metrics.call_decided`` (counter by rule and result, plus the latency histogram)."""
    seconds = timeit.timeit(lambda: metrics.call_decided(RULE, "match", 0.0012), number=calls)
    return {"call_decided_us": round(seconds / calls * 1e6, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.web", description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=50, help="requests per page measured (default 50)")
    args = parser.parse_args(argv)
    result = {"paging": paging(args.routes, args.samples), "metrics": metric_cost()}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
