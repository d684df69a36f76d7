"""Named sources: a rule on ``Main Number`` serves every number behind it, in calls, lookups and the dialplan."""

from __future__ import annotations

import time

import peewee as pw

from fs_dynroute import demo, tokens
from fs_dynroute.fakeswitch.switch import Dialplan, place_call
from fs_dynroute.web import create_app
from tests.serving import CLI, dialplan_for, hosts, running_server, wait_until

NO_MATCH = "5000 XML default"
ACME = "+15551111111"  # the demo's route to 1001
NUMBERS = ("5550100", "18005550100")


def main_number(cli: CLI) -> None:
    """The demo rule moved onto the named source ``Main Number`` (its own number and a toll-free one)."""
    assert cli("source", "add", "Main Number", *NUMBERS).returncode == 0
    cli("rule", "edit", "Customer Routing", "--source", "main number")  # stored as the source spells it


def test_a_named_source_routes_calls_on_each_of_its_numbers(db: pw.Database, db_url: str) -> None:
    demo.load()
    cli = CLI(db_url)
    main_number(cli)
    assert cli.json("rule", "show", "Customer Routing")["source"] == "Main Number"
    assert cli.json("source", "list") == [{"name": "Main Number", "numbers": sorted(NUMBERS),
                                           "rules": ["Customer Routing"]}]
    assert cli.json("source", "show", "Main Number") == cli.json("source", "list")[0]
    assert cli("source", "show", "Main Number").stdout == "Main Number\t18005550100 5550100\trules: Customer Routing\n"
    for number in NUMBERS:  # lookup gives the answer a call gets
        answer = cli.json("lookup", ACME, "--source", number)
        assert (answer["rule"], answer["result"], answer["destination"]) == ("Customer Routing", "match",
                                                                             "1001 XML default")
    assert "no rule serves '5550199'" in cli.refused("lookup", ACME, "--source", "5550199")
    with running_server(db_url) as server:
        plan = cli("dialplan", "--server", hosts(server)).stdout
        assert plan.count("<extension") == 2
        for number in NUMBERS:
            generated = Dialplan.from_xml(plan, number)
            assert ("set", "dynroute_rule=Customer Routing") in generated.actions
            outcome = place_call(generated, ACME, number)
            assert (outcome.ended, outcome.target) == ("transferred", "1001 XML default"), number
            by_number = place_call(dialplan_for(server, NO_MATCH), ACME, number)  # no dynroute_rule: the number
            assert by_number.target == "1001 XML default", number
        assert place_call(dialplan_for(server, NO_MATCH), ACME, "5550199").target == NO_MATCH


def test_a_dialplan_point_that_is_no_number_names_the_rule(db: pw.Database, db_url: str) -> None:
    """A queue's timeout exit transfers to a point name of a source (README: Named sources), or sets
    dynroute_rule itself before the socket: either way the rule decides."""
    demo.load()
    cli = CLI(db_url)
    cli("source", "add", "Sales queue", "sales-timeout")
    cli("rule", "add", "Queue Exit", "--source", "Sales queue", "--digits", "10", "--nomatch-dest", "7000")
    cli("route", "add", "Queue Exit", ACME, "1009")
    with running_server(db_url) as server:
        plan = cli("dialplan", "--server", hosts(server)).stdout
        exit_point = Dialplan.from_xml(plan, "sales-timeout")  # transfer sales-timeout XML public
        assert place_call(exit_point, ACME, "sales-timeout").target == "1009 XML default"
        assert place_call(exit_point, "+15559999999", "sales-timeout").target == "7000 XML default"
        own = place_call(dialplan_for(server, NO_MATCH), ACME, "7001", variables={"dynroute_rule": "Queue Exit"})
        assert own.target == "1009 XML default"


