"""The ``fs-dynroute`` command line: the only place that parses arguments and configures logging."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import peewee as pw

from fs_dynroute import __version__, admin, csvio, demo
from fs_dynroute.database import DatabaseURLError, open_database
from fs_dynroute.destinations import DestinationError
from fs_dynroute.fakeswitch import call
from fs_dynroute.models import Destination, Route, Rule, database, destination_map
from fs_dynroute.routing import route_call
from fs_dynroute.schema import CURRENT_VERSION, initdb, schema_sql, stored_version
from fs_dynroute.store import SQLStore

EXIT_USAGE = 2


@contextmanager
def opened(args: argparse.Namespace, *, write: bool = True) -> Iterator[pw.Database]:
    """The database bound to the models, in one transaction when writing: an error writes nothing."""
    db = open_database(args.db)
    database.initialize(db)
    with db.connection_context():
        if write:
            with db.atomic():
                yield db
        else:
            yield db


def emit(args: argparse.Namespace, data: object, lines: Sequence[str]) -> None:
    print(json.dumps(data, indent=2, default=str) if getattr(args, "json", False) else "\n".join(lines))


def cmd_initdb(args: argparse.Namespace) -> int:
    with opened(args, write=False) as db:
        before, after = initdb(db)
        with db.atomic():
            loaded = demo.load() if args.demo else False
    state = "created" if before is None else ("up to date" if before == after else f"upgraded from {before}")
    print(f"schema version {after}: {state}" + ("; demo data loaded" if loaded else ""))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    sys.stdout.write(schema_sql(args.dialect))
    return 0


def _spec(args: argparse.Namespace) -> admin.RuleSpec:
    flag = lambda on, off: True if on else (False if off else None)  # noqa: E731
    return admin.RuleSpec(
        source=args.source, digits_match=args.digits, no_match_destination=args.nomatch_dest,
        match_destination=args.match_dest, delete_after_use=flag(args.delete_after_use, args.keep_after_use),
        prefix=flag(args.prefix, args.exact), enabled=flag(args.enabled, args.disabled))


def rule_dict(rule: Rule) -> dict[str, object]:
    return {"name": rule.name, "source": rule.source, "digits_match": rule.digits_match,
            "match_mode": rule.match_mode, "match_destination": rule.match_destination,
            "no_match_destination": rule.no_match_destination, "delete_after_use": bool(rule.delete_after_use),
            "enabled": bool(rule.enabled), "routes": Route.select().where(Route.rule == rule).count(),
            "created_at": rule.created_at, "updated_at": rule.updated_at}


def _rule_line(r: dict[str, object]) -> str:
    return (f"{r['name']}\tsource={r['source']} digits={r['digits_match']} mode={r['match_mode']} "
            f"match={r['match_destination']} nomatch={r['no_match_destination']} "
            f"delete_after_use={'yes' if r['delete_after_use'] else 'no'} "
            f"{'enabled' if r['enabled'] else 'DISABLED'} routes={r['routes']}")


def cmd_rule(args: argparse.Namespace) -> int:
    with opened(args, write=args.action not in ("list", "show")):
        if args.action == "add":
            admin.add_rule(args.name, _spec(args))
            print(f"rule {args.name!r} added")
        elif args.action in ("edit", "enable", "disable"):
            spec = _spec(args) if args.action == "edit" else admin.RuleSpec(enabled=args.action == "enable")
            admin.edit_rule(args.name, spec)
            print(f"rule {args.name!r} {args.action + 'd' if args.action != 'edit' else 'updated'}")
        elif args.action == "delete":
            print(f"rule {args.name!r} deleted with {admin.delete_rule(args.name)} routes")
        elif args.action == "show":
            r = rule_dict(admin.get_rule(args.name))
            emit(args, r, [f"{k}: {v}" for k, v in r.items()])
        else:
            rules = [rule_dict(r) for r in Rule.select().order_by(Rule.name)]
            emit(args, rules, [_rule_line(r) for r in rules] or ["no rules"])
    return 0


def cmd_route(args: argparse.Namespace) -> int:
    with opened(args, write=args.action not in ("list", "export")):
        if args.action == "add":
            row = admin.add_route(args.rule, args.caller_id, args.dest or "", args.notes, args.expires or "")
            print(f"route {row.caller_key} -> {row.destination or '(rule match destination)'} saved")
        elif args.action == "delete":
            admin.delete_route(args.rule, args.caller_id)
            print("route deleted")
        elif args.action == "import":
            rule = admin.get_rule(args.rule)
            with open(args.file, newline="", encoding="utf-8-sig") as f:
                count = csvio.import_routes(rule, f, replace=args.replace, progress=sys.stdout.isatty())
            print(f"{count} routes imported into {args.rule!r}" + (" (replacing all others)" if args.replace else ""))
        elif args.action == "export":
            rule = admin.get_rule(args.rule)
            if args.file in (None, "-"):
                csvio.export_routes(rule, sys.stdout)
            else:
                with open(args.file, "w", newline="", encoding="utf-8") as f:
                    print(f"{csvio.export_routes(rule, f)} routes exported to {args.file}", file=sys.stderr)
        else:
            rule = admin.get_rule(args.rule)
            rows = [{"caller_id": r.caller_key, "destination": r.destination, "notes": r.notes,
                     "expires_at": r.expires_at, "use_count": r.use_count, "last_used": r.last_used}
                    for r in Route.select().where(Route.rule == rule).order_by(Route.caller_key)]
            emit(args, rows, [f"{r['caller_id']}\t{r['destination'] or '-'}\t{r['notes']}"
                              f"{'  expires ' + str(r['expires_at']) if r['expires_at'] else ''}"
                              f"\tused {r['use_count']}" for r in rows] or ["no routes"])
    return 0


def cmd_dest(args: argparse.Namespace) -> int:
    with opened(args, write=args.action != "list"):
        if args.action == "add":
            admin.add_destination(args.name, args.transfer)
            print(f"destination {args.name!r} = {args.transfer!r}")
        elif args.action == "delete":
            admin.delete_destination(args.name)
            print(f"destination {args.name!r} deleted")
        else:
            rows = destination_map()
            emit(args, rows, [f"{k}\t{v}" for k, v in rows.items()] or ["no destinations"])
    return 0


def cmd_lookup(args: argparse.Namespace) -> int:
    with opened(args, write=False) as db:
        store = SQLStore(db, args.default_context)
        rule = store.rule_for(name=args.rule) if args.rule else store.rule_for(source=args.source)
        if rule is None:
            raise admin.UserError(f"source: no rule serves {args.source!r}" if not args.rule
                                  else f"rule {args.rule!r} does not exist")
        d = route_call(store, rule, args.caller_id, dry_run=True)
    data = {"result": d.result.value, "destination": d.destination, "key": d.key, "rule": rule.name,
            "notes": d.route.notes if d.route else "", "reason": d.reason}
    emit(args, data, [f"{k}: {v}" for k, v in data.items()])
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from fs_dynroute.check import problems

    with opened(args, write=False):
        found = list(problems(args.default_context))
        counts = (Rule.select().count(), Route.select().count(), Destination.select().count())
    for line in found:
        print(line)
    print(f"{len(found)} problems in {counts[0]} rules, {counts[1]} routes, {counts[2]} destinations"
          if found else f"ok: {counts[0]} rules, {counts[1]} routes, {counts[2]} destinations")
    return 1 if found else 0


def _listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected host:port, got {text!r}")
    return host.strip("[]"), int(port)


def cmd_serve(args: argparse.Namespace) -> int:
    from fs_dynroute.index import IndexedStore  # gevent only where it serves
    from fs_dynroute.server import DynrouteServer, StoreRouter

    db = open_database(args.db, pooled=True, max_connections=args.db_threads + 2,
                       busy_timeout=args.decision_timeout)
    sql = SQLStore(db, args.default_context)
    check_schema(db)
    store = IndexedStore(sql, threads=args.db_threads,
                         poll_interval=args.poll_interval, stale_after=args.stale_after)
    store.start()
    server = DynrouteServer(StoreRouter(store), listen=args.listen, max_sessions=args.max_sessions,
                            decision_timeout=args.decision_timeout)
    try:
        server.serve_until_signalled()
    finally:
        store.stop()
    return 0


def check_schema(db: pw.Database) -> None:
    """Refuse to serve an old or missing schema; a database that is merely down is the index's business."""
    try:
        with db.connection_context():
            version = stored_version(db)
    except pw.OperationalError:
        return  # unreachable now: serve, send calls to No Match, and keep trying
    if version is None or version < CURRENT_VERSION:
        found = "no fs_dynroute schema" if version is None else f"schema version {version}"
        raise admin.UserError(f"database has {found}, this fs_dynroute needs {CURRENT_VERSION}: "
                              "run 'fs-dynroute initdb' first")


