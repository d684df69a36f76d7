"""A database URL as an administrator writes it: a user name and password with reserved characters are
percent-encoded (RFC 3986), and the server must receive them decoded, for the CLI and for serve's pool."""

from __future__ import annotations

import uuid
import warnings
from pathlib import Path
from urllib.parse import quote, urlparse

import pytest

from fs_dynroute.database import open_database
from fs_dynroute.fakeswitch.switch import place_call
from tests.backends import SERVERS, admin_connection, fresh_database
from tests.serving import CLI, dialplan_for, running_server

PASSWORD = "p@ss:w/rd#%1?"  # every character that would otherwise end a part of the URL early


def sql(backend: str, *statements: str) -> None:
    admin = admin_connection(backend)
    try:
        with admin.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        admin.close()


@pytest.mark.parametrize("backend", ["mysql", "postgresql"])
def test_a_percent_encoded_user_and_password_reach_the_server_decoded(backend: str, tmp_path: Path) -> None:
    user = f"dyn@route{uuid.uuid4().hex[:6]}"  # the '@' must not end the user part
    server = urlparse(SERVERS[backend])
    try:
        with fresh_database(backend, tmp_path) as root_url:
            name = urlparse(root_url).path.lstrip("/")
            if backend == "mysql":  # MariaDB checks the password
                sql(backend, f"CREATE USER '{user}'@'%' IDENTIFIED BY '{PASSWORD}'",
                    f"GRANT ALL ON {name}.* TO '{user}'@'%'")
            else:  # trust authentication here: the user name is what is checked
                sql(backend, f'CREATE ROLE "{user}" LOGIN', f'ALTER DATABASE {name} OWNER TO "{user}"')
            host = server.netloc.rsplit("@", 1)[-1]
            url = f"{server.scheme}://{quote(user, safe='')}:{quote(PASSWORD, safe='')}@{host}/{name}"
            cli = CLI(url)
            cli("initdb", "--demo")
            assert cli.json("lookup", "--source", "5550100", "+15551111111")["destination"] == "1001 XML default"
            for pooled in (False, True):
                with warnings.catch_warnings():
                    warnings.simplefilter("error")  # nor a DeprecationWarning from the driver about how it was called
                    handle = open_database(url, pooled=pooled)
                    who = handle.execute_sql("SELECT CURRENT_USER").fetchone()[0]
                    handle.close()
                assert (who.rsplit("@", 1)[0] if backend == "mysql" else who) == user
            with running_server(url) as service:
                assert place_call(dialplan_for(service), "+15551111111", "5550100").target == "1001 XML default"
    finally:  # after the database is gone: a PostgreSQL role cannot be dropped while it owns one
        sql(backend, f"DROP USER IF EXISTS '{user}'@'%'" if backend == "mysql" else f'DROP ROLE IF EXISTS "{user}"')


@pytest.mark.parametrize("backend", ["mysql", "postgresql"])
def test_only_a_database_without_the_schema_is_told_to_run_initdb(backend: str, tmp_path: Path) -> None:
    def error(url: str) -> str:  # one line, exit 2 (there is no schema to compare before and after)
        proc = CLI(url)("rule", "list", ok=False)
        assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
        assert proc.stderr.startswith("fs-dynroute: error: database: "), proc.stderr
        return proc.stderr

    with fresh_database(backend, tmp_path) as url:
        assert "(did you run 'fs-dynroute initdb'?)" in error(url)
        server = urlparse(url)
        for wrong in (url + "_missing", url.replace(server.netloc, "nobody_" + server.netloc, 1)):  # database, user
            assert "initdb" not in error(wrong)
