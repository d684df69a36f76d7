"""The command line of the tracker: ``fs-dynroute track``, ``track status``, and ``rule add/edit --track ...``.

Kept apart from :mod:`fs_dynroute.cli`: its builders call :func:`add_rule_options` on ``rule add``, ``rule edit``
and ``rule show`` (the settings are written after the rule) and :func:`add_track_commands` for ``track``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

from fs_dynroute import admin
from fs_dynroute.commands import Commands, opened
from fs_dynroute.config import parse_listen
from fs_dynroute.tracker import DEFAULT_CAUSES, DEFAULT_TTL, MODES

STALE_STATUS = 10.0  # a status file older than this: the tracker is not running

Command = Callable[[argparse.Namespace], int]


def add_rule_options(add: argparse.ArgumentParser, edit: argparse.ArgumentParser,
                     show: argparse.ArgumentParser) -> None:
    """The tracker's options on ``rule add`` and ``rule edit``, and its settings in ``rule show``."""
    for p, adding in ((add, True), (edit, False)):
        p.add_argument("--track", choices=MODES, help="feed this rule from call outcomes on the event socket: "
                       "'missed' writes pending returns, 'last-agent' the agent each customer spoke to last")
        p.add_argument("--agents", metavar="REGEX", help="which numbers are agents, e.g. '^1\\d{3}$' "
                       "(required with --track)")
        p.add_argument("--track-ttl", metavar="DURATION", help="tracked routes expire after this long "
                       f"(default {DEFAULT_TTL['missed']} for missed, {DEFAULT_TTL['last-agent']} for last-agent; "
                       "'' = never)")
        p.add_argument("--track-causes", metavar="CAUSES", help="hangup causes of a missed call "
                       f"(default {','.join(DEFAULT_CAUSES)})")
        if not adding:
            p.add_argument("--no-track", action="store_true", help="stop feeding the rule (its routes stay)")
        p.set_defaults(func=_with_track(p.get_default("func"), adding))
    show.set_defaults(func=_show_with_track(show.get_default("func")))


def add_track_commands(commands: Commands) -> None:
    p = commands.leaf("track", cmd_track, json=True, help="feed tracked rules from FreeSWITCH's event socket "
                      "(missed calls, last agent); 'track status' shows what it does")
    p.add_argument("action", nargs="?", choices=("status",), help="show the running tracker's status")
    p.add_argument("--esl", type=parse_listen, default="127.0.0.1:8021", help="FreeSWITCH event socket host:port "
                   "(default 127.0.0.1:8021)")
    p.add_argument("--password-file", help="file whose first line is the event socket password "
                   "(default: $DYNROUTE_ESL_PASSWORD; never on the command line)")
    p.add_argument("--format", choices=("plain", "json"), default="plain", help="event format (default plain)")
    p.add_argument("--client", choices=("builtin", "python-esl"), default="builtin", help="the event socket "
                   "client: fs_dynroute's own codec (default) or python-ESL (the optional extra; see README)")
    p.add_argument("--heartbeat-timeout", type=float, default=50.0, help="seconds without a byte, not even "
                   "FreeSWITCH's 20 s HEARTBEAT, after which the connection is dead (default 50)")
    p.add_argument("--status-file", type=Path, help="where the tracker writes its status "
                   "(default $XDG_STATE_HOME/fs-dynroute/track-status.json)")


# ---------------------------------------------------------------------------------------------------------------
# rule add/edit/show


def _options(args: argparse.Namespace):  # -> TrackOptions
    from fs_dynroute.track_store import TrackOptions

    return TrackOptions(args.track, args.agents, args.track_ttl, args.track_causes)


