"""The CRM's JSON API on each backend: every endpoint, every error code, token scopes, paging, imports.

Requests go through Flask's test client into the real application over a real database; the last
test drives a real ``fs-dynroute serve`` process with the fake FreeSWITCH.
"""

from __future__ import annotations

import base64
import json
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import peewee as pw
import pytest
from flask.testing import FlaskClient

from fs_dynroute import demo, sources, tokens
from fs_dynroute.admin import ValidRoute, get_rule, upsert_routes
from fs_dynroute.database import open_database
from fs_dynroute.fakeswitch.switch import Dialplan, place_call
from fs_dynroute.models import Audit, Route, Rule, Token, utcnow
from fs_dynroute.web import create_app
from tests.serving import CLI, ServeProcess

RULE = demo.RULE
SOURCE = "Toll Free"  # a named source the client's database holds beside the demo rule
ROUTES = f"/api/rules/{RULE}/routes"


class Api:
    """The test client with a token: ``api.get(path)`` -> (status, JSON body)."""

    def __init__(self, client: FlaskClient, token: str | None) -> None:
        self.client, self.token = client, token

    def __call__(self, method: str, path: str, body: object = None, **kw: object) -> tuple[int, object]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        if body is not None and "data" not in kw:
            kw["json"] = body
        answer = self.client.open(path, method=method, headers=headers, **kw)
        assert "Traceback" not in answer.get_data(as_text=True)
        if answer.status_code == 204:
            return 204, answer.get_data(as_text=True)
        return answer.status_code, (answer.get_json() if answer.is_json else answer.get_data(as_text=True))

    def get(self, path: str, **kw: object) -> tuple[int, object]:
        return self("GET", path, **kw)


@pytest.fixture
def client(db: pw.Database) -> FlaskClient:
    with db.atomic():
        demo.load()
        sources.add_source(SOURCE, ["18005550100"])
    return create_app(db).test_client()


@pytest.fixture
def api(client: FlaskClient) -> Api:
    return Api(client, tokens.add("crm"))


@pytest.fixture
def reader(client: FlaskClient) -> Api:
    return Api(client, tokens.add("dashboard", read_only=True))


def api_rules(client: FlaskClient) -> Iterator[tuple[str, str]]:
    """Every (method, path) the application serves under /api, with sample path values."""
    for rule in client.application.url_map.iter_rules():
        if not rule.rule.startswith("/api/") or rule.endpoint.startswith("openapi"):
            continue
        name = SOURCE if rule.rule.startswith("/api/sources/") else RULE
        path = re.sub(r"<(string:)?name>", name, rule.rule).replace("<caller_id>", "5551111111")
        path += "?source=5550100&caller=5551111111" if path == "/api/lookup" else ""
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield method, path


# -- tokens and scopes ----------------------------------------------------------------------------------------

def test_every_api_endpoint_refuses_a_request_without_a_valid_token(client: FlaskClient) -> None:
    endpoints = list(api_rules(client))
    assert len(endpoints) >= 17
    for token in (None, "fsdr_000000000000_guess", "not a token"):
        for method, path in endpoints:
            status, body = Api(client, token)(method, path, {})
            assert status == 401, (method, path, token)
            assert "token" in body["error"]
    assert Rule.select().count() == 1 and Route.select().count() == 2


def test_a_read_only_token_reads_everything_and_writes_nothing(client: FlaskClient, reader: Api) -> None:
    before = (list(Rule.select().dicts()), list(Route.select().dicts()))
    for method, path in api_rules(client):
        status, body = reader(method, path, {})
        if method == "GET":
            assert status == 200, (path, body)
        else:
            assert (status, body["error"]) == (403, "this token is read-only"), (method, path)
    assert (list(Rule.select().dicts()), list(Route.select().dicts())) == before


def test_a_revoked_token_stops_at_once_and_only_its_hash_is_stored(api: Api) -> None:
    assert api.get("/api/rules")[0] == 200
    secret = api.token.split("_", 2)[2]  # fsdr_<key id>_<secret>: the secret may hold "_" itself
    stored = Token.get(Token.name == "crm")
    assert secret not in json.dumps(list(Token.select().dicts()), default=str) and len(stored.digest) == 64
    assert stored.last_used is not None
    tokens.revoke("crm")
    assert api.get("/api/rules")[0] == 401
    assert api.token.startswith("fsdr_") and tokens.verify(api.token[:-1] + "x") is None


