"""Bad input from outside, item by item: each is one clear line, exit 2, nothing written, never a traceback.

=========================================================  ==========================================================
issue item                                                 test
=========================================================  ==========================================================
10.1  validation written twice (admin/check/loader)        test_validation.py::test_admin_check_and_the_server_agree_...
10.5  one control-character set (C0, DEL, C1, U+2028/9)    test_one_control_set_covers_all_that_splitlines_splits_on
10    log forging through C1 controls (NEL)                test_a_c1_control_in_the_caller_id_cannot_forge_a_log_line
10    ``assert`` used for validation (admin)               test_a_broken_stored_rule_is_refused_even_under_python_O
8.6   SQLite import fails while ``serve`` flushes          test_sqlite_import_succeeds_while_the_server_flushes
8.6   "database is locked (did you run initdb?)"           test_database_locked_says_so_not_initdb
8.8   ``--replace`` with an empty file deletes everything  test_replace_with_no_routes_is_refused_unless_allow_empty
8.8   ``--dry-run`` says what ``--replace`` would do       test_dry_run_counts_adds_updates_and_removals_and_...
8.9   CSV in latin-1/cp1252/UTF-16: traceback              test_a_csv_in_another_encoding_names_the_line
8.9   field over 128 KiB, unterminated quote: traceback    test_broken_csv_quoting_names_the_line
8.9   ``--expires`` overflow, CLI and CSV: traceback       test_expiry_beyond_the_calendar_is_refused
8.10  ``--expires 0h`` or a past time accepted             test_expiry_not_in_the_future_is_refused
8.10  destination over 255 characters                      test_destination_over_255_characters_is_refused_everywhere
8.12  ``check`` accepts non-ASCII digit keys               test_check_reports_keys_no_call_can_match
11    values sent to FreeSWITCH never hold ``|``           test_the_multiset_separator_is_refused_in_names_and_...
=========================================================  ==========================================================
"""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
from pathlib import Path

import gevent
import peewee as pw
import pytest

from fs_dynroute import demo
from fs_dynroute.esl import CONTROL, MULTISET_SEPARATOR
from fs_dynroute.fakeswitch.switch import place_call
from fs_dynroute.models import Audit, Rule
from tests.serving import CLI, SCRIPT, dialplan_for, running_server, settle, table_contents

NO_MATCH = "5000 XML default"  # the demo rule's No Match Destination (main-ivr)


def routes(cli: CLI) -> list[str]:
    return [r["caller_id"] for r in cli.json("route", "list", "Customer Routing")]


# -- issue 10 ----------------------------------------------------------------------------------------------------

def test_one_control_set_covers_all_that_splitlines_splits_on() -> None:
    breaks = [c for c in map(chr, range(0x110000)) if len(f"a{c}b".splitlines()) > 1]
    assert "\x85" in breaks and "\u2028" in breaks
    assert all(CONTROL.fullmatch(c) for c in breaks)
    assert all(CONTROL.fullmatch(chr(n)) for n in [*range(0x20), *range(0x7F, 0xA0)])
    assert not CONTROL.search("Acme, Inc. ✓ Ünïcode +1 (555) 111-1111")


@pytest.mark.parametrize("control", ["\x85", "\u2028", "\x1c"])
def test_a_c1_control_in_the_caller_id_cannot_forge_a_log_line(db: pw.Database, db_url: str, control: str,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    demo.load()
    caplog.set_level(logging.INFO, logger="fs_dynroute")
    with running_server(db_url) as server:
        forged = f"+15559999999{control}call uuid=forged caller=+15551111111 result=match"
        outcome = place_call(dialplan_for(server, NO_MATCH), forged, "5550100")
        settle(server)  # the session logs after it has closed the socket
    assert outcome.target == NO_MATCH
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("call ")]
    assert len(lines) == 1 and len(lines[0].splitlines()) == 1, lines
    assert control.encode("unicode_escape").decode() in lines[0]


def test_a_broken_stored_rule_is_refused_even_under_python_O(cli: CLI, db: pw.Database) -> None:
    Rule.update(match_mode="fuzzy").execute()
    before = table_contents(cli.db_url)
    proc = subprocess.run([sys.executable, "-O", "-m", "fs_dynroute", "rule", "edit", "Customer Routing",
                           "--digits", "10", "--db", cli.db_url], capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stderr.strip()) == (2, "fs-dynroute: error: match_mode: 'fuzzy' is not one of "
                                                         "exact, prefix")
    assert table_contents(cli.db_url) == before


# -- issue 8 -----------------------------------------------------------------------------------------------------

