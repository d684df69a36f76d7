"""One verdict from three readers: on a table of bad rows, admin refuses, check reports and the server skips.

Each row is written straight into the tables, as a CRM would. ``admin`` must refuse the same row (it raises
the first problem, naming the field), ``fs-dynroute check`` must report it under the same field, and the
server's loader must leave it out: a bad rule serves no call (the dialplan default stands), a bad route
sends its caller to the rule's No Match Destination.
"""

from __future__ import annotations

import peewee as pw
import pytest

from fs_dynroute import admin, demo
from fs_dynroute.check import problems
from fs_dynroute.fakeswitch.switch import place_call
from fs_dynroute.models import Rule, utcnow
from tests.serving import dialplan_for, running_server

NOW = utcnow().isoformat(" ")
DIALPLAN_DEFAULT = "9999 XML default"  # what stands when the server leaves a call alone
NO_MATCH = "5000 XML default"  # the demo rule's No Match Destination (main-ivr)

GOOD_RULE = {"name": "Good", "source": "5550200", "digits_match": 10, "match_destination": "dynamic",
             "no_match_destination": "main-ivr", "match_mode": "exact"}

# (what is wrong, the columns that differ from GOOD_RULE, the field every reader names)
BAD_RULES = [
    ("an expansion in the name", {"name": "${system(id)}"}, "name:"),
    ("the multiset separator in the name", {"name": "A|dynroute_target=1"}, "name:"),
    ("a trailing space in the name, which multiset strips", {"name": "Trailing "}, "name:"),
    ("a space in the source", {"source": "555 0203"}, "source:"),
    ("digits 0", {"digits_match": 0}, "digits:"),
    ("digits 21", {"digits_match": 21}, "digits:"),
    ("an unknown match mode", {"match_mode": "fuzzy"}, "match_mode:"),
    ("an undefined No Match name", {"no_match_destination": "nowhere"}, "nomatch-dest:"),
    ("the separator in the No Match Destination", {"no_match_destination": "5000|x"}, "nomatch-dest:"),
    ("a C1 control (NEL) in the match destination", {"match_destination": "1001\x85"}, "match-dest:"),
    ("a source an enabled rule already serves", {"source": "5550100"}, "source:"),
]

# (what is wrong, caller_key, destination, admin's field, check's field); all on the demo rule (digits 10, dynamic)
BAD_ROUTES = [
    ("Arabic-Indic digits", "٥٥٥١١١١١١١", "1001", "caller_id:", "caller_key:"),
    ("superscript digits", "555¹¹¹¹¹¹¹", "1001", "caller_id:", "caller_key:"),
    ("fewer digits than the rule's", "55533333", "1001", "caller_id:", "caller_key:"),
    ("an empty destination on a dynamic rule", "5554444444", "", "destination:", "destination:"),
    ("the separator in the destination", "5555555555", "1005|dynroute_result=match", "destination:",
     "destination:"),
    ("a C1 control (NEL) in the destination", "5556666666", "1006\x85", "destination:", "destination:"),
    ("an undefined named destination", "5557777777", "sales-queue", "destination:", "destination:"),
    ("a named destination whose transfer holds the separator", "5558888888", "piped", "destination:",
     "destination:"),
    ("a destination longer than 255 characters", "5559999999", "1" * 256, "destination:", "destination:"),
]


def insert(db: pw.Database, table: str, row: dict[str, object]) -> bool:
    """Write a row as a CRM would; False if the database itself refuses it (a value wider than its column)."""
    sql = (f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join([db.param] * len(row))})")
    try:
        with db.atomic():
            db.execute_sql(sql, tuple(row.values()))
    except pw.DatabaseError:
        return False
    return True


def rule_row(n: int, columns: dict[str, object]) -> dict[str, object]:
    row = {**GOOD_RULE, "name": f"Bad {n}", "source": f"55503{n:02d}", **columns}
    return {**row, "delete_after_use": False, "enabled": True, "created_at": NOW, "updated_at": NOW}


def test_admin_check_and_the_server_agree_on_every_bad_row(db: pw.Database, db_url: str) -> None:
    demo.load()
    insert(db, "dynroute_destination", {"name": "piped", "transfer": "1001|dynroute_target=evil"})
    rules = [rule_row(n, columns) for n, (_, columns, _) in enumerate(BAD_RULES)]
    for row in rules:
        assert insert(db, "dynroute_rule", row)
    rule_id = Rule.get(Rule.name == demo.RULE).id
    stored = [insert(db, "dynroute_route", {"rule_id": rule_id, "caller_key": key, "destination": dest})
              for _, key, dest, _, _ in BAD_ROUTES]
    assert stored[-1] == (db_url.startswith("sqlite")), "only SQLite stores text wider than its column"

    # admin: refuses each row, naming the field, and writes nothing
    for (why, columns, field), row in zip(BAD_RULES, rules):
        with pytest.raises(admin.UserError) as refused:
            admin.edit_rule(str(row["name"]), admin.RuleSpec())  # the stored row as admin would write it
        assert str(refused.value).startswith(field), why
        if "match_mode" not in columns:
            spec = admin.RuleSpec(source=str(row["source"]).replace("55503", "55504"), digits_match=row["digits_match"],
                                  no_match_destination=row["no_match_destination"],
                                  match_destination=row["match_destination"])
            if field == "source:":
                spec.source = str(row["source"])
            with pytest.raises(admin.UserError, match=f"^{field}"):
                admin.add_rule(f"New {row['name']}" if field != "name:" else f"X{row['name']}", spec)
    with pytest.raises(admin.UserError, match="destination"):
        admin.add_destination("piped2", "1001|dynroute_target=evil")
    for _why, key, dest, admin_field, _ in BAD_ROUTES:
        with pytest.raises(admin.UserError, match=f"^{admin_field}"):
            admin.add_route(demo.RULE, key, dest)

    # check: reports each row under the same field
    report = list(problems("default"))
    for (why, _, field), row in zip(BAD_RULES, rules):
        assert any(f"({row['name']!r}): {field}" in line for line in report), (why, report)
    assert any("('piped'): destination '1001|dynroute_target=evil' contains '|'" in line for line in report)
    for (why, key, _, _, field), was_stored in zip(BAD_ROUTES, stored):
        assert any(f"caller_key {key!r}): {field}" in line for line in report) == was_stored, (why, report)

    # the server: a bad rule serves no call, a bad route sends its caller to No Match
    with running_server(db_url) as server:
        plan = dialplan_for(server, DIALPLAN_DEFAULT)
        for (why, columns, _), row in zip(BAD_RULES, rules):
            by_name = place_call(plan, "+15551111111", str(row["source"]),
                                 variables={"dynroute_rule": str(row["name"])})
            assert (by_name.target, by_name.variables.get("dynroute_result")) == (DIALPLAN_DEFAULT, None), why
            if "source" not in columns:
                assert place_call(plan, "+15551111111", str(row["source"])).target == DIALPLAN_DEFAULT, why
        # the clashing rule is skipped; the rule it clashed with still serves its source
        assert place_call(plan, "+15551111111", "5550100").target == "1001 XML default"
        for why, key, _, _, _ in BAD_ROUTES:
            caller = key if not key.isascii() or len(key) < 10 else f"+1{key}"
            outcome = place_call(plan, caller, "5550100")
            assert (outcome.target, outcome.variables.get("dynroute_result")) == (NO_MATCH, "nomatch"), why
