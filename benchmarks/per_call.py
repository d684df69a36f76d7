"""fs_dynroute's own work per call, step by step, outside the socket system calls (process CPU, best of 5).

    python -m benchmarks.per_call [--db benchmarks/.data/routes-10000-schema2.db]

Each step is what ``session.run_session`` does for one matched call, run in a loop on captured bytes
(``multiset/S20``): framing and reading the connect reply, the four channel values, the routing decision
through the server's router and in-memory index (the statistics row included, not its batched flush), the
``multiset`` command, reading the ``+OK``, the deadline, the log line (``logging`` as the CLI configures
it, to a file) and counting the call (``metrics.call_decided``, as ``serve --metrics`` shows it). CPU time,
not wall time, so another process on the machine inflates it less.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path

import gevent

from benchmarks import make_routes

REPEAT, NUMBER = 5, 5000


def cpu_us(fn: Callable[[], object]) -> float:
    return min(timeit.Timer(fn, timer=time.process_time).repeat(number=NUMBER, repeat=REPEAT)) / NUMBER * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.per_call", description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=str(Path(__file__).parent / ".data" / "routes-10000-schema2.db"))
    args = parser.parse_args(argv)
    from fs_dynroute import esl, metrics
    from fs_dynroute.database import open_database
    from fs_dynroute.fakeswitch import captures
    from fs_dynroute.index import IndexedStore
    from fs_dynroute.server import StoreRouter
    from fs_dynroute.session import Channel, log_call
    from fs_dynroute.store import SQLStore

    work = Path(tempfile.mkdtemp(prefix="per-call-"))
    shutil.copyfile(args.db, work / "routes.db")
    store = IndexedStore(SQLStore(open_database(make_routes.db_url(str(work / "routes.db")), pooled=True)))
    store.reload()
    router = StoreRouter(store)
    logging.basicConfig(filename=work / "calls.log", level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    reply = captures.received("multiset/S20_multiset_close.repr")[0].replace(b"%2B15551111111", b"%2B15550000042")
    ok = esl.command_reply("+OK")

    def read(data: bytes) -> esl.Message:
        reader = esl.MessageReader()
        reader.feed(data)
        message = reader.next_message()
        assert message is not None
        return message

    message = read(reply)
    channel = Channel.from_headers(message.headers)
    deadline = time.monotonic() + 3600
    rule, decision = router(channel, deadline)
    assert rule is not None and decision is not None and decision.result.value == "match"
    variables = (("dynroute_target", decision.destination), ("dynroute_result", decision.result.value),
                 ("dynroute_rule", rule.name), ("dynroute_key", decision.key or ""))

    def route() -> None:
        router(channel, deadline)
        store._pending.clear()  # the batched flush is measured by benchmarks.tail_costs

    def deadline_timer() -> None:
        timer = gevent.Timeout(1.0)
        timer.start()
        timer.close()

    def count() -> None:
        asked = time.monotonic()
        metrics.call_decided(rule.name, decision.result.value, time.monotonic() - asked)

    started = time.monotonic()
    steps = {
        "frame and check the connect reply": lambda: read(reply),
        "read the four channel values": lambda: Channel.from_headers(message.headers),
        "its Content-Type": lambda: message.content_type,
        "routing decision (router, index, statistics row)": route,
        "build the multiset": lambda: esl.multiset(variables),
        "read the +OK": lambda: read(ok).headers.get("Reply-Text", "").startswith("+OK"),
        "deadline (gevent.Timeout)": deadline_timer,
        "log line (logging, file handler)": lambda: log_call(channel, rule, decision, "done", "x", started),
        "count the call (its clock reads, metrics.call_decided)": count,
    }
    result = {name: round(cpu_us(fn), 2) for name, fn in steps.items()}
    result["total"] = round(sum(result.values()), 2)
    store.stop()
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
