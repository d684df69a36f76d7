"""Validation: every rule a stored row must satisfy, once, as pure functions that return every problem.

Three readers, one verdict: ``admin`` raises the first problem and writes nothing, ``fs-dynroute check``
reports them all, and the server's loader (``store.rule_view``, ``clashes`` in the index) leaves out a rule
they reject. Each problem is one line that starts with the field it is about. The functions read a row's
attributes and the named destinations they are given; they never touch the database.

What reaches FreeSWITCH (rule names, transfer arguments, keys) is sent inside one ``multiset`` whose items
are separated by ``esl.MULTISET_SEPARATOR``: no stored value may contain it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from fs_dynroute.callerid import MAX_DIGITS, CallerIDError, stored_key
from fs_dynroute.destinations import DYNAMIC, DestinationError, resolve, validate_name, validate_transfer
from fs_dynroute.esl import CONTROL, MULTISET_SEPARATOR
from fs_dynroute.models import MATCH_MODES

SOURCE = re.compile(r"[A-Za-z0-9_+*#.@\-]{1,100}")
# A rule name travels to FreeSWITCH as a channel variable (dialplan ``set`` and the server's ``multiset``), and
# FreeSWITCH expands ${...} there, including API calls such as ${system(...)}: no $, braces, quotes or control
# characters; no trailing space either, which multiset strips.
RULE_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9 _.,:;@#+()/-]{0,98}[A-Za-z0-9_.,:;@#+()/-])?")
Sources = Mapping[str, Sequence[str]]  # named sources: name -> its numbers (models.source_map)
MAX_TEXT = 255  # destinations and notes: the width of their columns on every backend


class UserError(ValueError):
    """Bad input from a person or a CRM: one line that names the field or line."""


class RuleRow(Protocol):
    """The columns of a rule that validation reads (a models.Rule, or anything shaped like one)."""

    id: int | None
    name: str
    source: str
    digits_match: int
    match_mode: str
    prefix: bool
    match_destination: str
    no_match_destination: str
    enabled: bool


def raise_first(problems: list[str]) -> None:
    """Raise the first problem as a UserError (admin's way: one line, nothing written)."""
    if problems:
        raise UserError(problems[0])


def text_problems(field: str, value: str, max_length: int = MAX_TEXT) -> list[str]:
    """Any stored text: no control character (C0, DEL, C1, line separators), at most ``max_length``."""
    problems = []
    if CONTROL.search(value):
        problems.append(f"{field}: contains a control character")
    if len(value) > max_length:
        problems.append(f"{field}: {len(value)} characters, longer than {max_length}")
    return problems


def rule_name_problems(name: str) -> list[str]:
    if MULTISET_SEPARATOR in name:
        return [f"name: rule name {name!r} contains {MULTISET_SEPARATOR!r}, which separates the values "
                "fs_dynroute sends to FreeSWITCH"]
    if not RULE_NAME.fullmatch(name):
        return [f"name: rule name {name!r} must be 1-100 of letters, digits, spaces and _.,:;@#+()/- starting "
                "with a letter or digit and not ending in a space (it is sent to FreeSWITCH, which expands ${...})"]
    return []


def destination_problems(field: str, dest: str, names: Mapping[str, str], context: str,
                         dynamic: bool = False) -> list[str]:
    """A rule's or route's destination that resolves now (names exist, transfer argument safe)."""
    if dynamic and dest == DYNAMIC:
        return []
    problems = text_problems(field, dest)
    if not problems:
        try:
            resolve(dest, names, context)
        except DestinationError as exc:
            problems.append(f"{field}: {exc}")
    return problems


def named_destination_problems(name: str, transfer: str) -> list[str]:
    """A row of the named destinations (``dest add``)."""
    problems = []
    for check, value in ((validate_name, name), (validate_transfer, transfer)):
        try:
            check(value)
        except DestinationError as exc:
            problems.append(str(exc))
    return problems


def source_name_problems(name: str) -> list[str]:
    """A named source's name: as a rule name (letters, digits, spaces and some punctuation), so it reads the same."""
    if not RULE_NAME.fullmatch(name):
        return [f"name: source name {name!r} must be 1-100 of letters, digits, spaces and _.,:;@#+()/- starting "
                "with a letter or digit and not ending in a space"]
    return []


def number_problems(number: str) -> list[str]:
    """A number a source serves: what FreeSWITCH's destination_number is compared with."""
    if not SOURCE.fullmatch(number):
        return [f"number: {number!r} must be 1-100 of letters, digits and _+*#.@-"]
    return []


def served_numbers(rule: RuleRow, sources: Sources) -> tuple[str, ...]:
    """The numbers a rule serves: its named source's, or its source itself when that names no named source."""
    numbers = sources.get(rule.source)
    return (rule.source,) if numbers is None else tuple(numbers)


def rule_problems(rule: RuleRow, names: Mapping[str, str], context: str, sources: Sources) -> list[str]:
    """Everything wrong with one rule on its own (see ``clashes`` for rules that compete for a number)."""
    problems = rule_name_problems(rule.name or "")
    if rule.source not in sources and not SOURCE.fullmatch(rule.source or ""):
        problems.append(f"source: {rule.source!r} is no named source, and as a number it must be 1-100 of "
                        "letters, digits and _+*#.@-")
    if not isinstance(rule.digits_match, int) or not 1 <= rule.digits_match <= MAX_DIGITS:
        problems.append(f"digits: must be 1 to {MAX_DIGITS}, not {rule.digits_match}")
    if rule.match_mode not in MATCH_MODES:
        problems.append(f"match_mode: {rule.match_mode!r} is not one of {', '.join(MATCH_MODES)}")
    problems += destination_problems("nomatch-dest", rule.no_match_destination or "", names, context)
    problems += destination_problems("match-dest", rule.match_destination or "", names, context, dynamic=True)
    return problems


def clash_problems(rule: RuleRow, served: Mapping[str, str], sources: Sources) -> list[str]:
    """An enabled rule serving a number that an enabled rule already serves (``served``: number -> rule name)."""
    if not rule.enabled:
        return []
    named = rule.source in sources
    return [f"source: {f'number {number!r} of {rule.source!r}' if named else repr(number)} is already served by "
            f"enabled rule {served[number]!r}" for number in served_numbers(rule, sources) if number in served]


def _claims(rules: Iterable[RuleRow], sources: Sources) -> tuple[dict[str, str], dict[int, list[str]]]:
    """Enabled rules sharing a number (directly or through a named source): the first by id keeps all its numbers,
    a later one that would serve any of them is a problem and serves none. Returns (number -> rule name, problems
    by rule id)."""
    served: dict[str, str] = {}
    found: dict[int, list[str]] = {}
    for rule in sorted(rules, key=lambda r: r.id or 0):
        if problems := clash_problems(rule, served, sources):
            found[rule.id or 0] = problems
        elif rule.enabled:
            served.update(dict.fromkeys(served_numbers(rule, sources), rule.name))
    return served, found


def serving(rules: Iterable[RuleRow], sources: Sources) -> dict[str, str]:
    """number -> the name of the enabled rule that serves it (see ``_claims``)."""
    return _claims(rules, sources)[0]


def clashes(rules: Iterable[RuleRow], sources: Sources) -> dict[int, list[str]]:
    """The rules that lose a number to an earlier one, with their problems, by rule id (see ``_claims``)."""
    return _claims(rules, sources)[1]


def key_problems(key: str, digits_match: int, prefix: bool) -> list[str]:
    """A stored key a call can reach: its own normal form (ASCII digits, the rule's length), as stored_key makes it."""
    try:
        if stored_key(key, digits_match, prefix) == key:
            return []
    except (CallerIDError, TypeError):  # TypeError: the rule's own digits_match is broken (reported with the rule)
        pass
    want = f"1 to {digits_match}" if prefix else f"exactly {digits_match}"
    return [f"caller_key: {key!r} is not normalised ({want} ASCII digits); no call can match it"]


def route_problems(rule: RuleRow, key: str, destination: str, notes: str, names: Mapping[str, str], context: str,
                   checked: set[str] | None = None) -> list[str]:
    """One stored route of ``rule``: its key, then what ``record_problems`` checks."""
    return key_problems(key, rule.digits_match, rule.prefix) + \
        record_problems(rule, destination, notes, names, context, checked)


def record_problems(rule: RuleRow, destination: str, notes: str, names: Mapping[str, str], context: str,
                    checked: set[str] | None = None) -> list[str]:
    """A route's destination and notes (admin's keys come from stored_key, normal by construction).

    ``checked`` remembers destinations already found good: thousands of routes share a few.
    """
    problems = []
    if not destination:
        if rule.match_destination == DYNAMIC:
            problems.append(f"destination: required, rule {rule.name!r} routes to each record's own destination")
    elif checked is None or destination not in checked:
        found = destination_problems("destination", destination, names, context)
        problems += found
        if checked is not None and not found:
            checked.add(destination)
    return problems + text_problems("notes", notes or "")
