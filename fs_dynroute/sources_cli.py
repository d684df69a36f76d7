"""The ``source`` sub-commands (named sources): :func:`add_source_commands` is one of the CLI's builders."""

from __future__ import annotations

import argparse

from fs_dynroute import sources
from fs_dynroute.commands import Commands, emit, opened


def cmd_source_add(args: argparse.Namespace) -> int:
    with opened(args):
        sources.add_source(args.name, args.numbers)
    print(f"source {args.name!r} = {', '.join(args.numbers)}")
    return 0


def cmd_source_edit(args: argparse.Namespace) -> int:
    with opened(args):
        sources.set_numbers(args.name, args.numbers)
    print(f"source {args.name!r} = {', '.join(args.numbers)}")
    return 0


def cmd_source_delete(args: argparse.Namespace) -> int:
    with opened(args):
        sources.delete_source(args.name)
    print(f"source {args.name!r} deleted")
    return 0


def _source_line(r: dict[str, object]) -> str:
    return f"{r['name']}\t{' '.join(r['numbers'])}\trules: {', '.join(r['rules']) or '-'}"


def cmd_source_show(args: argparse.Namespace) -> int:
    with opened(args, write=False):
        row = sources.describe_source(args.name)
    emit(args, row, [_source_line(row)])
    return 0


def cmd_source_list(args: argparse.Namespace) -> int:
    with opened(args, write=False):
        rows = sources.list_sources()
    emit(args, rows, [_source_line(r) for r in rows] or ["no sources"])
    return 0


def add_source_commands(commands: Commands) -> None:
    source = commands.group("source", "manage named sources (an inbound route or queue with its numbers)")
    for name, func, help in (("add", cmd_source_add, "define a named source with its numbers"),
                             ("edit", cmd_source_edit, "replace a named source's numbers")):
        p = source.leaf(name, func, help=help)
        p.add_argument("name", help="e.g. 'Main Number' (spaces allowed)")
        p.add_argument("numbers", nargs="+", metavar="NUMBER", help="a number calls arrive on (destination_number)")
    source.leaf("show", cmd_source_show, json=True, help="show one named source, its numbers and rules"
                ).add_argument("name")
    source.leaf("list", cmd_source_list, json=True, help="list the named sources, their numbers and rules")
    source.leaf("delete", cmd_source_delete, help="delete a named source (refused while a rule uses it)"
                ).add_argument("name")
