"""The installed ``fs-dynroute`` console script end to end, on a real database of each backend."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
from pathlib import Path

import pytest

from tests.serving import CLI, SCRIPT


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
    assert message in cli.refused(*args)


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


def test_global_options_work_before_and_after_the_command(cli: CLI, tmp_path: Path) -> None:
    """``--db``, ``--default-context`` and ``-v`` mean the same before the command (git style) and after it."""
    before = subprocess.run([SCRIPT, "--db", cli.db_url, "rule", "list"], capture_output=True, text=True, timeout=60)
    assert before.returncode == 0, before.stderr
    assert before.stdout == cli("rule", "list").stdout and before.stdout.startswith("Customer Routing\t")
    cli("route", "add", "Customer Routing", "+15553333333", "1003")
    for args in (["--default-context", "sales", "lookup"], ["lookup", "--default-context", "sales"]):
        proc = subprocess.run([SCRIPT, "--db", cli.db_url, *args, "--source", "5550100", "--json", "+15553333333"],
                              capture_output=True, text=True, timeout=60)
        assert '"destination": "1003 XML sales"' in proc.stdout, (args, proc.stderr)
    for verbose in (["-v", "rule", "list"], ["rule", "list", "-v"]):  # -v after the command must not be undone
        proc = subprocess.run([SCRIPT, "--db", cli.db_url, *verbose], capture_output=True, text=True, timeout=60)
        assert "DEBUG" in proc.stderr, verbose
    quiet = subprocess.run([SCRIPT, "--db", cli.db_url, "rule", "list"], capture_output=True, text=True, timeout=60)
    assert "DEBUG" not in quiet.stderr
    usage = subprocess.run([SCRIPT, "--help"], capture_output=True, text=True, timeout=60).stdout
    assert "fs-dynroute [-h] [--version] [--db URL] [--default-context CTX] [-v]" in " ".join(usage.split())


def test_rule_list_counts_each_rules_routes(cli: CLI) -> None:
    cli("rule", "add", "Empty", "--source", "5550200", "--digits", "7", "--nomatch-dest", "main-ivr")
    cli("rule", "add", "Three", "--source", "5550300", "--digits", "7", "--nomatch-dest", "main-ivr")
    for n in range(3):
        cli("route", "add", "Three", f"555000{n}", "1003")
    assert {r["name"]: r["routes"] for r in cli.json("rule", "list")} == {"Customer Routing": 2, "Empty": 0,
                                                                         "Three": 3}
    assert "routes=3" in cli("rule", "list").stdout.splitlines()[-1]


def test_paired_flags_switch_a_setting_both_ways_and_refuse_both_at_once(cli: CLI) -> None:
    cli("rule", "add", "Paired", "--source", "5550200", "--digits", "7", "--nomatch-dest", "main-ivr")
    for on, off, field, values in (("--delete-after-use", "--keep-after-use", "delete_after_use", (True, False)),
                                   ("--prefix", "--exact", "match_mode", ("prefix", "exact")),
                                   ("--disabled", "--enabled", "enabled", (False, True))):
        cli("rule", "edit", "Paired", on)
        assert cli.json("rule", "show", "Paired")[field] == values[0], on
        cli("rule", "edit", "Paired", "--nomatch-dest", "1000")  # neither flag: left as it is
        assert cli.json("rule", "show", "Paired")[field] == values[0], on
        cli("rule", "edit", "Paired", off)
        assert cli.json("rule", "show", "Paired")[field] == values[1], off
        both = cli("rule", "edit", "Paired", on, off, ok=False)
        assert both.returncode == 2 and "not allowed with" in both.stderr


def test_a_default_context_with_a_space_is_refused(cli: CLI) -> None:
    """``1001 XML my context`` is no transfer FreeSWITCH can make: every bare extension would go to No Match."""
    proc = cli("lookup", "--source", "5550100", "+15551111111", "--default-context", "my context", ok=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("fs-dynroute: error: --default-context (DYNROUTE_CONTEXT): 'my context'")
    env = {**os.environ, "DYNROUTE_CONTEXT": "my context"}
    assert "'my context' is not a dialplan context" in cli("check", ok=False, env=env).stderr
