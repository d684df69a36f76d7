"""``fs-dynroute call`` as a newcomer runs it: the installed command against a running ``fs-dynroute serve``."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serving import CLI, SCRIPT, ServeProcess, free_port, write_locked

MATCH = '5550100 from +1 555 111 1111 -> 1001 XML default (match, rule "Customer Routing", key 5551111111) in '


def served_demo(db_url: str, *serve_options: str) -> tuple[CLI, ServeProcess]:
    cli = CLI(db_url)
    cli("initdb", "--demo")
    return cli, ServeProcess(db_url, *serve_options)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CLI, str]]:
    """The demo database served by a real server process; yields the CLI and the --server value."""
    cli, server = served_demo(f"sqlite:///{tmp_path_factory.mktemp('call') / 'routes.db'}")
    try:
        yield cli, f"127.0.0.1:{server.port}"
    finally:
        server.stop()


def call(cli: CLI, server: str, *args: str) -> tuple[int, str, str]:
    proc = cli("call", "--to", "5550100", "--server", server, *args, ok=False)
    return proc.returncode, proc.stdout, proc.stderr


def test_a_known_caller_is_routed_to_its_record_on_every_backend(db_url: str) -> None:
    cli, server = served_demo(db_url)
    try:
        code, out, err = call(cli, f"127.0.0.1:{server.port}", "--from", "+1 555 111 1111")
    finally:
        log = server.stop()[1]
    assert (code, err) == (0, "")
    assert out.startswith(MATCH) and re.fullmatch(r"[\d.]+ ms\n", out[len(MATCH):]), out
    assert "caller=+1 555 111 1111 rule=Customer Routing key=5551111111 result=match dest=1001 XML default" in log


def test_an_unknown_caller_reaches_the_no_match_destination(demo: tuple[CLI, str]) -> None:
    code, out, _ = call(*demo, "--from", "+15559999999")
    assert code == 0
    assert out.startswith('5550100 from +15559999999 -> 5000 XML default (nomatch, rule "Customer Routing", '
                          "key 5559999999) in "), out


@pytest.mark.parametrize("withheld", [("--from", "anonymous"), ("--from", ""), ()], ids=["anonymous", "empty", "none"])
def test_a_withheld_caller_id_reaches_no_match(demo: tuple[CLI, str], withheld: tuple[str, ...]) -> None:
    code, out, _ = call(*demo, *withheld)
    caller = withheld[1] if withheld and withheld[1] else "(no caller ID)"
    assert code == 0
    assert out.startswith(f'5550100 from {caller} -> 5000 XML default (nomatch, rule "Customer Routing", '
                          "key (none)) in "), out


def test_server_down_leaves_the_call_at_the_dialplan_default(demo: tuple[CLI, str]) -> None:
    cli, _ = demo
    code, out, _ = call(cli, f"127.0.0.1:{free_port()}", "--from", "+15551111111")
    assert code == 0
    assert out.startswith("5550100 from +15551111111 -> 5000 XML default (dialplan default: connection refused) in ")


def test_a_refused_host_moves_the_call_to_the_next_one_in_the_list(demo: tuple[CLI, str]) -> None:
    cli, live = demo
    dead = f"127.0.0.1:{free_port()}"
    code, out, _ = call(cli, f"{dead},{live}", "--from", "+15551111111")
    assert code == 0
    assert out.startswith(f'5550100 from +15551111111 -> 1001 XML default (match, rule "Customer Routing", '
                          f"key 5551111111; {dead}: connection refused; answered by {live}) in "), out


def test_a_locked_database_sends_the_call_to_no_match_within_the_deadline(db_url: str) -> None:
    """The consume waits on the lock only as long as the call's deadline allows (the backend's own statement
    timeout), then the server answers No Match itself, as an error; `call` shows that answer and its time."""
    cli = CLI(db_url)
    cli("initdb", "--demo")
    cli("rule", "edit", "Customer Routing", "--delete-after-use")  # consumed in the database: the lock holds it
    server = ServeProcess(db_url, "--decision-timeout", "0.5")
    try:
        with write_locked(db_url):
            code, out, _ = call(cli, f"127.0.0.1:{server.port}", "--from", "+15551111111")
        assert code == 0
        assert out.startswith('5550100 from +15551111111 -> 5000 XML default (error, rule "Customer Routing", '
                              "key 5551111111)"), out
        ms = float(re.search(r" in ([\d.]+) ms$", out.strip())[1])
        assert ms < 1500, ms  # within the server's 0.5 s deadline (plus a busy machine), not the lock's length
    finally:
        log = server.stop()[1]
    assert "result=error" in log


def test_a_server_over_capacity_leaves_the_call_at_the_dialplan_default(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'routes.db'}"
    cli = CLI(url)
    cli("initdb", "--demo")
    cli("rule", "edit", "Customer Routing", "--delete-after-use")
    server = ServeProcess(url, "--max-sessions", "1", "--decision-timeout", "3")
    command = [SCRIPT, "call", "--to", "5550100", "--from", "+15551111111", "--server", f"127.0.0.1:{server.port}",
               "--db", url]
    try:
        with write_locked(url):  # the first call to connect holds the only session for its 3 s deadline
            calls = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(2)]
            outputs = sorted(c.communicate(timeout=30)[0] for c in calls)
    finally:
        server.stop()
    assert "-> 5000 XML default (dialplan default: " in outputs[0], outputs
    assert "closed the connection at once (over capacity?" in outputs[0], outputs
    assert '-> 5000 XML default (error, rule "Customer Routing"' in outputs[1], outputs  # the lock, in time


def test_json_gives_the_target_the_variables_and_the_time(demo: tuple[CLI, str]) -> None:
    code, out, _ = call(*demo, "--from", "15552222222", "--json")
    data = json.loads(out)
    assert code == 0
    assert {k: data[k] for k in ("to", "from", "target", "ended", "default", "unanswered")} == {
        "to": "5550100", "from": "15552222222", "target": "1002 XML default", "ended": "transferred",
        "default": "5000 XML default", "unanswered": []}
    assert data["variables"] == {"dynroute_target": "1002 XML default", "dynroute_result": "match",
                                 "dynroute_rule": "Customer Routing", "dynroute_key": "5552222222"}
    assert data["server"] == demo[1] and 0 < data["ms"] < 1000
    assert [line.split()[0] for line in data["sent"]] == ["connect", "sendmsg"]  # one multiset, then close


@pytest.mark.parametrize(("args", "message"), [
    (("--to", "5550199"), "to: '5550199': no rule serves it"),
    (("--to", ""), "to: empty"),
    (("--to", "5550100", "--server", "nohost"), "--server: expected host:port"),
    (("--from", "+15551111111"), "the following arguments are required: --to"),
])
def test_bad_input_is_one_line_and_exit_2(demo: tuple[CLI, str], args: tuple[str, ...], message: str) -> None:
    proc = demo[0]("call", *args, ok=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_a_disabled_rule_is_not_in_the_dialplan_so_the_call_is_refused(tmp_path: Path) -> None:
    cli = CLI(f"sqlite:///{tmp_path / 'routes.db'}")
    cli("initdb", "--demo")
    cli("rule", "disable", "Customer Routing")
    proc = cli("call", "--to", "5550100", "--from", "+15551111111", ok=False)
    assert proc.returncode == 2 and "its rule 'Customer Routing' is disabled" in proc.stderr