def test_a_source_added_while_serve_runs_reaches_the_next_calls(db: pw.Database, db_url: str) -> None:
    demo.load()
    cli = CLI(db_url)
    with running_server(db_url) as server:
        dialplan = dialplan_for(server, NO_MATCH)
        assert place_call(dialplan, ACME, "18005550100").target == NO_MATCH
        assert place_call(dialplan, ACME, "5550100").target == "1001 XML default"  # single-number rule as before
        main_number(cli)
        written = time.monotonic()
        wait_until(lambda: place_call(dialplan, ACME, "18005550100").target == "1001 XML default", timeout=2.0,
                   what="the new source's number to route")
        print(f"source reached serve in {time.monotonic() - written:.2f} s")
        assert place_call(dialplan, ACME, "5550100").target == "1001 XML default"
        cli("source", "edit", "Main Number", "18005550100")  # 5550100 no longer served
        wait_until(lambda: place_call(dialplan, ACME, "5550100").target == NO_MATCH, timeout=2.0,
                   what="the dropped number to stop routing")


def test_two_enabled_rules_may_not_serve_one_number(db: pw.Database, db_url: str) -> None:
    demo.load()
    cli = CLI(db_url)
    cli("rule", "add", "Toll Free", "--source", "18005550100", "--digits", "10", "--nomatch-dest", "7777")
    cli("route", "add", "Toll Free", ACME, "2001")
    cli("source", "add", "Main Number", *NUMBERS)
    assert ("source: number '5550100' of 'Main Number' is already served by enabled rule 'Customer Routing'"
            in cli.refused("rule", "edit", "Toll Free", "--source", "Main Number"))
    assert ("source: number '18005550100' of 'Main Number' is already served by enabled rule 'Toll Free'"
            in cli.refused("rule", "edit", "Customer Routing", "--source", "Main Number"))
    cli("rule", "disable", "Toll Free")
    cli("rule", "edit", "Customer Routing", "--source", "Main Number")
    assert ("source: '18005550100' is already served by enabled rule 'Customer Routing'"
            in cli.refused("rule", "enable", "Toll Free"))
    cli("source", "edit", "Main Number", "5550100")
    cli("rule", "enable", "Toll Free")
    assert ("already served by enabled rule 'Toll Free'"
            in cli.refused("source", "edit", "Main Number", "5550100", "18005550100"))
    # A CRM puts the number back behind fs_dynroute's back: reported, left out, ignored by the server.
    db.execute_sql(f"INSERT INTO dynroute_source_number (source_id, number) SELECT id, '18005550100' "
                   f"FROM dynroute_source WHERE name = {db.param}", ("Main Number",))
    check = cli("check", ok=False)
    assert check.returncode == 1
    assert "('Toll Free'): source: '18005550100' is already served by enabled rule 'Customer Routing'" in check.stdout
    plan = cli("dialplan")
    assert plan.stdout.count("<extension") == 2 and "'Toll Free' left out: source:" in plan.stderr
    with running_server(db_url) as server:
        dialplan = dialplan_for(server, NO_MATCH)
        assert place_call(dialplan, ACME, "18005550100").target == "1001 XML default"
        assert place_call(dialplan, ACME, "18005550100", variables={"dynroute_rule": "Toll Free"}).target == NO_MATCH


def test_bad_sources_are_refused_with_the_field_named(db: pw.Database, db_url: str) -> None:
    demo.load()
    cli = CLI(db_url)
    assert "number: '555 0100' must be" in cli.refused("source", "add", "Main Number", "555 0100")
    assert "name: source name '${x}' must be" in cli.refused("source", "add", "${x}", "5550100")
    assert "number: '5550100' is given twice" in cli.refused("source", "add", "Main", "5550100", "5550100")
    assert "serves the number '5550100'" in cli.refused("source", "add", "5550100", "5550101")
    cli("source", "add", "Main Number", *NUMBERS)
    assert "already exists" in cli.refused("source", "add", "MAIN NUMBER", "5550111")
    assert "is a number of source 'Main Number'" in cli.refused("source", "add", "Sales", "18005550100")
    cli("source", "add", "Sales", "5550122")
    assert "is the name of a source" in cli.refused("source", "add", "Support", "5550133", "Sales")
    assert "'Nowhere x' is no named source" in cli.refused("rule", "edit", "Customer Routing", "--source",
                                                           "Nowhere x")
    cli("rule", "edit", "Customer Routing", "--source", "Main Number")
    assert "used by rule 'Customer Routing'" in cli.refused("source", "delete", "Main Number")
    assert "source 'Nowhere' does not exist" in cli.refused("source", "delete", "Nowhere")
    assert "source 'Nowhere' does not exist" in cli.refused("source", "show", "Nowhere")
    cli("rule", "edit", "Customer Routing", "--source", "5550100")
    cli("source", "delete", "Main Number")
    assert cli("source", "list").stdout.strip() == "Sales\t5550122\trules: -"
    assert cli.json("lookup", ACME, "--source", "5550100")["result"] == "match"


