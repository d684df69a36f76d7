"""Faults around ``fs-dynroute serve`` (issue 8): bad settings, the open-file limit, floods and strangers.

===============  ==================================================================================================
issue 8 item     test
===============  ==================================================================================================
9  (serve)       test_bad_serve_settings_are_one_line_exit_2[listen-port-70000]
10 (serve)       test_bad_serve_settings_are_one_line_exit_2[db-threads-0, max-sessions-0, decision-timeout-0,
                 decision-timeout--1, poll-interval-0, stale-after-not-above-poll, default-context-with-space, ...];
                 test_settings_come_from_the_environment_too (the same checks on DYNROUTE_* variables)
11               test_max_sessions_is_fitted_to_the_open_file_limit (ulimit -n 256: lowered, a flood is refused at
                 once and a call still gets an answer at once); test_the_soft_open_file_limit_is_raised_to_the_hard_one;
                 test_an_open_file_limit_with_no_room_for_calls_is_refused
13 (server)      test_a_connection_flood_is_logged_as_a_count_not_a_line_per_call
14               test_a_peer_outside_allow_is_closed_before_anything_is_sent (from 127.0.0.2 to a server allowing
                 127.0.0.1/32); test_a_non_loopback_listen_without_allow_is_refused;
                 test_allow_comes_from_the_environment_and_is_logged
===============  ==================================================================================================

Real processes and real TCP on loopback addresses only, with bounded counts.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import resource
import socket
import subprocess

import gevent
import pytest
from gevent import socket as gsocket

from fs_dynroute.fakeswitch.switch import Dialplan, place_call
from fs_dynroute.service import Service
from tests.serving import CLI, SCRIPT, ServeProcess, dialplan_for, free_port, running_server, wait_until

NO_MATCH = "5000 XML default"
ACME = "1001 XML default"


@pytest.fixture
def db_url(tmp_path) -> str:
    """SQLite only (overrides conftest's per-backend URL): nothing here depends on the backend."""
    return f"sqlite:///{tmp_path / 'routes.db'}"


def serve(cli: CLI, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``fs-dynroute serve`` that is expected to stop by itself (a refused setting), bounded in time."""
    return subprocess.run([SCRIPT, "serve", "--db", cli.db_url, *args], capture_output=True, text=True, timeout=30,
                          env=env, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("args, message", [
    (["--listen", "127.0.0.1:70000"], "--listen: port 70000 is not 0-65535"),
    (["--listen", "nocolon"], "--listen: expected host:port"),
    (["--db-threads", "0"], "--db-threads (DYNROUTE_DB_THREADS) must be at least 1, got 0"),
    (["--max-sessions", "0"], "--max-sessions (DYNROUTE_MAX_SESSIONS) must be at least 1, got 0"),
    (["--max-sessions", "many"], "--max-sessions: invalid literal for int()"),
    (["--decision-timeout", "0"], "--decision-timeout (DYNROUTE_DECISION_TIMEOUT) must be more than 0 seconds"),
    (["--decision-timeout", "-1"], "--decision-timeout (DYNROUTE_DECISION_TIMEOUT) must be more than 0 seconds"),
    (["--decision-timeout", "nan"], "--decision-timeout (DYNROUTE_DECISION_TIMEOUT) must be more than 0 seconds"),
    (["--poll-interval", "0"], "--poll-interval (DYNROUTE_POLL_INTERVAL) must be more than 0 seconds"),
    (["--poll-interval", "5"], "--stale-after (DYNROUTE_STALE_AFTER) (3.0 s) must be longer than --poll-interval"),
    (["--default-context", "my context"], "--default-context (DYNROUTE_CONTEXT): 'my context' is not a dialplan"),
    (["--allow", "10.0.0.300/8"], "--allow: expected CIDR[,CIDR...]"),
    (["--allow", ","], "--allow (DYNROUTE_ALLOW): no network given"),
], ids=["listen-port-70000", "listen-no-port", "db-threads-0", "max-sessions-0", "max-sessions-text",
        "decision-timeout-0", "decision-timeout--1", "decision-timeout-nan", "poll-interval-0",
        "stale-after-not-above-poll", "default-context-with-space", "allow-bad-cidr", "allow-empty"])
def test_bad_serve_settings_are_one_line_exit_2(cli: CLI, args: list[str], message: str) -> None:
    """Each was accepted before: a hang (--db-threads 0), a busy loop (--poll-interval 0), a traceback (port
    70000), or a server sending every call to No Match (a context with a space, stale between two polls)."""
    proc = serve(cli, *args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("fs-dynroute: error: ") and message in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and "listening" not in proc.stderr


def test_settings_come_from_the_environment_too(cli: CLI) -> None:
    env = {**os.environ, "DYNROUTE_DB_THREADS": "0"}
    proc = serve(cli, env=env)
    assert proc.returncode == 2 and "--db-threads (DYNROUTE_DB_THREADS) must be at least 1" in proc.stderr
    proc = serve(cli, env={**os.environ, "DYNROUTE_LISTEN": "127.0.0.1:99999"})
    assert proc.returncode == 2
    assert proc.stderr.strip() == "fs-dynroute: error: DYNROUTE_LISTEN: port 99999 is not 0-65535"
    env = {**os.environ, "DYNROUTE_MAX_SESSIONS": "7", "DYNROUTE_DECISION_TIMEOUT": "0.25",
           "DYNROUTE_LISTEN": f"127.0.0.1:{free_port()}"}
    server = ServeProcess(cli.db_url, env=env, listen=False)
    try:
        assert "(max 7 sessions, deadline 0.250 s" in server.text()
        assert f"listening on {env['DYNROUTE_LISTEN']}" in server.text()
        over = ServeProcess(cli.db_url, "--max-sessions", "9", env=env)  # the command line wins over the environment
        assert "(max 9 sessions" in over.text()
        assert over.stop()[0] == 0
    finally:
        assert server.stop()[0] == 0


# -- item 11: the open-file limit ------------------------------------------------------------------------------

def nofile(soft: int, hard: int):
    """A preexec_fn giving the child process this open-file limit (as ``ulimit -n`` would)."""
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_max_sessions_is_fitted_to_the_open_file_limit(cli: CLI) -> None:
    """Under ``ulimit -n 256`` the default 1000 sessions cannot all be accepted: without the check a flood of 300
    connections exhausts the descriptors and a real call waits in the backlog (here for the 5 s deadlines of the
    flood) instead of being answered. With it, --max-sessions is lowered, the flood past it is refused at once,
    and so is the real call: it reaches the dialplan default without waiting."""
    server = ServeProcess(cli.db_url, "--decision-timeout", "5", preexec_fn=nofile(256, 256))
    flood: list[socket.socket] = []
    try:
        assert "--max-sessions (DYNROUTE_MAX_SESSIONS) lowered from 1000 to" in server.text()
        lowered = int(server.text().split("lowered from 1000 to ")[1].split(";")[0])
        assert 50 < lowered < 256 and f"(max {lowered} sessions" in server.text()
        for _ in range(300):
            flood.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        dialplan = Dialplan.recommended(f"127.0.0.1:{server.port}", NO_MATCH)
        outcome = place_call(dialplan, "+15551111111", "5550100", stuck_after=8.0)
        assert (outcome.ended, outcome.target) == ("transferred", NO_MATCH)
        assert outcome.silence < 2.0, outcome.silence  # not the flood's 5 s deadline
        assert server.proc.poll() is None
    finally:
        for sock in flood:
            sock.close()
        code, log = server.stop()
    assert code == 0 and "Too many open files" not in log


def test_the_soft_open_file_limit_is_raised_to_the_hard_one(cli: CLI) -> None:
    server = ServeProcess(cli.db_url, preexec_fn=nofile(256, 4096))
    try:
        assert "(max 1000 sessions" in server.text() and "lowered" not in server.text()
        limits = open(f"/proc/{server.proc.pid}/limits").read()
        assert [line.split()[3:5] for line in limits.splitlines() if line.startswith("Max open files")] == \
            [["4096", "4096"]]
    finally:
        assert server.stop()[0] == 0


def test_an_open_file_limit_with_no_room_for_calls_is_refused(cli: CLI) -> None:
    proc = subprocess.run([SCRIPT, "serve", "--db", cli.db_url, "--listen", f"127.0.0.1:{free_port()}"],
                          capture_output=True, text=True, timeout=30, preexec_fn=nofile(64, 64))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "the open-file limit (64) leaves no room for calls" in proc.stderr and "LimitNOFILE" in proc.stderr


# -- item 13: a flood is a count in the log --------------------------------------------------------------------

def test_a_connection_flood_is_logged_as_a_count_not_a_line_per_call(demo_db: str,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="fs_dynroute.server")
    with running_server(demo_db, max_sessions=2, decision_timeout=5.0) as srv:
        busy = [gsocket.create_connection(srv.address) for _ in range(2)]  # never answer: two sessions stay busy
        wait_until(lambda: srv.server.live == 2)
        for _ in range(200):
            with gsocket.create_connection(srv.address, timeout=5) as sock:
                assert sock.recv(1) == b""  # closed at once, nothing sent
        assert srv.server.over_capacity.total == 200
        for sock in busy:
            sock.close()
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == 2, lines
    what = "over capacity (2 sessions, sent to the dialplan default)"
    assert lines[0].startswith(f"refused a call {what}: peer 127.0.0.1:")
    assert lines[1].startswith(f"refused 199 calls {what} in the last ")


# -- item 14: who may ask ----------------------------------------------------------------------------------------

def connect_from(source: str, address: tuple[str, int]) -> gsocket.socket:
    sock = gsocket.socket(gsocket.AF_INET, gsocket.SOCK_STREAM)
    sock.settimeout(5)
    sock.bind((source, 0))
    sock.connect(address)
    return sock


def test_a_peer_outside_allow_is_closed_before_anything_is_sent(demo_db: str,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """127.0.0.2 is not 127.0.0.1: with --allow 127.0.0.1/32 a client there learns nothing and consumes nothing."""
    caplog.set_level(logging.WARNING, logger="fs_dynroute.server")
    with running_server(demo_db, allow=(ipaddress.ip_network("127.0.0.1/32"),)) as srv:
        for _ in range(3):
            with connect_from("127.0.0.2", srv.address) as stranger:
                assert stranger.recv(65536) == b""  # not even the connect command
        assert srv.server.not_allowed.total == 3 and srv.server.live == 0
        assert place_call(dialplan_for(srv), "+15551111111", "5550100").target == ACME  # FreeSWITCH still served
    lines = [r.getMessage() for r in caplog.records if "outside --allow" in r.getMessage()]
    assert len(lines) == 2 and "peer 127.0.0.2:" in lines[0] and lines[1].startswith("refused 2 calls from an address")


def test_loopback_is_allowed_by_default(demo_db: str) -> None:
    with running_server(demo_db) as srv:
        assert isinstance(srv, Service)
        with connect_from("127.0.0.2", srv.address) as local:
            assert local.recv(65536).startswith(b"connect")
        assert srv.server.not_allowed.total == 0


def test_a_non_loopback_listen_without_allow_is_refused(cli: CLI) -> None:
    proc = serve(cli, "--listen", f"0.0.0.0:{free_port()}")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "0.0.0.0 is not a loopback address" in proc.stderr and "--allow (DYNROUTE_ALLOW)" in proc.stderr
    assert "read the routing table" in proc.stderr


def test_allow_comes_from_the_environment_and_is_logged(cli: CLI) -> None:
    server = ServeProcess(cli.db_url, env={**os.environ, "DYNROUTE_ALLOW": "127.0.0.1/32, 10.0.0.0/24"})
    try:
        assert "allow 127.0.0.1/32,10.0.0.0/24)" in server.text()
        with connect_from("127.0.0.2", ("127.0.0.1", server.port)) as stranger:
            assert stranger.recv(65536) == b""
    finally:
        code, log = server.stop()
    assert code == 0 and "refused a call from an address outside --allow" in log and "peer 127.0.0.2:" in log


def test_a_full_accept_queue_at_shutdown_is_served_within_the_open_file_limit(demo_db: str) -> None:
    """SIGTERM serves the calls already in the accept queue before closing (closing would reset them). A flood
    queued at that moment used to be accepted in one go, a descriptor each before any was refused and closed:
    past the open-file limit accept failed and the rest of the queue was reset. It is taken max_accept at a time."""
    with running_server(demo_db, max_sessions=1) as service:
        queued = [socket.create_connection(service.address, timeout=5) for _ in range(300)]  # blocking: none accepted
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 150, hard))
        try:
            service.server.stop_listening()  # what SIGTERM does first
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        gevent.sleep(0)  # one turn of the loop: the last batch's handlers run and close the refused calls
        reset = 0
        for sock in queued:
            with sock:
                try:
                    sock.recv(4096)  # the connect command (served) or the end of the stream (refused)
                except ConnectionResetError:
                    reset += 1
        assert reset == 0


def test_a_flood_never_holds_more_descriptors_than_serve_budgets_for(demo_db: str,
                                                                     capfd: pytest.CaptureFixture[str]) -> None:
    """serve fits --max-sessions to the open-file limit, counting the calls in flight plus one batch of
    max_accept connections accepted before their handlers run. On a loaded machine the event loop stops running
    callbacks after its switch interval and polls again, so a second batch used to be accepted before the first
    was refused and closed: past the limit, accept failed and the queue waited in silence for a retry."""
    with running_server(demo_db, max_sessions=1) as service:
        flood = [socket.create_connection(service.address, timeout=5) for _ in range(300)]  # blocking: queued
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        budget = service.server.max_sessions + service.server.server.max_accept + 20
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + budget, hard))
        interval = gevent.getswitchinterval()
        gevent.setswitchinterval(1e-6)  # as under load: callbacks yield to polling after every 50
        try:
            wait_until(lambda: service.server.over_capacity.total >= len(flood) - 1, timeout=10)
        finally:
            gevent.setswitchinterval(interval)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            for sock in flood:
                sock.close()
    assert "Too many open files" not in capfd.readouterr().err
