"""The ``web`` and ``token`` sub-commands: :func:`add_web_commands` is one of the CLI's builders."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fs_dynroute import tokens
from fs_dynroute.admin import UserError
from fs_dynroute.commands import Commands, emit, opened
from fs_dynroute.config import parse_listen
from fs_dynroute.database import open_database
from fs_dynroute.dialplan import parse_servers
from fs_dynroute.dialplan_install import Target
from fs_dynroute.models import database

DEFAULT_WEB = "127.0.0.1:8085"


def cmd_web(args: argparse.Namespace) -> int:
    from fs_dynroute.service import check_schema
    from fs_dynroute.web import create_app, read_secret_key  # Flask only where the page is served
    from fs_dynroute.web.server import WebServer

    db = open_database(args.db, pooled=True, max_connections=args.threads + 2)
    database.initialize(db)
    check_schema(db)
    try:
        secret = read_secret_key(args.secret_file)
    except ValueError as exc:
        raise UserError(f"secret-file: {exc}") from None
    try:
        servers = parse_servers(args.dialplan_server)
    except ValueError as exc:
        raise UserError(str(exc).replace("--server", "--dialplan-server")) from None
    target = Target(servers, args.dialplan_context, Path(args.dialplan_file) if args.dialplan_file else None,
                    args.esl, args.password_file)
    app = create_app(db, default_context=args.default_context, secret_key=secret, secure_cookies=args.secure_cookies,
                     dialplan=target)
    WebServer(app, args.listen, threads=args.threads).serve_until_signalled()
    return 0


def cmd_token_add(args: argparse.Namespace) -> int:
    with opened(args):
        token = tokens.add(args.name, read_only=args.read_only)
    print(token)
    print(f"token {args.name!r} ({'read-only' if args.read_only else 'read and write'}) added; "
          "it is shown only this once", file=sys.stderr)
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    with opened(args):
        tokens.revoke(args.name)
    print(f"token {args.name!r} revoked")
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    with opened(args, write=False):
        rows = tokens.listing()
    emit(args, rows, [f"{t['name']}\t{'read-only' if t['read_only'] else 'read-write'}\t"
                      f"created {t['created_at']}\tlast used {t['last_used'] or 'never'}" for t in rows]
         or ["no tokens"])
    return 0


def add_web_commands(commands: Commands) -> None:
    p = commands.leaf("web", cmd_web, help="serve the admin page, the JSON API (/api), /metrics and /health")
    p.add_argument("--listen", type=parse_listen, default=DEFAULT_WEB, help=f"host:port (default {DEFAULT_WEB})")
    p.add_argument("--threads", type=int, default=8, help="requests served at once (default 8)")
    p.add_argument("--secret-file", help="file holding the key that signs session cookies; give every web "
                   "process behind one address the same file (default: a new key per start)")
    p.add_argument("--secure-cookies", action="store_true", help="send the session cookie over HTTPS only "
                   "(set when a TLS proxy is in front)")
    p.add_argument("--dialplan-server", default="127.0.0.1:8084", help="for the mod_xml_curl endpoint "
                   "/freeswitch/dialplan: fs-dynroute server(s) as `dialplan --server` takes them "
                   "(default 127.0.0.1:8084)")
    p.add_argument("--dialplan-context", default="public", help="the dialplan context the endpoint answers for "
                   "(default public)")
    p.add_argument("--dialplan-file", help="the installed dialplan file (as `dialplan --install FILE`): the page "
                   "says when it is out of date and offers to install it")
    p.add_argument("--esl", help="FreeSWITCH's inbound event socket host:port: the page's install also runs "
                   "reloadxml")
    p.add_argument("--password-file", help="file holding the event socket password (default: FreeSWITCH's "
                   "ClueCon)")

    token = commands.group("token", "API and admin-page tokens")
    p = token.leaf("add", cmd_token_add, help="create a token and print it (shown only once)")
    p.add_argument("name")
    p.add_argument("--read-only", action="store_true", help="may read everything and change nothing")
    token.leaf("list", cmd_token_list, json=True, help="names, scopes and times; never the secret")
    token.leaf("revoke", cmd_token_revoke, help="stop a token working, at once, on every node").add_argument("name")