def test_token_commands_print_the_secret_once_and_list_no_secret(db_url: str) -> None:
    cli = CLI(db_url)
    cli("initdb")
    added = cli("token", "add", "crm", "--read-only")
    token = added.stdout.strip()
    assert token.startswith("fsdr_") and "shown only this once" in added.stderr
    listed = cli("token", "list", "--json").stdout
    assert token.split("_", 2)[2] not in listed
    assert [(t["name"], t["read_only"]) for t in json.loads(listed)] == [("crm", True)]
    again = cli("token", "add", "crm", ok=False)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert "revoked" in cli("token", "revoke", "crm").stdout
    assert cli("token", "revoke", "crm", ok=False).returncode == 2


# -- rules ----------------------------------------------------------------------------------------------------

def test_rule_lifecycle(api: Api) -> None:
    status, rule = api("POST", "/api/rules", {"name": "Callbacks", "source": "5550200", "digits_match": 10,
                                              "no_match_destination": "main-ivr", "delete_after_use": True})
    assert status == 201
    assert {k: rule[k] for k in ("match_destination", "match_mode", "enabled", "delete_after_use", "routes")} == \
        {"match_destination": "dynamic", "match_mode": "exact", "enabled": True, "delete_after_use": True, "routes": 0}
    assert [r["name"] for r in api.get("/api/rules")[1]] == ["Callbacks", RULE]
    assert api("PATCH", "/api/rules/Callbacks", {"enabled": False})[1]["enabled"] is False
    status, rule = api("PATCH", "/api/rules/Callbacks", {"match_mode": "prefix", "match_destination": "1009"})
    assert (status, rule["match_mode"], rule["match_destination"]) == (200, "prefix", "1009")
    assert api.get("/api/rules/Callbacks")[1]["enabled"] is False
    assert api("DELETE", "/api/rules/Callbacks")[0] == 204
    assert api.get("/api/rules/Callbacks")[0] == 404


@pytest.mark.parametrize("body, status, field", [
    ({"source": "5550300", "digits_match": 10, "no_match_destination": "main-ivr"}, 400, "name"),
    ({"name": "X", "digits_match": 10, "no_match_destination": "main-ivr"}, 400, "source"),
    ({"name": "X", "source": "5550300", "digits_match": 0, "no_match_destination": "main-ivr"}, 400, "digits_match"),
    ({"name": "X", "source": "5550300", "digits_match": "ten", "no_match_destination": "main-ivr"}, 400,
     "digits_match"),
    ({"name": "X", "source": "5550300", "digits_match": 10, "no_match_destination": "nowhere"}, 400,
     "no_match_destination"),
    ({"name": "X", "source": "5550300", "digits_match": 10, "no_match_destination": "1001 XML ${system(id)}"}, 400,
     "no_match_destination"),
    ({"name": "X", "source": "5550300", "digits_match": 10, "no_match_destination": "main-ivr",
      "match_mode": "fuzzy"}, 400, "match_mode"),
    ({"name": "X", "source": "5550300", "digits_match": 10, "no_match_destination": "main-ivr", "colour": 1}, 400,
     "colour"),
    ({"name": "${x}", "source": "5550300", "digits_match": 10, "no_match_destination": "main-ivr"}, 400, "name"),
    ({"name": RULE, "source": "5550300", "digits_match": 10, "no_match_destination": "main-ivr"}, 409, "name"),
    ({"name": "X", "source": "5550100", "digits_match": 10, "no_match_destination": "main-ivr"}, 409, "source"),
])
def test_a_refused_rule_names_its_field_and_writes_nothing(api: Api, body: dict, status: int, field: str) -> None:
    got, answer = api("POST", "/api/rules", body)
    assert (got, answer["field"]) == (status, field), answer
    assert answer["error"]
    assert Rule.select().count() == 1


def test_rule_edits_are_refused_as_the_cli_refuses_them(api: Api) -> None:
    assert api("PATCH", "/api/rules/Nope", {"enabled": False})[0] == 404
    assert api("DELETE", "/api/rules/Nope")[0] == 404
    status, body = api("PATCH", f"/api/rules/{RULE}", {"digits_match": 7})
    assert (status, body["field"]) == (400, "digits_match") and "export" in body["error"]
    assert api("PATCH", f"/api/rules/{RULE}", {"name": "Renamed"})[0] == 400
    assert get_rule(RULE).digits_match == 10


