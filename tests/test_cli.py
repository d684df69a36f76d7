"""The installed ``fs-dynroute`` console script end to end, on a real database of each backend."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from fs_dynroute.database import open_database
from fs_dynroute.models import MODELS

SCRIPT = shutil.which("fs-dynroute", path=str(Path(sys.executable).parent)) or "fs-dynroute"


class CLI:
    def __init__(self, db_url: str) -> None:
        self.db_url = db_url

    def __call__(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([SCRIPT, *args, "--db", self.db_url], capture_output=True, text=True, timeout=60)
        if ok:
            assert proc.returncode == 0, proc.stderr
        return proc

    def json(self, *args: str) -> object:
        return json.loads(self(*args, "--json").stdout)


@pytest.fixture
def cli(db_url: str) -> CLI:
    run = CLI(db_url)
    assert "demo data loaded" in run("initdb", "--demo").stdout
    return run


def test_demo_lookup_answers_like_a_call(cli: CLI) -> None:
    for spelling in ("+1-555-111-1111", "15551111111", "5551111111"):
        assert cli.json("lookup", "--source", "5550100", spelling) == {
            "result": "match", "destination": "1001 XML default", "key": "5551111111",
            "rule": "Customer Routing", "notes": "Acme account", "reason": "matched key"}
    miss = cli.json("lookup", "--source", "5550100", "anonymous")
    assert (miss["result"], miss["destination"]) == ("nomatch", "5000 XML default")
    assert cli.json("lookup", "--rule", "Customer Routing", "+15552222222")["destination"] == "1002 XML default"


def test_rule_lifecycle(cli: CLI) -> None:
    cli("dest", "add", "vip-queue", "7000 XML default")
    cli("rule", "add", "VIP", "--source", "5550200", "--digits", "10", "--nomatch-dest", "main-ivr",
        "--match-dest", "vip-queue", "--delete-after-use")
    shown = cli.json("rule", "show", "VIP")
    assert (shown["match_destination"], shown["delete_after_use"], shown["enabled"]) == ("vip-queue", True, True)
    cli("route", "add", "VIP", "+15557777777", "--notes", "gold", "--expires", "48h")
    assert cli.json("lookup", "--source", "5550200", "15557777777")["destination"] == "7000 XML default"
    # dry run consumed nothing
    assert [r["caller_id"] for r in cli.json("route", "list", "VIP")] == ["5557777777"]
    cli("rule", "disable", "VIP")
    assert cli.json("lookup", "--source", "5550200", "15557777777")["result"] == "disabled"
    cli("rule", "enable", "VIP")
    cli("rule", "edit", "VIP", "--keep-after-use", "--nomatch-dest", "1000")
    assert cli.json("rule", "show", "VIP")["no_match_destination"] == "1000"
    assert [r["name"] for r in cli.json("rule", "list")] == ["Customer Routing", "VIP"]
    assert "deleted with 1 routes" in cli("rule", "delete", "VIP").stdout
    assert "vip-queue" in cli.json("dest", "list")
    cli("dest", "delete", "vip-queue")


@pytest.mark.parametrize("args, message", [
    (["rule", "add", "X", "--source", "5550300", "--digits", "10", "--nomatch-dest", "nowhere"], "nomatch-dest"),
    (["rule", "add", "X", "--source", "5550100", "--digits", "10", "--nomatch-dest", "main-ivr"], "source"),
    (["rule", "add", "X", "--source", "5550300", "--digits", "99", "--nomatch-dest", "main-ivr"], "digits"),
    (["route", "add", "Customer Routing", "anonymous", "1001"], "caller_id"),
    (["route", "add", "Customer Routing", "+15553333333", "1001", "--expires", "soon"], "expires"),
    (["route", "add", "Nope", "+15553333333", "1001"], "rule 'Nope' does not exist"),
    (["dest", "add", "bad name", "1001"], "destination name"),
    (["dest", "delete", "main-ivr"], "used by rule"),
    (["lookup", "--source", "5559999", "+15551111111"], "source"),
])
def test_errors_are_one_line_exit_2_and_write_nothing(cli: CLI, args: list[str], message: str) -> None:
    before = table_contents(cli.db_url)
    proc = cli(*args, ok=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("fs-dynroute: error: ") and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert table_contents(cli.db_url) == before


def table_contents(db_url: str) -> dict[str, list[tuple]]:
    """Every row of every table, read straight from the database."""
    db = open_database(db_url)
    with db.connection_context():
        return {m._meta.table_name: sorted(map(tuple, m.select().tuples().execute(db)), key=repr)
                for m in MODELS}


def test_import_export_through_files(cli: CLI, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("caller_id,destination,notes\n+15553333333,1003,ok\nrestricted,1003,x\n+15554444444,,y\n")
    proc = cli("route", "import", "Customer Routing", str(bad), ok=False)
    assert proc.returncode == 2
    assert "line 3: caller_id" in proc.stderr and "line 4: destination" in proc.stderr
    assert "nothing imported" in proc.stderr
    good = tmp_path / "good.csv"
    good.write_text("+15553333333,1003,new customer\n")
    assert "1 routes imported" in cli("route", "import", "Customer Routing", str(good)).stdout
    out = tmp_path / "out.csv"
    cli("route", "export", "Customer Routing", str(out))
    assert out.read_text().splitlines() == ["caller_id,destination,notes,expires_at",
                                            "5551111111,1001,Acme account,", "5552222222,1002,Widget Inc,",
                                            "5553333333,1003,new customer,"]
    cli("route", "import", "Customer Routing", str(good), "--replace")
    assert [r["caller_id"] for r in cli.json("route", "list", "Customer Routing")] == ["5553333333"]
    cli("route", "delete", "Customer Routing", "+1 555 333 3333")
    assert cli.json("route", "list", "Customer Routing") == []


def test_missing_file_and_uninitialised_database_are_clear_errors(tmp_path: Path) -> None:
    run = CLI(f"sqlite:///{tmp_path / 'empty.db'}")
    proc = run("rule", "list", ok=False)
    assert proc.returncode == 2 and "initdb" in proc.stderr
    run("initdb")
    proc = run("route", "import", "x", str(tmp_path / "missing.csv"), ok=False)
    assert proc.returncode == 2 and "rule 'x' does not exist" in proc.stderr


def test_import_shows_progress_on_a_terminal_only(tmp_path: Path) -> None:
    run = CLI(f"sqlite:///{tmp_path / 'p.db'}")
    run("initdb", "--demo")
    big = tmp_path / "big.csv"
    big.write_text("".join(f"+1555{n:07d},1001,row\n" for n in range(3000)))
    assert "validating" not in run("route", "import", "Customer Routing", str(big)).stdout + \
        run("route", "import", "Customer Routing", str(big)).stderr
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))  # a terminal has a size
    proc = subprocess.run([SCRIPT, "route", "import", "Customer Routing", str(big), "--db", run.db_url],
                          stdout=child, stderr=child, timeout=60)
    os.close(child)
    screen = b""
    while select.select([main], [], [], 0.5)[0]:
        try:
            chunk = os.read(main, 65536)
        except OSError:
            break
        if not chunk:
            break
        screen += chunk
    os.close(main)
    assert proc.returncode == 0
    text = screen.decode(errors="replace")
    assert "validating" in text and "writing" in text and "3000/3000" in text and "3000 routes imported" in text
