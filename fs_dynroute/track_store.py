"""The tracker's storage: each rule's track settings, and the tracker's decisions written as routes.

Settings are checked here once (``rule add/edit --track ...``); a route the tracker writes goes through
:func:`fs_dynroute.admin.validate_route` and :func:`fs_dynroute.admin.upsert_routes` like any other, so a
customer number that cannot become a key, or an agent that is not a usable destination, is skipped and counted,
never stored. Every change also leaves an audit row (``tracked`` / ``cleared``) with the event's UUID.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import peewee as pw
from peewee import chunked

from fs_dynroute import admin
from fs_dynroute.models import Audit, Route, Rule, Track, destination_map, utcnow
from fs_dynroute.tracker import DEFAULT_CAUSES, DEFAULT_TTL, MODES, Hangup, Skip, TrackSpec, Write, decide
from fs_dynroute.validation import raise_first, text_problems

log = logging.getLogger(__name__)
_REPORTED: set[str] = set()  # rules whose broken settings were logged (once per process, not per batch)
_CAUSE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_TTL = re.compile(r"\d{1,6}[smhdw]")


@dataclass
class TrackOptions:
    """``--track``, ``--agents``, ``--track-ttl``, ``--track-causes`` as given; None = not given."""

    mode: str | None = None
    agents: str | None = None
    ttl: str | None = None
    causes: str | None = None

    def given(self) -> bool:
        return any(v is not None for v in vars(self).values())


def _check_agents(agents: str) -> str:
    raise_first(text_problems("agents", agents, 255))
    try:
        re.compile(agents)
    except re.error as exc:
        raise admin.UserError(f"agents: {agents!r} is not a regular expression: {exc}") from None
    if not agents:
        raise admin.UserError("agents: must not be empty (it would make every number an agent)")
    return agents


def _check_ttl(ttl: str) -> str:
    if ttl and not _TTL.fullmatch(ttl):
        raise admin.UserError(f"track-ttl: {ttl!r} must be a duration such as 72h, 30d or 90m ('' = never)")
    return ttl


def _check_causes(causes: str) -> str:
    names = [c.strip() for c in causes.split(",") if c.strip()]
    bad = [c for c in names if not _CAUSE.fullmatch(c)]
    if bad or not names:
        raise admin.UserError(f"track-causes: {causes!r} must be hangup causes such as NO_ANSWER,USER_BUSY")
    return ",".join(names)


def check_options(options: TrackOptions, *, new: bool) -> None:
    """Everything about the options that needs no database; ``new``: the rule is being added."""
    if options.mode is not None and options.mode not in MODES:
        raise admin.UserError(f"track: must be one of {', '.join(MODES)}, not {options.mode!r}")
    if new and options.mode is None:
        raise admin.UserError("track: give --track missed|last-agent with the other track options")
    if options.mode is not None and options.agents is None and new:
        raise admin.UserError("agents: required with --track (a pattern such as '^1\\d{3}$')")
    if options.agents is not None:
        _check_agents(options.agents)
    if options.ttl is not None:
        _check_ttl(options.ttl)
    if options.causes is not None:
        _check_causes(options.causes)


def is_tracked(rule: Rule) -> bool:
    return Track.select().where(Track.rule == rule).exists()


def set_track(rule_name: str, options: TrackOptions) -> Track:
    """Create or change a rule's track settings from the options given; raises UserError naming the field."""
    rule = admin.get_rule(rule_name)
    track = Track.get_or_none(Track.rule == rule)
    check_options(options, new=track is None)
    if track is None:
        track = Track(rule=rule, mode=options.mode, causes=",".join(DEFAULT_CAUSES))
    if options.mode is not None and options.mode != track.mode or track.id is None:
        track.mode, track.ttl = options.mode, DEFAULT_TTL[options.mode]  # a new mode: its default expiry
    if options.agents is not None:
        track.agents = _check_agents(options.agents)
    if options.ttl is not None:
        track.ttl = _check_ttl(options.ttl)
    if options.causes is not None:
        track.causes = _check_causes(options.causes)
    track.save()
    return track


def clear_track(rule_name: str) -> bool:
    """Stop feeding a rule; its routes stay. True if it was tracked."""
    return Track.delete().where(Track.rule == admin.get_rule(rule_name)).execute() > 0


