"""``fs-dynroute serve`` and ``fs-dynroute dialplan`` as an administrator runs them: real processes, real TCP."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fs_dynroute.fakeswitch.switch import Dialplan, place_call
from tests.test_cli import CLI, SCRIPT
from tests.test_server import write_locked


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    def __init__(self, db_url: str, *extra: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([SCRIPT, "serve", "--db", db_url, "--listen", f"127.0.0.1:{self.port}", *extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.log: list[str] = []
        assert self.proc.stdout is not None
        watchdog = threading.Timer(10, self.proc.kill)  # a server that never says it listens is killed
        watchdog.start()
        try:
            for line in self.proc.stdout:
                self.log.append(line)
                if "listening on" in line:
                    break
            else:
                raise AssertionError(f"server did not start: {''.join(self.log)}")
        finally:
            watchdog.cancel()
        # Keep reading: a server whose log pipe fills up would block on its next log line.
        self.reader = threading.Thread(target=lambda: self.log.extend(self.proc.stdout), daemon=True)
        self.reader.start()

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=10)
        self.reader.join(timeout=5)
        return self.proc.returncode, "".join(self.log)


@pytest.fixture
def served(db_url: str) -> Iterator[tuple[CLI, ServeProcess]]:
    cli = CLI(db_url)
    cli("initdb", "--demo")
    server = ServeProcess(db_url)
    try:
        yield cli, server
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(5)


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


def test_sigterm_finishes_calls_in_flight_refuses_new_ones_and_exits_0(served, db_url: str) -> None:
    import gevent

    cli, server = served
    cli("rule", "edit", "Customer Routing", "--delete-after-use")
    dialplan = Dialplan.recommended(f"127.0.0.1:{server.port}", "5000 XML default")
    with write_locked(db_url):  # the call in flight waits on the database
        in_flight = gevent.spawn(place_call, dialplan, "+15551111111", "5550100")
        gevent.sleep(0.3)
        server.proc.send_signal(signal.SIGTERM)
        gevent.sleep(0.3)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
    in_flight.join(5)
    assert in_flight.value.ended == "transferred"  # finished, not cut off
    code, log = server.stop()
    assert code == 0 and "stopped" in log


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
