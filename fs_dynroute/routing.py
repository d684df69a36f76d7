"""One call's routing: look the caller up, decide, and consume or record, through any Store.

Shared by the server (for real calls) and ``fs-dynroute lookup`` (a dry run that writes nothing),
so the CLI answers exactly what a call would get.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from fs_dynroute import metrics
from fs_dynroute.callerid import call_key
from fs_dynroute.decision import Decision, Lookup, Result, RuleView, decide
from fs_dynroute.models import utcnow
from fs_dynroute.store import Store

log = logging.getLogger(__name__)


def find(store: Store, rule: RuleView, caller_id: str | None) -> Lookup:
    """Ask the store about the caller; a failing store becomes Lookup(error=...), never an exception."""
    key = call_key(caller_id, rule.digits_match)
    if key is None or not rule.enabled:
        return Lookup()
    try:
        return Lookup(store.lookup(rule, key))
    except Exception as exc:  # any store failure (driver, OS, our bug) must end at No Match, not in silence
        return Lookup(error=f"{type(exc).__name__}: {exc}")


def route_call(store: Store, rule: RuleView, caller_id: str | None, call_uuid: str | None = None,
               *, dry_run: bool = False, deadline: float | None = None) -> Decision:
    """The decision for one call; unless ``dry_run``, consumes a Delete After Use route and audits."""
    decision = decide(rule, caller_id, find(store, rule, caller_id), utcnow())
    if dry_run:
        return decision
    if decision.result is Result.MATCH and rule.delete_after_use:
        return _consume(store, rule, decision, call_uuid, deadline)
    if decision.result in (Result.MATCH, Result.ERROR):
        try:
            store.record(rule, decision, call_uuid)
        except Exception as exc:  # statistics only: the call keeps its decision
            log.warning("rule %s: could not record the decision: %s", rule.name, exc)
    return decision


def _consume(store: Store, rule: RuleView, decision: Decision, call_uuid: str | None,
             deadline: float | None) -> Decision:
    """Delete After Use: the route is the caller's only if this caller's delete removed it in time."""
    try:
        if store.consume(rule, decision, call_uuid, deadline):
            metrics.consumed(rule.name)
            return decision
        reason = "route already used by another call"
        result = Result.NOMATCH
    except Exception as exc:  # unknown whether it was consumed: exactly-once means No Match
        log.warning("rule %s: could not consume route %s: %s", rule.name, decision.key, exc)
        reason, result = f"consume failed: {type(exc).__name__}: {exc}", Result.ERROR
    return replace(decision, result=result, destination=rule.no_match_target, route=None, reason=reason)
