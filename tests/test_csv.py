"""CSV import/export: all-or-nothing validation with line numbers, upserts, replace, exact round trip."""

from __future__ import annotations

import io

import peewee as pw
import pytest

from fs_dynroute import admin, csvio
from fs_dynroute.models import Route


@pytest.fixture
def rule(db: pw.Database):
    admin.add_destination("main-ivr", "5000 XML default")
    return admin.add_rule("Customer Routing", admin.RuleSpec(source="5550100", digits_match=10,
                                                            no_match_destination="main-ivr"))


def stored() -> list[tuple[str, str, str, object]]:
    return [(r.caller_key, r.destination, r.notes, r.expires_at) for r in Route.select().order_by(Route.caller_key)]


def test_crm_export_with_header_and_quoted_notes(rule) -> None:
    text = ('caller_id,destination,notes,expires_at\n'
            '+1 (555) 111-1111,1001,"Acme, Inc.",\n'
            '15552222222,main-ivr,"line one ""quoted""",2030-01-01T00:00:00Z\n'
            '\n'
            '5553333333,1003 XML sales\n')
    assert csvio.import_routes(rule, io.StringIO(text)) == 3
    assert [r[:3] for r in stored()] == [("5551111111", "1001", "Acme, Inc."),
                                         ("5552222222", "main-ivr", 'line one "quoted"'),
                                         ("5553333333", "1003 XML sales", "")]


def test_one_bad_row_imports_nothing_and_every_bad_line_is_named(rule) -> None:
    admin.add_route("Customer Routing", "+15559999999", "1009", "kept")
    text = ("+15551111111,1001,ok\n"
            "anonymous,1001,withheld\n"
            "+15552222222,,no destination\n"
            "+15553333333,nowhere,unknown name\n"
            "1-555-111-1111,1002,duplicate of line 1\n"
            "+15554444444,1001,x,not-a-date\n"
            "+15555555555,1001,a,b,c\n"
            "+15556666666,\"1001\nXML\",newline\n")
    with pytest.raises(csvio.RouteImportError) as err:
        csvio.import_routes(rule, io.StringIO(text), replace=True)
    lines = {n: why for n, why in err.value.problems}
    assert sorted(lines) == [2, 3, 4, 5, 6, 7, 9]
    assert "caller_id" in lines[2] and "destination: required" in lines[3] and "nowhere" in lines[4]
    assert "line 1" in lines[5] and "expires" in lines[6] and "columns" in lines[7]
    assert "control character" in lines[9]
    assert "nothing imported" in str(err.value)
    assert [r[0] for r in stored()] == ["5559999999"]  # untouched, even with --replace


def test_import_updates_existing_keys_and_replace_drops_the_rest(rule) -> None:
    csvio.import_routes(rule, io.StringIO("+15551111111,1001,old\n+15552222222,1002,other\n"))
    route = Route.get(Route.caller_key == "5551111111")
    Route.update(use_count=5).where(Route.id == route.id).execute()
    csvio.import_routes(rule, io.StringIO("5551111111,1005,new\n"))
    assert [(r[0], r[1], r[2]) for r in stored()] == [("5551111111", "1005", "new"), ("5552222222", "1002", "other")]
    assert Route.get(Route.caller_key == "5551111111").use_count == 5  # history kept on update
    csvio.import_routes(rule, io.StringIO("5551111111,1005,new\n"), replace=True)
    assert [r[0] for r in stored()] == ["5551111111"]


def test_export_then_import_round_trips_exactly(rule) -> None:
    text = ('+15551111111,1001,"Acme, ""the"" account",2031-05-06T07:08:09\n'
            '+15552222222,main-ivr,Widget Inc,\n'
            '+15553333333,1003 XML sales,Ünïcode notes ✓,\n')
    csvio.import_routes(rule, io.StringIO(text))
    before = stored()
    exported = io.StringIO()
    assert csvio.export_routes(rule, exported) == 3
    csvio.import_routes(rule, io.StringIO(exported.getvalue()), replace=True)
    assert stored() == before
    again = io.StringIO()
    csvio.export_routes(rule, again)
    assert again.getvalue() == exported.getvalue()
    assert exported.getvalue().splitlines()[0] == "caller_id,destination,notes,expires_at"


def test_many_rows_sharing_a_few_destinations(rule) -> None:
    text = "".join(f"+1555000{n:04d},{'main-ivr' if n % 2 else '1001'},row {n}\n" for n in range(1200))
    assert csvio.import_routes(rule, io.StringIO(text)) == 1200  # more than one insert batch
    assert Route.select().where(Route.destination == "main-ivr").count() == 600
    with pytest.raises(csvio.RouteImportError) as err:
        csvio.import_routes(rule, io.StringIO(text + "+15559999999,,missing\n"))
    assert [n for n, _ in err.value.problems] == [1201]


def test_a_utf8_file_with_a_bom_and_crlf_line_ends_imports(rule) -> None:
    """What Excel's 'CSV UTF-8' writes: a byte-order mark, a header, CRLF."""
    data = "\ufeffcaller_id,destination,notes\r\n+15551111111,1001,Müller ✓\r\n".encode("utf-8")
    assert csvio.import_routes(rule, csvio.utf8_lines(io.BytesIO(data))) == 1
    assert stored()[0][:3] == ("5551111111", "1001", "Müller ✓")


def test_replace_with_an_empty_file_keeps_every_route_unless_allowed(rule) -> None:
    csvio.import_routes(rule, io.StringIO("+15551111111,1001,x\n"))
    with pytest.raises(admin.UserError, match="would delete all 1 routes .* --allow-empty"):
        csvio.import_routes(rule, io.StringIO("caller_id,destination,notes\n"), replace=True)
    assert len(stored()) == 1
    assert csvio.plan_import(rule, io.StringIO("+15552222222,1002,y\n"), replace=True) == csvio.ImportPlan(1, 0, 1)
    assert csvio.import_routes(rule, io.StringIO(""), replace=True, allow_empty=True) == 0
    assert stored() == []


def test_a_rule_changed_while_the_file_is_checked_imports_nothing(rule) -> None:
    """The file is checked before the write lock is taken; what it was checked against is checked again under it."""
    def crm_export():
        yield "+15551111111,1001,x\n"
        admin.edit_rule("Customer Routing", admin.RuleSpec(digits_match=11))  # another administrator, meanwhile
        yield "+15552222222,1002,y\n"

    with pytest.raises(admin.UserError, match="changed while the file was checked; nothing imported"):
        csvio.import_routes(rule, crm_export())
    assert stored() == []
