"""The web side of fs_dynroute: the admin page at /, the JSON API under /api, /metrics and /health.

:func:`create_app` builds one APIFlask (Flask) application over an open database. APIFlask was
chosen because it generates the OpenAPI 3 document from the view functions and their schemas, and
brings Bearer-token auth with roles (read/write) and JSON errors, all on plain Flask and Jinja2.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

import peewee as pw
from apiflask import APIFlask, HTTPError
from flask import Response, render_template, request
from flask_wtf.csrf import CSRFError, CSRFProtect

from fs_dynroute import __version__, metrics
from fs_dynroute.admin import UserError
from fs_dynroute.csvio import RouteImportError
from fs_dynroute.dialplan_install import Target
from fs_dynroute.models import database
from fs_dynroute.schema import CURRENT_VERSION, stored_version
from fs_dynroute.web.api import api
from fs_dynroute.web.errors import error_body, status_of
from fs_dynroute.web.pages import pages
from fs_dynroute.web.server import MAX_BODY
from fs_dynroute.web.xmlcurl import xmlcurl

log = logging.getLogger(__name__)

MACHINE_PATHS = ("/api/", "/freeswitch/", "/health", "/metrics")  # answered in JSON; everything else is the page
_REASONS = {401: "a valid token is required: Authorization: Bearer <token from 'fs-dynroute token add'>",
            403: "this token is read-only"}
MIN_SECRET = 32  # characters in a session key file: guessing it would let anyone forge a signed-in session
_NO_DIALPLAN = Target()  # the default dialplan target (frozen, so one shared instance is safe)


def read_secret_key(path: str | None) -> str | None:
    """The key that signs session cookies, from ``path`` (None: a new one per start, which signs everyone out
    whenever the process restarts). Every web process behind one address needs the same key."""
    if path is None:
        return None
    with open(path, encoding="utf-8") as handle:
        key = handle.read().strip()
    if len(key) < MIN_SECRET:
        raise ValueError(f"{path}: the key must be at least {MIN_SECRET} characters (e.g. the output of "
                         f"'openssl rand -hex 32'), got {len(key)}")
    return key


def create_app(db: pw.Database, *, default_context: str = "default", secret_key: str | None = None,
               secure_cookies: bool = False, dialplan: Target = _NO_DIALPLAN) -> APIFlask:
    """The application over ``db`` (bound to the models here; pass the server's own database inside serve).

    ``dialplan`` holds what ``fs-dynroute dialplan`` takes as --server and --context (the mod_xml_curl endpoint
    answers with the same extension) and, optionally, the installed file the page keeps current.
    """
    database.initialize(db)
    app = APIFlask(__name__, title="fs-dynroute", version=__version__, spec_path="/api/openapi.json",
                   docs_path="/api/docs")
    app.config.update(
        VALIDATION_ERROR_STATUS_CODE=400, DEFAULT_CONTEXT=default_context,
        DIALPLAN=dialplan,
        SECRET_KEY=secret_key or secrets.token_hex(32),
        SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_SECURE=secure_cookies,
        SESSION_COOKIE_NAME="fs_dynroute_session", WTF_CSRF_TIME_LIMIT=None, MAX_CONTENT_LENGTH=MAX_BODY,
        INFO={"description": "Rules, routes and named destinations of fs_dynroute, for a CRM. Every write is "
                             "validated as the CLI validates it and reaches running servers within about a "
                             "second. Errors: 400 {error, field}, 401, 403 (read-only token), 404, 409."})
    app.json.sort_keys = False
    csrf = CSRFProtect(app)
    for blueprint in (api, xmlcurl):  # they take a token in a header, never the page's cookie
        csrf.exempt(blueprint)
        app.register_blueprint(blueprint)
    app.register_blueprint(pages)
    _install_error_handlers(app)

    @app.teardown_request
    def _release(_: BaseException | None) -> None:
        if not database.obj.is_closed():
            database.obj.close()

    @app.get("/health")
    @app.doc(hide=True)
    def health() -> tuple[dict[str, object], int]:
        ok, reason = database_health()
        return {"status": "ok" if ok else "unavailable", "reason": reason}, 200 if ok else 503

    @app.get("/metrics")
    @app.doc(hide=True)
    def metrics_page() -> Response:
        body, content_type = metrics.exposition()
        return Response(body, content_type=content_type)

    metrics.watch_database()
    return app


def database_health() -> tuple[bool, str]:
    """Whether the database answers and holds the schema this code needs, and why not."""
    try:
        version = stored_version(database.obj)
    except pw.PeeweeException as exc:
        return False, f"database: {exc}".strip()
    if version is None or version < CURRENT_VERSION:
        return False, f"database schema version {version}, need {CURRENT_VERSION}: run 'fs-dynroute initdb'"
    return True, "database answers"


def _install_error_handlers(app: APIFlask) -> None:
    @app.error_processor
    def _http_error(error: HTTPError) -> tuple[dict[str, object], int, Any]:
        message, field = error.message, error.extra_data.get("field")
        if isinstance(error.detail, dict) and error.detail:  # a schema refused the request
            field, message = _first_problem(error.detail)
        elif error.status_code in _REASONS:
            message = _REASONS[error.status_code]
        extra = {k: v for k, v in error.extra_data.items() if k != "field"}
        if not request.path.startswith(MACHINE_PATHS):  # a person's page: the same message, as a page
            message = "There is no such page; the rule or route may have been deleted." if error.status_code == 404 \
                else message
            return render_template("error.html", message=message), error.status_code, error.headers
        return {"error": message, "field": field, **extra}, error.status_code, error.headers

    @app.errorhandler(RouteImportError)
    def _import_error(exc: RouteImportError) -> tuple[dict[str, object], int]:
        return {"error": f"{len(exc.problems)} bad lines; nothing imported", "field": "body",
                "lines": [{"line": n, "error": why} for n, why in exc.problems]}, 400

    @app.errorhandler(UserError)
    def _user_error(exc: UserError) -> tuple[object, int]:
        if request.path.startswith(MACHINE_PATHS):
            return error_body(exc), status_of(exc)
        return render_template("error.html", message=str(exc)), status_of(exc)

    @app.errorhandler(CSRFError)
    def _csrf(exc: CSRFError) -> tuple[str, int]:
        return render_template("error.html", message="This form was not sent from this page or has expired "
                               "(CSRF check failed); nothing was changed. Go back, reload and try again."), 400

    @app.errorhandler(pw.PeeweeException)
    def _database_error(exc: pw.PeeweeException) -> tuple[object, int]:
        log.warning("%s %s: database error: %s", request.method, request.path, exc)
        return _answer(f"database unavailable: {type(exc).__name__}"), 503

    @app.errorhandler(Exception)
    def _bug(exc: Exception) -> tuple[object, int]:
        log.exception("%s %s failed", request.method, request.path)
        return _answer("internal error; the details are in the fs-dynroute web log"), 500


def _answer(message: str) -> object:
    """An error as JSON for the API, as a page for a person."""
    if request.path.startswith(MACHINE_PATHS):
        return {"error": message, "field": None}
    return render_template("error.html", message=message)


def _first_problem(detail: dict[str, Any]) -> tuple[str | None, str]:
    """webargs' {location: {field: [messages]}} -> (field, 'field: message') for the first problem."""
    for fields in detail.values():
        if isinstance(fields, dict):
            for field, messages in fields.items():
                while isinstance(messages, (list, dict)) and messages:
                    messages = messages[0] if isinstance(messages, list) else next(iter(messages.values()))
                return (None if field == "_schema" else field), f"{field}: {messages}"
    return None, "invalid request"
