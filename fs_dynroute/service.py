"""``fs-dynroute serve`` as one object: the store and the server wired from a ServeConfig, started and stopped.

As aiosmtpd's ``Controller``: the command line, the tests and the benchmarks all run the service
through this class, so what is tested is what runs. ``Service(config)`` prepares everything (the
open-file limit is checked here); ``start()`` checks the schema, loads the index and listens;
``stop()`` finishes calls in flight. Also a context manager. With ``--web`` and ``--metrics`` it also
serves the admin page and /metrics on WebServers of their own: their requests run in worker threads
with database connections of their own, so neither a slow page nor a scrape takes anything a call needs.

With ``--track`` it also runs the tracker (``fs-dynroute track``) on greenlets of its own, with its own event
socket connection and its own database connection (one more in the pool, so never one the calls need).
"""

from __future__ import annotations

import logging
import resource
import signal
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import gevent
import peewee as pw
from gevent.event import Event
from gevent.server import StreamServer

from fs_dynroute.config import BY_NAME, ConfigError, ServeConfig
from fs_dynroute.database import open_database
from fs_dynroute.index import OWN_THREADS, IndexedStore
from fs_dynroute.schema import CURRENT_VERSION, stored_version
from fs_dynroute.server import DynrouteServer, StoreRouter
from fs_dynroute.store import SQLStore
from fs_dynroute.track import ENV_PASSWORD, Tracker, read_password, status_path

if TYPE_CHECKING:
    from fs_dynroute.web.server import WebServer

log = logging.getLogger(__name__)

# Descriptors that are not calls: the listener, the event loop's, the log, and the database's (a pooled
# connection each; SQLite's WAL mode opens three files per connection).
SPARE_FILES = 64
# The tracker's database thread (track.Tracker writes from one): a pool connection of its own.
TRACKER_CONNECTIONS = 1
# How long start() waits for the event socket's first answer, to refuse a wrong password before listening.
TRACK_START_WAIT = 5.0
# Requests served at once by --web and by --metrics; each thread may hold a database connection.
WEB_THREADS = 4
METRICS_THREADS = 2


def page_threads(config: ServeConfig) -> int:
    """Threads (and so database connections, at most) of the pages ``config`` asks for."""
    return (WEB_THREADS if config.web else 0) + (METRICS_THREADS if config.metrics else 0)


def files_needed(config: ServeConfig) -> tuple[int, int]:
    """(descriptors besides the calls', descriptors in all) for ``config``.

    Besides the calls in flight, a burst holds up to ``max_accept`` connections that the server has
    accepted in one go and not yet refused (it accepts that many before its handlers run).
    """
    spare = SPARE_FILES + 3 * (config.db_threads + 2 + page_threads(config)) + StreamServer.max_accept
    return spare, spare + config.max_sessions


def fit_open_files(config: ServeConfig) -> ServeConfig:
    """``config`` with --max-sessions lowered to what the open-file limit allows (raised to the hard limit first).

    Past the limit a connection cannot even be accepted: it waits in the backlog, its caller in silence,
    instead of being refused at once. So the limit is compared with --max-sessions before listening.
    """
    spare, needed = files_needed(config)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return config
    try:
        raised = needed if hard == resource.RLIM_INFINITY else hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
        soft = raised
    except (ValueError, OSError) as exc:
        log.debug("could not raise the open-file limit to %s: %s", hard, exc)
    if soft >= needed:
        return config
    option = BY_NAME["max_sessions"].label()
    if soft - spare < 1:
        raise ConfigError(f"the open-file limit ({soft}) leaves no room for calls: fs_dynroute needs about "
                          f"{needed} for {option} {config.max_sessions}; raise it (ulimit -n, LimitNOFILE=)")
    log.warning("the open-file limit (%d, hard %d) leaves room for %d calls at once: %s lowered from %d to %d; "
                "raise the limit (ulimit -n, LimitNOFILE= in the unit) to serve more",
                soft, hard, soft - spare, option, config.max_sessions, soft - spare)
    return config.replace(max_sessions=soft - spare)


def pages(config: ServeConfig, server: DynrouteServer, store: IndexedStore) -> list[tuple[str, WebServer]]:
    """(setting name, its WebServer) for ``--web`` and ``--metrics``; Flask is imported only when one is asked for.

    The page's mod_xml_curl endpoint names this server's --listen address in the dialplan it answers with.
    """
    found: list[tuple[str, WebServer]] = []
    if not (config.web or config.metrics):
        return found
    from fs_dynroute.dialplan_install import Target
    from fs_dynroute.monitor import monitor_app, watch
    from fs_dynroute.web import create_app, read_secret_key
    from fs_dynroute.web.server import WebServer

    if config.web:
        watch(server, store)  # the page's /metrics shows this process's numbers, with or without --metrics
        host, port = config.listen
        target = Target(servers=(f"[{host}]:{port}" if ":" in host else f"{host}:{port}",))
        option = BY_NAME["web_secret_file"]
        try:
            secret = read_secret_key(config.web_secret_file)
        except ValueError as exc:
            raise ConfigError(f"{option.label()}: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{option.label()}: {exc.filename}: {exc.strerror or exc}") from None
        app = create_app(store.sql.db, default_context=config.default_context, secret_key=secret, dialplan=target)
        found.append(("web", WebServer(app, config.web, threads=WEB_THREADS)))
    if config.metrics:
        found.append(("metrics", WebServer(monitor_app(server, store), config.metrics, threads=METRICS_THREADS,
                                           label="/metrics and /health")))
    return found


