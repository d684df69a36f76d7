"""The dry run ("where would this call go?"): one answer for ``fs-dynroute lookup``, the API and the page."""

from __future__ import annotations

import peewee as pw

from fs_dynroute.admin import UserError
from fs_dynroute.routing import route_call
from fs_dynroute.store import SQLStore


def dry_run(db: pw.Database, default_context: str, caller_id: str, *, source: str | None = None,
            rule: str | None = None) -> dict[str, object]:
    """The decision a call from ``caller_id`` would get, by source or rule name; consumes and records nothing."""
    store = SQLStore(db, default_context)
    view = store.rule_for(name=rule) if rule else store.rule_for(source=source)
    if view is None:
        raise UserError(f"source: no rule serves {source!r}" if not rule else f"rule {rule!r} does not exist")
    d = route_call(store, view, caller_id, dry_run=True)
    return {"result": d.result.value, "destination": d.destination, "key": d.key, "rule": view.name,
            "notes": d.route.notes if d.route else "", "reason": d.reason}
