"""The in-process front door's state: one router per FreeSWITCH process, shared by all its call threads.

mod_python3 runs ``fs_dynroute.fsapp`` afresh on every call but keeps the modules it imports, so what
must outlive a call lives here, built by the first call (or by the ``startup-script``):

* FreeSWITCH's call threads route through the socket server's own :class:`~fs_dynroute.server.StoreRouter`
  and ``routing.route_call``: the rule and the route come from the in-memory index (dictionary reads,
  no database), the decision from ``decision.decide``.
* One background thread owns a gevent hub of its own (no monkey-patching) and runs the server's
  :class:`~fs_dynroute.index.IndexedStore` in it: its change-log poller, its statistics flusher and its
  worker threads work exactly as under ``fs-dynroute serve``. Statistics reach it through a queue.
* A few consume threads of our own run the Delete After Use deletes. Not the call thread itself:
  mod_python3 creates and clears a Python thread state for every call, so a per-thread database
  connection (peewee's) would be lost after each call; and a delete waiting on a lock must not keep
  the caller past the deadline. The call thread waits for the delete at most until its deadline.
"""

from __future__ import annotations

import atexit
import logging
import queue
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, TimeoutError as FutureTimeout
from typing import Any, Protocol

import gevent

from fs_dynroute import inprocess_config
from fs_dynroute.config import ServeConfig
from fs_dynroute.database import open_database
from fs_dynroute.decision import Decision, RouteView, RuleView
from fs_dynroute.index import IndexedStore
from fs_dynroute.server import SEND_RESERVE, StoreRouter
from fs_dynroute.session import Channel, call_variables, log_call, printable
from fs_dynroute.store import DeadlineExceeded, SQLStore

log = logging.getLogger(__name__)

ConsoleLog = Callable[[str, str], None]  # freeswitch.consoleLog(level, text)

CONSUME_THREADS = 4
# One pool for the index's worker threads (8 by default) and the consume threads, with room to spare.
MAX_CONNECTIONS = 32
# How often the index thread takes the call threads' statistics into its batch.
DRAIN_INTERVAL = 0.05
STOP_TIMEOUT = 10.0


class FsSession(Protocol):
    """What the call path uses of mod_python3's session object."""

    def getVariable(self, name: str) -> str | None: ...  # noqa: N802, E704

    def setVariable(self, name: str, value: str) -> None: ...  # noqa: N802, E704


Record = tuple[RuleView, Decision, "str | None"]


class IndexThread:
    """The server's IndexedStore, run in one dedicated thread that owns its gevent hub.

    Call threads only read its memory (``rule_for``, ``lookup``: dictionary reads, safe under the GIL)
    and put statistics on ``records``; this thread moves them into the store's batch, so the batch is
    only ever touched by the thread that flushes it.
    """

    def __init__(self, sql: SQLStore, poll_interval: float, stale_after: float) -> None:
        self.records: queue.SimpleQueue[Record] = queue.SimpleQueue()
        self.loaded = threading.Event()  # the first load has been tried (it may have failed: see the log)
        self._stopping = threading.Event()
        built: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, args=(sql, poll_interval, stale_after, built),
                                        name="fs-dynroute-index", daemon=True)
        self._thread.start()
        ok, value = built.get()
        if not ok:
            raise value
        self.store: IndexedStore = value

    def _run(self, sql: SQLStore, poll_interval: float, stale_after: float, built: queue.SimpleQueue) -> None:
        try:  # built here: its thread pool belongs to the hub of the thread that creates it
            store = IndexedStore(sql, poll_interval=poll_interval, stale_after=stale_after)
        except Exception as exc:  # handed to the constructor waiting in the caller's thread
            built.put((False, exc))
            return
        built.put((True, store))
        store.start()
        self.loaded.set()
        while not self._stopping.is_set():
            self._drain(store)
            gevent.sleep(DRAIN_INTERVAL)
        self._drain(store)
        try:
            store.stop()
        except Exception as exc:  # the database is down at exit: those statistics are lost
            log.warning("could not write the last statistics: %s: %s", type(exc).__name__, exc)
        gevent.get_hub().destroy(destroy_loop=True)

    def _drain(self, store: IndexedStore) -> None:
        while True:
            try:
                store.record(*self.records.get_nowait())
            except queue.Empty:
                return

    def stop(self) -> None:
        """Stop polling, write the statistics still waiting, close the database connections."""
        self._stopping.set()
        self._thread.join(STOP_TIMEOUT)


