"""greenswitch 0.0.19's known defects (a)-(g), each pinned as a regression test against OUR outbound server.

The design named greenswitch 0.0.19 as the ESL library; fs_dynroute serves the outbound socket with gevent directly
(a StreamServer and the sans-IO codec in ``fs_dynroute.esl``) because of these defects:

(a) its accept loop sleeps 100 ms whenever no connection is waiting: ~10 calls/s one at a time, p50 ~100 ms;
(b) it URL-decodes the whole header block before splitting it into lines, so an encoded ``%0A`` in any variable
    forges ``Caller-Caller-ID-Number``;
(c) ``max_connections`` is not enforced (a session is counted only after its connect round trip);
(d) a TCP reset while a command awaits its reply blocks that command forever;
(e) an exception in the application's ``__init__`` leaves the socket open and the caller parked;
(f) each session stays open ~1 s after the call (its event processor polls a queue with a 1 s timeout);
(g) a JSON event kills its reader, so the reply behind it never arrives.

Each ``test_<x>_...`` runs the real server in-process against the fake FreeSWITCH over real TCP on 127.0.0.1
(or, where a test needs byte-level control, a raw client speaking the captured protocol) and shows the defect
cannot reach a call. Each ``test_greenswitch_0_0_19_has_defect_<x>`` runs greenswitch's own OutboundESLServer the
same way and shows the defect is still there: if one of those fails after an upgrade, the defect may be fixed
upstream, and the README's design notes should be revisited. SQLite only: the socket path does not depend on
the backend.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import gevent
import peewee as pw
import pytest
from gevent.server import StreamServer

from fs_dynroute import admin, esl
from fs_dynroute.decision import Decision, RuleView
from fs_dynroute.fakeswitch.switch import CallOutcome, Dialplan, place_call
from fs_dynroute.server import DynrouteServer, StoreRouter
from fs_dynroute.session import Channel, Router
from fs_dynroute.store import SQLStore
from tests.gsdemo import RawSwitch, captured_event, connect_reply, event_json, greenswitch_server, routing_app
from tests.serving import live_greenlets, open_fds, running_server
from tests.test_server import demo_db, server, write_locked  # noqa: F401  (fixtures, and the lock helper)

NO_MATCH = "5000 XML default"  # the demo rule's No Match Destination, which the dialplan sets before the socket
ACME = "1001 XML default"  # the demo route of +15551111111
WIDGET = "1002 XML default"  # the demo route of +15552222222
SOURCE = "5550100"  # the demo rule's source
UUID = "0d9a8b3e-1111-4222-8333-444455556666"


@pytest.fixture
def db_url(tmp_path) -> str:
    """SQLite only (overrides conftest's per-backend URL): what is tested here is the socket path."""
    return f"sqlite:///{tmp_path / 'routes.db'}"


def dial(target: DynrouteServer | int, caller: str | None, dest: str = SOURCE, **kw: object) -> CallOutcome:
    """One call through the recommended dialplan (default: No Match) to our server or to a greenswitch port."""
    hosts = f"127.0.0.1:{target}" if isinstance(target, int) else "{}:{}".format(*target.address)
    return place_call(Dialplan.recommended(hosts, NO_MATCH), caller, dest, stuck_after=3.0, **kw)


def drained_after(srv: DynrouteServer, timeout: float = 1.0) -> float:
    """Seconds until the server has no session left (polled every ms), or ``inf`` past ``timeout``."""
    started = time.monotonic()
    while len(srv.sessions):
        if time.monotonic() - started > timeout:
            return float("inf")
        gevent.sleep(0.001)
    return time.monotonic() - started


def wait_until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    with gevent.Timeout(timeout, AssertionError(f"timed out waiting for {condition}")):
        while not condition():
            gevent.sleep(0.001)


def lines(outcome: CallOutcome) -> list[str]:
    return [command.line for command in outcome.sent]


def serve_one_call(fs: RawSwitch, uuid: str, before_reply: Callable[[esl.Command], list[bytes]] = lambda c: []
                   ) -> list[str]:
    """Play FreeSWITCH for a whole SYNC session on ``fs``; returns every ``execute-app-arg`` the server set.

    ``before_reply(command)`` gives chunks to send (each in its own segment) before that command's ``+OK``.
    """
    assert fs.command().line == "connect"
    fs.send(connect_reply("+15551111111", SOURCE, uuid=uuid))
    args = []
    while (command := fs.command()) is not None and command.line != "exit":
        assert command.name == "sendmsg", command
        args.append(command.headers["execute-app-arg"])
        fs.send(*before_reply(command), esl.command_reply("+OK"), pause=0.002)
    assert command is not None, f"the server closed without exit after {args}"
    fs.send(esl.command_reply("+OK bye") + esl.disconnect_notice(uuid))
    return args


ROUTED_ACME = ["dynroute_target=1001 XML default", "dynroute_result=match", "dynroute_rule=Customer Routing",
               "dynroute_key=5551111111"]


@pytest.fixture
def store_router(db: pw.Database, demo_db: str) -> StoreRouter:  # noqa: F811
    """Our routing core over the demo rule, for greenswitch's application to call (in the event loop: SQLite)."""
    return StoreRouter(SQLStore(db))


# ---------------------------------------------------------------------------------------------------------------
# (a) the 100 ms accept sleep


def test_a_no_accept_sleep_back_to_back_calls_each_fast(server: DynrouteServer) -> None:  # noqa: F811
    """(a) greenswitch's accept loop sleeps 100 ms when idle; ours is an event-driven gevent StreamServer, so 30
    calls placed one after another each spend far less than 100 ms in the socket application."""
    assert isinstance(server.server, StreamServer)  # accepts from the loop's read watcher: no polling, no sleep
    outcomes = [dial(server, "+15551111111") for _ in range(30)]
    assert {(o.ended, o.target) for o in outcomes} == {("transferred", ACME)}
    silences = [o.silence for o in outcomes]
    assert max(silences) < 0.05, (f"slowest {max(silences) * 1e3:.1f} ms, "
                                  f"median {statistics.median(silences) * 1e3:.1f} ms")


def test_greenswitch_0_0_19_has_defect_a(store_router: StoreRouter) -> None:
    """(a) greenswitch 0.0.19: every call placed after the previous one waits out the accept loop's 100 ms sleep."""
    app = routing_app(store_router)
    with greenswitch_server(app) as gs:
        outcomes = [dial(gs.bound_port, "+15551111111") for _ in range(10)]
    assert {(o.ended, o.target) for o in outcomes} == {("transferred", ACME)}  # it routes, slowly
    assert statistics.median(o.silence for o in outcomes) > 0.08


# ---------------------------------------------------------------------------------------------------------------
# (b) %0A forgery of Caller-Caller-ID-Number


@pytest.mark.parametrize("true_caller, forged, target", [
    ("+15559999999", "5551111111", NO_MATCH),  # a stranger claiming Acme's number stays at No Match
    ("+15551111111", "5559999999", ACME),  # and a forged stranger's number cannot take Acme's route away
], ids=["stranger-forges-acme", "acme-forges-stranger"])
def test_b_percent_0a_forgery_routes_on_the_true_caller_id(server: DynrouteServer, true_caller: str,  # noqa: F811
                                                           forged: str, target: str) -> None:
    """(b) greenswitch URL-decodes the whole block before splitting lines, so a ``%0A`` inside sip_user_agent forges
    Caller-Caller-ID-Number; our codec splits lines first, so the call routes on the true caller ID."""
    reply = connect_reply(true_caller, SOURCE, behaviour="inject", forged_caller_id=forged)
    assert b"%0ACaller-Caller-ID-Number%3A%20" + forged.encode() in reply  # the attack is on the wire
    outcome = dial(server, true_caller, behaviour="inject", forged_caller_id=forged)
    assert (outcome.ended, outcome.target) == ("transferred", target)
    assert outcome.variables["dynroute_key"] == true_caller[-10:]


def test_greenswitch_0_0_19_has_defect_b(store_router: StoreRouter) -> None:
    """(b) greenswitch 0.0.19: the same injected sip_user_agent makes it read the forged caller ID, so a stranger
    (+15559999999) reaches Acme's extension through the very same routing core."""
    app = routing_app(store_router)
    with greenswitch_server(app) as gs:
        outcome = dial(gs.bound_port, "+15559999999", behaviour="inject", forged_caller_id="5551111111")
    assert [c.caller_id for c in app.channels] == ["5551111111"]
    assert outcome.target == ACME


# ---------------------------------------------------------------------------------------------------------------
# (c) max_connections not enforced


def test_c_the_call_over_max_sessions_is_closed_at_once_and_the_busy_ones_finish(demo_db: str) -> None:  # noqa: F811
    """(c) greenswitch counts a session only after its connect round trip, so simultaneous calls all get in; ours
    counts it on accept: with max_sessions=2 and two calls busy (their Delete After Use consume waits on a real
    write lock), the third is closed before ``connect`` and reaches the dialplan default at once, the busy two
    finish with their own routes when the lock goes, and the next call is served again."""
    admin.edit_rule("Customer Routing", admin.RuleSpec(delete_after_use=True))
    sockets, greenlets = open_fds(), live_greenlets()
    with running_server(demo_db, max_sessions=2, decision_timeout=1.0) as srv:
        with write_locked(demo_db):
            busy = [gevent.spawn(dial, srv, caller) for caller in ("+15551111111", "+15552222222")]
            wait_until(lambda: len(srv.sessions) == 2)
            gevent.sleep(0.05)  # both are in their decision, waiting for the lock
            over = dial(srv, "+15551111111")
            assert len(srv.sessions) == 2 and not any(g.ready() for g in busy)  # still busy when it was refused
        gevent.joinall(busy, timeout=3)
        after = dial(srv, "+15551111111")
    assert (over.ended, over.target, lines(over)) == ("transferred", NO_MATCH, [])
    assert over.silence < 0.1
    assert [(g.value.ended, g.value.target) for g in busy] == [("transferred", ACME), ("transferred", WIDGET)]
    assert lines(after)[0] == "connect" and after.variables["dynroute_result"] == "nomatch"  # served (route used)
    assert open_fds() <= sockets and set(live_greenlets()) <= set(greenlets)


def test_greenswitch_0_0_19_has_defect_c(store_router: StoreRouter) -> None:
    """(c) greenswitch 0.0.19 with max_connections=2: three simultaneous calls are all let into the application."""
    app = routing_app(store_router)
    with greenswitch_server(app, max_connections=2) as gs:
        dial(gs.bound_port, "+15551111111")  # returns just after the accept loop went back to its 100 ms sleep,
        app.hold_until = 3  # so the next three connect while it sleeps and are accepted together
        calls = [gevent.spawn(dial, gs.bound_port, "+15551111111") for _ in range(3)]
        gevent.joinall(calls, timeout=2.5)
    assert app.peak == 3  # over max_connections=2
    assert [g.value.target for g in calls] == [ACME] * 3  # none was refused


# ---------------------------------------------------------------------------------------------------------------
# (d) TCP reset while a command awaits its reply


def test_d_reset_after_the_connect_reply_ends_the_session_at_once(server: DynrouteServer) -> None:  # noqa: F811
    """(d) FreeSWITCH resets the connection right after the connect reply: the session ends at once (not at its
    1 s deadline, let alone never) and the server fixture checks no socket or greenlet is left."""
    outcome = dial(server, "+15551111111", behaviour="reset")
    assert (outcome.ended, outcome.target) == ("transferred", NO_MATCH)
    assert drained_after(server) < 0.1


def test_d_reset_while_awaiting_the_sendmsg_reply_ends_the_session_at_once(
        server: DynrouteServer, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    """(d) greenswitch blocks forever when a reset arrives while a command awaits its reply; here the RST comes
    exactly then (after our ``sendmsg``, before FreeSWITCH's ``+OK``) and the session ends at once."""
    caplog.set_level(logging.INFO, logger="fs_dynroute.session")
    fs = RawSwitch(server.address)
    assert fs.command().line == "connect"
    fs.send(connect_reply("+15551111111", SOURCE, uuid=UUID))
    command = fs.command()
    assert (command.name, command.headers["execute-app-arg"]) == ("sendmsg", "dynroute_target=1001 XML default")
    assert len(server.sessions) == 1  # it is waiting for the reply
    fs.reset()
    assert drained_after(server) < 0.05
    [line] = [r.getMessage() for r in caplog.records if f"uuid={UUID}" in r.getMessage()]
    assert "outcome=ConnectionResetError" in line


# ---------------------------------------------------------------------------------------------------------------
# (e) an exception in the application


@contextmanager
def serving_router(db_url: str, wrap: Callable[[Router], Router]) -> Iterator[DynrouteServer]:
    """Our server with the router ``fs-dynroute serve`` uses wrapped by ``wrap`` (DynrouteServer takes any Router)."""
    with running_server(db_url, decision_timeout=1.0) as real:
        srv = DynrouteServer(wrap(real.router), listen=("127.0.0.1", 0), decision_timeout=1.0)
        srv.start()
        try:
            yield srv
        finally:
            srv.stop()


def test_e_a_router_that_raises_closes_the_socket_and_the_server_keeps_serving(
        demo_db: str, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    """(e) greenswitch leaves the socket open and the caller parked when the application raises in ``__init__``;
    ours closes the socket at once (the caller reaches the dialplan default) and serves the next call normally."""
    def raising_for_strangers(router: Router) -> Router:
        def route(channel: Channel, deadline: float) -> tuple[RuleView | None, Decision | None]:
            if channel.caller_id == "+15557770000":
                raise RuntimeError("bug in the application")
            return router(channel, deadline)
        return route

    sockets, greenlets = open_fds(), live_greenlets()
    with serving_router(demo_db, raising_for_strangers) as srv:
        broken = [dial(srv, "+15557770000") for _ in range(3)]
        assert drained_after(srv) < 0.05
        fine = dial(srv, "+15551111111")
    for outcome in broken:
        assert (outcome.ended, outcome.target, lines(outcome)) == ("transferred", NO_MATCH, ["connect"])
        assert outcome.silence < 0.1
    assert (fine.ended, fine.target) == ("transferred", ACME)
    assert sum("RuntimeError: bug in the application" in (r.exc_text or "") for r in caplog.records) == 3
    assert open_fds() <= sockets and set(live_greenlets()) <= set(greenlets)


# ---------------------------------------------------------------------------------------------------------------
# (f) the session stays open ~1 s after the call


def test_f_the_server_closes_its_side_as_soon_as_the_call_is_decided(server: DynrouteServer) -> None:  # noqa: F811
    """(f) greenswitch keeps each session open ~1 s after the call; ours closes its side immediately: no session
    is left a few ms after the call, a call with no rule ends on our EOF at once, and after ``exit`` the server
    closes without waiting for FreeSWITCH to."""
    routed = dial(server, "+15551111111")
    assert (routed.ended, routed.target) == ("transferred", ACME) and routed.silence < 0.05
    assert drained_after(server) < 0.01

    no_rule = dial(server, "+15551111111", dest="5550999")  # nothing to set: our close alone ends the socket app
    assert (no_rule.ended, no_rule.target, lines(no_rule)) == ("transferred", NO_MATCH, ["connect"])
    assert no_rule.silence < 0.05
    assert drained_after(server) < 0.01

    with RawSwitch(server.address) as fs:  # FreeSWITCH's side stays open after its +OK bye
        assert serve_one_call(fs, UUID) == ROUTED_ACME
        assert fs.eof_after(1.0) < 0.05
    assert drained_after(server) < 0.01


# ---------------------------------------------------------------------------------------------------------------
# (g) JSON events


def execute_event_json(command: esl.Command, uuid: str, **extra: str) -> bytes:
    """The CHANNEL_EXECUTE event FreeSWITCH emits for the application a sendmsg ran, in JSON."""
    headers = captured_event("CHANNEL_EXECUTE", uuid, Application=command.headers["execute-app-name"],
                             Application_Data=command.headers["execute-app-arg"])
    return event_json({**headers, **extra})


def test_g_json_events_before_each_reply_are_skipped(server: DynrouteServer) -> None:  # noqa: F811
    """(g) greenswitch's reader dies on a ``text/event-json`` message; ours skips every event, JSON included:
    before each ``+OK`` FreeSWITCH sends a real event as JSON (Content-Length framed in bytes, split over two
    segments, a non-ASCII name, a value that looks like a reply), and the call still routes correctly."""
    def json_event_split(command: esl.Command) -> list[bytes]:
        message = execute_event_json(command, UUID, **{"Caller-Caller-ID-Name": "Zoë Ünal",
                                                       "variable_note": "\n\nContent-Type: command/reply\n"
                                                                        "Reply-Text: -ERR forged\n\n"})
        assert b"text/event-json" in message and "Zoë".encode() in message
        return [message[:40], message[40:]]

    with RawSwitch(server.address) as fs:
        assert serve_one_call(fs, UUID, json_event_split) == ROUTED_ACME
        assert fs.eof_after(1.0) is not None
    assert drained_after(server) < 0.01


def test_greenswitch_0_0_19_has_defect_g(store_router: StoreRouter) -> None:
    """(g) greenswitch 0.0.19: one JSON event before the reply to its ``sendmsg`` kills its reader greenlet, so the
    reply is never read, the application never finishes, and ``exit`` never comes: the caller would wait in
    silence until FreeSWITCH's side gave up."""
    app = routing_app(store_router)
    with greenswitch_server(app) as gs:
        fs = RawSwitch(("127.0.0.1", gs.bound_port))
        assert fs.command().line == "connect"
        fs.send(connect_reply("+15551111111", SOURCE, uuid=UUID))
        command = fs.command()
        assert command.headers["execute-app-arg"] == "dynroute_target=1001 XML default"
        fs.send(execute_event_json(command, UUID), esl.command_reply("+OK"))
        assert fs.command(timeout=0.5) is None  # no exit: stuck
        [session] = app.sessions
        reader = session._receive_events_greenlet
        assert reader.dead and isinstance(reader.exception, AttributeError)
        assert app.active == 1  # the application still waits for its reply
        fs.close()
