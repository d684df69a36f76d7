"""The server's in-memory index: coherent with every writer, exactly-once consumes, stale means No Match."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator

import gevent
import peewee as pw
import pytest

from fs_dynroute import admin, csvio, demo
from fs_dynroute.database import open_database
from fs_dynroute.decision import Result
from fs_dynroute.index import IndexedStore, StaleIndex
from fs_dynroute.models import Audit, Change, Route, Rule
from fs_dynroute.routing import route_call
from fs_dynroute.store import SQLStore


@pytest.fixture
def nodes(db: pw.Database, db_url: str) -> Iterator[tuple[IndexedStore, IndexedStore]]:
    """Two servers' indexes over one database, as two fs_dynroute nodes would hold them."""
    demo.load()
    # Each has its own memory, which is what is under test; in one process they share the database handle,
    # since the models reach the database through one process-wide proxy.
    stores = [IndexedStore(SQLStore(db), poll_interval=60, bulk_changes=100) for _ in range(2)]
    for store in stores:
        store.reload()
    yield stores[0], stores[1]
    for store in stores:
        store.stop()


def where(store: IndexedStore, caller: str, dry_run: bool = True, uuid: str | None = None) -> str:
    rule = store.rule_for(source="5550100")
    return route_call(store, rule, caller, uuid, dry_run=dry_run).destination


def refresh_until(store: IndexedStore, done: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll as the server's poller would until ``done`` (a full load finishes in its own thread)."""
    limit = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < limit, "the index did not get there in time"
        gevent.sleep(0.01)
        store.refresh()


def test_routes_and_rules_come_from_memory(nodes) -> None:
    a, _ = nodes
    assert where(a, "+15551111111") == "1001 XML default"
    assert where(a, "anonymous") == "5000 XML default"
    assert a.rule_for(name="Customer Routing").source == "5550100"


def test_cli_and_crm_writes_reach_every_node_on_refresh(nodes, db: pw.Database) -> None:
    a, b = nodes
    admin.add_route("Customer Routing", "+15553333333", "1003")
    rule_id = Rule.get().id
    db.execute_sql("INSERT INTO dynroute_route (rule_id, caller_key, destination) "
                   f"VALUES ({rule_id}, '5554444444', '1004')")
    admin.delete_route("Customer Routing", "+15552222222")
    admin.add_route("Customer Routing", "+15551111111", "1011", "moved to a new rep")
    assert where(a, "+15553333333") == "5000 XML default"  # not yet seen
    for node in (a, b):
        node.refresh()
        assert [where(node, c) for c in ("+15553333333", "+15554444444", "+15552222222", "+15551111111")] == \
            ["1003 XML default", "1004 XML default", "5000 XML default", "1011 XML default"]


def test_rule_and_destination_changes_apply_on_refresh(nodes) -> None:
    a, _ = nodes
    admin.add_destination("main-ivr", "5001 XML default")  # the named destination is redefined
    admin.add_route("Customer Routing", "+15553333333", "main-ivr")
    admin.edit_rule("Customer Routing", admin.RuleSpec(enabled=False))
    a.refresh()
    rule = a.rule_for(source="5550100")
    assert (rule.enabled, rule.no_match_target) == (False, "5001 XML default")
    admin.edit_rule("Customer Routing", admin.RuleSpec(enabled=True))
    a.refresh()
    assert where(a, "+15553333333") == "5001 XML default"


def test_delete_after_use_is_consumed_once_across_nodes(nodes) -> None:
    a, b = nodes
    admin.edit_rule("Customer Routing", admin.RuleSpec(delete_after_use=True))
    a.refresh()
    b.refresh()
    assert where(a, "+15551111111", dry_run=False, uuid="on-a") == "1001 XML default"
    assert where(b, "+15551111111", dry_run=False, uuid="on-b") == "5000 XML default"  # b's memory still had it
    assert where(a, "+15551111111", dry_run=False) == "5000 XML default"
    b.refresh()
    assert b.lookup(b.rule_for(source="5550100"), "5551111111") is None
    assert [(x.result, x.call_uuid) for x in Audit.select()] == [("consumed", "on-a")]


def test_bulk_import_reloads_the_whole_index(nodes) -> None:
    a, _ = nodes
    rows = "".join(f"+1555{n:07d},{1000 + n % 7},bulk\n" for n in range(300))
    csvio.import_routes(Rule.get(), io.StringIO(rows), replace=True)
    a.refresh()  # 300 + changes > bulk_changes=100: a full load, beside the index serving calls
    assert where(a, "+15551111111") == "1001 XML default"  # the old index still answers meanwhile
    refresh_until(a, lambda: len(a.routes[Rule.get().id]) == 300)
    assert where(a, "+15550000005") == "1005 XML default"


def test_statistics_are_batched_then_written(nodes) -> None:
    a, _ = nodes
    for n in range(3):
        where(a, "+15551111111", dry_run=False, uuid=f"u{n}")
    assert Audit.select().count() == 0
    a.flush()
    assert Route.get(Route.caller_key == "5551111111").use_count == 3
    assert sorted(x.call_uuid for x in Audit.select()) == ["u0", "u1", "u2"]


def test_change_log_is_pruned_after_retention(nodes) -> None:
    a, _ = nodes
    a.change_retention = a.settle = 0.0
    admin.add_route("Customer Routing", "+15553333333", "1003")
    a.refresh()
    a.refresh()  # the second round prunes what the first one read
    assert Change.select().count() == 0


def test_a_change_committed_after_a_later_one_is_still_applied(nodes, db: pw.Database, db_url: str) -> None:
    """Change ids are taken at write time, not commit time: a slow transaction's change shows up late."""
    a, _ = nodes
    rule_id = Rule.get().id
    slow = open_database(db_url)  # a second client whose transaction stays open
    if isinstance(slow, pw.SqliteDatabase):
        pytest.skip("SQLite serialises writers: a change cannot commit before an earlier one")
    slow.connect()
    with slow.atomic():
        slow.execute_sql(f"INSERT INTO dynroute_route (rule_id, caller_key, destination) "
                         f"VALUES ({rule_id}, '5553333333', '1003')")
        admin.add_route("Customer Routing", "+15554444444", "1004")  # a later id, committed first
        a.refresh()
        assert where(a, "+15554444444") == "1004 XML default"
    slow.close()
    a.refresh()
    assert where(a, "+15553333333") == "1003 XML default"


def test_a_stale_index_refuses_to_answer(nodes) -> None:
    a, _ = nodes
    a.fresh_until = 0.1  # as if the database had been unreachable for longer than stale_after
    with pytest.raises(StaleIndex):
        a.lookup(a.rule_for(source="5550100"), "5551111111")
    decision = route_call(a, a.rule_for(source="5550100"), "+15551111111", dry_run=True)
    assert (decision.result, decision.destination) == (Result.ERROR, "5000 XML default")
    assert "not been refreshed" in decision.reason  # the call's outcome says why, not "no rule"
