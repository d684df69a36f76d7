"""Destinations: validating and resolving what a rule or route says into FreeSWITCH's transfer argument.

A destination is one of: a name defined with ``dest add`` (``main-ivr``), a bare extension
(``1001`` -> ``1001 XML <default context>``), or a full transfer argument
(``1001 XML default``). The result is sent to FreeSWITCH as the channel variable ``dynroute_target``
and used by ``transfer ${dynroute_target}``, so it must never carry a newline, a control
character, a ``${...}`` expansion or the separator of the values sent (``esl.MULTISET_SEPARATOR``),
and must never be empty: FreeSWITCH drops such calls.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from fs_dynroute.esl import CONTROL, MULTISET_SEPARATOR

DYNAMIC = "dynamic"
MAX_TRANSFER = 255  # the width of every destination column, on every backend

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
    if len(arg) > MAX_TRANSFER:
        raise DestinationError(f"destination is {len(arg)} characters, longer than {MAX_TRANSFER}")
    if MULTISET_SEPARATOR in arg:
        raise DestinationError(f"destination {arg!r} contains {MULTISET_SEPARATOR!r}, which separates the values "
                               "fs_dynroute sends to FreeSWITCH")
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


def validate_name(name: str) -> str:
    """Check a destination name as given to ``dest add``."""
    if not is_name(name) or name == DYNAMIC:
        raise DestinationError(
            f"destination name {name!r} must start with a letter, use letters, digits and _.- "
            f"and not be {DYNAMIC!r}")
    return name
