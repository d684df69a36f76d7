"""The in-process front door: FreeSWITCH's mod_python3 runs fs_dynroute.fsapp, on each backend.

Calls go through the dialplan `fs-dynroute dialplan --mode python` writes, run by the mod_python3 fake
(fs_dynroute.fakeswitch.modpython): a fake ``freeswitch`` module in sys.modules, and fsapp imported and
reloaded for every call as mod_python3 does.
"""

from __future__ import annotations

import collections
import datetime as dt
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import peewee as pw
import pytest

from fs_dynroute import admin, demo, inprocess, inprocess_config
from fs_dynroute.config import ServeConfig
from fs_dynroute.dialplan import render
from fs_dynroute.fakeswitch.modpython import (
    FreeswitchModule,
    PythonCallOutcome,
    Session,
    install,
    place_python_call,
    run_python_app,
)
from fs_dynroute.fakeswitch.switch import Dialplan, place_call
from fs_dynroute.models import Audit, Route, Rule
from fs_dynroute.store import SQLStore
from tests.backends import BACKENDS, DatabaseOutage
from tests.serving import CALLS, NO_MATCH, SCRIPT, running_server, write_locked

OTHER_DEFAULT = "9999 XML default"  # a dialplan default that is not the rule's No Match Destination
DYNROUTE_VARIABLES = ("dynroute_target", "dynroute_result", "dynroute_rule", "dynroute_key")


