"""``fs-dynroute track`` and ``rule add/edit --track`` as a user runs them: real processes, the fake event socket."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import gevent
import pytest
from gevent import subprocess

from fs_dynroute.fakeswitch.inbound import InboundSwitch, captured_hangups
from tests.serving import CLI, SCRIPT

CALLBACKS = ("rule", "add", "Callbacks", "--source", "5550310", "--digits", "10", "--nomatch-dest", "main-ivr",
             "--delete-after-use")


@pytest.fixture
def cli(db_url: str) -> CLI:
    run = CLI(db_url)
    run("initdb", "--demo")
    return run


@pytest.fixture
def switch() -> Iterator[InboundSwitch]:
    fake = InboundSwitch(heartbeat_interval=0.2).start()
    yield fake
    fake.stop()


def track(db_url: str, switch: InboundSwitch, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``fs-dynroute track`` in a process, cooperative with the fake switch in this one."""
    command = [SCRIPT, "track", "--db", db_url, "--esl", "%s:%d" % switch.address, *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def wait_until(condition, timeout: float = 15.0) -> None:
    with gevent.Timeout(timeout):
        while not condition():
            gevent.sleep(0.05)


def test_rule_track_options_are_stored_shown_and_checked_before_anything_is_written(cli: CLI) -> None:
    out = cli(*CALLBACKS, "--track", "missed", "--agents", r"^1\d{3}$").stdout
    assert "tracks missed calls of agents" in out and "72h" in out
    cli("rule", "edit", "Callbacks", "--track-ttl", "48h", "--track-causes", "NO_ANSWER,USER_BUSY")
    shown = cli("rule", "show", "Callbacks").stdout
    assert r"track: mode=missed agents=^1\d{3}$ ttl=48h causes=NO_ANSWER,USER_BUSY" in shown
    for bad, field in ((["--agents", "("], "agents:"), (["--track-ttl", "2 days"], "track-ttl:"),
                       (["--track-causes", "no answer"], "track-causes:")):
        refused = cli("rule", "add", "Other", "--source", "5550999", "--digits", "10", "--nomatch-dest", "main-ivr",
                      "--track", "missed", "--agents", "1", *bad, ok=False)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and field in refused.stderr
        assert "Other" not in cli("rule", "list").stdout  # nothing written
    refused = cli("rule", "edit", "Customer Routing", "--agents", "1", ok=False)
    assert refused.returncode == 2 and "not tracked" in refused.stderr
    cli("rule", "edit", "Callbacks", "--track", "last-agent", "--agents", "^2")  # a new mode: its default expiry
    assert "mode=last-agent agents=^2 ttl=30d" in cli("rule", "show", "Callbacks").stdout
    cli("rule", "edit", "Callbacks", "--no-track")
    assert "track: no" in cli("rule", "show", "Callbacks").stdout
    cli("rule", "delete", "Callbacks")  # its settings go with it
    cli(*CALLBACKS)
    assert "track: no" in cli("rule", "show", "Callbacks").stdout


def test_a_wrong_password_is_one_line_and_exit_2_without_the_password(switch: InboundSwitch, db_url: str,
                                                                      cli: CLI, tmp_path: Path) -> None:
    secret = tmp_path / "esl.pass"
    secret.write_text("WrongPassword\n")
    proc = track(db_url, switch, "--password-file", str(secret), "--status-file", str(tmp_path / "s.json"))
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert err.count("\n") == 1 and "refused the password" in err and "WrongPassword" not in err + out


def test_no_password_anywhere_is_refused(switch: InboundSwitch, db_url: str, cli: CLI) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DYNROUTE_ESL_PASSWORD"}
    proc = subprocess.run([SCRIPT, "track", "--db", db_url], capture_output=True, text=True, env=env, timeout=20)
    assert proc.returncode == 2 and "DYNROUTE_ESL_PASSWORD" in proc.stderr and proc.stderr.count("\n") == 1


def test_track_writes_routes_and_track_status_says_what_it_did(switch: InboundSwitch, db_url: str, cli: CLI,
                                                                tmp_path: Path) -> None:
    cli(*CALLBACKS, "--track", "missed", "--agents", r"^1\d{3}$")
    status = tmp_path / "status.json"
    proc = track(db_url, switch, "--status-file", str(status), env={"DYNROUTE_ESL_PASSWORD": "ClueCon"})
    try:
        wait_until(lambda: switch.subscribed())
        switch.deliver(captured_hangups()["s2"] + captured_hangups()["s1"])
        wait_until(lambda: "5551000002" in cli("route", "list", "Callbacks").stdout)
        listed = cli("route", "list", "Callbacks").stdout
        assert "1101\tmissed call 2026-12-02 14:40 uuid=8a285e3c-" in listed and "expires" in listed
        wait_until(lambda: "routes: 1 written" in cli("track", "status", "--status-file", str(status)).stdout)
        shown = cli("track", "status", "--status-file", str(status)).stdout
        assert "tracker: running" in shown and "connected to 127.0.0.1:" in shown
        assert "events: 8 hangups seen" in shown and "not the bridged leg: 6" in shown
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "ClueCon" not in out + err
    assert cli("track", "status", "--status-file", str(tmp_path / "none.json"), ok=False).returncode == 1


def test_make_demo_callback_closes_the_loop(tmp_path: Path) -> None:
    """What ``make demo-callback`` runs: real serve and track processes, the fakes on both sockets."""
    proc = subprocess.run([str(Path(SCRIPT).parent / "python"), "-m", "fs_dynroute.fakeswitch.callback_demo",
                           "--dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "call 1 from +15551000005 -> 1101 XML default" in proc.stdout
    assert "call 2 from +15551000005 -> 5000 XML default" in proc.stdout and "the loop closed" in proc.stdout
