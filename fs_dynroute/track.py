"""The tracker's client: one inbound event-socket connection, hangups queued, routes written off the event loop.

Never in the way of a call: it is its own connection and its own greenlets; it yields to other greenlets after
every recv() and every few events, so a burst of events cannot starve calls served by the same process; the
database work runs in a thread. FreeSWITCH gone: reconnect with backoff (said once, and once when back). Database
gone: hangups wait in a bounded queue (the oldest dropped and counted when it is full) and are written when it
is back. A hangup seen twice (a reconnect mid-call) is queued once. No byte in 2.5 heartbeat intervals (FreeSWITCH
sends a HEARTBEAT every 20 s to a subscriber) means a dead connection, not a quiet switch.

What it is doing is written every second, and after each change it makes, to a small JSON status file that
``fs-dynroute track status`` reads.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import gevent
import gevent.event
import peewee as pw
from gevent import socket
from gevent.threadpool import ThreadPool

from fs_dynroute import esl_inbound as ei
from fs_dynroute.esl import ESLProtocolError
from fs_dynroute.track_store import BatchResult, write_batch
from fs_dynroute.tracker import HANGUP_EVENT, Hangup, hangup_of

log = logging.getLogger(__name__)

HEARTBEAT_EVENT = "HEARTBEAT"
HEARTBEAT_INTERVAL = 20.0  # FreeSWITCH's, measured in the i5 capture
MAX_QUEUE = 100_000
BATCH = 200
SEEN = 200_000  # UUIDs remembered for duplicate detection
YIELD_EVERY = 50  # events handled between two yields to other greenlets
PAUSE = 0.001  # seconds given to other greenlets after each recv(): calls first, then the tracker
ENV_PASSWORD = "DYNROUTE_ESL_PASSWORD"
CLIENTS = ("builtin", "python-esl")


class AuthError(Exception):
    """FreeSWITCH refused the password: a configuration error, not something to retry."""


class Lost(Exception):
    """The connection ended or went silent; reconnect."""


def status_path() -> Path:
    """``$XDG_STATE_HOME/fs-dynroute/track-status.json`` (``~/.local/state/...`` when unset)."""
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "fs-dynroute" / "track-status.json"


@dataclass
class TrackStats:
    """What ``track status`` shows."""

    esl: str = ""
    connected: bool = False
    connected_since: float | None = None
    events: int = 0
    heartbeats: int = 0
    duplicates: int = 0
    last_event: float | None = None
    written: int = 0
    cleared: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    queued: int = 0
    dropped: int = 0
    database_down_since: float | None = None
    reconnects: int = 0
    last_error: str = ""

    def as_dict(self) -> dict[str, object]:
        return {**vars(self), "skipped": dict(self.skipped.most_common()), "updated": time.time(), "pid": os.getpid()}


class Tracker:
    """Subscribes to CHANNEL_HANGUP_COMPLETE (and HEARTBEAT) on ``esl`` and feeds the tracked rules.

    ``db`` is the peewee database the models are bound to (``models.database``); ``start()`` spawns the
    greenlets, ``stop()`` ends them (writing what is queued once more, if the database lets it).
    """

    def __init__(self, db: pw.Database, esl: tuple[str, int], password: str, *, fmt: str = "plain",
                 heartbeat_timeout: float = 2.5 * HEARTBEAT_INTERVAL, backoff: tuple[float, float] = (0.5, 30.0),
                 max_queue: int = MAX_QUEUE, batch: int = BATCH, status_file: Path | None = None,
                 status_interval: float = 1.0, client: str = "builtin",
                 password_hint: str = f"--password-file or ${ENV_PASSWORD}") -> None:
        if client not in CLIENTS:
            raise ValueError(f"client must be one of {CLIENTS}, got {client!r}")
        ei.auth_command(password)  # refuse an unusable password now, without ever showing it
        self.db, self.esl, self.fmt, self.client = db, esl, fmt, client
        self.halted = threading.Event()  # tells a client's own thread (python-esl) to end
        self._password = password
        self.heartbeat_timeout = heartbeat_timeout
        self.backoff = backoff
        self.batch = batch
        self.status_file = status_file
        self.status_interval = status_interval
        self.stats = TrackStats(esl="%s:%d" % esl)
        self.queue: deque[Hangup] = deque(maxlen=max_queue)
        self.auth_error: AuthError | None = None
        self.failed = gevent.event.Event()  # set when the tracker gives up (a refused password)
        self.attempted = gevent.event.Event()  # set once the first connection has subscribed or failed
        self.password_hint = password_hint
        self._status_unwritable = False
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._wake = gevent.event.Event()
        self._idle = gevent.event.Event()
        self._idle.set()
        self._threads = ThreadPool(1)
        self._greenlets: list[gevent.Greenlet] = []
        self._sock: socket.socket | None = None
        self._outage: float | None = None  # since when the event socket has been unreachable

    # -- life cycle ---------------------------------------------------------------------------------------------

    def start(self) -> Tracker:
        self._greenlets = [gevent.spawn(self._connection_loop), gevent.spawn(self._writer_loop)]
        if self.status_file is not None:
            self._greenlets.append(gevent.spawn(self._status_loop))
        return self

    def stop(self, flush_timeout: float = 5.0) -> None:
        self.halted.set()
        self._greenlets[0].kill()
        self._close()
        self.wait_idle(flush_timeout)
        gevent.killall(self._greenlets[1:])
        self._threads.kill()
        self.write_status()

    def wait(self, timeout: float | None = None) -> None:
        """Until the tracker gives up (only a refused password makes it), then raise why."""
        if self.failed.wait(timeout) and self.auth_error is not None:
            raise self.auth_error

    def wait_idle(self, timeout: float | None = None) -> bool:
        """True once everything queued has been written (or the timeout passed: False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.queue or not self._idle.is_set():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            self._idle.wait(min(left, 0.05) if left is not None else 0.05)
            gevent.sleep(0.01)
        return True

    # -- the connection -----------------------------------------------------------------------------------------

    def _connection_loop(self) -> None:
        delay = self.backoff[0]
        while True:
            try:
                self._session()
            except AuthError as exc:  # the owner reports it (the CLI: one line, exit 2)
                self.auth_error = exc
                self.stats.last_error = str(exc)
                self.failed.set()
                return
            except (OSError, Lost, ESLProtocolError) as exc:
                if self.stats.connected:  # it had worked: a new outage, retried quickly first
                    delay = self.backoff[0]
                    self.stats.reconnects += 1
                self.stats.connected, self.stats.last_error = False, f"{type(exc).__name__}: {exc}"
                if self._outage is None:
                    self._outage = time.monotonic()
                    log.warning("event socket %s: %s; reconnecting with backoff up to %.0f s", self.stats.esl,
                                exc or type(exc).__name__, self.backoff[1])
            except Exception:  # our own bug: say it, and keep tracking on a new connection
                log.exception("event socket %s: unexpected error; reconnecting", self.stats.esl)
                self.stats.connected = False
            finally:
                self._close()
                self.attempted.set()
            gevent.sleep(delay)
            delay = min(delay * 2, self.backoff[1])

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def refused(self, reply: str) -> AuthError:
        return AuthError(f"event socket {self.stats.esl} refused the password ({reply}); "
                         f"check {self.password_hint}")

    def _session(self) -> None:
        if self.client == "python-esl":
            from fs_dynroute.track_pyesl import run_session

            return run_session(self, self._password)
        self._sock = socket.create_connection(self.esl, timeout=self.heartbeat_timeout)
        reader = ei.InboundReader()
        self._expect(reader, ei.AuthRequest)
        self._sock.sendall(ei.auth_command(self._password))
        reply = self._expect(reader, ei.Reply)
        if not reply.ok:  # type: ignore[union-attr]
            raise self.refused(reply.text)  # type: ignore[union-attr]
        for command in (ei.event_command(self.fmt, [HANGUP_EVENT, HEARTBEAT_EVENT]),
                        ei.filter_command("Event-Name", HANGUP_EVENT),
                        ei.filter_command("Event-Name", HEARTBEAT_EVENT)):
            self._sock.sendall(command)
            reply = self._expect(reader, ei.Reply)
            if not reply.ok:  # type: ignore[union-attr]
                raise Lost(f"subscription refused: {reply.text}")  # type: ignore[union-attr]
        self.subscribed()
        self._read_events(reader)

    def subscribed(self) -> None:
        """Called by a client once FreeSWITCH has accepted the password, the subscription and the filters."""
        self.stats.connected, self.stats.connected_since = True, time.time()
        self.attempted.set()
        if self._outage is not None:
            log.warning("event socket %s: back after %.1f s", self.stats.esl, time.monotonic() - self._outage)
            self._outage = None
        log.info("event socket %s: subscribed (%s, %s) to %s", self.stats.esl, self.fmt, self.client, HANGUP_EVENT)
        self.write_status()

    def _recv(self, reader: ei.InboundReader) -> None:
        try:
            data = self._sock.recv(65536)  # type: ignore[union-attr]
        except socket.timeout:
            raise Lost(f"nothing for {self.heartbeat_timeout:.0f} s, not even a HEARTBEAT: connection dead") from None
        if not data:
            raise Lost("connection closed by FreeSWITCH")
        reader.feed(data)

    def _expect(self, reader: ei.InboundReader, kind: type) -> ei.Item:
        """The next item of ``kind``. Events that come first are handled, never lost: once ``event`` is on,
        FreeSWITCH sends events at once, even before its reply to the next command (a ``filter``)."""
        while True:
            item = reader.next_item()
            if item is None:
                self._recv(reader)
            elif isinstance(item, ei.Event):
                self.event(item.name, item.headers)
            else:
                break
        if isinstance(item, ei.Disconnect) and kind is ei.Reply:
            raise Lost("disconnected")
        if not isinstance(item, kind):
            raise ESLProtocolError(f"expected {kind.__name__}, got {type(item).__name__}")
        return item

    def _read_events(self, reader: ei.InboundReader) -> None:
        while True:  # what came with the last reply is handled first, before waiting for more
            handled = 0
            while (item := reader.next_item()) is not None:
                if isinstance(item, ei.Disconnect):
                    raise Lost("FreeSWITCH sent a disconnect notice")
                if isinstance(item, ei.Event):
                    self.event(item.name, item.headers)
                    handled += 1
                    if handled % YIELD_EVERY == 0:
                        gevent.sleep(0)
            gevent.sleep(PAUSE)  # a recv() that never blocks (a burst) must not starve the calls
            self._recv(reader)

    def event(self, name: str, headers: Mapping[str, str]) -> None:
        """Called by a client for each event (on the event loop's thread)."""
        self.stats.last_event = time.time()
        if name == HEARTBEAT_EVENT:
            self.stats.heartbeats += 1
            return
        hangup = hangup_of(headers)
        if hangup is None:
            return
        self.stats.events += 1
        if hangup.uuid in self._seen:
            self.stats.duplicates += 1
            return
        self._seen[hangup.uuid] = None
        if len(self._seen) > SEEN:
            self._seen.popitem(last=False)
        if len(self.queue) == self.queue.maxlen:
            self.stats.dropped += 1  # the deque drops the oldest
        self.queue.append(hangup)
        self._wake.set()

    # -- the database -------------------------------------------------------------------------------------------

    def _writer_loop(self) -> None:
        delay = self.backoff[0]
        while True:
            self._wake.wait()
            self._wake.clear()
            while self.queue:
                self._idle.clear()
                batch = [self.queue.popleft() for _ in range(min(self.batch, len(self.queue)))]
                ok, result = self._threads.spawn(self._write, batch).get()
                if ok:
                    delay = self.backoff[0]
                    self._count(result)  # type: ignore[arg-type]
                elif not isinstance(result, pw.PeeweeException):  # our bug: lose this batch, not the tracker
                    log.error("could not write %d hangups: %s: %s", len(batch), type(result).__name__, result)
                    self.stats.skipped["error"] += len(batch)
                else:
                    self._requeue(batch, result)  # type: ignore[arg-type]
                    gevent.sleep(delay)
                    delay = min(delay * 2, self.backoff[1])
            self._idle.set()

    def _write(self, batch: list[Hangup]) -> tuple[bool, BatchResult | BaseException]:
        """In the worker thread; an error comes back as a value, not as a crash reported by gevent's hub."""
        try:
            with self.db.connection_context():
                return True, write_batch(batch)
        except Exception as exc:
            return False, exc

    def _requeue(self, batch: list[Hangup], exc: BaseException) -> None:
        room = self.queue.maxlen - len(self.queue)  # type: ignore[operator]
        self.stats.dropped += max(0, len(batch) - room)
        self.queue.extendleft(reversed(batch[len(batch) - room:] if room < len(batch) else batch))
        self.stats.queued = len(self.queue)
        if self.stats.database_down_since is None:
            self.stats.database_down_since = time.time()
            log.error("routes database unavailable; %d hangups queued (at most %d): %s: %s", len(self.queue),
                      self.queue.maxlen, type(exc).__name__, exc)

    def _count(self, result: BatchResult) -> None:
        if self.stats.database_down_since is not None:
            log.warning("routes database back after %.1f s; writing what was queued",
                        time.time() - self.stats.database_down_since)
            self.stats.database_down_since = None
        self.stats.written += result.written
        self.stats.cleared += result.cleared
        self.stats.skipped.update(result.skipped)
        self.write_status()

    # -- status ---------------------------------------------------------------------------------------------------

    def _status_loop(self) -> None:
        while True:
            self.write_status()
            gevent.sleep(self.status_interval)

    def write_status(self) -> None:
        """Replace the status file atomically (a reader never sees half of it)."""
        self.stats.queued = len(self.queue)
        if self.status_file is None:
            return
        try:
            self.status_file.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.status_file.with_suffix(".tmp")
            temporary.write_text(json.dumps(self.stats.as_dict(), default=str), encoding="utf-8")
            os.replace(temporary, self.status_file)
        except OSError as exc:  # a status nobody can read must not stop the tracking (said once)
            if not self._status_unwritable:
                log.error("cannot write the tracker's status to %s: %s", self.status_file, exc.strerror or exc)
            self._status_unwritable = True
        else:
            self._status_unwritable = False


def read_password(path: str | None, option: str = "--password-file") -> str:
    """The ESL password from a file (first line) or ``$DYNROUTE_ESL_PASSWORD``; never from the command line.

    ``option``: how the command names the file, for the error."""
    if path:
        with open(path, encoding="utf-8") as handle:
            password = handle.readline().rstrip("\r\n")
        where = path
    else:
        password, where = os.environ.get(ENV_PASSWORD, ""), f"${ENV_PASSWORD}"
    if not password:
        raise ValueError(f"no ESL password in {where}" if path or ENV_PASSWORD in os.environ
                         else f"no ESL password: give {option} FILE or set ${ENV_PASSWORD}")
    try:
        ei.auth_command(password)
    except ValueError:
        raise ValueError(f"the ESL password in {where} must be one word of printable characters") from None
    return password