# -- routes ---------------------------------------------------------------------------------------------------

def test_route_upsert_get_and_delete_by_caller_id_in_any_format(api: Api) -> None:
    status, route = api("PUT", f"{ROUTES}/+1 (555) 333-4444", {"destination": "1003", "notes": "Initech",
                                                               "expires": "48h"})
    assert (status, route["caller_id"], route["destination"], route["use_count"]) == (200, "5553334444", "1003", 0)
    assert route["expires_at"] is not None
    status, route = api("PUT", f"{ROUTES}/15553334444", {"destination": "main-ivr"})
    assert (route["destination"], route["notes"], route["expires_at"]) == ("main-ivr", "", None)
    assert api.get(f"{ROUTES}/+15553334444")[1]["destination"] == "main-ivr"
    assert api("POST", ROUTES, {"caller_id": "555-777-8888", "destination": "1004"})[0] == 201
    assert api("DELETE", f"{ROUTES}/(555) 333-4444")[0] == 204
    assert api.get(f"{ROUTES}/5553334444")[0] == 404
    assert api("DELETE", f"{ROUTES}/5553334444")[0] == 404
    assert api.get("/api/rules/Nope/routes")[0] == 404


@pytest.mark.parametrize("caller_id, body, field", [
    ("anonymous", {"destination": "1001"}, "caller_id"),
    ("555", {"destination": "1001"}, "caller_id"),
    ("5551112222", {}, "destination"),
    ("5551112222", {"destination": "nowhere"}, "destination"),
    ("5551112222", {"destination": "1001", "notes": "a\nb"}, "notes"),
    ("5551112222", {"destination": "1001", "expires": "soon"}, "expires"),
    ("5551112222", {"destination": 1001}, "destination"),
])
def test_a_refused_route_names_its_field_and_writes_nothing(api: Api, caller_id: str, body: dict, field: str) -> None:
    status, answer = api("PUT", f"{ROUTES}/{caller_id}", body)
    assert (status, answer["field"]) == (400, field), answer
    assert Route.select().count() == 2


def add_routes(count: int) -> list[str]:
    keys = [f"555{n:07d}" for n in range(count)]
    upsert_routes(get_rule(RULE), (ValidRoute(k, "1001", f"customer {n}", None) for n, k in enumerate(keys)),
                  batch=1000)
    return keys


def test_keyset_paging_walks_100k_routes_in_key_order(api: Api, db: pw.Database) -> None:
    Route.delete().execute()
    with db.atomic():
        keys = add_routes(100_000)
    seen: list[str] = []
    after, pages = "", 0
    while True:
        status, page = api.get(f"{ROUTES}?limit=1000&after={after}")
        assert status == 200
        seen += [r["caller_id"] for r in page["routes"]]
        pages += 1
        if page["next"] is None:
            break
        after = page["next"]
    assert seen == keys and pages == 100
    middle = api.get(f"{ROUTES}?limit=3&after=5550049999")[1]
    assert [r["caller_id"] for r in middle["routes"]] == ["5550050000", "5550050001", "5550050002"]
    assert middle["next"] == "5550050002"
    found = api.get(f"{ROUTES}?q=customer 99999")[1]
    assert [r["caller_id"] for r in found["routes"]] == ["5550099999"] and found["next"] is None
    by_digits = api.get(f"{ROUTES}?q=%2B1 555 009-9998&limit=5")[1]
    assert [r["caller_id"] for r in by_digits["routes"]] == ["5550099998"]
    assert api.get(f"{ROUTES}?limit=0")[0] == 400 and api.get(f"{ROUTES}?limit=1001")[1]["field"] == "limit"


