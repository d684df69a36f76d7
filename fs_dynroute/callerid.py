"""Caller-ID normalisation: turns what FreeSWITCH or a CRM says into the key a rule looks up.

Every caller ID, whether it arrives on a call or in an import, goes through the same two
steps (keep digits, take the last N), so ``+1-555-111-1111``, ``15551111111`` and
``5551111111`` are one key under digits 10.
"""

from __future__ import annotations

import re

# What FreeSWITCH and carriers put in the caller-ID field when the number is withheld.
# FreeSWITCH itself sends 0000000000 when no caller ID was set at all.
WITHHELD = frozenset({"", "anonymous", "restricted", "unknown", "private", "unavailable", "withheld"})

# Punctuation people and CRMs write in phone numbers; anything else (letters, SIP URIs)
# means the field is not a phone number and must never match.
_NUMBER_SHAPE = re.compile(r"[0-9+\-(). /]*")
_NON_DIGITS = re.compile(r"\D")

MAX_DIGITS = 20


class CallerIDError(ValueError):
    """A caller ID given by a person or a CRM that cannot become a key."""


def digits_of(caller_id: str) -> str | None:
    """The digits of a phone-number-shaped caller ID, or None if it is withheld or not a number."""
    text = caller_id.strip()
    if text.lower() in WITHHELD or not _NUMBER_SHAPE.fullmatch(text):
        return None
    digits = _NON_DIGITS.sub("", text)
    if not digits or digits.strip("0") == "":
        return None  # FreeSWITCH's 0000000000 default, or nothing at all
    return digits


def call_key(caller_id: str | None, digits_match: int) -> str | None:
    """The lookup key of a calling number: its last ``digits_match`` digits, or None (never matches)."""
    digits = digits_of(caller_id or "")
    if digits is None or len(digits) < digits_match:
        return None
    return digits[-digits_match:]


def stored_key(caller_id: str, digits_match: int, prefix: bool = False) -> str:
    """The key under which a route is stored; raises CallerIDError with the reason if it cannot be one.

    In exact mode this is the same transformation as a call's key. In prefix mode the stored
    value is a leading part of a call's key (``555`` = area code 555 under digits 10).
    """
    digits = digits_of(caller_id)
    if digits is None:
        raise CallerIDError(f"caller ID {caller_id!r} is not a phone number")
    if prefix:
        if len(digits) > digits_match:
            raise CallerIDError(
                f"prefix {caller_id!r} has {len(digits)} digits, more than the rule's {digits_match}")
        return digits
    if len(digits) < digits_match:
        raise CallerIDError(
            f"caller ID {caller_id!r} has {len(digits)} digits, fewer than the rule's {digits_match}")
    return digits[-digits_match:]
