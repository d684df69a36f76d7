"""``dialplan --install FILE [--reload]``: write the generated dialplan atomically, then ``reloadxml``.

The file is written next to its final name and renamed over it, so FreeSWITCH never reads half a file;
an unchanged file is left alone. ``--reload`` then runs ``reloadxml`` over the inbound event socket.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fs_dynroute import esl_api
from fs_dynroute.admin import UserError
from fs_dynroute.decision import RuleView
from fs_dynroute.dialplan import render
from fs_dynroute.models import Rule, source_map
from fs_dynroute.store import SQLStore
from fs_dynroute.validation import clashes, raise_first

FREESWITCH_DEFAULT_PASSWORD = "ClueCon"  # event_socket.conf.xml as FreeSWITCH ships it


@dataclass(frozen=True)
class Target:
    """Where the generated dialplan goes and how FreeSWITCH hears of it (``web --dialplan-*``, ``--esl``)."""

    servers: Sequence[str] = ("127.0.0.1:8084",)
    context: str = "public"
    file: Path | None = None  # the installed file the page keeps current, if any
    esl: str | None = None  # reloadxml after installing, if set
    password_file: str | None = None

    def text(self, store: SQLStore) -> str:
        return render(current_rules(store)[0], self.servers, self.context)

    def is_current(self, store: SQLStore) -> bool:
        """True when no file is managed, or the file holds what the rules generate now."""
        return self.file is None or is_current(self.file, self.text(store))

    def install(self, store: SQLStore) -> str:
        """Write the file (and reload FreeSWITCH when an event socket is set); says what was done."""
        assert self.file is not None
        write_atomically(self.file, self.text(store))
        done = f"dialplan written to {self.file}"
        return done + (f"; FreeSWITCH reloadxml: {reload(self.esl, self.password_file)}" if self.esl else "")


def current_rules(store: SQLStore) -> tuple[list[RuleView], list[str]]:
    """The enabled rules as the dialplan gets them, and why any was left out: a rule whose name or destinations
    are unsafe never goes into FreeSWITCH's dialplan."""
    rules, left_out, clashing = [], [], clashes(Rule.select(), source_map())
    for row in Rule.select().where(Rule.enabled).order_by(Rule.source):
        try:
            raise_first(clashing.get(row.id, []))  # the server ignores it too
            rules.append(store.rule_for(name=row.name))
        except UserError as exc:
            left_out.append(f"rule {row.name!r} left out: {exc} (see 'fs-dynroute check')")
    return rules, left_out


def write_atomically(path: Path, text: str) -> bool:
    """Replace ``path`` with ``text`` in one rename; False (and nothing written) if it already holds it."""
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except FileNotFoundError:
        pass
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return True


def is_current(path: Path, text: str) -> bool:
    try:
        return path.read_text(encoding="utf-8") == text
    except OSError:
        return False


def reload(esl: str, password_file: str | None) -> str:
    """``reloadxml`` on the FreeSWITCH at ``esl`` (host:port); returns its answer (``+OK [Success]``)."""
    host, _, port = esl.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--esl: expected host:port, got {esl!r}")
    password = Path(password_file).read_text().strip() if password_file else FREESWITCH_DEFAULT_PASSWORD
    return esl_api.api(host.strip("[]"), int(port), password, "reloadxml")


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--install", metavar="FILE", help="write the dialplan to FILE (atomically; left alone "
                        "if unchanged) instead of printing it")
    parser.add_argument("--reload", action="store_true", help="after --install, run reloadxml over FreeSWITCH's "
                        "event socket")
    parser.add_argument("--esl", default=esl_api.DEFAULT_ESL, help="FreeSWITCH's inbound event socket for "
                        f"--reload (default {esl_api.DEFAULT_ESL})")
    parser.add_argument("--password-file", help="file holding the event socket password (default: FreeSWITCH's "
                        f"shipped {FREESWITCH_DEFAULT_PASSWORD!r})")


def install(args: argparse.Namespace, text: str) -> int:
    """What ``dialplan --install`` does once the text is rendered."""
    if args.reload and not args.install:
        raise UserError("--reload: only with --install FILE")
    changed = write_atomically(Path(args.install), text)
    print(f"dialplan {'written to' if changed else 'unchanged in'} {args.install}")
    if args.reload:
        print(f"FreeSWITCH reloadxml: {reload(args.esl, args.password_file)}")
    return 0