def test_the_api_manages_sources_with_the_same_checks(db: pw.Database, db_url: str) -> None:
    demo.load()
    client = create_app(db).test_client()
    auth = {"Authorization": f"Bearer {tokens.add('crm')}"}

    def call(method: str, path: str, body: object = None) -> tuple[int, object]:
        answer = client.open(path, method=method, json=body, headers=auth)
        return answer.status_code, answer.get_json() if answer.is_json else None

    assert call("POST", "/api/sources", {"name": "Main Number", "numbers": list(NUMBERS)}) == (
        201, {"name": "Main Number", "numbers": sorted(NUMBERS), "rules": []})
    assert call("POST", "/api/sources", {"name": "Other", "numbers": ["5550100"]}) == (
        409, {"error": "number: '5550100' is a number of source 'Main Number'", "field": "number"})
    status, body = call("PUT", "/api/sources/Main Number", {"numbers": ["555 0100"]})
    assert (status, body["field"]) == (400, "number")
    status, rule = call("PATCH", "/api/rules/Customer Routing", {"source": "Main Number"})
    assert (status, rule["source"], rule["numbers"]) == (200, "Main Number", sorted(NUMBERS))
    status, body = call("DELETE", "/api/sources/Main Number")
    assert (status, body["error"]) == (409, "source 'Main Number' is used by rule 'Customer Routing'")
    assert call("PUT", "/api/sources/Main Number", {"numbers": ["18005550100"]})[0] == 200
    assert call("GET", "/api/sources") == (200, [{"name": "Main Number", "numbers": ["18005550100"],
                                                  "rules": ["Customer Routing"]}])
    assert call("GET", "/api/sources/Main Number") == (200, {"name": "Main Number", "numbers": ["18005550100"],
                                                             "rules": ["Customer Routing"]})
    assert call("GET", "/api/sources/Nowhere") == (404, {"error": "source 'Nowhere' does not exist", "field": None})
    status, answer = call("GET", f"/api/lookup?caller={ACME}&source=18005550100")
    assert (status, answer["result"]) == (200, "match")
    assert call("GET", f"/api/lookup?caller={ACME}&source=5550100")[0] == 404


def test_a_rule_that_loses_one_number_serves_none_in_lookup_as_in_calls(db: pw.Database, db_url: str) -> None:
    demo.load()
    cli = CLI(db_url)
    cli("source", "add", "Main Number", *NUMBERS)
    db.execute_sql("INSERT INTO dynroute_rule (name, source, digits_match, match_destination, no_match_destination, "
                   "delete_after_use, enabled, match_mode, created_at, updated_at) VALUES ('Late', 'Main Number', 10, "
                   "'7001', '7777', FALSE, TRUE, 'exact', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)")  # a CRM's row
    assert "number '5550100' of 'Main Number' is already served by enabled rule 'Customer Routing'" in \
        cli("check", ok=False).stdout
    assert "no rule serves '18005550100'" in cli.refused("lookup", ACME, "--source", "18005550100")
    assert cli.json("lookup", ACME, "--source", "5550100")["rule"] == "Customer Routing"
    with running_server(db_url) as server:
        assert place_call(dialplan_for(server, NO_MATCH), ACME, "18005550100").target == NO_MATCH
        assert place_call(dialplan_for(server, NO_MATCH), ACME, "5550100").target == "1001 XML default"
