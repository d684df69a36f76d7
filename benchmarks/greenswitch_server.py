"""Baseline: greenswitch 0.0.19's own OutboundESLServer with the application a user would write for this job.

The application follows greenswitch's outbound example (``examples/outbound_socket_example.py``): a class
taking the session, whose ``run`` does the work; greenswitch has already sent ``connect`` and, when ``run``
returns, its server calls ``session.stop()``, which sends ``exit`` and closes. The work: take the last 10
digits of the caller ID, look them up in the routes table with a peewee query on SQLite (in the event loop,
as greenswitch gives no thread pool), and ``call_command('set', ...)`` the target and the three CDR
variables, each waiting for its ``+OK``. No logging is configured (greenswitch logs to the root logger).

    python -m benchmarks.greenswitch_server --db benchmarks/.data/routes.db --listen 127.0.0.1:8091
"""

from __future__ import annotations

import argparse
import re
import signal
import sys

import gevent
import greenswitch
import peewee as pw

from benchmarks.workload import DIGITS, RULE

db = pw.SqliteDatabase(None)
_NON_DIGITS = re.compile(r"\D")


class Route(pw.Model):
    rule_id = pw.IntegerField()
    caller_key = pw.CharField()
    destination = pw.CharField()

    class Meta:
        database = db
        table_name = "dynroute_route"


class Config:
    rule_id = 0
    no_match = ""


def load_config() -> None:
    """The demo rule's id and its No Match Destination's transfer argument."""
    rule_id, no_match = db.execute_sql("SELECT id, no_match_destination FROM dynroute_rule WHERE name = ?",
                                       (RULE,)).fetchone()
    row = db.execute_sql("SELECT transfer FROM dynroute_destination WHERE name = ?", (no_match,)).fetchone()
    Config.rule_id, Config.no_match = rule_id, row[0] if row else no_match


class RoutingApplication:
    def __init__(self, session: greenswitch.esl.OutboundSession) -> None:
        self.session = session

    def run(self) -> None:
        digits = _NON_DIGITS.sub("", self.session.caller_id_number or "")
        key = digits[-DIGITS:] if len(digits) >= DIGITS else ""
        route = (Route.select(Route.destination)
                 .where((Route.rule_id == Config.rule_id) & (Route.caller_key == key)).first()) if key else None
        target = f"{route.destination} XML default" if route else Config.no_match
        self.session.call_command("set", f"dynroute_target={target}")
        self.session.call_command("set", f"dynroute_result={'match' if route else 'nomatch'}")
        self.session.call_command("set", f"dynroute_rule={RULE}")
        self.session.call_command("set", f"dynroute_key={key}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.greenswitch_server",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="SQLite file built by benchmarks.make_routes")
    parser.add_argument("--listen", default="127.0.0.1:8091", help="host:port")
    parser.add_argument("--max-connections", type=int, default=2000)
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    db.init(args.db, pragmas={"journal_mode": "wal"})
    load_config()
    server = greenswitch.OutboundESLServer(bind_address=host, bind_port=int(port), application=RoutingApplication,
                                           max_connections=args.max_connections)
    for sig in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(sig, server.stop)
    server.listen()
    return 0


if __name__ == "__main__":
    sys.exit(main())