def test_import_lists_every_bad_line_with_its_number_and_imports_nothing(api: Api) -> None:
    body = ("caller_id,destination,notes\n+15553330001,1001,ok\nanonymous,1001,withheld\n"
            "+15553330003,nowhere,bad destination\n+15553330001,1002,again\n+15553330005,1001,ok\n")
    status, answer = api("POST", f"{ROUTES}:import", data=body, content_type="text/csv")
    assert status == 400 and answer["error"] == "3 bad lines; nothing imported"
    assert [(p["line"], p["error"].split(":")[0]) for p in answer["lines"]] == \
        [(3, "caller_id"), (4, "destination"), (5, "caller_id")]
    assert "line 2" in answer["lines"][2]["error"]
    assert Route.select().count() == 2

    status, answer = api("POST", f"{ROUTES}:import", [{"caller_id": "+15553330001", "destination": "1001"},
                                                     {"caller_id": "x", "destination": "1001"}])
    assert (status, [p["line"] for p in answer["lines"]]) == (400, [2])
    assert api("POST", f"{ROUTES}:import", {"not": "a list"})[0] == 400
    assert api("POST", f"{ROUTES}:import", [{"caller_id": 5553330001}])[0] == 400

    good = [{"caller_id": f"+1555333000{n}", "destination": "1001", "notes": f"n{n}"} for n in range(3)]
    assert api("POST", f"{ROUTES}:import", good) == (200, {"imported": 3})
    assert Route.select().count() == 5
    status, answer = api("POST", f"{ROUTES}:import?replace=true", data="5559990000,1001,only\n",
                         content_type="text/csv")
    assert (status, answer) == (200, {"imported": 1})
    assert [r.caller_key for r in Route.select()] == ["5559990000"]


def test_export_is_csv_that_imports_back_to_the_same_routes(api: Api) -> None:
    status, csv_text = api.get(f"{ROUTES}:export")
    assert status == 200 and csv_text.splitlines() == [
        "caller_id,destination,notes,expires_at", "5551111111,1001,Acme account,", "5552222222,1002,Widget Inc,"]
    before = list(Route.select(Route.caller_key, Route.destination, Route.notes).tuples())
    assert api("POST", f"{ROUTES}:import?replace=true", data=csv_text, content_type="text/csv")[0] == 200
    assert list(Route.select(Route.caller_key, Route.destination, Route.notes).tuples()) == before


# -- destinations, lookup, statistics, the document -------------------------------------------------------------

def test_destinations(api: Api) -> None:
    assert api.get("/api/destinations") == (200, [{"name": "main-ivr", "transfer": "5000 XML default"}])
    assert api("POST", "/api/destinations", {"name": "vip", "transfer": "6000 XML default"})[0] == 201
    assert api("PUT", f"{ROUTES}/5553334444", {"destination": "vip"})[0] == 200
    status, answer = api("DELETE", "/api/destinations/vip")
    assert status == 409 and "used by routes" in answer["error"]
    assert api("DELETE", "/api/destinations/main-ivr")[0] == 409
    assert api("DELETE", "/api/destinations/nope")[0] == 404
    assert api("POST", "/api/destinations", {"name": "bad", "transfer": "1 XML ${x}"})[1]["field"] == "transfer"
    assert api("POST", "/api/destinations", {"name": "dynamic", "transfer": "1001"})[1]["field"] == "name"
    assert api("POST", "/api/destinations", {"name": "x"})[1]["field"] == "transfer"
    assert api("DELETE", f"{ROUTES}/5553334444")[0] == 204
    assert api("DELETE", "/api/destinations/vip")[0] == 204


def test_lookup_answers_what_the_cli_answers(api: Api, db_url: str) -> None:
    for caller in ("+1 555 111 1111", "+15559999999", "anonymous"):
        status, answer = api.get(f"/api/lookup?source=5550100&caller={caller.replace('+', '%2B')}")
        assert status == 200
        assert answer == CLI(db_url).json("lookup", "--source", "5550100", caller)
    assert api.get(f"/api/lookup?rule={RULE}&caller=5551111111")[1]["destination"] == "1001 XML default"
    assert api.get("/api/lookup?source=5550999&caller=5551111111")[0] == 404
    assert api.get("/api/lookup?caller=5551111111")[1]["field"] == "source"
    assert api.get("/api/lookup?source=5550100")[1]["field"] == "caller"