class CallStore:
    """The Store a FreeSWITCH call thread routes through: memory for reads, the consume threads for deletes."""

    def __init__(self, index: IndexThread, sql: SQLStore, consumers: ThreadPoolExecutor) -> None:
        self.index = index
        self.sql = sql
        self.consumers = consumers

    def rule_for(self, *, name: str | None = None, source: str | None = None) -> RuleView | None:
        return self.index.store.rule_for(name=name, source=source)

    def lookup(self, rule: RuleView, key: str) -> RouteView | None:
        return self.index.store.lookup(rule, key)

    def consume(self, rule: RuleView, decision: Decision, call_uuid: str | None,
                deadline: float | None = None) -> bool:
        """The SQL store's exactly-once delete, waited for until ``deadline``; a late one rolls itself back."""
        future = self.consumers.submit(self.sql.consume, rule, decision, call_uuid, deadline)
        try:
            return future.result(None if deadline is None else max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            future.cancel()  # still queued: it never runs; already running: its own deadline check undoes it
            raise DeadlineExceeded("the database did not answer before the call's deadline") from None

    def record(self, rule: RuleView, decision: Decision, call_uuid: str | None) -> None:
        self.index.records.put((rule, decision, call_uuid))


def channel_of(session: FsSession, args: str) -> Channel:
    """The call as the router sees it; the rule from ``args``, else ``dynroute_rule``, else the destination."""
    variable = lambda name: session.getVariable(name) or ""  # noqa: E731 (unset variables read as None)
    return Channel(uuid=variable("uuid"), caller_id=variable("caller_id_number"),
                   destination_number=variable("destination_number"),
                   rule_name=args.strip() or variable("dynroute_rule") or None)


class InProcessRouter:
    """Everything that outlives a call: the database, the index thread, the consume threads, the router."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        db = open_database(config.db, pooled=True, max_connections=MAX_CONNECTIONS,
                           busy_timeout=config.decision_timeout)
        sql = SQLStore(db, config.default_context)
        self.index = IndexThread(sql, config.poll_interval, config.stale_after)
        self.consumers = ThreadPoolExecutor(CONSUME_THREADS, thread_name_prefix="fs-dynroute-consume")
        self.router = StoreRouter(CallStore(self.index, sql, self.consumers))

    def serve(self, session: FsSession, args: str) -> str:
        """Route one call: set the dynroute_* variables (the target first), or leave them all alone."""
        started = time.monotonic()
        deadline = started + self.config.decision_timeout
        channel = channel_of(session, args)
        if not self.index.loaded.is_set():  # the first calls: the routes may load within this call's deadline
            self.index.loaded.wait(max(0.0, deadline - SEND_RESERVE - time.monotonic()))
        rule, decision = self.router(channel, deadline)
        if rule is None or decision is None:
            outcome = "norule"
        elif time.monotonic() > deadline:
            outcome = "timeout"
        else:
            for name, value in call_variables(rule, decision):
                session.setVariable(name, value)
            outcome = "done"
        reached = decision.destination if decision and outcome == "done" else "(dialplan default)"
        log_call(channel, rule, decision, outcome, reached, started)
        return outcome

    def close(self) -> None:
        self.consumers.shutdown(wait=True, cancel_futures=True)
        self.index.stop()


class ConsoleLogHandler(logging.Handler):
    """fs_dynroute's log records into FreeSWITCH's log through ``freeswitch.consoleLog``, one line each.

    The in-process mode has no command line to configure logging, so the router does it here,
    once, when it is built; an error's exception is summed up on its line, never a traceback.
    """

    LEVELS = ((logging.ERROR, "ERR"), (logging.WARNING, "WARNING"), (logging.INFO, "INFO"), (0, "DEBUG"))

    def __init__(self, console_log: ConsoleLog) -> None:
        super().__init__()
        self.console_log = console_log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                text += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
            level = next(name for floor, name in self.LEVELS if record.levelno >= floor)
            self.console_log(level, f"fs_dynroute: {one_line(text)}\n")
        except Exception:  # logging must never cost a call its route
            self.handleError(record)


def one_line(text: str) -> str:
    """Multi-line text (a driver's error message) on one log line."""
    return re.sub(r"\s*\n\s*", " | ", text.strip())


_lock = threading.Lock()
_router: InProcessRouter | None = None
_logging: tuple[ConsoleLogHandler, int, bool] | None = None  # the handler, and the level and propagate it replaced


def shared(console_log: ConsoleLog) -> InProcessRouter:
    """The process's router, built from the configuration by the first caller."""
    global _router
    router = _router
    if router is not None:
        return router
    with _lock:
        if _router is None:
            _attach_log(console_log)
            _router = InProcessRouter(inprocess_config.load())
        return _router


def _attach_log(console_log: ConsoleLog) -> None:
    global _logging
    if _logging is None:
        package = logging.getLogger("fs_dynroute")
        _logging = (ConsoleLogHandler(console_log), package.level, package.propagate)
        package.addHandler(_logging[0])
        package.setLevel(logging.INFO)
        package.propagate = False  # FreeSWITCH's Python has no other handler: stderr would get a copy


def handle(session: FsSession, args: str | None, console_log: ConsoleLog) -> None:
    """Route one call for ``fsapp.handler``; never raises: whatever fails, the dialplan default stands."""
    try:
        shared(console_log).serve(session, args or "")
    except Exception as exc:  # a bad configuration or our own bug: one line in FreeSWITCH's log
        console_log("ERR", f"fs_dynroute: call uuid={_uuid(session)}: the dialplan default stands: "
                           f"{type(exc).__name__}: {one_line(str(exc))}\n")


def start(console_log: ConsoleLog) -> None:
    """Build the router now (FreeSWITCH's ``startup-script``) so the routes are loaded before the first call."""
    try:
        shared(console_log)
    except Exception as exc:
        console_log("ERR", f"fs_dynroute: not started: {type(exc).__name__}: {one_line(str(exc))}\n")


def _uuid(session: FsSession) -> str:
    try:
        return printable(session.getVariable("uuid") or "-")
    except Exception:  # the session itself is broken: the line is still written
        return "-"


def shutdown() -> None:
    """Stop the threads, write the statistics still waiting and give logging back (FreeSWITCH's exit, tests)."""
    global _router, _logging
    with _lock:
        router, _router = _router, None
        attached, _logging = _logging, None
    if router is not None:
        router.close()
    if attached is not None:
        package = logging.getLogger("fs_dynroute")
        package.removeHandler(attached[0])
        package.setLevel(attached[1])
        package.propagate = attached[2]


atexit.register(shutdown)
