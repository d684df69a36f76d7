"""``fs-dynroute serve`` and ``fs-dynroute dialplan`` as an administrator runs them: real processes, real TCP."""

from __future__ import annotations

import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fs_dynroute import esl
from fs_dynroute.fakeswitch.switch import Dialplan, place_call
from tests.gsdemo import RawSwitch, connect_reply
from tests.serving import CLI, SCRIPT, ServeProcess, free_port, wait_until, write_locked


@pytest.fixture
def served(db_url: str) -> Iterator[tuple[CLI, ServeProcess]]:
    cli = CLI(db_url)
    cli("initdb", "--demo")
    server = ServeProcess(db_url)
    try:
        yield cli, server
    finally:
        server.kill()


def test_generated_dialplan_routes_calls_through_the_running_service(served) -> None:
    cli, server = served
    xml = cli("dialplan", "--server", f"127.0.0.1:{server.port}").stdout
    dialplan = Dialplan.from_xml(xml, "5550100")
    assert place_call(dialplan, "+15551111111", "5550100").target == "1001 XML default"
    assert place_call(dialplan, "+1 (555) 222-2222", "5550100").target == "1002 XML default"
    assert place_call(dialplan, "anonymous", "5550100").target == "5000 XML default"
    code, log = server.stop()
    assert code == 0
    lines = [ln for ln in log.splitlines() if " call uuid=" in ln]
    assert len(lines) == 3
    assert "caller=+15551111111 rule=Customer Routing key=5551111111 result=match dest=1001 XML default" in lines[0]
    assert "result=nomatch dest=5000 XML default" in lines[2] and " ms=" in lines[2]


def test_service_not_running_callers_still_reach_no_match(served) -> None:
    cli, server = served
    dialplan = Dialplan.from_xml(cli("dialplan", "--server", f"127.0.0.1:{server.port}").stdout, "5550100")
    assert server.stop()[0] == 0
    outcome = place_call(dialplan, "+15551111111", "5550100")
    assert (outcome.ended, outcome.target) == ("transferred", "5000 XML default")
    assert outcome.silence < 1.0  # refused at once: no deadline to wait out


def test_sigterm_finishes_calls_in_flight_refuses_new_ones_and_exits_0(db_url: str) -> None:
    cli = CLI(db_url)
    cli("initdb", "--demo")
    cli("rule", "edit", "Customer Routing", "--delete-after-use")
    server = ServeProcess(db_url, "--decision-timeout", "5")  # ample time for the steps below on a busy machine
    try:
        with write_locked(db_url):  # the call in flight waits on the database
            fs = RawSwitch(("127.0.0.1", server.port), timeout=5)
            assert fs.command().line == "connect"
            fs.send(connect_reply("+15551111111", "5550100"))  # the call is in flight: deciding, blocked
            server.proc.send_signal(signal.SIGTERM)
            wait_until(lambda: refused(server.port), what="the listener to close after SIGTERM")
        sent = []
        while (command := fs.command(timeout=5)) is not None:  # one multiset, then the server closes
            sent.append(command.headers["execute-app-arg"])
            fs.send(esl.command_reply("+OK"))
        fs.close()
        assert len(sent) == 1 and sent[0].startswith("^^|dynroute_target=1001 XML default|")  # finished, routed
        code, log = server.stop()
        assert code == 0 and "stopped" in log
    finally:
        server.kill()


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_dialplan_command_lists_enabled_rules_only(served) -> None:
    cli, server = served
    cli("rule", "add", "Night", "--source", "+15550200", "--digits", "7", "--nomatch-dest", "1000 XML night")
    cli("rule", "add", "Off", "--source", "5550300", "--digits", "7", "--nomatch-dest", "1000", "--disabled")
    xml = cli("dialplan", "--server", "10.0.0.5:8084,10.0.0.6:8084").stdout
    assert xml.count("<extension ") == 2 and "5550300" not in xml
    night = Dialplan.from_xml(xml, "+15550200")
    assert night.actions == [("unset", "socket_resume"), ("set", "dynroute_rule=Night"),
                             ("set", "dynroute_target=1000 XML night"),
                             ("socket", "10.0.0.5:8084|10.0.0.6:8084"), ("transfer", "${dynroute_target}")]
    assert "async" not in xml and "full" not in xml
    bad = cli("dialplan", "--server", "nohost", ok=False)
    assert bad.returncode == 2 and "--server" in bad.stderr


def test_shipped_example_is_what_the_command_prints_for_the_demo(tmp_path: Path) -> None:
    cli = CLI(f"sqlite:///{tmp_path / 'demo.db'}")
    cli("initdb", "--demo")
    shipped = Path(__file__).resolve().parents[1] / "dialplan" / "50_dynroute.xml"
    assert cli("dialplan").stdout == shipped.read_text()


def test_serve_refuses_a_database_without_the_current_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    proc = subprocess.run([SCRIPT, "serve", "--db", url, "--listen", f"127.0.0.1:{free_port()}"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "run 'fs-dynroute initdb' first" in proc.stderr
