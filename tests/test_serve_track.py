"""``serve --track``: the tracker inside the serving process, against the fake event socket and the outbound fake.

The tracker runs on greenlets of its own with its own event-socket connection and its own database connection,
so the calls the same process routes never wait for it; a wrong password is refused before listening.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import gevent
import pytest
from gevent import subprocess

from fs_dynroute.fakeswitch.inbound import InboundSwitch, bridged_leg, captured_hangups
from fs_dynroute.fakeswitch.switch import place_call
from fs_dynroute.service import Service
from tests.serving import CLI, NO_MATCH, SCRIPT, dialplan_for, free_port, running_server, wait_until

REP = "1101 XML default"


@pytest.fixture
def switch() -> Iterator[InboundSwitch]:
    fake = InboundSwitch(heartbeat_interval=0.2).start()
    yield fake
    fake.stop()


@pytest.fixture
def cli(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CLI:
    """The demo data and a rule fed with missed calls; the password in the environment, the status under tmp."""
    monkeypatch.setenv("DYNROUTE_ESL_PASSWORD", "ClueCon")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    run = CLI(db_url)
    run("initdb", "--demo")
    run("rule", "add", "Callbacks", "--source", "5550310", "--digits", "10", "--nomatch-dest", "main-ivr",
        "--delete-after-use", "--track", "missed", "--agents", r"^1\d{3}$")
    return run


def settled(service: Service, events: int) -> None:
    tracker = service.tracker
    assert tracker is not None
    wait_until(lambda: tracker.stats.events >= events, timeout=10, what=f"{events} hangups seen")
    assert tracker.wait_idle(10)


def test_a_missed_call_seen_by_serve_reaches_the_rep_once_then_no_match(switch: InboundSwitch, cli: CLI,
                                                                       db_url: str) -> None:
    with running_server(db_url, track=switch.address) as service:
        wait_until(lambda: switch.subscribed(), what="the tracker subscribed")
        switch.deliver(captured_hangups()["s5"])  # the customer called; agent 1101 never answered
        settled(service, 4)
        dialplan = dialplan_for(service, NO_MATCH)
        wait_until(lambda: service.store.lookup(service.store.rule_for(source="5550310"), "5551000005"),
                   what="the pending return in the index")
        status = cli("track", "status").stdout  # the same status file as `fs-dynroute track`
        assert "tracker: running" in status and "connected to 127.0.0.1:" in status, status
        assert "routes: 1 written" in status and "events: 4 hangups seen" in status, status
        back = place_call(dialplan, "+15551000005", "5550310")  # the customer calls the callback number
        again = place_call(dialplan, "+15551000005", "5550310")
    assert back.target == REP  # the rep who missed them
    assert again.target == NO_MATCH  # Delete After Use: once
    assert "missed call 2026-12-02" not in cli("route", "list", "Callbacks").stdout  # consumed


def serve(db_url: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``fs-dynroute serve`` as a process, cooperative with the fake switch in this one (killed after 20 s)."""
    return subprocess.run([SCRIPT, "serve", "--db", db_url, "--listen", f"127.0.0.1:{free_port()}", *args],
                          capture_output=True, text=True, env=env, timeout=20)


def test_a_wrong_password_refuses_to_start_with_one_line(switch: InboundSwitch, cli: CLI, db_url: str,
                                                         tmp_path: Path) -> None:
    secret = tmp_path / "esl.pass"
    secret.write_text("WrongPassword\n")
    proc = serve(db_url, "--track", "%s:%d" % switch.address, "--track-password-file", str(secret),
                 env=dict(os.environ))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("fs-dynroute: error: event socket 127.0.0.1:"), proc.stderr
    assert proc.stderr.count("\n") == 1 and "refused the password (-ERR invalid)" in proc.stderr
    assert "--track-password-file" in proc.stderr and "WrongPassword" not in proc.stderr + proc.stdout
    assert "listening on" not in proc.stderr
    assert [c.commands for c in switch.connections] == [["auth WrongPassword"]]  # tried once, never again