def test_sqlite_import_succeeds_while_the_server_flushes(tmp_path: Path) -> None:
    """The CLI takes the write lock at BEGIN: a server flush in between costs it a wait, never the import."""
    url = f"sqlite:///{tmp_path / 'routes.db'}"
    CLI(url)("initdb", "--demo")
    big = tmp_path / "big.csv"
    big.write_text("".join(f"+1666{n:07d},1001,row {n}\n" for n in range(100_000)))
    with running_server(url) as server:
        plan = dialplan_for(server, NO_MATCH)
        calls = []

        def traffic() -> None:  # ~20 matching calls a second, each one a use count and an audit row to flush
            while True:
                calls.append(place_call(plan, "+15551111111", "5550100").target)
                gevent.sleep(0.05)

        caller = gevent.spawn(traffic)
        try:
            for attempt in range(2):
                # A native thread waits for the CLI while the server and the calls run in this one's hub (not
                # gevent.subprocess: its SIGCHLD reaper would steal later tests' children from subprocess.Popen).
                proc = gevent.get_hub().threadpool.spawn(
                    subprocess.run, [SCRIPT, "route", "import", "Customer Routing", str(big), "--db", url],
                    capture_output=True, text=True, timeout=120).get()
                assert proc.returncode == 0 and "100000 routes imported" in proc.stdout, (attempt, proc.stderr)
        finally:
            caller.kill()
        server.store.flush()
    assert len(calls) > 10 and set(calls) == {"1001 XML default"}
    assert Audit.select().count() >= len(calls) - 1  # the server's flushes went through too


