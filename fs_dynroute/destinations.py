"""Destinations: validating and resolving what a rule or route says into FreeSWITCH's transfer argument.

A destination is one of: a name defined with ``dest add`` (``main-ivr``), a bare extension
(``1001`` -> ``1001 XML <default context>``), or a full transfer argument
(``1001 XML default``). The result is sent to FreeSWITCH inside ``set dynroute_target=...``
and used by ``transfer ${dynroute_target}``, so it must never carry a newline, a control
character or a ``${...}`` expansion, and must never be empty: FreeSWITCH drops such calls.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

DYNAMIC = "dynamic"

CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TOKEN = re.compile(r"[A-Za-z0-9_.+*#@:\-]+")
_EXTENSION = re.compile(r"[0-9+*#]+")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]{0,63}")
_DIALPLANS = {"XML", "inline", "enum", "LUA", "asterisk"}


class DestinationError(ValueError):
    """A destination that FreeSWITCH could not transfer to safely."""


def is_name(text: str) -> bool:
    """True if ``text`` reads as a named destination rather than an extension or transfer argument."""
    return " " not in text and not _EXTENSION.fullmatch(text) and bool(_NAME.fullmatch(text))


def validate_transfer(arg: str) -> str:
    """Check a literal transfer argument: ``EXT [DIALPLAN [CONTEXT]]`` of safe tokens; returns it unchanged."""
    if not arg:
        raise DestinationError("destination is empty")
    if CONTROL.search(arg):
        raise DestinationError(f"destination {arg!r} contains a control character")
    parts = arg.split(" ")
    if len(parts) > 3 or not all(_TOKEN.fullmatch(p) for p in parts):
        raise DestinationError(
            f"destination {arg!r} is not 'EXTENSION [DIALPLAN [CONTEXT]]' of letters, digits and _.+*#@:-")
    if len(parts) >= 2 and parts[1] not in _DIALPLANS:
        raise DestinationError(f"destination {arg!r}: unknown dialplan {parts[1]!r}")
    return arg


def resolve(dest: str, names: Mapping[str, str], default_context: str) -> str:
    """The transfer argument for ``dest``; raises DestinationError if it is unsafe or an unknown name."""
    if dest in names:
        return validate_transfer(names[dest])
    if is_name(dest):
        raise DestinationError(f"destination {dest!r} is not a defined name (see 'dest add')")
    if " " not in dest:
        validate_transfer(dest)
        return validate_transfer(f"{dest} XML {default_context}")
    return validate_transfer(dest)


# A rule name travels to FreeSWITCH inside `set dynroute_rule=<name>` (dialplan and server), and `set`
# expands ${...}, including API calls such as ${system(...)}: no $, braces, quotes or control characters.
RULE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.,:;@#+()/-]{0,99}")


def validate_rule_name(name: str) -> str:
    """Check a rule name; raises DestinationError saying what is allowed."""
    if not RULE_NAME.fullmatch(name):
        raise DestinationError(f"rule name {name!r} must be 1-100 of letters, digits, spaces and _.,:;@#+()/- "
                               "starting with a letter or digit (it is sent to FreeSWITCH, which expands ${...})")
    return name


def validate_name(name: str) -> str:
    """Check a destination name as given to ``dest add``."""
    if not is_name(name) or name == DYNAMIC:
        raise DestinationError(
            f"destination name {name!r} must start with a letter, use letters, digits and _.- "
            f"and not be {DYNAMIC!r}")
    return name
