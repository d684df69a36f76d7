"""CSV import and export of a rule's routes (``caller_id,destination,notes[,expires_at]``), as CRMs export them.

Import validates every row before writing anything: one bad row means nothing is imported,
and every bad line is reported with its number and reason. The file must be UTF-8 (a BOM is fine);
any other encoding, broken quoting or an empty file given to ``--replace`` is one clear error.
Only the writing holds the database's write lock: on SQLite a lock held while 100k rows are
checked would stall a server's consumes.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TextIO, TypeVar

from fs_dynroute.admin import UserError, ValidRoute, upsert_routes, validate_route
from fs_dynroute.database import write_transaction
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


@dataclass(frozen=True)
class ImportPlan:
    """What an import would do to a rule's routes (``route import --dry-run``)."""

    add: int
    update: int
    remove: int

    def __str__(self) -> str:
        return f"{self.add} routes to add, {self.update} to update, {self.remove} to remove"


def utf8_lines(binary: Iterable[bytes]) -> Iterator[str]:
    """The lines of a UTF-8 file (its BOM dropped) for csv.reader; another encoding is a UserError naming the line."""
    for number, raw in enumerate(binary, 1):
        if number == 1:
            if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
                raise UserError("line 1: the file is UTF-16; fs-dynroute reads UTF-8 (save it as 'CSV UTF-8')")
            raw = raw.removeprefix(codecs.BOM_UTF8)
        if b"\0" in raw:
            raise UserError(f"line {number}: NUL bytes (a UTF-16 file?); fs-dynroute reads UTF-8 "
                            "(save it as 'CSV UTF-8')")
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UserError(f"line {number}: byte 0x{raw[exc.start]:02x} (byte {exc.start + 1} of the line) is not "
                            "UTF-8 (latin-1 or cp1252?); fs-dynroute reads UTF-8 (save it as 'CSV UTF-8')") from None


def _csv_problem(exc: csv.Error) -> str:
    if "field limit" in str(exc):
        return f"a field longer than {csv.field_size_limit()} characters (a quote never closed?)"
    if "unexpected end of data" in str(exc):
        return "a quoted field is never closed"
    return f"not CSV: {exc}"


def _is_header(cells: list[str]) -> bool:
    """A first row with no digit in its first cell is a header: every caller ID has digits."""
    return bool(cells) and not any(c.isdigit() for c in cells[0])


def parse(rule: Rule, lines: Iterable[str], progress: bool = False,
          known: dict[str, str] | None = None) -> list[ValidRoute]:
    """Validate a whole CSV against ``rule`` (and the named destinations ``known``); raises RouteImportError
    listing every bad line."""
    known, now, checked = destination_map() if known is None else known, utcnow(), set()
    rows: list[ValidRoute] = []
    first_line: dict[str, int] = {}
    problems: list[tuple[int, str]] = []
    reader = csv.reader(lines, strict=True)
    line = 0
    try:
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
                problems.append((line, f"caller_id: key {row.caller_key} already given on line "
                                       f"{first_line[row.caller_key]}"))
                continue
            first_line[row.caller_key] = line
            rows.append(row)
    except csv.Error as exc:  # the record that broke starts on the line after the last one read whole
        problems.append((line + 1, _csv_problem(exc)))
    if problems:
        raise RouteImportError(problems)
    return rows


def _checked(rule: Rule, lines: Iterable[str], replace: bool, allow_empty: bool, progress: bool,
             known: dict[str, str] | None = None) -> list[ValidRoute]:
    """The file's routes; an empty file given to ``replace`` (a failed CRM export, say) only with ``allow_empty``."""
    rows = parse(rule, lines, progress, known)
    if replace and not rows and not allow_empty:
        stored = Route.select().where(Route.rule == rule).count()
        raise UserError(f"file: no routes in it, so --replace would delete all {stored} routes of rule "
                        f"{rule.name!r}; give --allow-empty if that is what you want")
    return rows


def import_routes(rule: Rule, lines: Iterable[str], replace: bool = False, progress: bool = False,
                  allow_empty: bool = False) -> int:
    """Validate, then write all rows in one transaction of its own; ``replace`` drops the rule's other routes first."""
    known = destination_map()
    rows = _checked(rule, lines, replace, allow_empty, progress, known)
    with write_transaction(Route._meta.database):
        _unchanged(rule, known)
        if replace:
            Route.delete().where(Route.rule == rule).execute()
        return upsert_routes(rule, _with_progress(rows, progress, "writing", len(rows)))


def _unchanged(rule: Rule, known: dict[str, str]) -> None:
    """Refuse to write rows checked against a rule or destinations that changed meanwhile (another admin)."""
    now = Rule.get_or_none(Rule.id == rule.id)
    same = now is not None and (now.digits_match, now.match_mode, now.match_destination) == \
        (rule.digits_match, rule.match_mode, rule.match_destination)
    if not same or destination_map() != known:
        raise UserError(f"rule {rule.name!r} or the named destinations changed while the file was checked; "
                        "nothing imported, run the import again")


def plan_import(rule: Rule, lines: Iterable[str], replace: bool = False, allow_empty: bool = False) -> ImportPlan:
    """What ``import_routes`` would do with the same arguments, writing nothing."""
    keys = {row.caller_key for row in _checked(rule, lines, replace, allow_empty, progress=False)}
    stored = {k for (k,) in Route.select(Route.caller_key).where(Route.rule == rule).tuples().iterator()}
    return ImportPlan(add=len(keys - stored), update=len(keys & stored), remove=len(stored - keys) if replace else 0)


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