def cmd_dialplan(args: argparse.Namespace) -> int:
    from fs_dynroute.dialplan import parse_servers, render

    try:
        servers = parse_servers(args.server)
    except ValueError as exc:
        raise admin.UserError(str(exc)) from None
    with opened(args, write=False) as db:
        store = SQLStore(db, args.default_context)
        rules = []
        for row in Rule.select().where(Rule.enabled).order_by(Rule.source):
            try:
                rules.append(store.rule_for(name=row.name))
            except DestinationError as exc:  # never write an unsafe rule into FreeSWITCH's dialplan
                print(f"fs-dynroute: rule {row.name!r} left out: {exc} (see 'fs-dynroute check')", file=sys.stderr)
    sys.stdout.write(render(rules, servers, args.context))
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", help="database URL, e.g. sqlite:///routes.db, mysql://user@host/db, "
                        "postgresql://user@host/db (default: $DYNROUTE_DB, else the per-user SQLite file)")
    common.add_argument("--default-context", default=os.environ.get("DYNROUTE_CONTEXT", "default"),
                        help="dialplan context for bare extensions such as 1001 "
                        "(default: $DYNROUTE_CONTEXT or 'default')")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON")

    parser = argparse.ArgumentParser(prog="fs-dynroute", description="Caller-ID dynamic routing for FreeSWITCH.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("initdb", parents=[common], help="create or upgrade the schema (idempotent)")
    p.add_argument("--demo", action="store_true", help="load the demo rule and routes into an empty database")
    p.set_defaults(func=cmd_initdb)

    p = sub.add_parser("schema", help="print the schema as SQL for a backend")
    p.add_argument("dialect", choices=("sqlite", "mysql", "postgresql"))
    p.set_defaults(func=cmd_schema)

    rule = sub.add_parser("rule", help="manage rules").add_subparsers(dest="action", required=True)
    for action in ("add", "edit"):
        p = rule.add_parser(action, parents=[common])
        p.add_argument("name")
        p.add_argument("--source", required=action == "add", help="inbound number or route name the rule serves")
        p.add_argument("--digits", type=int, required=action == "add", help="match the last N digits (1-20)")
        p.add_argument("--nomatch-dest", required=action == "add", help="No Match Destination")
        p.add_argument("--match-dest", help="'dynamic' (each record's own destination, default) or a fixed one")
        p.add_argument("--delete-after-use", action="store_true", help="consume a record on its first use")
        p.add_argument("--keep-after-use", action="store_true", help=argparse.SUPPRESS if action == "add"
                       else "turn Delete After Use off")
        p.add_argument("--prefix", action="store_true", help="stored keys are prefixes; the longest wins")
        p.add_argument("--exact", action="store_true", help=argparse.SUPPRESS if action == "add"
                       else "back to exact matching")
        p.add_argument("--disabled", action="store_true", help="create/leave the rule switched off")
        p.add_argument("--enabled", action="store_true", help=argparse.SUPPRESS)
        p.set_defaults(func=cmd_rule)
    for action in ("enable", "disable", "delete", "show"):
        p = rule.add_parser(action, parents=[common] + ([as_json] if action == "show" else []))
        p.add_argument("name")
        p.set_defaults(func=cmd_rule)
    rule.add_parser("list", parents=[common, as_json]).set_defaults(func=cmd_rule)

    route = sub.add_parser("route", help="manage a rule's routes").add_subparsers(dest="action", required=True)
    p = route.add_parser("add", parents=[common])
    p.add_argument("rule")
    p.add_argument("caller_id")
    p.add_argument("dest", nargs="?", help="destination (optional when the rule's match destination is fixed)")
    p.add_argument("--notes", default="")
    p.add_argument("--expires", help="ISO-8601 time or a duration such as 48h, 30m, 7d")
    p.set_defaults(func=cmd_route)
    p = route.add_parser("list", parents=[common, as_json])
    p.add_argument("rule")
    p.set_defaults(func=cmd_route)
    p = route.add_parser("delete", parents=[common])
    p.add_argument("rule")
    p.add_argument("caller_id")
    p.set_defaults(func=cmd_route)
    p = route.add_parser("import", parents=[common], help="CSV caller_id,destination,notes[,expires_at]")
    p.add_argument("rule")
    p.add_argument("file")
    p.add_argument("--replace", action="store_true", help="delete the rule's routes not in the file")
    p.set_defaults(func=cmd_route)
    p = route.add_parser("export", parents=[common])
    p.add_argument("rule")
    p.add_argument("file", nargs="?", help="output file (default: standard output)")
    p.set_defaults(func=cmd_route)

    dest = sub.add_parser("dest", help="manage named destinations").add_subparsers(dest="action", required=True)
    p = dest.add_parser("add", parents=[common])
    p.add_argument("name")
    p.add_argument("transfer", help="FreeSWITCH transfer argument, e.g. '5000 XML default'")
    p.set_defaults(func=cmd_dest)
    dest.add_parser("list", parents=[common, as_json]).set_defaults(func=cmd_dest)
    p = dest.add_parser("delete", parents=[common])
    p.add_argument("name")
    p.set_defaults(func=cmd_dest)

    p = sub.add_parser("lookup", parents=[common, as_json], help="dry run: where would this call go?")
    p.add_argument("caller_id")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--source", help="the number the call arrives on")
    target.add_argument("--rule", help="the rule name (as the dynroute_rule channel variable picks it)")
    p.set_defaults(func=cmd_lookup)
    p = sub.add_parser("check", parents=[common], help="validate rules, routes and destinations "
                       "(rows a CRM wrote directly); exit status 1 if any problem is found")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("serve", parents=[common], help="run the outbound socket server FreeSWITCH connects to")
    p.add_argument("--listen", type=_listen, default="127.0.0.1:8084", help="host:port (default 127.0.0.1:8084)")
    p.add_argument("--max-sessions", type=int, default=1000, help="calls served at once; more are sent "
                   "straight to the dialplan default (default 1000)")
    p.add_argument("--decision-timeout", type=float, default=1.0, help="hard deadline per call in seconds, "
                   "after which the call takes the No Match Destination (default 1.0)")
    p.add_argument("--db-threads", type=int, default=8, help="threads for database calls (default 8)")
    p.add_argument("--poll-interval", type=float, default=0.5, help="seconds between reads of the database's "
                   "change log: how soon changes from the CLI, other nodes or a CRM reach calls (default 0.5)")
    p.add_argument("--stale-after", type=float, default=3.0, help="if the database cannot be read for this "
                   "long, calls go to No Match instead of being routed from memory (default 3.0)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("dialplan", parents=[common], help="print the FreeSWITCH dialplan for the enabled rules")
    p.add_argument("--server", default="127.0.0.1:8084", help="fs-dynroute server(s), host:port[,host:port...]; "
                   "FreeSWITCH tries them in order (default 127.0.0.1:8084)")
    p.add_argument("--context", default="public", help="dialplan context the file goes into (default public)")
    p.set_defaults(func=cmd_dialplan)
    call.add_parser(sub, [common, as_json])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (admin.UserError, DestinationError, DatabaseURLError) as exc:
        print(f"fs-dynroute: error: {exc}", file=sys.stderr)
    except OSError as exc:
        print(f"fs-dynroute: error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
    except pw.DatabaseError as exc:
        print(f"fs-dynroute: error: database: {exc} (did you run 'fs-dynroute initdb'?)", file=sys.stderr)
    return EXIT_USAGE