def check_schema(db: pw.Database) -> None:
    """Refuse to serve an old or missing schema; a database that cannot be read now is the index's business."""
    try:
        with db.connection_context():
            version = stored_version(db)
    except pw.DatabaseError:
        return  # unreachable or unreadable now: serve, send calls to No Match, and keep trying
    if version is None or version < CURRENT_VERSION:
        found = "no fs_dynroute schema" if version is None else f"schema version {version}"
        raise ConfigError(f"database has {found}, this fs_dynroute needs {CURRENT_VERSION}: "
                          "run 'fs-dynroute initdb' first")


class Service:
    """The routing service: ``.store`` (the in-memory index over the database) and ``.server`` (the listener)."""

    def __init__(self, config: ServeConfig, store_options: Mapping[str, Any] | None = None) -> None:
        """``store_options``: more IndexedStore keywords, for tests and benchmarks (full_reload, ...)."""
        self.config = config = fit_open_files(config)
        tracker_connections = TRACKER_CONNECTIONS if config.track else 0
        db = open_database(config.db, pooled=True,
                           max_connections=config.db_threads + OWN_THREADS + page_threads(config)
                           + tracker_connections,
                           busy_timeout=config.decision_timeout)
        self.store = IndexedStore(SQLStore(db, config.default_context), threads=config.db_threads,
                                  poll_interval=config.poll_interval, stale_after=config.stale_after,
                                  **(store_options or {}))
        self.server = DynrouteServer(StoreRouter(self.store), config)
        self.pages = pages(config, self.server, self.store)
        self.tracker = self._make_tracker(db)

    @property
    def address(self) -> tuple[str, int]:
        """Where it listens (the real port when the config said 0)."""
        return self.server.address

    def start(self) -> None:
        """The pages first, so that everything answers once the log says "listening on"."""
        check_schema(self.store.sql.db)
        self._start_tracker()
        self.store.start()
        started: list[WebServer] = []
        try:
            for name, page in self.pages:
                self._listen(name, page)
                started.append(page)
            self._listen("listen", self.server)
        except ConfigError:
            for page in started:
                page.stop()
            self.store.stop()
            self._stop_tracker()
            raise

    def _listen(self, name: str, server: WebServer | DynrouteServer) -> None:
        try:
            server.start()
        except OSError as exc:
            host, port = getattr(self.config, name)
            raise ConfigError(f"{BY_NAME[name].label()} {host}:{port}: {exc.strerror or exc}") from None

    def stop(self) -> None:
        """Stop the pages, stop listening, finish the calls in flight, then flush and close the store."""
        for _, page in self.pages:
            page.stop()
        self.server.stop()
        self._stop_tracker()
        self.store.stop()

    def __enter__(self) -> Service:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the tracker (--track) -------------------------------------------------------------------------------------

    def _make_tracker(self, db: pw.Database) -> Tracker | None:
        """The tracker --track asks for, its password read now (a missing or unusable one is a ConfigError)."""
        if self.config.track is None:
            return None
        option = BY_NAME["track_password_file"]
        try:
            password = read_password(self.config.track_password_file, option.option)
        except ValueError as exc:
            raise ConfigError(f"{option.label()}: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{option.label()}: {exc.filename}: {exc.strerror or exc}") from None
        return Tracker(db, self.config.track, password, status_file=status_path(),
                       password_hint=f"{option.label()} or ${ENV_PASSWORD}")

    def _start_tracker(self) -> None:
        """Before listening: a refused password stops the start; FreeSWITCH down is retried with backoff."""
        if self.tracker is None:
            return
        self.tracker.start()
        self.tracker.attempted.wait(TRACK_START_WAIT)
        if self.tracker.auth_error is not None:
            self.tracker.stop()
            raise ConfigError(str(self.tracker.auth_error))
        self.tracker.failed.rawlink(self._tracker_failed)

    def _tracker_failed(self, _: object) -> None:
        """FreeSWITCH refused the password later (it restarted with another): calls go on, tracking does not."""
        log.error("%s; tracking stopped, calls are still served; restart serve once it is fixed",
                  self.tracker.auth_error)  # type: ignore[union-attr]

    def _stop_tracker(self) -> None:
        if self.tracker is not None:
            self.tracker.stop()

    def serve_until_signalled(self) -> None:
        """Run until SIGTERM or SIGINT, then stop gracefully."""
        stopping = Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(sig, stopping.set)
        with self:
            stopping.wait()
            self.server.stop_listening()  # first: see DynrouteServer.stop_listening
            log.info("signal received: no new calls; finishing %d in flight", self.server.live)
        log.info("stopped")