def test_no_password_anywhere_is_refused_naming_the_option(cli: CLI, db_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DYNROUTE_ESL_PASSWORD"}
    proc = serve(db_url, "--track", "127.0.0.1:8021", env=env)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "--track-password-file (DYNROUTE_TRACK_PASSWORD_FILE): no ESL password: give --track-password-file " \
           "FILE or set $DYNROUTE_ESL_PASSWORD" in proc.stderr
    proc = serve(db_url, "--track-password-file", str(tmp_path / "esl.pass"), env=env)
    assert proc.returncode == 2 and "is for --track (DYNROUTE_TRACK), which is not given" in proc.stderr


def test_freeswitch_down_at_start_serves_calls_and_tracks_once_it_is_up(cli: CLI, db_url: str) -> None:
    port = free_port()
    with running_server(db_url, track=("127.0.0.1", port)) as service:
        tracker = service.tracker
        assert tracker is not None and not tracker.stats.connected and tracker.stats.last_error
        assert place_call(dialplan_for(service), "+15551111111", "5550100").target == "1001 XML default"
        switch = InboundSwitch(port=port, heartbeat_interval=0.2).start()  # FreeSWITCH comes up
        try:
            wait_until(lambda: tracker.stats.connected and switch.subscribed(), timeout=10,
                       what="the tracker connected after its backoff")
            switch.deliver(captured_hangups()["s2"])  # the rep's call was not answered
            settled(service, 4)
            assert tracker.stats.written == 1
        finally:
            switch.stop()


def test_calls_keep_routing_while_a_burst_of_hangups_is_processed(switch: InboundSwitch, cli: CLI,
                                                                  db_url: str) -> None:
    """10,000 missed calls at once, tracked by the process that routes calls: every call still reaches its
    destination within its deadline. The calls' latency is printed (a figure, not an assertion)."""
    count = 10_000
    with running_server(db_url, track=switch.address) as service:
        tracker = service.tracker
        assert tracker is not None
        wait_until(lambda: switch.subscribed(), what="the tracker subscribed")
        dialplan = dialplan_for(service, NO_MATCH)

        def latencies(until) -> list[float]:
            out = []
            while not until():
                start = time.perf_counter()
                assert place_call(dialplan, "+15551111111", "5550100").target == "1001 XML default"
                out.append(time.perf_counter() - start)
                gevent.sleep(0.005)
            return out

        calm = time.perf_counter() + 1.0
        quiet = latencies(lambda: time.perf_counter() > calm)
        started = time.perf_counter()
        sender = gevent.spawn(switch.burst, bridged_leg("s2"), "5551000002", count)
        busy = latencies(lambda: tracker.stats.events >= count and tracker.wait_idle(0))
        took = time.perf_counter() - started
        sender.get()
        assert tracker.stats.written == count and tracker.stats.dropped == 0
        assert len(busy) >= 5  # calls were routed all along, not only after the burst
    print(f"\nserve --track: burst of {count} hangups written in {took:.1f} s ({count / took:.0f}/s); calls "
          f"before: median {statistics.median(quiet) * 1000:.1f} ms, max {max(quiet) * 1000:.1f} ms; "
          f"{len(busy)} calls during: median {statistics.median(busy) * 1000:.1f} ms, max {max(busy) * 1000:.1f} ms")


def test_a_status_file_that_cannot_be_written_does_not_stop_the_tracking(switch: InboundSwitch, cli: CLI,
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """As under a unit whose home is hidden: said once, and the routes are still written."""
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    monkeypatch.setenv("XDG_STATE_HOME", str(blocked))
    with running_server(db_url, track=switch.address) as service:
        wait_until(lambda: switch.subscribed(), what="the tracker subscribed")
        switch.deliver(captured_hangups()["s2"])
        settled(service, 4)
        assert service.tracker is not None and service.tracker.stats.written == 1
        assert service.tracker.stats.reconnects == 0
    said = [r.getMessage() for r in caplog.records if "cannot write the tracker's status" in r.getMessage()]
    assert len(said) == 1, said