def test_database_locked_says_so_not_initdb(cli: CLI, db_url: str) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("a lock held past the busy timeout is SQLite's error")
    holder = sqlite3.connect(db_url[len("sqlite:///"):], isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        proc = subprocess.run([SCRIPT, "route", "add", "Customer Routing", "+15553333333", "1003", "--db", db_url],
                              capture_output=True, text=True, timeout=60)
    finally:
        holder.rollback()
        holder.close()
    assert proc.returncode == 2 and "database is locked" in proc.stderr and "initdb" not in proc.stderr
    assert "another process held the write lock" in proc.stderr


@pytest.mark.parametrize("content", ["", "caller_id,destination,notes,expires_at\n", "\n\n"])
def test_replace_with_no_routes_is_refused_unless_allow_empty(cli: CLI, tmp_path: Path, content: str) -> None:
    empty = tmp_path / "export.csv"
    empty.write_text(content)
    message = cli.refused("route", "import", "Customer Routing", str(empty), "--replace")
    assert "would delete all 2 routes" in message and "--allow-empty" in message
    # without --replace an empty file is harmless
    assert "0 routes imported" in cli("route", "import", "Customer Routing", str(empty)).stdout
    cli("route", "import", "Customer Routing", str(empty), "--replace", "--allow-empty")
    assert routes(cli) == []


def test_dry_run_counts_adds_updates_and_removals_and_writes_nothing(cli: CLI, tmp_path: Path) -> None:
    new = tmp_path / "new.csv"
    new.write_text("+15551111111,1009,changed\n+15553333333,1003,new\n+15554444444,1004,new\n")
    before = table_contents(cli.db_url)
    out = cli("route", "import", "Customer Routing", str(new), "--replace", "--dry-run").stdout
    assert out.strip() == ("dry run, nothing written: 2 routes to add, 1 to update, 1 to remove "
                           "in 'Customer Routing'")
    assert "0 to remove" in cli("route", "import", "Customer Routing", str(new), "--dry-run").stdout
    assert table_contents(cli.db_url) == before
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert "would delete all 2 routes" in cli.refused("route", "import", "Customer Routing", str(empty),
                                                  "--replace", "--dry-run")


@pytest.mark.parametrize("encoding, line, says", [
    ("latin-1", 3, "byte 0xfc (byte 20 of the line) is not UTF-8"),
    ("cp1252", 3, "byte 0x93 (byte 19 of the line) is not UTF-8"),
    ("utf-16", 1, "UTF-16"),
    ("utf-16-le", 1, "NUL bytes"),
])
def test_a_csv_in_another_encoding_names_the_line(cli: CLI, tmp_path: Path, encoding: str, line: int,
                                                  says: str) -> None:
    notes = "Müller" if encoding == "latin-1" else "\u201cquoted\u201d" if encoding == "cp1252" else "x"
    text = f"caller_id,destination,notes\n+15553333333,1003,ok\n+15554444444,1004,{notes}\n"
    export = tmp_path / "crm.csv"
    export.write_bytes(text.encode(encoding))
    message = cli.refused("route", "import", "Customer Routing", str(export))
    assert f"line {line}: " in message and says in message and "UTF-8" in message


@pytest.mark.parametrize("text, line, says", [
    ('+15553333333,1003,ok\n+15554444444,1004,"' + "x" * 140_000 + "\n+15555555555,1005,z\n", 2,
     "a field longer than 131072 characters"),
    ('+15553333333,1003,ok\n+15554444444,1004,"never closed\n+15555555555,1005,z\n', 2,
     "a quoted field is never closed"),
])
def test_broken_csv_quoting_names_the_line(cli: CLI, tmp_path: Path, text: str, line: int, says: str) -> None:
    export = tmp_path / "crm.csv"
    export.write_text(text)
    proc = cli("route", "import", "Customer Routing", str(export), ok=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"line {line}: {says}" in proc.stderr and "nothing imported" in proc.stderr
    assert routes(cli) == ["5551111111", "5552222222"]


@pytest.mark.parametrize("expires", ["99999999999d", "9999999w", "9999-12-31T23:00:00-14:00",
                                     "0001-01-01T00:00:00+14:00"])
def test_expiry_beyond_the_calendar_is_refused(cli: CLI, tmp_path: Path, expires: str) -> None:
    message = cli.refused("route", "add", "Customer Routing", "+15553333333", "1003", "--expires", expires)
    assert message.startswith("fs-dynroute: error: expires: ")
    export = tmp_path / "crm.csv"
    export.write_text(f"+15553333333,1003,ok,\n+15554444444,1004,far,{expires}\n")
    proc = cli("route", "import", "Customer Routing", str(export), ok=False)
    assert proc.returncode == 2 and "line 2: expires: " in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("expires", ["0h", "0s", "2020-01-01T00:00:00Z", "2001-01-01"])
def test_expiry_not_in_the_future_is_refused(cli: CLI, tmp_path: Path, expires: str) -> None:
    message = cli.refused("route", "add", "Customer Routing", "+15553333333", "1003", "--expires", expires)
    assert "expires: " in message and "not in the future" in message and "never match" in message
    export = tmp_path / "crm.csv"
    export.write_text(f"+15553333333,1003,gone,{expires}\n")
    assert "line 1: expires: " in cli("route", "import", "Customer Routing", str(export), ok=False).stderr
    cli("route", "add", "Customer Routing", "+15553333333", "1003", "--expires", "1m")  # the future is fine


def test_destination_over_255_characters_is_refused_everywhere(cli: CLI, tmp_path: Path) -> None:
    long = "1" * 256
    for args, field in [(("dest", "add", "long", long), "destination is 256 characters, longer than 255"),
                        (("dest", "add", "long", f"1001 XML {'c' * 250}"), "longer than 255"),
                        (("route", "add", "Customer Routing", "+15553333333", long), "destination: "),
                        (("rule", "add", "Long", "--source", "5550300", "--digits", "10", "--nomatch-dest", long),
                         "nomatch-dest: "),
                        (("rule", "edit", "Customer Routing", "--match-dest", long), "match-dest: ")]:
        message = cli.refused(*args)
        assert field in message and "initdb" not in message and "Data too long" not in message, message
    export = tmp_path / "crm.csv"
    export.write_text(f"+15553333333,{long},x\n")
    assert "line 1: destination: " in cli("route", "import", "Customer Routing", str(export), ok=False).stderr
    cli("dest", "add", "longest", "1" * 255)  # exactly 255 fits every backend


def test_check_reports_keys_no_call_can_match(cli: CLI, db: pw.Database) -> None:
    rule_id = Rule.get().id
    for key in ("٥٥٥١١١١١١١", "555¹¹¹¹¹¹¹", "５５５１１１１１１１"):
        db.execute_sql(f"INSERT INTO dynroute_route (rule_id, caller_key, destination) VALUES ({rule_id}, "
                       f"{db.param}, '1001')", (key,))
        assert cli.refused("route", "add", "Customer Routing", key, "1001").startswith(
            "fs-dynroute: error: caller_id: ")
    proc = cli("check", ok=False)
    assert proc.returncode == 1
    for key in ("٥٥٥١١١١١١١", "555¹¹¹¹¹¹¹", "５５５１１１１１１１"):
        assert f"caller_key {key!r}): caller_key: {key!r} is not normalised (exactly 10 ASCII digits)" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "3 problems in 1 rules, 5 routes, 1 destinations"


# -- issue 11: the separator of the one multiset -----------------------------------------------------------------

def test_the_multiset_separator_is_refused_in_names_and_destinations(cli: CLI, tmp_path: Path) -> None:
    assert MULTISET_SEPARATOR == "|"
    for args, field in [(("rule", "add", "VIP|dynroute_target=1", "--source", "5550300", "--digits", "10",
                          "--nomatch-dest", "main-ivr"), "name: "),
                        (("rule", "add", "VIP", "--source", "5550300", "--digits", "10", "--nomatch-dest",
                          "5000|dynroute_result=match"), "nomatch-dest: "),
                        (("rule", "edit", "Customer Routing", "--match-dest", "7000|x"), "match-dest: "),
                        (("dest", "add", "vip", "7000 XML default|dynroute_target=evil"), "destination "),
                        (("route", "add", "Customer Routing", "+15553333333", "1003|dynroute_key=1"),
                         "destination: ")]:
        message = cli.refused(*args)
        assert field in message and "contains '|'" in message, message
    export = tmp_path / "crm.csv"
    export.write_text("+15553333333,1003|x,piped\n")
    assert "line 1: destination: " in cli("route", "import", "Customer Routing", str(export), ok=False).stderr
    # keys are ASCII digits only, so never hold it either
    assert "caller_id: " in cli.refused("route", "add", "Customer Routing", "555|1111111", "1003")