def eventually(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    """Wait for ``predicate`` (the index polls the change log every 0.1 s here), bounded."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.fixture
def freeswitch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FreeswitchModule]:
    """The fake ``freeswitch`` module, and the settings FreeSWITCH's environment would hold.

    A test that also takes ``db`` names it first: fixtures end in reverse order, so the in-process state (whose
    poller reconnects every 0.1 s) is shut down before the test database is dropped, not during the drop."""
    config = tmp_path / "fs-dynroute.conf"
    config.write_text("# nothing here: the environment says it all\n")
    monkeypatch.setenv("DYNROUTE_CONFIG", str(config))
    monkeypatch.setenv("DYNROUTE_POLL_INTERVAL", "0.1")
    module = install()
    yield module
    inprocess.shutdown()
    monkeypatch.delitem(sys.modules, "freeswitch")


@pytest.fixture
def switch(db: pw.Database, db_url: str, freeswitch: FreeswitchModule,
           monkeypatch: pytest.MonkeyPatch) -> FreeswitchModule:
    """A FreeSWITCH whose mod_python3 routes with fs_dynroute over the demo data, routes loaded."""
    demo.load()
    monkeypatch.setenv("DYNROUTE_DB", db_url)
    assert inprocess.shared(freeswitch.consoleLog).index.loaded.wait(10)
    return freeswitch


def python_dialplan(source: str = "5550100") -> Dialplan:
    """The dialplan `fs-dynroute dialplan --mode python` prints for the rule serving ``source``."""
    rule = SQLStore(Route._meta.database.obj).rule_for(source=source)
    return Dialplan.from_xml(render([rule], [], "public", "python"), source)


def call(caller: str | None, dest: str = "5550100", **kw: object) -> PythonCallOutcome:
    return place_python_call(python_dialplan(dest), caller, dest, **kw)  # type: ignore[arg-type]


def handmade(data: str, default: str = OTHER_DEFAULT) -> Dialplan:
    """A hand-written dialplan: the default, then ``python DATA``, then the transfer."""
    return Dialplan([("set", f"dynroute_target={default}"), ("python", data), ("transfer", "${dynroute_target}")])


def answer(variables: dict[str, str]) -> tuple[str | None, ...]:
    return tuple(variables.get(name) for name in DYNROUTE_VARIABLES)


@pytest.mark.parametrize("caller, target", CALLS)
def test_call_ends_at(switch: FreeswitchModule, caller: str | None, target: str) -> None:
    outcome = call(caller)
    assert outcome.target == target
    assert outcome.variables["dynroute_result"] == ("match" if target != NO_MATCH else "nomatch")
    assert outcome.variables["dynroute_rule"] == "Customer Routing"
    assert not [line for line in switch.lines if line[0] == "ERR"]


def test_both_front_doors_give_the_same_answers(db: pw.Database, db_url: str, freeswitch: FreeswitchModule,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    demo.load()
    admin.add_route("Customer Routing", "+15553333333", "1003", expires="1h")
    Route.update(expires_at=dt.datetime(2001, 1, 1)).where(Route.caller_key == "5553333333").execute()  # expired
    callers = [caller for caller, _ in CALLS] + ["+15553333333", "5551111111"]
    with running_server(db_url) as server:
        rule = SQLStore(Route._meta.database.obj).rule_for(source="5550100")
        socket_plan = Dialplan.from_xml(render([rule], ["%s:%d" % server.address], "public"), "5550100")
        by_socket = [place_call(socket_plan, c, "5550100", stuck_after=3.0) for c in callers]
    monkeypatch.setenv("DYNROUTE_DB", db_url)
    assert inprocess.shared(freeswitch.consoleLog).index.loaded.wait(10)
    by_handler = [call(c) for c in callers]
    assert [(o.target, answer(o.variables)) for o in by_handler] == \
        [(o.target, answer(o.variables)) for o in by_socket]
    assert [o.target for o in by_handler] == [t for _, t in CALLS] + [NO_MATCH, "1001 XML default"]


def test_match_sets_the_target_first_and_counts_the_use(switch: FreeswitchModule) -> None:
    dialplan = python_dialplan()
    outcome = place_python_call(dialplan, "+15551111111", "5550100", uuid="0d9a8b3e-1111-4222-8333-444455556666")
    assert answer(outcome.variables) == ("1001 XML default", "match", "Customer Routing", "5551111111")
    eventually(lambda: Audit.select().count() == 1)  # statistics are written off the call thread
    assert Audit.get().call_uuid == "0d9a8b3e-1111-4222-8333-444455556666"
    assert Route.get(Route.caller_key == "5551111111").use_count == 1
    calls = [line for line in switch.lines if "outcome=" in line[1]]
    assert len(calls) == 1 and "rule=Customer Routing key=5551111111 result=match dest=1001 XML default" in calls[0][1]


def test_the_target_is_set_before_the_other_variables(switch: FreeswitchModule) -> None:
    session = Session("+15552222222", "5550100")
    run_python_app("fs_dynroute.fsapp", session)
    assert [name for name, _ in session.set_calls] == list(DYNROUTE_VARIABLES)


def test_rule_from_args_then_the_variable_then_the_destination(switch: FreeswitchModule) -> None:
    assert place_python_call(handmade("fs_dynroute.fsapp Customer Routing"), "+15551111111", "70918").target \
        == "1001 XML default"
    assert place_python_call(handmade("fs_dynroute.fsapp"), "+15551111111", "70918",
                             variables={"dynroute_rule": "Customer Routing"}).target == "1001 XML default"
    assert place_python_call(handmade("fs_dynroute.fsapp"), "+15551111111", "5550100").target == "1001 XML default"
    nothing = place_python_call(handmade("fs_dynroute.fsapp"), "+15551111111", "5550999")
    assert (nothing.target, answer(nothing.variables)) == (OTHER_DEFAULT, (OTHER_DEFAULT, None, None, None))


def test_changes_reach_calls_without_a_restart(switch: FreeswitchModule) -> None:
    admin.add_route("Customer Routing", "+15553333333", "1003")
    eventually(lambda: call("+15553333333").target == "1003 XML default")
    admin.add_destination("night-ivr", "5001 XML default")
    dialplan = python_dialplan()  # generated before the rule changed, as FreeSWITCH's would be
    admin.edit_rule("Customer Routing", admin.RuleSpec(enabled=False, no_match_destination="night-ivr"))
    eventually(lambda: place_python_call(dialplan, "+15551111111", "5550100").target == "5001 XML default")
    assert place_python_call(dialplan, "+15551111111", "5550100").variables["dynroute_result"] == "disabled"


def test_delete_after_use_first_call_gets_the_record_second_gets_no_match(switch: FreeswitchModule) -> None:
    admin.edit_rule("Customer Routing", admin.RuleSpec(delete_after_use=True))
    eventually(lambda: inprocess.shared(switch.consoleLog).index.store.rule_for(name="Customer Routing")
               .delete_after_use)
    assert call("+15551111111").target == "1001 XML default"
    assert call("+15551111111").target == NO_MATCH
    assert [a.result for a in Audit.select()] == ["consumed"]


def test_the_first_call_waits_for_the_routes_within_its_deadline(db: pw.Database, db_url: str,
                                                                 freeswitch: FreeswitchModule,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    demo.load()
    monkeypatch.setenv("DYNROUTE_DB", db_url)
    outcome = call("+15551111111")  # builds the router: the routes start loading now
    assert (outcome.target, outcome.seconds < 1.0) == ("1001 XML default", True)


def test_one_router_for_every_call(switch: FreeswitchModule) -> None:
    for _ in range(5):
        call("+15551111111")
    assert [t.name for t in threading.enumerate()].count("fs-dynroute-index") == 1


def test_slow_database_leaves_the_default_within_the_deadline_and_keeps_the_record(
        switch: FreeswitchModule, db_url: str) -> None:
    admin.edit_rule("Customer Routing", admin.RuleSpec(delete_after_use=True))
    eventually(lambda: inprocess.shared(switch.consoleLog).index.store.rule_for(name="Customer Routing")
               .delete_after_use)
    with write_locked(db_url):  # a long CRM import holds the lock the consume needs
        outcome = place_python_call(handmade("fs_dynroute.fsapp"), "+15551111111", "5550100")
    assert outcome.target in (OTHER_DEFAULT, NO_MATCH) and outcome.variables.get("dynroute_result") != "match"
    assert outcome.seconds < 1.3, outcome.seconds  # the 1 s deadline, not the lock's length
    eventually(lambda: call("+15551111111").target == "1001 XML default")  # the record was kept


def test_unreadable_database_leaves_the_default(freeswitch: FreeswitchModule, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    garbage = tmp_path / "broken.db"
    garbage.write_bytes(b"this is not an SQLite database" * 100)
    monkeypatch.setenv("DYNROUTE_DB", f"sqlite:///{garbage}")
    outcome = place_python_call(handmade("fs_dynroute.fsapp", NO_MATCH), "+15551111111", "5550100")
    assert (outcome.target, answer(outcome.variables)) == (NO_MATCH, (NO_MATCH, None, None, None))
    assert outcome.seconds < 1.0
    assert not [line for line in freeswitch.lines if line[1].startswith("Python Error")]


def test_bad_configuration_leaves_the_default_and_logs_one_line(freeswitch: FreeswitchModule,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DYNROUTE_DB", "oracle://db.example/routes")
    outcome = place_python_call(handmade("fs_dynroute.fsapp"), "+15551111111", "5550100", uuid="u-42")
    assert (outcome.target, answer(outcome.variables)) == (OTHER_DEFAULT, (OTHER_DEFAULT, None, None, None))
    assert len(freeswitch.lines) == 1
    level, text = freeswitch.lines[0]
    assert level == "ERR" and text.count("\n") == 1 and "uuid=u-42" in text and "DYNROUTE_DB (environment)" in text


def test_a_broken_session_never_escapes_to_freeswitch(switch: FreeswitchModule) -> None:
    class Hangup(Session):
        def getVariable(self, name: str) -> str | None:  # noqa: N802
            if name == "caller_id_number":
                raise RuntimeError("session is gone")
            return super().getVariable(name)

    session = Hangup("+15551111111", "5550100", uuid="u-7")
    switch.lines.clear()
    run_python_app("fs_dynroute.fsapp", session)
    assert session.set_calls == []
    assert switch.lines == [("ERR", "fs_dynroute: call uuid=u-7: the dialplan default stands: "
                                    "RuntimeError: session is gone\n")]


# -- many FreeSWITCH threads at once ----------------------------------------------------------------------

THREADS = 8
CALLS_PER_THREAD = 10_000
ROUTES = 1000  # on Customer Routing, plus its two demo routes
CALLBACKS = 200  # Delete After Use records on the Callbacks rule


def _load_many(db: pw.Database) -> dict[str, str]:
    """Routes for both rules in bulk; returns key -> expected target for Customer Routing."""
    admin.add_rule("Callbacks", admin.RuleSpec(source="5550200", digits_match=10, no_match_destination="main-ivr",
                                               match_destination="dynamic", delete_after_use=True))
    rules = {r.name: r.id for r in Rule.select()}
    rows = [(rules["Customer Routing"], str(5_556_000_000 + i), str(1000 + i % 900)) for i in range(ROUTES)]
    rows += [(rules["Callbacks"], str(5_557_000_000 + i), str(2000 + i % 900)) for i in range(CALLBACKS)]
    with db.atomic():
        Route.insert_many(rows, fields=[Route.rule, Route.caller_key, Route.destination]).execute()
    expected = {key: f"{dest} XML default" for rule, key, dest in rows if rule == rules["Customer Routing"]}
    return expected | {"5551111111": "1001 XML default", "5552222222": "1002 XML default"}


def loaded(switch: FreeswitchModule) -> None:
    """Wait until the index holds what _load_many wrote (a dry read of its memory: nothing is consumed)."""
    index = inprocess.shared(switch.consoleLog).index.store
    last = {"Customer Routing": str(5_556_000_000 + ROUTES - 1), "Callbacks": str(5_557_000_000 + CALLBACKS - 1)}
    eventually(lambda: all((rule := index.rule_for(name=name)) is not None and index.lookup(rule, key) is not None
                           for name, key in last.items()), timeout=10)


def test_eight_threads_no_wrong_answer_no_record_consumed_twice(switch: FreeswitchModule, db: pw.Database) -> None:
    expected = _load_many(db)
    loaded(switch)
    plans = {dest: python_dialplan(dest) for dest in ("5550100", "5550200")}
    wrong: list[str] = []
    matched: collections.Counter[str] = collections.Counter()  # callback key -> calls sent to its record
    ordinary = [0]  # ordinary matches, each one a use to count
    lock = threading.Lock()

    def caller(seed: int) -> None:
        rng = random.Random(seed)
        for n in range(CALLS_PER_THREAD):
            if n % 8 == 0:  # a callback: its record goes to the first caller only
                key = str(5_557_000_000 + rng.randrange(CALLBACKS + 50))
                outcome = place_python_call(plans["5550200"], "+1" + key, "5550200")
                if outcome.target != NO_MATCH:
                    with lock:
                        matched[key] += 1
                    if outcome.target != f"{2000 + (int(key) - 5_557_000_000) % 900} XML default":
                        wrong.append(f"callback {key} -> {outcome.target}")
            else:
                key = str(5_556_000_000 + rng.randrange(ROUTES + ROUTES // 2))
                outcome = place_python_call(plans["5550100"], rng.choice(("+1", "1", "")) + key, "5550100")
                if outcome.target != expected.get(key, NO_MATCH):
                    wrong.append(f"{key} -> {outcome.target}")
                elif outcome.target != NO_MATCH:
                    with lock:
                        ordinary[0] += 1

    started = time.monotonic()
    threads = [threading.Thread(target=caller, args=(seed,)) for seed in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not any(t.is_alive() for t in threads)
    print(f"{THREADS} x {CALLS_PER_THREAD} calls in {time.monotonic() - started:.1f} s")
    assert wrong == []
    assert matched and max(matched.values()) == 1
    consumed = collections.Counter(a.caller_key for a in Audit.select().where(Audit.result == "consumed"))
    assert consumed == matched
    assert Route.select().join(Rule).where(Rule.name == "Callbacks").count() == CALLBACKS - len(matched)
    # Every ordinary match is counted: the call threads queue it, the index thread writes it.
    eventually(lambda: Audit.select().where(Audit.result == "match").count() == ordinary[0], timeout=10)


def test_a_thread_per_call_as_freeswitch_has_loses_no_database_connection(switch: FreeswitchModule,
                                                                          db: pw.Database) -> None:
    """A thread's Python state (and a per-thread database connection in it) dies with the call's thread:
    more Delete After Use calls than the pool has connections must all still reach their records."""
    _load_many(db)
    loaded(switch)
    plan = python_dialplan("5550200")
    targets: list[str | None] = []
    for i in range(inprocess.MAX_CONNECTIONS + 20):
        thread = threading.Thread(target=lambda i=i: targets.append(
            place_python_call(plan, f"+1{5_557_000_000 + i}", "5550200").target))
        thread.start()
        thread.join(5)
    assert targets == [f"{2000 + i} XML default" for i in range(inprocess.MAX_CONNECTIONS + 20)]


# -- the database going away (servers only: an SQLite file has no server to go down) ----------------------

@pytest.mark.parametrize("db_url", [b for b in BACKENDS if b != "sqlite"], indirect=True)
def test_database_down_the_default_stands_within_the_deadline(db: pw.Database, db_url: str,
                                                              freeswitch: FreeswitchModule,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    demo.load()
    admin.edit_rule("Customer Routing", admin.RuleSpec(delete_after_use=True))  # every match needs the database
    outage = DatabaseOutage(db_url)
    try:
        monkeypatch.setenv("DYNROUTE_DB", outage.url)
        monkeypatch.setenv("DYNROUTE_STALE_AFTER", "1.0")
        assert inprocess.shared(freeswitch.consoleLog).index.loaded.wait(10)
        plan = handmade("fs_dynroute.fsapp", NO_MATCH)
        assert place_python_call(plan, "+15551111111", "5550100").target == "1001 XML default"
        outage.down()
        down = time.monotonic()
        stale = False
        while not stale:  # the index answers from memory, then stands back once the database has been gone too long
            outcome = place_python_call(plan, "+15552222222", "5550100")
            assert outcome.target == NO_MATCH and outcome.seconds < 1.1
            stale = "result=error" in freeswitch.lines[-1][1]  # a stale index: No Match, said as an error
            assert time.monotonic() - down < 5
        eventually(lambda: any("routes index stale" in text for _, text in freeswitch.lines))  # said once, in its log
        outage.up()
        eventually(lambda: place_python_call(plan, "+15552222222", "5550100").target == "1002 XML default")
    finally:
        inprocess.shutdown()
        outage.close()


# -- configuration --------------------------------------------------------------------------------------------

def test_config_file_then_environment(tmp_path: Path) -> None:
    conf = tmp_path / "fs-dynroute.conf"
    conf.write_text('# FreeSWITCH routing\nDYNROUTE_DB="mysql://fs@db.example/routes"\n\n'
                    "DYNROUTE_DECISION_TIMEOUT = 0.5\nDYNROUTE_CONTEXT=pbx\n")
    loaded = inprocess_config.load({"DYNROUTE_CONFIG": str(conf), "DYNROUTE_DECISION_TIMEOUT": "0.8"})
    assert loaded == ServeConfig(db="mysql://fs@db.example/routes", decision_timeout=0.8, default_context="pbx")


@pytest.mark.parametrize("text, environ, message", [
    ("DYNROUTE_DB=sqlite:///x.db\nDYNROUTE_TIMEOUT=1\n", {}, "fs-dynroute.conf:2: expected NAME=value"),
    ("just words\n", {}, "fs-dynroute.conf:1: expected NAME=value"),
    ("DYNROUTE_STALE_AFTER=soon\n", {}, "DYNROUTE_STALE_AFTER (CONF:1): could not convert string to float: 'soon'"),
    ("", {"DYNROUTE_POLL_INTERVAL": "-1"}, "(DYNROUTE_POLL_INTERVAL) must be more than 0 seconds, got -1.0 "
                                           "(set in environment)"),
    ("", {"DYNROUTE_DECISION_TIMEOUT": "nan"}, "(DYNROUTE_DECISION_TIMEOUT) must be more than 0 seconds, got nan"),
    ("DYNROUTE_CONTEXT=my context\n", {}, "'my context' is not a dialplan context (one word of letters, digits and "
                                          "_.+*#@:-) (set in CONF:1)"),
    ("DYNROUTE_DB=redis://x\n", {}, "DYNROUTE_DB (CONF:1): database URL 'redis://x': scheme must be"),
])
def test_bad_settings_name_the_setting_and_where(tmp_path: Path, text: str, environ: dict[str, str],
                                                 message: str) -> None:
    conf = tmp_path / "fs-dynroute.conf"
    conf.write_text(text)
    with pytest.raises(inprocess_config.ConfigError) as raised:
        inprocess_config.load({"DYNROUTE_CONFIG": str(conf), **environ})
    assert message.replace("CONF", str(conf)) in str(raised.value)


def test_a_named_config_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(inprocess_config.ConfigError, match="DYNROUTE_CONFIG: .*missing.conf does not exist"):
        inprocess_config.load({"DYNROUTE_CONFIG": str(tmp_path / "missing.conf")})


# -- the dialplan ----------------------------------------------------------------------------------------------

def test_dialplan_mode_python(db_url: str) -> None:
    subprocess.run([SCRIPT, "initdb", "--demo", "--db", db_url], check=True, capture_output=True, timeout=60)
    done = subprocess.run([SCRIPT, "dialplan", "--mode", "python", "--db", db_url], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert Dialplan.from_xml(done.stdout, "5550100").actions == [
        ("set", "dynroute_rule=Customer Routing"), ("set", "dynroute_target=5000 XML default"),
        ("python", "fs_dynroute.fsapp"), ("transfer", "${dynroute_target}")]
