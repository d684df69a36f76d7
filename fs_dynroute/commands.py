"""What every command module builds on: the sub-command tree, the database a command opens, and its output.

Kept apart from :mod:`fs_dynroute.cli` so that the modules adding commands of their own (sources, web, tracker,
``call``) import it at the top instead of reaching back into the module that imports them.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import peewee as pw

from fs_dynroute.database import open_database, write_transaction
from fs_dynroute.models import database


@contextmanager
def opened(args: argparse.Namespace, *, write: bool = True) -> Iterator[pw.Database]:
    """The database bound to the models, in one transaction when writing: an error writes nothing."""
    db = open_database(args.db)
    database.initialize(db)
    with db.connection_context():
        if write:
            with write_transaction(db):
                yield db
        else:
            yield db


def emit(args: argparse.Namespace, data: object, lines: Sequence[str]) -> None:
    """JSON with ``--json``, else the human lines."""
    print(json.dumps(data, indent=2, default=str) if getattr(args, "json", False) else "\n".join(lines))


class Commands:
    """The sub-command tree. A builder adds its commands with :meth:`group` and :meth:`leaf`."""

    def __init__(self, sub: argparse._SubParsersAction, common: list[argparse.ArgumentParser]) -> None:
        self.sub = sub
        self.common = common

    def group(self, name: str, help: str) -> Commands:
        """A command with sub-commands of its own (``rule add``, ``rule list``...)."""
        parser = self.sub.add_parser(name, help=help)
        return Commands(parser.add_subparsers(dest=f"{name}_command", metavar="ACTION", required=True),
                        self.common)

    def leaf(self, name: str, func: Callable[[argparse.Namespace], int], *, help: str | None = None,
             json: bool = False) -> argparse.ArgumentParser:
        """A command that runs ``func(args)``; it takes the global options too, and ``--json`` if asked."""
        parser = self.sub.add_parser(name, parents=self.common, help=help, description=help)
        if json:
            parser.add_argument("--json", action="store_true", help="print JSON")
        parser.set_defaults(func=func)
        return parser
