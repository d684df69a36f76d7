"""Reading routes a page at a time (keyset paging, search by digits or notes), and a rule's routes as a CSV download.

``WHERE rule_id = ? AND caller_key > ? ORDER BY caller_key LIMIT n`` walks the unique index, so page
5,000 of a million routes costs what the first page costs; an OFFSET would read every row before it.
"""

from __future__ import annotations

import re

from flask import Response

from fs_dynroute.models import Route, Rule

MAX_LIMIT = 1000
DEFAULT_LIMIT = 50


def csv_download(text: str, rule_name: str) -> Response:
    """A rule's routes as a CSV file download named after the rule."""
    filename = "".join(c if c.isalnum() or c in "-_." else "_" for c in rule_name)
    return Response(text, mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{filename}.csv"'})


def route_json(route: Route) -> dict[str, object]:
    return {"caller_id": route.caller_key, "destination": route.destination, "notes": route.notes,
            "expires_at": route.expires_at, "use_count": route.use_count, "last_used": route.last_used}


def routes_page(rule: Rule, after: str = "", limit: int = DEFAULT_LIMIT,
                search: str = "") -> tuple[list[Route], str | None]:
    """Up to ``limit`` routes with keys after ``after``, and the key to ask for next (None on the last page).

    ``search`` matches notes text, or caller-ID digits anywhere in the key (a full number is cut to the
    rule's last N digits first, so ``+1 555-111-1111`` finds key 5551111111).
    """
    query = Route.select().where(Route.rule == rule)
    if search := search.strip():
        digits = re.sub(r"\D", "", search)[-rule.digits_match:]
        condition = Route.notes.contains(search)
        if digits and re.fullmatch(r"[\d\s+().\-]+", search):
            condition = condition | Route.caller_key.contains(digits)
        query = query.where(condition)
    if after:
        query = query.where(Route.caller_key > after)
    rows = list(query.order_by(Route.caller_key).limit(limit + 1))
    return rows[:limit], (rows[limit - 1].caller_key if len(rows) > limit else None)
