"""The ``fs-dynroute`` command line: the only place that parses arguments and configures logging."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

import peewee as pw

from fs_dynroute import __version__, admin, csvio, demo, dialplan_install, sources_cli, track_cli, webcli
from fs_dynroute.commands import Commands, emit, opened
from fs_dynroute.config import BY_NAME, SETTINGS, ConfigError, ServeConfig, check_context, resolve
from fs_dynroute.database import DatabaseURLError
from fs_dynroute.destinations import DestinationError
from fs_dynroute.dialplan import MODES
from fs_dynroute.dryrun import dry_run
from fs_dynroute.fakeswitch.call import add_call_command
from fs_dynroute.models import Destination, Route, Rule, destination_map
from fs_dynroute.schema import initdb, schema_sql
from fs_dynroute.store import SQLStore

EXIT_USAGE = 2
GLOBAL_SETTINGS = ("db", "default_context")  # serve settings every command takes, before or after its name


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
    return admin.RuleSpec(
        source=args.source, digits_match=args.digits, no_match_destination=args.nomatch_dest,
        match_destination=args.match_dest, delete_after_use=args.delete_after_use, prefix=args.prefix,
        enabled=args.enabled)


def _rule_line(r: dict[str, object]) -> str:
    return (f"{r['name']}\tsource={r['source']} digits={r['digits_match']} mode={r['match_mode']} "
            f"match={r['match_destination']} nomatch={r['no_match_destination']} "
            f"delete_after_use={'yes' if r['delete_after_use'] else 'no'} "
            f"{'enabled' if r['enabled'] else 'DISABLED'} routes={r['routes']}")


def cmd_rule_add(args: argparse.Namespace) -> int:
    with opened(args):
        admin.add_rule(args.name, _spec(args))
    print(f"rule {args.name!r} added")
    return 0


def cmd_rule_edit(args: argparse.Namespace) -> int:
    with opened(args):
        admin.edit_rule(args.name, _spec(args))
    print(f"rule {args.name!r} updated")
    return 0


def cmd_rule_switch(args: argparse.Namespace) -> int:
    """``rule enable`` and ``rule disable``: the leaf sets ``enabled``."""
    with opened(args):
        admin.edit_rule(args.name, admin.RuleSpec(enabled=args.enabled))
    print(f"rule {args.name!r} {'enabled' if args.enabled else 'disabled'}")
    return 0


def cmd_rule_delete(args: argparse.Namespace) -> int:
    with opened(args):
        routes = admin.delete_rule(args.name)
    print(f"rule {args.name!r} deleted with {routes} routes")
    return 0


def cmd_rule_show(args: argparse.Namespace) -> int:
    with opened(args, write=False):
        rule = admin.get_rule(args.name)
        r = admin.rule_dict(rule)
    emit(args, r, [f"{k}: {v}" for k, v in r.items()])
    return 0


def cmd_rule_list(args: argparse.Namespace) -> int:
    with opened(args, write=False):
        counts = dict(Route.select(Route.rule, pw.fn.COUNT(Route.id)).group_by(Route.rule).tuples())
        rules = [admin.rule_dict(r, counts.get(r.id, 0)) for r in Rule.select().order_by(Rule.name)]
    emit(args, rules, [_rule_line(r) for r in rules] or ["no rules"])
    return 0


def cmd_route_add(args: argparse.Namespace) -> int:
    with opened(args):
        row = admin.add_route(args.rule, args.caller_id, args.dest or "", args.notes, args.expires or "")
    print(f"route {row.caller_key} -> {row.destination or '(rule match destination)'} saved")
    return 0


def cmd_route_delete(args: argparse.Namespace) -> int:
    with opened(args):
        admin.delete_route(args.rule, args.caller_id)
    print("route deleted")
    return 0


def cmd_route_import(args: argparse.Namespace) -> int:
    with opened(args, write=False):  # the import takes its own transaction, after checking the file
        rule = admin.get_rule(args.rule)
        with open(args.file, "rb") as f:
            if args.dry_run:
                plan = csvio.plan_import(rule, csvio.utf8_lines(f), args.replace, args.allow_empty)
                print(f"dry run, nothing written: {plan} in {args.rule!r}")
                return 0
            count = csvio.import_routes(rule, csvio.utf8_lines(f), replace=args.replace,
                                        progress=sys.stdout.isatty(), allow_empty=args.allow_empty)
    print(f"{count} routes imported into {args.rule!r}" + (" (replacing all others)" if args.replace else ""))
    return 0


def cmd_route_export(args: argparse.Namespace) -> int:
    with opened(args, write=False):
        rule = admin.get_rule(args.rule)
        if args.file in (None, "-"):
            csvio.export_routes(rule, sys.stdout)
        else:
            with open(args.file, "w", newline="", encoding="utf-8") as f:
                print(f"{csvio.export_routes(rule, f)} routes exported to {args.file}", file=sys.stderr)
    return 0


def cmd_route_list(args: argparse.Namespace) -> int:
    with opened(args, write=False):
        rule = admin.get_rule(args.rule)
        rows = [{"caller_id": r.caller_key, "destination": r.destination, "notes": r.notes,
                 "expires_at": r.expires_at, "use_count": r.use_count, "last_used": r.last_used}
                for r in Route.select().where(Route.rule == rule).order_by(Route.caller_key)]
    emit(args, rows, [f"{r['caller_id']}\t{r['destination'] or '-'}\t{r['notes']}"
                      f"{'  expires ' + str(r['expires_at']) if r['expires_at'] else ''}"
                      f"\tused {r['use_count']}" for r in rows] or ["no routes"])
    return 0


def cmd_dest_add(args: argparse.Namespace) -> int:
    with opened(args):
        admin.add_destination(args.name, args.transfer)
    print(f"destination {args.name!r} = {args.transfer!r}")
    return 0


def cmd_dest_delete(args: argparse.Namespace) -> int:
    with opened(args):
        admin.delete_destination(args.name)
    print(f"destination {args.name!r} deleted")
    return 0


def cmd_dest_list(args: argparse.Namespace) -> int:
    with opened(args, write=False):
        rows = destination_map()
    emit(args, rows, [f"{k}\t{v}" for k, v in rows.items()] or ["no destinations"])
    return 0


def cmd_lookup(args: argparse.Namespace) -> int:
    with opened(args, write=False) as db:
        data = dry_run(db, args.default_context, args.caller_id, source=args.source, rule=args.rule)
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


def cmd_serve(args: argparse.Namespace) -> int:
    from fs_dynroute.service import Service  # gevent only where it serves

    Service(ServeConfig.load(vars(args), os.environ)).serve_until_signalled()
    return 0


def cmd_dialplan(args: argparse.Namespace) -> int:
    from fs_dynroute.dialplan import parse_servers, render

    try:
        servers = parse_servers(args.server)
    except ValueError as exc:
        raise admin.UserError(str(exc)) from None
    with opened(args, write=False) as db:
        rules, left_out = dialplan_install.current_rules(SQLStore(db, args.default_context))
    for line in left_out:
        print(f"fs-dynroute: {line}", file=sys.stderr)
    text = render(rules, servers, args.context, args.mode)
    if args.install or args.reload:
        return dialplan_install.install(args, text)
    sys.stdout.write(text)
    return 0


def add_global_options(parser: argparse.ArgumentParser, *, after_command: bool) -> None:
    """``--db``, ``--default-context`` and ``-v``: the same before the command and after it.

    After the command their defaults are SUPPRESS, so that leaving them out there never undoes
    what was given before the command.
    """
    unset = argparse.SUPPRESS if after_command else None
    group = parser.add_argument_group("global options" + (" (also accepted before the command)"
                                                          if after_command else ""))
    for name in GLOBAL_SETTINGS:
        setting = BY_NAME[name]
        group.add_argument(setting.option, metavar=setting.metavar, default=unset, help=setting.described())
    group.add_argument("-v", "--verbose", action="store_true", default=unset if after_command else False,
                       help="log debug detail")


def on_off(parser: argparse.ArgumentParser, dest: str, on: tuple[str, str], off: tuple[str, str]) -> None:
    """Two spellings of one setting (``--prefix``/``--exact``); neither given leaves it as it is (None)."""
    pair = parser.add_mutually_exclusive_group()
    pair.add_argument(on[0], dest=dest, action="store_const", const=True, default=None, help=on[1])
    pair.add_argument(off[0], dest=dest, action="store_const", const=False, help=off[1])


def add_setup(commands: Commands) -> None:
    p = commands.leaf("initdb", cmd_initdb, help="create or upgrade the schema (idempotent)")
    p.add_argument("--demo", action="store_true", help="load the demo rule and routes into an empty database")
    p = commands.leaf("schema", cmd_schema, help="print the schema as SQL for a backend")
    p.add_argument("dialect", choices=("sqlite", "mysql", "postgresql"))


def _rule_options(p: argparse.ArgumentParser, *, adding: bool) -> None:
    p.add_argument("name")
    p.add_argument("--source", required=adding, help="the number the rule serves, or the name of a "
                   "named source ('source add') to serve all its numbers")
    p.add_argument("--digits", type=int, required=adding, help="match the last N digits (1-20)")
    p.add_argument("--nomatch-dest", required=adding, help="No Match Destination")
    p.add_argument("--match-dest", help="'dynamic' (each record's own destination, default) or a fixed one")
    on_off(p, "delete_after_use", ("--delete-after-use", "consume a record on its first use"),
           ("--keep-after-use", "keep records after use (the default)"))
    on_off(p, "prefix", ("--prefix", "stored keys are prefixes; the longest wins"),
           ("--exact", "stored keys are whole keys (the default)"))
    on_off(p, "enabled", ("--enabled", "switch the rule on (the default)"), ("--disabled", "switch the rule off"))


def add_rule_commands(commands: Commands) -> None:
    rule = commands.group("rule", "manage rules")
    add = rule.leaf("add", cmd_rule_add, help="add a rule")
    edit = rule.leaf("edit", cmd_rule_edit, help="change a rule")
    _rule_options(add, adding=True)
    _rule_options(edit, adding=False)
    for name, enabled in (("enable", True), ("disable", False)):
        p = rule.leaf(name, cmd_rule_switch, help=f"switch a rule {'on' if enabled else 'off'}")
        p.add_argument("name")
        p.set_defaults(enabled=enabled)
    rule.leaf("delete", cmd_rule_delete, help="delete a rule and its routes").add_argument("name")
    show = rule.leaf("show", cmd_rule_show, json=True, help="show one rule")
    show.add_argument("name")
    track_cli.add_rule_options(add, edit, show)
    rule.leaf("list", cmd_rule_list, json=True, help="list the rules with their route counts")


def add_route_commands(commands: Commands) -> None:
    route = commands.group("route", "manage a rule's routes")
    p = route.leaf("add", cmd_route_add, help="add or update one route")
    p.add_argument("rule")
    p.add_argument("caller_id")
    p.add_argument("dest", nargs="?", help="destination (optional when the rule's match destination is fixed)")
    p.add_argument("--notes", default="")
    p.add_argument("--expires", help="ISO-8601 time or a duration such as 48h, 30m, 7d")
    route.leaf("list", cmd_route_list, json=True, help="list a rule's routes").add_argument("rule")
    p = route.leaf("delete", cmd_route_delete, help="delete one route")
    p.add_argument("rule")
    p.add_argument("caller_id")
    p = route.leaf("import", cmd_route_import, help="CSV caller_id,destination,notes[,expires_at]")
    p.add_argument("rule")
    p.add_argument("file")
    p.add_argument("--replace", action="store_true", help="delete the rule's routes not in the file")
    p.add_argument("--allow-empty", action="store_true", help="let --replace with a file of no routes delete them all")
    p.add_argument("--dry-run", action="store_true", help="say how many routes would be added, updated and "
                   "removed; write nothing")
    p = route.leaf("export", cmd_route_export, help="write a rule's routes as CSV")
    p.add_argument("rule")
    p.add_argument("file", nargs="?", help="output file (default: standard output)")


def add_dest_commands(commands: Commands) -> None:
    dest = commands.group("dest", "manage named destinations")
    p = dest.leaf("add", cmd_dest_add, help="define or change a named destination")
    p.add_argument("name")
    p.add_argument("transfer", help="FreeSWITCH transfer argument, e.g. '5000 XML default'")
    dest.leaf("list", cmd_dest_list, json=True, help="list the named destinations")
    dest.leaf("delete", cmd_dest_delete, help="delete a named destination").add_argument("name")


def add_query_commands(commands: Commands) -> None:
    p = commands.leaf("lookup", cmd_lookup, json=True, help="dry run: where would this call go?")
    p.add_argument("caller_id")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--source", help="the number the call arrives on")
    target.add_argument("--rule", help="the rule name (as the dynroute_rule channel variable picks it)")
    commands.leaf("check", cmd_check, help="validate rules, routes and destinations (rows a CRM wrote directly); "
                  "exit status 1 if any problem is found")


def add_serve_commands(commands: Commands) -> None:
    p = commands.leaf("serve", cmd_serve, help="run the outbound socket server FreeSWITCH connects to")
    for setting in SETTINGS:
        if setting.name not in GLOBAL_SETTINGS:
            p.add_argument(setting.option, metavar=setting.metavar, help=setting.described())
    p = commands.leaf("dialplan", cmd_dialplan, help="print the FreeSWITCH dialplan for the enabled rules")
    listen = BY_NAME["listen"].default_text()
    p.add_argument("--server", default=listen, help="fs-dynroute server(s), host:port[,host:port...]; "
                   f"FreeSWITCH tries them in order (default {listen})")
    p.add_argument("--context", default="public", help="dialplan context the file goes into (default public)")
    p.add_argument("--mode", choices=MODES, default="socket", help="socket: FreeSWITCH connects "
                   "to 'fs-dynroute serve' (default); python: mod_python3 routes inside FreeSWITCH (--server unused)")
    dialplan_install.add_options(p)


# Each builder adds one group of commands; a new command is a builder function added here.
BUILDERS: tuple[Callable[[Commands], None], ...] = (
    add_setup, add_rule_commands, add_route_commands, add_dest_commands, add_query_commands, add_serve_commands,
    track_cli.add_track_commands, webcli.add_web_commands, add_call_command, sources_cli.add_source_commands)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fs-dynroute", description="Caller-ID dynamic routing for FreeSWITCH.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_global_options(parser, after_command=False)
    after = argparse.ArgumentParser(add_help=False)
    add_global_options(after, after_command=True)
    commands = Commands(parser.add_subparsers(dest="command", metavar="COMMAND", required=True), [after])
    for build in BUILDERS:
        build(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        args.default_context = check_context(resolve("default_context", args.default_context, os.environ))
        return args.func(args)
    except (admin.UserError, DestinationError, DatabaseURLError, ConfigError) as exc:
        print(f"fs-dynroute: error: {exc}", file=sys.stderr)
    except OSError as exc:
        print(f"fs-dynroute: error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
    except pw.DatabaseError as exc:
        print(f"fs-dynroute: error: database: {database_error(exc)}", file=sys.stderr)
    return EXIT_USAGE


def database_error(exc: pw.DatabaseError) -> str:
    """The driver's message on one line, with the hint that fits it."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    lowered = text.lower()
    if "locked" in lowered or "busy" in lowered:
        return f"{text} (another process held the write lock longer than the busy timeout; nothing was written, " \
               "try again)"
    if "no such table" in lowered or any(word in lowered and gone in lowered for word, gone in (
            ("table", "doesn't exist"), ("relation", "does not exist"))):  # not a role's or a database's
        return f"{text} (did you run 'fs-dynroute initdb'?)"
    return text