def track_settings(rule: Rule) -> dict[str, str] | None:
    """A rule's settings for display, or None when it is not tracked."""
    track = Track.get_or_none(Track.rule == rule)
    if track is None:
        return None
    return {"mode": track.mode, "agents": track.agents, "ttl": track.ttl or "never", "causes": track.causes}


def load_specs() -> list[TrackSpec]:
    """Every tracked rule's settings, compiled (a pattern a CRM broke is left out, with the rule named)."""
    specs = []
    for track in Track.select(Track, Rule).join(Rule).order_by(Rule.name):
        try:
            agents = re.compile(track.agents)
        except re.error as exc:
            if track.rule.name not in _REPORTED:
                _REPORTED.add(track.rule.name)
                log.warning("rule %r is not fed: its agents pattern %r is broken (%s)", track.rule.name,
                            track.agents, exc)
            continue
        causes = frozenset(c for c in track.causes.split(",") if c)
        specs.append(TrackSpec(track.rule.name, track.mode, agents, track.ttl, causes))
    return specs


@dataclass
class BatchResult:
    """What one batch did: routes written and cleared, and the skips by reason."""

    written: int = 0
    cleared: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


def write_batch(hangups: Iterable[Hangup]) -> BatchResult:
    """Decide every hangup against every tracked rule and write the results in ONE transaction.

    Call inside a connection; the caller retries the whole batch if the database fails (nothing is half-written).
    """
    specs = load_specs()
    result = BatchResult()
    db = Route._meta.database
    db = db.obj if isinstance(db, pw.DatabaseProxy) else db
    # SQLite: take the write lock first (BEGIN IMMEDIATE), as the store does, so a concurrent writer makes us
    # wait for the busy timeout instead of failing at once when the read snapshot cannot be upgraded.
    with db.atomic("IMMEDIATE") if isinstance(db, pw.SqliteDatabase) else db.atomic():
        rules = {r.name: r for r in Rule.select().where(Rule.name.in_([s.rule for s in specs]))} if specs else {}
        known, pending = destination_map(), _Pending()
        for hangup in hangups:
            if not specs:
                result.skipped["no tracked rule"] += 1
            for spec in specs:
                action = decide(hangup, spec)
                if isinstance(action, Skip):
                    result.skipped[action.reason] += 1
                    continue
                rule = rules[spec.rule]
                notes, ttl = (action.notes, action.ttl) if isinstance(action, Write) else ("", "")
                try:
                    row = admin.validate_route(rule, action.customer, action.agent, notes, ttl, known)
                except admin.UserError as exc:
                    result.skipped[f"invalid {str(exc).split(':', 1)[0]}"] += 1
                    continue
                if isinstance(action, Write):
                    pending.add(rule, row, hangup.uuid)
                    result.written += 1
                else:
                    pending.flush()
                    result.cleared += _clear(rule, row, hangup.uuid)
        pending.flush()
    return result


class _Pending:
    """Upserts gathered per rule and written together; flushed before a clear so order is kept."""

    def __init__(self) -> None:
        self.rows: dict[int, tuple[Rule, dict[str, admin.ValidRoute], list[dict[str, object]]]] = {}

    def add(self, rule: Rule, row: admin.ValidRoute, uuid: str) -> None:
        _, rows, audit = self.rows.setdefault(rule.id, (rule, {}, []))
        rows[row.caller_key] = row  # the last event for a key wins, as if written one by one
        audit.append(_audit(rule, row, "tracked", uuid))

    def flush(self) -> None:
        for rule, rows, audit in self.rows.values():
            admin.upsert_routes(rule, rows.values())
            for chunk in chunked(audit, 100):  # SQLite allows 999 parameters per statement
                Audit.insert_many(chunk).execute()
        self.rows.clear()


def _clear(rule: Rule, row: admin.ValidRoute, uuid: str) -> int:
    gone = Route.delete().where((Route.rule == rule) & (Route.caller_key == row.caller_key)
                                & (Route.destination == row.destination)).execute()
    if gone:
        Audit.insert(_audit(rule, row, "cleared", uuid)).execute()
    return gone


def _audit(rule: Rule, row: admin.ValidRoute, result: str, uuid: str) -> dict[str, object]:
    return {"at": utcnow(), "rule_name": rule.name, "caller_key": row.caller_key, "destination": row.destination,
            "result": result, "call_uuid": uuid or None}
