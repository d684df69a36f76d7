"""The CRM's JSON API under /api: rules, routes, destinations, the dry run and statistics.

Every write calls admin.py (or csvio) inside one transaction, exactly as the CLI does, so a refusal
here is the CLI's refusal, word for word, and nothing is written. Writes reach running servers
through the change log that the database's triggers keep.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from apiflask import APIBlueprint, HTTPTokenAuth, Schema, abort
from apiflask.fields import Boolean, DateTime, Float, Integer, List, Nested, String
from apiflask.validators import Length, OneOf, Range
from flask import Response, current_app, request

from fs_dynroute import admin, csvio, sources, stats, tokens
from fs_dynroute.admin import rule_dict
from fs_dynroute.dryrun import dry_run
from fs_dynroute.models import MATCH_MODES, Route, Rule, database, destination_map
from fs_dynroute.web.errors import destination_field
from fs_dynroute.web.listing import DEFAULT_LIMIT, MAX_LIMIT, csv_download, route_json, routes_page

api = APIBlueprint("api", __name__, url_prefix="/api")
auth = HTTPTokenAuth(scheme="Bearer", description="a token from `fs-dynroute token add NAME [--read-only]`")
WRITE = ["write"]


@auth.verify_token
def _verify(token: str) -> object:
    return tokens.verify(token)


@auth.get_user_roles
def _roles(token: Any) -> list[str]:
    return ["read"] if token.read_only else ["read", "write"]


# -- schemas: types only; every rule about values lives in admin.py -----------------------------------------

class RuleIn(Schema):
    name = String(metadata={"description": "only when creating; 1-100 letters, digits, spaces and _.,:;@#+()/-"})
    source = String(metadata={"description": "the number the rule serves, or the name of a named source "
                                             "(/api/sources) to serve all its numbers"})
    digits_match = Integer(strict=True, metadata={"description": "match the last N digits of the caller ID"})
    match_destination = String(metadata={"description": "'dynamic' (each route's own) or a fixed destination"})
    no_match_destination = String()
    delete_after_use = Boolean()
    match_mode = String(validate=OneOf(MATCH_MODES), metadata={"description": "prefix: keys are prefixes"})
    enabled = Boolean()


class RuleOut(Schema):
    name = String()
    source = String()
    numbers = List(String(), metadata={"description": "the numbers the rule serves"})
    digits_match = Integer()
    match_mode = String()
    match_destination = String()
    no_match_destination = String()
    delete_after_use = Boolean()
    enabled = Boolean()
    routes = Integer()
    created_at = DateTime()
    updated_at = DateTime()


class RouteIn(Schema):
    destination = String(load_default="", metadata={"description": "optional when the rule's match "
                                                                    "destination is fixed"})
    notes = String(load_default="")
    expires = String(load_default="", metadata={"description": "ISO-8601 time or a duration such as 48h; "
                                                               "empty: never"})


class RouteNew(RouteIn):
    caller_id = String(required=True, metadata={"description": "in any format; normalised as the CLI does"})


class RouteOut(Schema):
    caller_id = String(metadata={"description": "the stored key"})
    destination = String()
    notes = String()
    expires_at = DateTime(allow_none=True)
    use_count = Integer()
    last_used = DateTime(allow_none=True)


class RoutePageQuery(Schema):
    after = String(load_default="", metadata={"description": "the last key of the previous page"})
    limit = Integer(load_default=DEFAULT_LIMIT, validate=Range(1, MAX_LIMIT))
    q = String(load_default="", validate=Length(max=100), metadata={"description": "caller-ID digits or notes text"})


class PagedRoute(RouteOut):
    """RouteOut inside a page (its own name: apispec registers a nested schema by itself)."""


class RoutePage(Schema):
    routes = List(Nested(PagedRoute))
    next = String(allow_none=True, metadata={"description": "pass as ?after= for the next page; null on the last"})


class ImportQuery(Schema):
    replace = Boolean(load_default=False, metadata={"description": "drop the rule's routes not in the body"})


class ImportLine(Schema):
    line = Integer()
    error = String()


class ImportResult(Schema):
    imported = Integer()


class DestinationIO(Schema):
    name = String(required=True)
    transfer = String(required=True, metadata={"description": "FreeSWITCH transfer argument, e.g. '5000 XML default'"})


class SourceIO(Schema):
    name = String(required=True, metadata={"description": "e.g. 'Main Number'; spaces allowed"})
    numbers = List(String(), required=True, metadata={"description": "the numbers calls arrive on"})
    rules = List(String(), dump_only=True, metadata={"description": "the rules that serve this source"})


class SourceNumbers(Schema):
    numbers = List(String(), required=True)


class LookupQuery(Schema):
    caller = String(required=True)
    source = String()
    rule = String()


class LookupOut(Schema):
    result = String()
    destination = String()
    key = String(allow_none=True)
    rule = String()
    notes = String()
    reason = String()


class StatsOut(Schema):
    calls = Integer()
    match = Integer()
    nomatch = Integer()
    error = Integer()
    consumed = Integer()
    disabled = Integer()
    calls_today = Integer()
    hits_today = Integer()
    hit_rate_today = Float(allow_none=True, metadata={"description": "hits / calls today, 0 to 1"})
    last_hit = DateTime(allow_none=True)


# -- rules -------------------------------------------------------------------------------------------------

def rule_spec(data: dict[str, Any]) -> admin.RuleSpec:
    mode = data.get("match_mode")
    return admin.RuleSpec(source=data.get("source"), digits_match=data.get("digits_match"),
                          no_match_destination=data.get("no_match_destination"),
                          match_destination=data.get("match_destination"),
                          delete_after_use=data.get("delete_after_use"),
                          prefix=None if mode is None else mode == "prefix", enabled=data.get("enabled"))


@api.get("/rules")
@api.auth_required(auth)
@api.output(RuleOut(many=True))
@api.doc(tags=["Rules"], summary="All rules")
def list_rules() -> list[dict[str, object]]:
    return [rule_dict(r) for r in Rule.select().order_by(Rule.name)]


@api.post("/rules")
@api.auth_required(auth, roles=WRITE)
@api.input(RuleIn)
@api.output(RuleOut, status_code=201)
@api.doc(tags=["Rules"], summary="Add a rule", responses=[400, 409])
def add_rule(json_data: dict[str, Any]) -> dict[str, object]:
    if "name" not in json_data:
        abort(400, "name: required", extra_data={"field": "name"})
    with database.atomic():
        return rule_dict(admin.add_rule(json_data["name"], rule_spec(json_data)))


@api.get("/rules/<name>")
@api.auth_required(auth)
@api.output(RuleOut)
@api.doc(tags=["Rules"], summary="One rule", responses=[404])
def get_rule(name: str) -> dict[str, object]:
    return rule_dict(admin.get_rule(name))


@api.patch("/rules/<name>")
@api.auth_required(auth, roles=WRITE)
@api.input(RuleIn(partial=True))
@api.output(RuleOut)
@api.doc(tags=["Rules"], summary="Change a rule; enable or disable it with {\"enabled\": ...}",
         responses=[400, 404, 409])
def edit_rule(name: str, json_data: dict[str, Any]) -> dict[str, object]:
    if "name" in json_data and json_data["name"] != name:
        abort(400, "name: a rule cannot be renamed; add a new one", extra_data={"field": "name"})
    with database.atomic():
        return rule_dict(admin.edit_rule(name, rule_spec(json_data)))


@api.delete("/rules/<name>")
@api.auth_required(auth, roles=WRITE)
@api.output({}, status_code=204)
@api.doc(tags=["Rules"], summary="Delete a rule and its routes", responses=[404])
def delete_rule(name: str) -> str:
    with database.atomic():
        admin.delete_rule(name)
    return ""


@api.get("/rules/<name>/stats")
@api.auth_required(auth)
@api.output(StatsOut)
@api.doc(tags=["Statistics"], summary="A rule's calls by result, from the audit rows", responses=[404])
def rule_stats(name: str) -> dict[str, object]:
    admin.get_rule(name)
    return stats.for_rule(name)


@api.get("/stats")
@api.auth_required(auth)
@api.doc(tags=["Statistics"], summary="Every rule's calls by result: {rule name: statistics}")
def all_stats() -> dict[str, object]:
    return {name: StatsOut().dump(s) for name, s in stats.rule_stats().items()}


# -- routes ------------------------------------------------------------------------------------------------

@api.get("/rules/<name>/routes")
@api.auth_required(auth)
@api.input(RoutePageQuery, location="query")
@api.output(RoutePage)
@api.doc(tags=["Routes"], summary="A page of routes in key order (keyset paging: ?after=<next>)", responses=[404])
def list_routes(name: str, query_data: dict[str, Any]) -> dict[str, object]:
    rows, following = routes_page(admin.get_rule(name), query_data["after"], query_data["limit"], query_data["q"])
    return {"routes": [route_json(r) for r in rows], "next": following}


def _stored(rule_name: str, key: str) -> dict[str, object]:
    return route_json(Route.get((Route.rule == admin.get_rule(rule_name)) & (Route.caller_key == key)))


@api.post("/rules/<name>/routes")
@api.auth_required(auth, roles=WRITE)
@api.input(RouteNew)
@api.output(RouteOut, status_code=201)
@api.doc(tags=["Routes"], summary="Add or update one route", responses=[400, 404])
def add_route(name: str, json_data: dict[str, Any]) -> dict[str, object]:
    with database.atomic():
        row = admin.add_route(name, json_data["caller_id"], json_data["destination"], json_data["notes"],
                              json_data["expires"])
        return _stored(name, row.caller_key)


@api.put("/rules/<name>/routes/<caller_id>")
@api.auth_required(auth, roles=WRITE)
@api.input(RouteIn)
@api.output(RouteOut)
@api.doc(tags=["Routes"], summary="Add or replace the route for a caller ID (any format)", responses=[400, 404])
def put_route(name: str, caller_id: str, json_data: dict[str, Any]) -> dict[str, object]:
    with database.atomic():
        row = admin.add_route(name, caller_id, json_data["destination"], json_data["notes"], json_data["expires"])
        return _stored(name, row.caller_key)


@api.get("/rules/<name>/routes/<caller_id>")
@api.auth_required(auth)
@api.output(RouteOut)
@api.doc(tags=["Routes"], summary="The route for a caller ID (any format)", responses=[400, 404])
def get_route(name: str, caller_id: str) -> dict[str, object]:
    rule = admin.get_rule(name)
    key = admin.route_key(rule, caller_id)
    route = Route.get_or_none((Route.rule == rule) & (Route.caller_key == key))
    if route is None:
        raise admin.UserError(f"caller_id: no route for key {key} in rule {name!r}")
    return route_json(route)


@api.delete("/rules/<name>/routes/<caller_id>")
@api.auth_required(auth, roles=WRITE)
@api.output({}, status_code=204)
@api.doc(tags=["Routes"], summary="Delete the route for a caller ID (any format)", responses=[400, 404])
def delete_route(name: str, caller_id: str) -> str:
    with database.atomic():
        admin.delete_route(name, caller_id)
    return ""


def _import_text() -> str:
    """The request body as CSV text: a CSV body as is, a JSON list of objects or rows written out as CSV."""
    if not request.is_json:
        return request.get_data(as_text=True)
    items = request.get_json(silent=True)
    if not isinstance(items, list):
        abort(400, "body: expected a JSON list of routes or a CSV body", extra_data={"field": "body"})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for n, item in enumerate(items, 1):
        cells = [item.get(c, "") for c in csvio.COLUMNS] if isinstance(item, dict) else item
        if not isinstance(cells, list) or not all(isinstance(c, str) for c in cells):
            abort(400, f"line {n}: expected an object of strings {', '.join(csvio.COLUMNS)}",
                  extra_data={"field": "body", "lines": [{"line": n, "error": "not an object of strings"}]})
        writer.writerow(cells)
    return out.getvalue()


@api.post("/rules/<string:name>/routes:import")  # the converter keeps APIFlask from misreading the ":"
@api.auth_required(auth, roles=WRITE)
@api.input(ImportQuery, location="query")
@api.output(ImportResult)
@api.doc(tags=["Routes"], summary="Import routes, all or nothing",
         description="Body: CSV `caller_id,destination,notes[,expires_at]` (header optional, text/csv) or a "
                     "JSON list of objects with those keys (item N is line N). Any bad line imports nothing; "
                     "the 400 answer lists every bad line as {line, error}.", responses=[400, 404])
def import_routes(name: str, query_data: dict[str, Any]) -> dict[str, object]:
    text = _import_text()
    with database.atomic():
        rule = admin.get_rule(name)
        return {"imported": csvio.import_routes(rule, io.StringIO(text), replace=query_data["replace"])}


@api.get("/rules/<string:name>/routes:export")
@api.auth_required(auth)
@api.doc(tags=["Routes"], summary="All routes as CSV (importing it again gives the same routes)",
         responses={200: {"description": "text/csv", "content": {"text/csv": {}}}, 404: "Not found"})
def export_routes(name: str) -> Response:
    out = io.StringIO()
    csvio.export_routes(admin.get_rule(name), out)
    return csv_download(out.getvalue(), name)


# -- destinations, dry run -----------------------------------------------------------------------------------

@api.get("/destinations")
@api.auth_required(auth)
@api.output(DestinationIO(many=True))
@api.doc(tags=["Destinations"], summary="Named destinations")
def list_destinations() -> list[dict[str, str]]:
    return [{"name": k, "transfer": v} for k, v in destination_map().items()]


@api.post("/destinations")
@api.auth_required(auth, roles=WRITE)
@api.input(DestinationIO)
@api.output(DestinationIO, status_code=201)
@api.doc(tags=["Destinations"], summary="Add or change a named destination", responses=[400])
def add_destination(json_data: dict[str, str]) -> dict[str, str]:
    try:
        with database.atomic():
            dest = admin.add_destination(json_data["name"], json_data["transfer"])
    except admin.UserError as exc:
        abort(400, str(exc), extra_data={"field": destination_field(exc)})
    return {"name": dest.name, "transfer": dest.transfer}


@api.delete("/destinations/<name>")
@api.auth_required(auth, roles=WRITE)
@api.output({}, status_code=204)
@api.doc(tags=["Destinations"], summary="Delete a named destination no rule or route uses", responses=[404, 409])
def delete_destination(name: str) -> str:
    with database.atomic():
        admin.delete_destination(name)
    return ""


# -- named sources -----------------------------------------------------------------------------------------

@api.get("/sources")
@api.auth_required(auth)
@api.output(SourceIO(many=True))
@api.doc(tags=["Sources"], summary="Named sources with their numbers and the rules that use them")
def list_sources() -> list[dict[str, object]]:
    return sources.list_sources()


@api.get("/sources/<name>")
@api.auth_required(auth)
@api.output(SourceIO)
@api.doc(tags=["Sources"], summary="One named source with its numbers and the rules that use it", responses=[404])
def get_source(name: str) -> dict[str, object]:
    return sources.describe_source(name)


@api.post("/sources")
@api.auth_required(auth, roles=WRITE)
@api.input(SourceIO)
@api.output(SourceIO, status_code=201)
@api.doc(tags=["Sources"], summary="Add a named source", responses=[400, 409])
def add_source(json_data: dict[str, Any]) -> dict[str, object]:
    with database.atomic():
        sources.add_source(json_data["name"], json_data["numbers"])
        return sources.describe_source(json_data["name"])


@api.put("/sources/<name>")
@api.auth_required(auth, roles=WRITE)
@api.input(SourceNumbers)
@api.output(SourceIO)
@api.doc(tags=["Sources"], summary="Replace a named source's numbers", responses=[400, 404, 409])
def set_source_numbers(name: str, json_data: dict[str, Any]) -> dict[str, object]:
    with database.atomic():
        sources.set_numbers(name, json_data["numbers"])
        return sources.describe_source(name)


@api.delete("/sources/<name>")
@api.auth_required(auth, roles=WRITE)
@api.output({}, status_code=204)
@api.doc(tags=["Sources"], summary="Delete a named source no rule uses", responses=[404, 409])
def delete_source(name: str) -> str:
    with database.atomic():
        sources.delete_source(name)
    return ""


@api.get("/lookup")
@api.auth_required(auth)
@api.input(LookupQuery, location="query")
@api.output(LookupOut)
@api.doc(tags=["Lookup"], summary="Dry run: where would a call from `caller` on `source` (or `rule`) go?",
         description="The same answer as `fs-dynroute lookup --json`; consumes and records nothing.",
         responses=[400, 404])
def lookup(query_data: dict[str, str]) -> dict[str, object]:
    if bool(query_data.get("source")) == bool(query_data.get("rule")):
        abort(400, "source: give exactly one of source and rule", extra_data={"field": "source"})
    return dry_run(database.obj, current_app.config["DEFAULT_CONTEXT"], query_data["caller"],
                   source=query_data.get("source"), rule=query_data.get("rule"))
