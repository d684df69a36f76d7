"""``fs-dynroute call``: one call placed exactly as FreeSWITCH would place it, without FreeSWITCH.

The extension is the one ``fs-dynroute dialplan`` writes for the rule serving ``--to`` (No Match Destination
first, SYNC socket to the host list, transfer), rendered from the same database the server routes from and run
by the fake switch against the real servers. So the answer is what a caller would get, failures included: a
server that is down, slow or closes without a decision leaves the call at the dialplan's default, and says so.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fs_dynroute.admin import UserError
from fs_dynroute.config import BY_NAME
from fs_dynroute.database import open_database
from fs_dynroute.dialplan import parse_servers, render
from fs_dynroute.models import database
from fs_dynroute.store import SQLStore

if TYPE_CHECKING:
    from fs_dynroute.commands import Commands
    from fs_dynroute.fakeswitch.switch import CallOutcome

CONTEXT = "public"  # named in the generated file's comment only: the extension is the same in any context
EXIT_NOWHERE = 1  # the call was stuck or dropped: a real caller would have heard silence
SILENT_ENDINGS = {"stuck": "stuck: the socket session never ended", "dropped": "dropped: no target to transfer to",
                  "hangup": "the caller hung up"}


def add_call_command(commands: Commands) -> None:
    """``call``: one of the CLI's builders."""
    p = commands.leaf("call", cmd_call, json=True, help="place one call as FreeSWITCH would, without FreeSWITCH")
    p.description = ("Place one call through the dialplan `fs-dynroute dialplan` writes, against the running "
                     "server(s), and print where it ended. Exit status 0 when it ended at a destination, 1 when a "
                     "caller would have heard silence, 2 for bad input or a number no rule serves.")
    p.add_argument("--to", required=True, help="the number called: a rule's source, e.g. 5550100")
    p.add_argument("--from", dest="caller_id", default="", metavar="CALLER_ID",
                   help="the caller ID, e.g. '+1 555 111 1111' or anonymous (default: none, a withheld number)")
    p.add_argument("--server", default=BY_NAME["listen"].default_text(), help="fs-dynroute server(s), "
                   "host:port[,host:port...], tried in order as FreeSWITCH does (default %(default)s)")


def cmd_call(args: argparse.Namespace) -> int:
    from fs_dynroute.fakeswitch.switch import Dialplan, place_call  # gevent only where a call is placed

    if not args.to.strip():
        raise UserError("to: empty; give the number called, e.g. --to 5550100")
    try:
        servers = parse_servers(args.server)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    dialplan = Dialplan.from_xml(extension_xml(args, servers), args.to)
    resolve_first(servers)
    placed = PlacedCall(args.to, args.caller_id, default_target(dialplan.actions),
                        place_call(dialplan, args.caller_id or None, args.to))
    print(json.dumps(placed.as_dict(), indent=2) if args.json else placed.line())
    return 0 if placed.outcome.ended == "transferred" else EXIT_NOWHERE


def extension_xml(args: argparse.Namespace, servers: Sequence[str]) -> str:
    """The generated dialplan holding the one extension FreeSWITCH would run for ``args.to``."""
    db = open_database(args.db)
    database.initialize(db)
    with db.connection_context():
        rule = SQLStore(db, args.default_context).rule_for(source=args.to)
    if rule is None or not rule.enabled:
        why = "no rule serves it" if rule is None else f"its rule {rule.name!r} is disabled"
        raise UserError(f"to: {args.to!r}: {why}, so the dialplan `fs-dynroute dialplan` writes would not send "
                        "this call to fs_dynroute (see `fs-dynroute rule list`)")
    return render([rule], servers, CONTEXT)


def resolve_first(servers: Sequence[str]) -> None:
    """Look the hosts up before the call, so the time shown is the server's and not the fake's first lookup
    (which starts gevent's resolver threads: about 10 ms). A host that does not resolve is reported by the call."""
    from gevent import socket

    for spec in servers:
        try:
            socket.getaddrinfo(spec.rpartition(":")[0].strip("[]"), None)
        except OSError:
            continue


def default_target(actions: Sequence[tuple[str, str]]) -> str:
    """The No Match Destination the extension sets before ``socket``."""
    return next(data.partition("=")[2] for app, data in actions
                if app == "set" and data.startswith("dynroute_target="))


@dataclass(frozen=True)
class PlacedCall:
    """One call and how it ended, told as the caller and the CDR would see it."""

    to: str
    caller_id: str
    default: str  # what the dialplan set before the socket
    outcome: CallOutcome

    @property
    def variables(self) -> dict[str, str]:
        """The dynroute_* channel variables at the end of the call (what the CDR records)."""
        return {k: v for k, v in self.outcome.variables.items() if k.startswith("dynroute_")}

    @property
    def ms(self) -> float:
        """Time spent in the socket application: connecting, the server deciding, the replies."""
        return self.outcome.silence * 1000

    def reason(self) -> str:
        """Why the call ended where it did: the server's decision, or why the dialplan's default stood."""
        outcome, variables = self.outcome, self.variables
        if outcome.ended != "transferred":
            return "; ".join(filter(None, [SILENT_ENDINGS[outcome.ended], outcome.error]))
        failover = [*outcome.unanswered, f"answered by {outcome.host}"] if outcome.unanswered else []
        if "dynroute_result" in variables:
            decided = (f"{variables['dynroute_result']}, rule \"{variables.get('dynroute_rule', '')}\", "
                       f"key {variables.get('dynroute_key') or '(none)'}")
            return "; ".join([decided, *failover])
        if outcome.host is None:
            refused = outcome.unanswered if len(outcome.unanswered) != 1 else [outcome.unanswered[0].split(": ", 1)[1]]
            return "dialplan default: " + (", ".join(refused) or "no server to try")
        said = ("closed the connection at once (over capacity?" if not outcome.sent
                else "sent no decision (past its deadline, a database error, or no rule for the call?")
        return "; ".join([f"dialplan default: {outcome.host} {said} See its log.)", *failover])

    def line(self) -> str:
        """``5550100 from +15551111111 -> 1001 XML default (match, rule "...", key 5551111111) in 1.9 ms``."""
        caller = self.caller_id or "(no caller ID)"
        where = self.outcome.target if self.outcome.ended == "transferred" else "silence"
        return f"{self.to} from {caller} -> {where} ({self.reason()}) in {self.ms:.1f} ms"

    def as_dict(self) -> dict[str, object]:
        return {"to": self.to, "from": self.caller_id, "target": self.outcome.target, "ended": self.outcome.ended,
                "reason": self.reason(), "variables": self.variables, "default": self.default,
                "server": self.outcome.host, "unanswered": self.outcome.unanswered, "ms": round(self.ms, 3),
                "sent": [command.line for command in self.outcome.sent]}
