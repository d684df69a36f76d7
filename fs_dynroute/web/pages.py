"""The admin page (PBX -> Incoming Tools -> Dynamic Routing): server-rendered forms over admin.py.

Sign-in takes a token and opens an HttpOnly, SameSite=Strict session; each request re-reads the
token's row, so a revoked token signs its sessions out at once. Every form carries a CSRF token
(Flask-WTF). A refusal from admin.py is shown next to the field it names; nothing is written.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from functools import wraps
from typing import Any

from apiflask import APIBlueprint
from flask import Response, abort, current_app, flash, g, jsonify, redirect, render_template, request, session, url_for

from fs_dynroute import admin, csvio, sources, stats, tokens
from fs_dynroute.admin import rule_dict
from fs_dynroute.dryrun import dry_run
from fs_dynroute.models import Route, Rule, database, destination_map, source_map
from fs_dynroute.store import SQLStore
from fs_dynroute.validation import served_numbers
from fs_dynroute.web.api import rule_spec
from fs_dynroute.web.errors import destination_field, field_of
from fs_dynroute.web.listing import DEFAULT_LIMIT, MAX_LIMIT, csv_download, routes_page

pages = APIBlueprint("pages", __name__, enable_openapi=False)  # templates and static files are the app's
PUBLIC = {"pages.signin"}


@pages.before_request
def _signed_in() -> Response | None:
    key_id = session.get("key_id")
    g.token = tokens.session_token(key_id) if key_id else None
    if g.token is None and request.endpoint not in PUBLIC:
        session.clear()
        return redirect(url_for("pages.signin", next=_here() if request.method == "GET" else None))
    return None


def _here() -> str:
    query = request.query_string.decode()
    return request.path + (f"?{query}" if query else "")


def writes(view: Callable[..., Any]) -> Callable[..., Any]:
    """A page action that changes something: refused for a read-only token; one transaction, kept only
    if the answer is not an error."""
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if g.token.read_only:
            return render_template("error.html", message="This token is read-only: sign in with a token "
                                   "made without --read-only to change anything."), 403
        with database.atomic() as transaction:
            response = current_app.make_response(view(*args, **kwargs))
            if response.status_code >= 400:  # refused: whatever the view did is undone
                transaction.rollback()
        return response
    return wrapper


# -- signing in and out -------------------------------------------------------------------------------------

@pages.route("/signin", methods=["GET", "POST"])
def signin() -> Any:
    error = None
    if request.method == "POST":
        with database.atomic():
            token = tokens.verify(request.form.get("token", ""))
        if token is not None:
            session.clear()
            session["key_id"] = token.key_id
            target = request.args.get("next") or ""
            local = target.startswith("/") and not target.startswith(("//", "/\\"))  # never off to another site
            return redirect(target if local else url_for("pages.index"))
        error = "That token is not valid (it may have been revoked)."
    return render_template("signin.html", error=error), 401 if error else 200


@pages.post("/signout")
def signout() -> Response:
    session.clear()
    return redirect(url_for("pages.signin"))


# -- rules --------------------------------------------------------------------------------------------------

def _store() -> SQLStore:
    return SQLStore(database.obj, current_app.config["DEFAULT_CONTEXT"])


@pages.get("/")
def index() -> str:
    rules = [rule_dict(r) for r in Rule.select().order_by(Rule.name)]
    target = current_app.config["DIALPLAN"]
    return render_template("rules.html", rules=rules, stats=stats.rule_stats(since=stats.today()), empty=stats.empty(),
                           dialplan=target, dialplan_current=target.is_current(_store()))


@pages.post("/dialplan/install")
@writes
def dialplan_install() -> Any:
    target = current_app.config["DIALPLAN"]
    if target.file is None:
        abort(404)
    try:
        flash(target.install(_store()), "ok")
    except (OSError, admin.UserError) as exc:
        flash(f"dialplan not installed: {exc}", "error")
    return redirect(url_for("pages.index"))


@pages.get("/stats.json")
def live_stats() -> Response:
    """What the rules page polls to keep its statistics live."""
    return jsonify({name: {"calls_today": s["calls_today"], "hit_rate_today": s["hit_rate_today"],
                           "last_hit": s["last_hit"].isoformat(sep=" ") if s["last_hit"] else None}
                    for name, s in stats.rule_stats(since=stats.today()).items()})


def _form_rule() -> dict[str, Any]:
    """The rule form as RuleSpec fields (typed as the API's schema types them; the values are admin.py's business)."""
    form = request.form
    digits = form.get("digits_match", "").strip()
    return {"name": form.get("name", "").strip(), "source": form.get("source", "").strip(),
            "digits_match": int(digits) if digits.isdigit() else (None if not digits else digits),
            "match_destination": form.get("match_destination", "").strip() or None,
            "no_match_destination": form.get("no_match_destination", "").strip(),
            "delete_after_use": form.get("delete_after_use") == "on",
            "match_mode": "prefix" if form.get("match_mode") == "prefix" else "exact",
            "enabled": form.get("enabled") == "on"}


def _rule_form(rule: dict[str, Any], errors: dict[str, str], new: bool, status: int = 200) -> tuple[str, int]:
    return render_template("rule_form.html", rule=rule, errors=errors, new=new,
                           destinations=destination_map(), sources=list(source_map())), status


@pages.route("/rules/new", methods=["GET", "POST"])
def rule_new() -> Any:
    if request.method == "GET":
        return _rule_form({"digits_match": 10, "match_destination": "dynamic", "enabled": True}, {}, True)
    return _save_rule(None)


@pages.route("/rules/<name>/edit", methods=["GET", "POST"])
def rule_edit(name: str) -> Any:
    if request.method == "GET":
        return _rule_form(rule_dict(_rule_or_404(name)), {}, False)
    return _save_rule(name)


@writes
def _save_rule(name: str | None) -> Any:
    data = _form_rule()
    if isinstance(data["digits_match"], str):
        return _rule_form(data, {"digits_match": f"digits: {data['digits_match']!r} is not a whole number"},
                          name is None, 400)
    try:
        if name is None:
            admin.add_rule(data["name"], rule_spec(data))
        else:
            admin.edit_rule(name, rule_spec(data))
    except admin.UserError as exc:
        return _rule_form({**data, "name": name or data["name"]}, {field_of(exc) or "form": str(exc)}, name is None,
                          400)
    return redirect(url_for("pages.routes", name=name or data["name"]))


@pages.post("/rules/<name>/enabled")
@writes
def rule_enabled(name: str) -> Any:
    on = request.form.get("enabled") == "on"
    try:
        admin.edit_rule(name, admin.RuleSpec(enabled=on))
    except admin.UserError as exc:
        if request.headers.get("X-Requested-With") == "fetch":
            return jsonify({"error": str(exc)}), 409
        return render_template("error.html", message=str(exc)), 409
    if request.headers.get("X-Requested-With") == "fetch":
        return jsonify({"enabled": on})
    return redirect(url_for("pages.index"))


@pages.post("/rules/<name>/delete")
@writes
def rule_delete(name: str) -> Response:
    admin.delete_rule(name)
    return redirect(url_for("pages.index"))


def _rule_or_404(name: str) -> Rule:
    rule = Rule.get_or_none(Rule.name == name)
    if rule is None:
        abort(404)
    return rule


# -- routes -------------------------------------------------------------------------------------------------

def _routes_view(name: str, status: int = 200, **extra: Any) -> tuple[str, int]:
    rule = _rule_or_404(name)
    args = request.args
    limit = min(max(int(args["limit"]) if args.get("limit", "").isdigit() else DEFAULT_LIMIT, 1), MAX_LIMIT)
    rows, following = routes_page(rule, args.get("after", ""), limit, args.get("q", ""))
    editing = extra.pop("route", None)
    if editing is None and args.get("edit"):
        route = Route.get_or_none((Route.rule == rule) & (Route.caller_key == args["edit"]))
        if route is not None:
            editing = {"caller_id": route.caller_key, "destination": route.destination, "notes": route.notes,
                       "expires": route.expires_at.isoformat() if route.expires_at else ""}
    return render_template("routes.html", rule=rule_dict(rule), routes=rows, next=following,
                           q=args.get("q", ""), after=args.get("after", ""), limit=limit,
                           destinations=destination_map(), stats=stats.for_rule(name, since=stats.today()),
                           route=editing or {}, errors=extra.pop("errors", {}), **extra), status


@pages.get("/rules/<name>")
def routes(name: str) -> tuple[str, int]:
    return _routes_view(name)


@pages.post("/rules/<name>/routes")
@writes
def route_save(name: str) -> Any:
    form = {k: request.form.get(k, "").strip() for k in ("caller_id", "destination", "notes", "expires")}
    try:
        admin.add_route(name, form["caller_id"], form["destination"], form["notes"], form["expires"])
    except admin.UserError as exc:
        return _routes_view(name, 400, route=form, errors={field_of(exc) or "form": str(exc)})
    return redirect(url_for("pages.routes", name=name, q=request.args.get("q") or None))


@pages.post("/rules/<name>/routes/<key>/delete")
@writes
def route_delete(name: str, key: str) -> Response:
    admin.delete_route(name, key)
    return redirect(url_for("pages.routes", name=name))


@pages.post("/rules/<name>/import")
@writes
def route_import(name: str) -> Any:
    upload = request.files.get("file")
    text = upload.read().decode("utf-8-sig", errors="replace") if upload and upload.filename else \
        request.form.get("csv", "")
    try:
        count = csvio.import_routes(admin.get_rule(name), io.StringIO(text),
                                    replace=request.form.get("replace") == "on")
    except csvio.RouteImportError as exc:
        return _routes_view(name, 400, problems=exc.problems, csv_text=text)
    flash(f"{count} routes imported.", "ok")
    return redirect(url_for("pages.routes", name=name))


@pages.get("/rules/<name>/export.csv")
def route_export(name: str) -> Response:
    out = io.StringIO()
    csvio.export_routes(_rule_or_404(name), out)
    return csv_download(out.getvalue(), name)


# -- dry run, decisions, destinations -----------------------------------------------------------------------

@pages.get("/lookup")
def lookup() -> tuple[str, int]:
    source, caller = request.args.get("source", "").strip(), request.args.get("caller", "").strip()
    answer, error = None, None
    if source or caller:
        try:
            answer = dry_run(database.obj, current_app.config["DEFAULT_CONTEXT"], caller, source=source)
        except admin.UserError as exc:
            error = str(exc)
    named = source_map()
    sources = sorted({n for r in Rule.select(Rule.source) for n in served_numbers(r, named)})
    return render_template("lookup.html", source=source, caller=caller, answer=answer, error=error,
                           sources=sources), 400 if error else 200


@pages.get("/decisions")
def decisions() -> str:
    rule = request.args.get("rule") or None
    return render_template("decisions.html", rows=stats.recent(100, rule), rule=rule,
                           rules=[r.name for r in Rule.select(Rule.name).order_by(Rule.name)])


@pages.get("/destinations")
def destinations(form: dict[str, str] | None = None, errors: dict[str, str] | None = None,
                 status: int = 200) -> tuple[str, int]:
    return render_template("destinations.html", destinations=destination_map(), form=form or {},
                           errors=errors or {}), status


@pages.post("/destinations")
@writes
def destination_save() -> Any:
    form = {"name": request.form.get("name", "").strip(), "transfer": request.form.get("transfer", "").strip()}
    try:
        admin.add_destination(form["name"], form["transfer"])
    except admin.UserError as exc:
        return destinations(form, {destination_field(exc): str(exc)}, 400)
    return redirect(url_for("pages.destinations"))


@pages.post("/destinations/<name>/delete")
@writes
def destination_delete(name: str) -> Any:
    try:
        admin.delete_destination(name)
    except admin.UserError as exc:
        return destinations({}, {"form": str(exc)}, 409)
    return redirect(url_for("pages.destinations"))


# -- named sources ------------------------------------------------------------------------------------------

@pages.get("/sources")
def source_list(form: dict[str, str] | None = None, errors: dict[str, str] | None = None,
                status: int = 200) -> tuple[str, int]:
    return render_template("sources.html", sources=sources.list_sources(), form=form or {},
                           errors=errors or {}), status


@pages.post("/sources")
@writes
def source_save() -> Any:
    form = {"name": request.form.get("name", "").strip(), "numbers": request.form.get("numbers", "").strip()}
    try:
        sources.save_source(form["name"], form["numbers"].replace(",", " ").split())
    except admin.UserError as exc:
        field = {"name": "name", "number": "numbers"}.get(field_of(exc) or "", "form")
        return source_list(form, {field: str(exc)}, 400)
    return redirect(url_for("pages.source_list"))


@pages.post("/sources/<name>/delete")
@writes
def source_delete(name: str) -> Any:
    try:
        sources.delete_source(name)
    except admin.UserError as exc:
        return source_list({}, {"form": str(exc)}, 409)
    return redirect(url_for("pages.source_list"))
