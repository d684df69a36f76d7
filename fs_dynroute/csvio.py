"""CSV import and export of a rule's routes (``caller_id,destination,notes[,expires_at]``), as CRMs export them.

Import validates every row before writing anything: one bad row means nothing is imported,
and every bad line is reported with its number and reason.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import TextIO, TypeVar

from fs_dynroute.admin import RouteRow, UserError, upsert_routes, validate_route
from fs_dynroute.models import Route, Rule, destination_map, utcnow

T = TypeVar("T")
COLUMNS = ("caller_id", "destination", "notes", "expires_at")


class RouteImportError(UserError):
    """Every bad line of a file; str() lists them one per line."""

    def __init__(self, problems: list[tuple[int, str]]) -> None:
        super().__init__(problems)
        self.problems = problems

    def __str__(self) -> str:
        shown = "\n".join(f"line {n}: {why}" for n, why in self.problems[:100])
        more = len(self.problems) - 100
        return shown + (f"\n... and {more} more bad lines" if more > 0 else "") + "\nnothing imported"


def _is_header(cells: list[str]) -> bool:
    """A first row with no digit in its first cell is a header: every caller ID has digits."""
    return bool(cells) and not any(c.isdigit() for c in cells[0])


def parse(rule: Rule, stream: TextIO, progress: bool = False) -> list[RouteRow]:
    """Validate a whole CSV against ``rule``; raises RouteImportError listing every bad line."""
    known, now, checked = destination_map(), utcnow(), set()
    rows: list[RouteRow] = []
    first_line: dict[str, int] = {}
    problems: list[tuple[int, str]] = []
    reader = csv.reader(stream)
    for index, cells in enumerate(_with_progress(reader, progress, "validating")):
        line = reader.line_num
        if index == 0 and _is_header(cells):
            continue
        if not any(c.strip() for c in cells):
            continue
        if len(cells) > len(COLUMNS):
            problems.append((line, f"{len(cells)} columns; expected at most {len(COLUMNS)}: {', '.join(COLUMNS)}"))
            continue
        caller_id, destination, notes, expires = (cells + [""] * len(COLUMNS))[:len(COLUMNS)]
        try:
            row = validate_route(rule, caller_id, destination, notes, expires, known, now, checked)
        except UserError as exc:
            problems.append((line, str(exc)))
            continue
        if row.caller_key in first_line:
            earlier = first_line[row.caller_key]
            problems.append((line, f"caller_id: key {row.caller_key} already given on line {earlier}"))
            continue
        first_line[row.caller_key] = line
        rows.append(row)
    if problems:
        raise RouteImportError(problems)
    return rows


def import_routes(rule: Rule, stream: TextIO, replace: bool = False, progress: bool = False) -> int:
    """Validate, then write all rows (call inside a transaction); ``replace`` drops the rule's other routes first."""
    rows = parse(rule, stream, progress)
    if replace:
        Route.delete().where(Route.rule == rule).execute()
    return upsert_routes(rule, _with_progress(rows, progress, "writing", len(rows)))


def export_routes(rule: Rule, stream: TextIO) -> int:
    """Write the rule's routes as CSV with a header; importing the file again gives the same routes."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(COLUMNS)
    count = 0
    query = (Route.select(Route.caller_key, Route.destination, Route.notes, Route.expires_at)
             .where(Route.rule == rule).order_by(Route.caller_key).tuples())
    for key, destination, notes, expires in query.iterator():
        writer.writerow((key, destination, notes, expires.isoformat() if expires else ""))
        count += 1
    return count


def _with_progress(items: Iterable[T], enabled: bool, what: str, total: int | None = None) -> Iterable[T]:
    """A progress bar on the terminal for a long import; the items unchanged otherwise."""
    if not enabled:
        return items
    from tqdm import tqdm  # only for an interactive terminal

    return tqdm(items, unit=" rows", desc=what, total=total, mininterval=0.5)

