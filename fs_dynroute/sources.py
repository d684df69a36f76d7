"""Named sources ("Inbound route/queue"): a name such as ``Main Number`` with the numbers behind it.

A rule whose ``source`` is such a name serves every one of its numbers; a rule whose ``source`` names no named
source serves that one number, as before. Like ``admin``, each function does all it says or raises UserError
naming the field, writing nothing (the CLI and the API call these inside one transaction). The rules themselves
(names, numbers, one enabled rule per number) live in ``validation``.
"""

from __future__ import annotations

from collections.abc import Sequence

import peewee as pw

from fs_dynroute.models import Rule, Source, SourceNumber, name_key, source_map
from fs_dynroute.validation import (
    UserError,
    clash_problems,
    number_problems,
    raise_first,
    serving,
    source_name_problems,
)


def get_source(name: str) -> Source:
    source = Source.get_or_none(Source.name == name)
    if source is None:
        raise UserError(f"source {name!r} does not exist")
    return source


def source_dict(name: str, numbers: Sequence[str], rules: Sequence[str]) -> dict[str, object]:
    """A named source as ``source list --json``, the API and the page show it."""
    return {"name": name, "numbers": list(numbers), "rules": list(rules)}


def list_sources() -> list[dict[str, object]]:
    """Every named source with its numbers and the rules that use it, by name."""
    users: dict[str, list[str]] = {}
    for rule_name, source in Rule.select(Rule.name, Rule.source).order_by(Rule.name).tuples():
        users.setdefault(source, []).append(rule_name)
    return [source_dict(name, numbers, users.get(name, [])) for name, numbers in source_map().items()]


def describe_source(name: str) -> dict[str, object]:
    """One named source as :func:`list_sources` shows it (UserError if there is none)."""
    source = get_source(name)
    rules = Rule.select(Rule.name).where(Rule.source == source.name).order_by(Rule.name).tuples()
    return source_dict(source.name, source_map()[source.name], [rule_name for (rule_name,) in rules])


def add_source(name: str, numbers: Sequence[str]) -> Source:
    """A new named source with ``numbers``; see ``set_numbers`` for what the numbers must be."""
    raise_first(source_name_problems(name))
    same = Source.get_or_none(name_key(Source.name) == name_key(pw.Value(name)))
    if same is not None:
        raise UserError(f"name: source {same.name!r} already exists (names ignore letter case and trailing "
                        "spaces); 'source edit' replaces its numbers")
    taken = SourceNumber.get_or_none(SourceNumber.number == name)
    if taken is not None:
        raise UserError(f"name: {name!r} is a number of source {taken.source.name!r}")
    literal = Rule.get_or_none(Rule.source == name)
    if literal is not None:
        raise UserError(f"name: rule {literal.name!r} serves the number {name!r}; a source of that name would "
                        "change what it serves")
    source = Source.create(name=name)
    set_numbers(name, numbers)
    return source


def set_numbers(name: str, numbers: Sequence[str]) -> Source:
    """Replace a named source's numbers. Each is a number as a rule's source is, given once, of no other source
    and no source's name; an enabled rule on this source may not get a number another enabled rule serves."""
    source = get_source(name)
    for number in numbers:
        raise_first(number_problems(number))
    repeated = sorted({n for n in numbers if list(numbers).count(n) > 1})
    if repeated:
        raise UserError(f"number: {repeated[0]!r} is given twice")
    for number in numbers:
        other = (SourceNumber.select(SourceNumber, Source).join(Source)
                 .where((SourceNumber.number == number) & (SourceNumber.source != source)).first())
        if other is not None:
            raise UserError(f"number: {number!r} is a number of source {other.source.name!r}")
        if Source.select().where(Source.name == number).exists():
            raise UserError(f"number: {number!r} is the name of a source")
    sources = {**source_map(), source.name: tuple(numbers)}
    others = Rule.select().where(Rule.enabled & (Rule.source != source.name))
    served = serving(others, sources)
    for rule in Rule.select().where(Rule.enabled & (Rule.source == source.name)).order_by(Rule.id):
        raise_first(clash_problems(rule, served, sources))
    SourceNumber.delete().where(SourceNumber.source == source).execute()
    if numbers:
        SourceNumber.insert_many([(source.id, n) for n in numbers],
                                 fields=[SourceNumber.source, SourceNumber.number]).execute()
    return source


def save_source(name: str, numbers: Sequence[str]) -> Source:
    """The page's "Add or change": replace the numbers of the source of exactly this name, else add it."""
    if Source.select().where(Source.name == name).exists():
        return set_numbers(name, numbers)
    return add_source(name, numbers)


def delete_source(name: str) -> None:
    """Delete a named source and its numbers; refused while a rule uses it."""
    source = get_source(name)
    user = Rule.select().where(Rule.source == source.name).order_by(Rule.name).first()
    if user is not None:
        raise UserError(f"source {name!r} is used by rule {user.name!r}")
    SourceNumber.delete().where(SourceNumber.source == source).execute()
    source.delete_instance()