def test_statistics_count_the_audit_rows_per_rule_and_result(api: Api) -> None:
    now = utcnow()
    rows = [("match", now), ("match", now), ("consumed", now), ("error", now), ("match", now.replace(year=2020))]
    for result, at in rows:
        Audit.create(rule_name=RULE, caller_key="5551111111", destination="1001 XML default", result=result, at=at)
    status, s = api.get(f"/api/rules/{RULE}/stats")
    assert status == 200
    assert (s["calls"], s["match"], s["consumed"], s["error"], s["nomatch"]) == (5, 3, 1, 1, 0)
    assert (s["calls_today"], s["hits_today"], s["hit_rate_today"], s["last_hit"]) == (4, 3, 0.75, now.isoformat())
    assert api.get("/api/stats")[1] == {RULE: s}
    assert api.get("/api/rules/Nope/stats")[0] == 404
    page_session(api.client, api.token)
    assert api.client.get("/stats.json").get_json() == {
        RULE: {"calls_today": 4, "hit_rate_today": 0.75, "last_hit": now.isoformat(sep=" ")}}
    assert "75%" in api.client.get("/").get_data(as_text=True)


def test_the_openapi_document_describes_every_endpoint(client: FlaskClient) -> None:
    doc = client.get("/api/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    described = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    def template(path: str) -> str:  # the sample values back to the path's parameters
        return re.sub(f"{RULE}|{SOURCE}", "{name}", path.split("?")[0]).replace("5551111111", "{caller_id}")

    served = {(m, template(p)) for m, p in api_rules(client)}
    assert served == described
    assert doc["components"]["securitySchemes"]


def test_health_and_metrics(client: FlaskClient) -> None:
    assert client.get("/health").get_json()["status"] == "ok"
    text = client.get("/metrics").get_data(as_text=True)
    assert f'dynroute_routes{{rule="{RULE}"}} 2.0' in text and 'dynroute_rules{state="enabled"} 1.0' in text


def test_an_api_write_routes_the_next_call_through_a_running_server(api: Api, db_url: str, tmp_path: Path) -> None:
    node = ServeProcess(db_url)
    try:
        plan = Dialplan.recommended(f"127.0.0.1:{node.port}", "5000 XML default")
        assert place_call(plan, "+15557654321", "5550100", stuck_after=3.0).target == "5000 XML default"
        assert api("PUT", f"{ROUTES}/+15557654321", {"destination": "1042"})[0] == 200
        written = time.monotonic()
        while (target := place_call(plan, "+15557654321", "5550100", stuck_after=3.0).target) != "1042 XML default":
            assert time.monotonic() - written < 2.0, f"the call still went to {target}"
        assert api("PATCH", f"/api/rules/{RULE}", {"enabled": False})[0] == 200
        written = time.monotonic()
        while place_call(plan, "+15557654321", "5550100", stuck_after=3.0).target != "5000 XML default":
            assert time.monotonic() - written < 2.0
    finally:
        node.kill()


# -- mod_xml_curl ----------------------------------------------------------------------------------------------

def fetch(client: FlaskClient, token: str | None, number: str, **fields: str) -> tuple[int, str]:
    """A dialplan fetch as mod_xml_curl posts it (form-encoded, Basic credentials from gateway-credentials)."""
    form = {"section": "dialplan", "tag_name": "", "key_name": "", "key_value": "", "Event-Name": "REQUEST_PARAMS",
            "Hunt-Context": "public", "Hunt-Destination-Number": number, "Caller-Context": "public",
            "Caller-Destination-Number": number, **fields}
    auth = {"Authorization": "Basic " + base64.b64encode(f"freeswitch:{token}".encode()).decode()} if token else {}
    answer = client.post("/freeswitch/dialplan", data=form, headers=auth)
    return answer.status_code, answer.get_data(as_text=True)


def extensions(xml_text: str) -> list[bytes]:
    return [ET.tostring(e) for e in ET.fromstring(xml_text).iter("extension")]


def test_mod_xml_curl_gets_the_extension_the_generated_file_holds(client: FlaskClient, api: Api, db_url: str,
                                                                   tmp_path: Path) -> None:
    status, answer = fetch(client, api.token, "5550100")
    assert status == 200
    root = ET.fromstring(answer)
    assert (root.tag, root.get("type"), root.find("section").get("name")) == ("document", "freeswitch/xml", "dialplan")
    assert root.find("section/context").get("name") == "public"
    generated = CLI(db_url)("dialplan").stdout
    assert extensions(answer) == extensions(generated)
    assert Dialplan.from_xml(answer, "5550100", "public").actions == Dialplan.from_xml(generated, "5550100").actions

    node = ServeProcess(db_url)
    try:
        status, answer = fetch(client, api.token, "5550100", **{"Hunt-Context": "", "Hunt-Destination-Number": ""})
        live = Dialplan.from_xml(answer.replace("127.0.0.1:8084", f"127.0.0.1:{node.port}"), "5550100", "public")
        assert place_call(live, "+15551111111", "5550100", stuck_after=3.0).target == "1001 XML default"
        assert place_call(live, "+15559999999", "5550100", stuck_after=3.0).target == "5000 XML default"
    finally:
        node.kill()


def test_mod_xml_curl_follows_the_rules_as_they_change(client: FlaskClient, api: Api) -> None:
    assert "5550200" not in fetch(client, api.token, "5550200")[1]
    assert api("POST", "/api/rules", {"name": "Night", "source": "5550200", "digits_match": 10,
                                      "no_match_destination": "1009"})[0] == 201
    actions = Dialplan.from_xml(fetch(client, api.token, "5550200")[1], "5550200", "public").actions
    assert ("set", "dynroute_rule=Night") in actions and ("set", "dynroute_target=1009 XML default") in actions
    assert api("PATCH", "/api/rules/Night", {"enabled": False})[0] == 200
    assert 'status="not found"' in fetch(client, api.token, "5550200")[1]


@pytest.mark.parametrize("fields", [{"section": "directory"}, {"Hunt-Context": "default", "Caller-Context": "default"},
                                    {"Hunt-Destination-Number": "5550999", "Caller-Destination-Number": "5550999"}])
def test_mod_xml_curl_answers_not_found_for_anything_else(client: FlaskClient, api: Api, fields: dict) -> None:
    status, answer = fetch(client, api.token, "5550100", **fields)
    root = ET.fromstring(answer)
    assert status == 200 and root.find("section").get("name") == "result"
    assert root.find("section/result").get("status") == "not found"


def test_mod_xml_curl_needs_a_token_as_its_password(client: FlaskClient, api: Api) -> None:
    assert fetch(client, None, "5550100")[0] == 401
    assert fetch(client, "fsdr_000000000000_wrong", "5550100")[0] == 401
    tokens.revoke("crm")
    assert fetch(client, api.token, "5550100")[0] == 401


def test_a_database_without_the_schema_is_a_503_with_the_reason_never_a_stack_trace(tmp_path: Path) -> None:
    client = create_app(open_database(f"sqlite:///{tmp_path / 'empty.db'}")).test_client()
    health = client.get("/health")
    assert health.status_code == 503 and "initdb" in health.get_json()["reason"]
    answer = client.get("/api/rules", headers={"Authorization": "Bearer fsdr_000000000000_x"})
    assert answer.status_code == 503 and answer.get_json() == {"error": "database unavailable: OperationalError",
                                                               "field": None}
    page = client.post("/signin", data={"token": "fsdr_000000000000_x", "csrf_token": csrf_of(client, "/signin")})
    assert page.status_code == 503 and "Traceback" not in page.get_data(as_text=True)


def page_session(client: FlaskClient, token: str) -> str:
    """Sign the test client in as the page's form does; returns the CSRF token for later forms."""
    assert client.post("/signin", data={"token": token, "csrf_token": csrf_of(client, "/signin")}).status_code == 302
    return csrf_of(client, "/")  # signing in starts a new session, with a new CSRF token


def csrf_of(client: FlaskClient, path: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).get_data(as_text=True))[1]


def test_the_page_answers_people_with_pages_and_types_its_fields(client: FlaskClient, api: Api) -> None:
    csrf = page_session(client, api.token)
    missing = client.get("/rules/Nope")
    assert missing.status_code == 404 and "There is no such page" in missing.get_data(as_text=True)
    form = {"csrf_token": csrf, "name": "X", "source": "5550300", "digits_match": "ten",
            "no_match_destination": "main-ivr"}
    refused = client.post("/rules/new", data=form)
    assert refused.status_code == 400 and "&#39;ten&#39; is not a whole number" in refused.get_data(as_text=True)
    assert client.post("/rules/new", data={**form, "digits_match": "10"}).status_code == 302
    assert Rule.select().count() == 2