def _with_track(rule_command: Command, adding: bool) -> Command:
    """``rule add/edit``, then the track settings; the settings are checked before the rule is written."""
    def run(args: argparse.Namespace) -> int:
        from fs_dynroute.track_store import check_options, clear_track, is_tracked, set_track

        options, stop = _options(args), getattr(args, "no_track", False)
        if stop and options.given():
            raise admin.UserError("no-track: cannot be combined with --track, --agents, --track-ttl, --track-causes")
        if options.given():
            check_options(options, new=adding)
            if not adding and options.mode is None:
                with opened(args, write=False):
                    if not is_tracked(admin.get_rule(args.name)):
                        raise admin.UserError("track: the rule is not tracked; give --track missed|last-agent")
        code = rule_command(args)
        if options.given() or stop:
            with opened(args):
                if stop:
                    print(f"rule {args.name!r} no longer tracked" if clear_track(args.name)
                          else f"rule {args.name!r} was not tracked")
                else:
                    track = set_track(args.name, options)
                    print(f"rule {args.name!r} tracks {track.mode} calls of agents {track.agents!r} "
                          f"(routes expire after {track.ttl or 'never'})")
        return code
    return run


def _show_with_track(show: Command) -> Command:
    def run(args: argparse.Namespace) -> int:
        from fs_dynroute.track_store import track_settings

        code = show(args)
        if not args.json:
            with opened(args, write=False):
                settings = track_settings(admin.get_rule(args.name))
            print("track: " + (" ".join(f"{k}={v}" for k, v in settings.items()) if settings else "no"))
        return code
    return run


# ---------------------------------------------------------------------------------------------------------------
# track, track status


def cmd_track(args: argparse.Namespace) -> int:
    from fs_dynroute.track import status_path

    status_file = args.status_file or status_path()
    if args.action == "status":
        return show_status(status_file, args.json)
    return run_tracker(args, status_file)


def run_tracker(args: argparse.Namespace, status_file: Path) -> int:
    """Until SIGTERM/SIGINT; a refused password is a one-line error (exit 2), never retried."""
    import gevent
    import gevent.event

    from fs_dynroute.database import open_database
    from fs_dynroute.models import database
    from fs_dynroute.service import check_schema
    from fs_dynroute.track import Tracker, read_password
    from fs_dynroute.track_pyesl import available

    try:
        password = read_password(args.password_file)
    except ValueError as exc:
        raise admin.UserError(f"password: {exc}") from None
    if args.client == "python-esl" and not available():
        raise admin.UserError("client: python-ESL is not installed (see the README for how to build it)")
    db = open_database(args.db)
    database.initialize(db)
    check_schema(db)
    tracker = Tracker(db, args.esl, password, fmt=args.format, heartbeat_timeout=args.heartbeat_timeout,
                      status_file=status_file, client=args.client).start()
    stopping = gevent.event.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(sig, stopping.set)
    gevent.wait([stopping, tracker.failed], count=1)
    tracker.stop()
    if tracker.auth_error is not None:
        raise admin.UserError(str(tracker.auth_error))
    return 0


def show_status(path: Path, as_json: bool) -> int:
    """Print what the tracker last wrote; exit 1 when there is none or it is stale (the tracker is not running)."""
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        print(f"tracker: no status at {path} (not started?)")
        return 1
    age = time.time() - float(status["updated"])
    running = age < STALE_STATUS
    if as_json:
        print(json.dumps({**status, "running": running}, indent=2))
        return 0 if running else 1
    for line in _status_lines(status, running, age):
        print(line)
    return 0 if running else 1


def _clock(stamp: float | None) -> str:
    return dt.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S") if stamp else "never"


def _status_lines(s: dict, running: bool, age: float) -> list[str]:
    state = (f"connected to {s['esl']} since {_clock(s['connected_since'])}" if s["connected"]
             else f"NOT connected to {s['esl']}: {s['last_error'] or 'connecting'}")
    skipped = s["skipped"]
    return [
        f"tracker: {'running' if running else f'NOT running (last status {age:.0f} s ago)'} (pid {s['pid']}), "
        f"{state}",
        f"events: {s['events']} hangups seen ({s['duplicates']} duplicates), {s['heartbeats']} heartbeats, "
        f"last at {_clock(s['last_event'])}; {s['reconnects']} reconnects",
        f"routes: {s['written']} written, {s['cleared']} cleared",
        f"skipped: {sum(skipped.values())}" + (" (" + ", ".join(f"{k}: {v}" for k, v in skipped.items()) + ")"
                                               if skipped else ""),
        f"queue: {s['queued']} waiting, {s['dropped']} dropped; database "
        + (f"DOWN since {_clock(s['database_down_since'])}" if s["database_down_since"] else "up"),
    ]
