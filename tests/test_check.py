"""Bad rows written straight into the tables by a CRM: never a broken target, always reported by ``check``."""

from __future__ import annotations

import peewee as pw

from fs_dynroute import demo
from fs_dynroute.fakeswitch.switch import place_call
from fs_dynroute.models import Rule
from tests.serving import CLI, dialplan_for, running_server

NO_MATCH = "5000 XML default"


def crm_writes(db: pw.Database) -> int:
    """What a careless CRM integration inserts, bypassing fs_dynroute's validation."""
    rule_id = Rule.get().id
    rows = [("+1 (555) 333-3333", "1003", "unnormalised key"),
            ("5554444444", "", "empty destination on a dynamic rule"),
            ("5556666666", "1006\nXML default", "newline in destination"),
            ("5557777777", "sales-queue", "unknown named destination"),
            ("5558888888", "1008", "notes with a \x07 bell")]
    for key, dest, notes in rows:
        db.execute_sql(f"INSERT INTO dynroute_route (rule_id, caller_key, destination, notes) "
                       f"VALUES ({rule_id}, {db.param}, {db.param}, {db.param})", (key, dest, notes))
    return rule_id


def test_crm_rows_never_reach_freeswitch_as_a_broken_target(db: pw.Database, db_url: str) -> None:
    demo.load()
    crm_writes(db)
    with running_server(db_url) as server:
        dialplan = dialplan_for(server, NO_MATCH)
        for caller in ("+15553333333", "+15554444444", "+15556666666", "+15557777777"):
            outcome = place_call(dialplan, caller, "5550100")
            assert (outcome.ended, outcome.target) == ("transferred", NO_MATCH), caller
        assert place_call(dialplan, "+15558888888", "5550100").target == "1008 XML default"  # only notes are odd


def test_check_reports_every_bad_row_and_exits_non_zero(db: pw.Database, db_url: str) -> None:
    cli = CLI(db_url)
    demo.load()
    assert cli("check").stdout.strip() == "ok: 1 rules, 2 routes, 1 destinations"
    crm_writes(db)
    db.execute_sql("INSERT INTO dynroute_destination (name, transfer) VALUES ('bad-dest', '${evil}')")
    db.execute_sql("INSERT INTO dynroute_rule (name, source, digits_match, match_destination, no_match_destination, "
                   "delete_after_use, enabled, match_mode, created_at, updated_at) VALUES ('Dup', '5550100', 25, "
                   "'dynamic', 'nowhere', FALSE, TRUE, 'fuzzy', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)")
    proc = cli("check", ok=False)
    assert proc.returncode == 1
    out = proc.stdout
    for expected in ["destination 2 ('bad-dest'):", "caller_key '+1 (555) 333-3333'): caller_key: '+1 (555) 333-3333' "
                     "is not normalised", "caller_key '5554444444'): destination: required",
                     "'5556666666'): destination:",
                     "'5557777777'): destination: destination 'sales-queue' is not a defined name",
                     "'5558888888'): notes: contains a control character", "digits: must be 1 to 20, not 25",
                     "match_mode: 'fuzzy'", "nomatch-dest: destination 'nowhere'",
                     "source: '5550100' is already served by enabled rule 'Customer Routing'"]:
        assert expected in out, (expected, out)
    assert out.strip().splitlines()[-1] == "10 problems in 2 rules, 7 routes, 2 destinations"


def test_a_rule_name_that_freeswitch_would_expand_never_reaches_it(db: pw.Database, db_url: str) -> None:
    """`set` expands ${...} (even ${system(...)}): such a name is refused, ignored, left out and reported."""
    cli = CLI(db_url)
    demo.load()
    evil = "${system(touch /tmp/owned)}"
    refused = cli("rule", "add", evil, "--source", "5550200", "--digits", "10", "--nomatch-dest", "main-ivr", ok=False)
    assert refused.returncode == 2 and "name:" in refused.stderr
    db.execute_sql("INSERT INTO dynroute_rule (name, source, digits_match, match_destination, no_match_destination, "
                   "delete_after_use, enabled, match_mode, created_at, updated_at) VALUES "
                   f"({db.param}, '5550200', 10, 'dynamic', 'main-ivr', FALSE, TRUE, 'exact', "
                   "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)", (evil,))
    plan = cli("dialplan")
    assert "${system" not in plan.stdout and "5550100" in plan.stdout and "left out" in plan.stderr
    assert "rule name '${system(touch /tmp/owned)}' must be" in cli("check", ok=False).stdout
    with running_server(db_url) as server:
        outcome = place_call(dialplan_for(server, NO_MATCH), "+15551111111", "5550200")
    assert outcome.target == NO_MATCH and "dynroute_rule" not in outcome.variables


def test_an_enabled_rule_on_a_served_source_is_left_out_of_the_dialplan_and_the_server(db: pw.Database,
                                                                                        db_url: str) -> None:
    """Admin refuses a second enabled rule on a source; one a CRM wrote is reported, left out and ignored."""
    cli = CLI(db_url)
    demo.load()
    db.execute_sql("INSERT INTO dynroute_rule (name, source, digits_match, match_destination, no_match_destination, "
                   "delete_after_use, enabled, match_mode, created_at, updated_at) VALUES ('Second', '5550100', 10, "
                   "'dynamic', '7777', FALSE, TRUE, 'exact', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)")
    plan = cli("dialplan")
    assert plan.stdout.count("<extension") == 1 and "'Second' left out: source:" in plan.stderr
    assert "('Second'): source: '5550100' is already served by enabled rule 'Customer Routing'" in \
        cli("check", ok=False).stdout
    with running_server(db_url) as server:
        named = place_call(dialplan_for(server, NO_MATCH), "+15551111111", "5550100",
                           variables={"dynroute_rule": "Second"})
        by_source = place_call(dialplan_for(server, NO_MATCH), "+15551111111", "5550100")
    assert (named.target, named.variables.get("dynroute_result")) == (NO_MATCH, None)
    assert by_source.target == "1001 XML default"
