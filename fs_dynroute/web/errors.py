"""How a UserError from admin.py becomes an HTTP answer: the status, and the field it names.

admin.py words every refusal as ``field: reason`` (or names the missing thing); this module only
reads that wording, so the API and the page give the CLI's messages, never a rule of their own.
"""

from __future__ import annotations

import re

from fs_dynroute.admin import UserError

# The CLI's option names -> the API's field names.
_FIELDS = {"digits": "digits_match", "digits/prefix": "digits_match", "nomatch-dest": "no_match_destination",
           "match-dest": "match_destination"}
_PREFIX = re.compile(r"([a-z_/\-]+): ")
_NOT_FOUND = ("does not exist", "no route for key", "no rule serves")
_CONFLICT = ("already exists", "already served", " is used by ", "is a number of source", "is the name of a source",
             "a source of that name")


def field_of(exc: UserError, default: str | None = None) -> str | None:
    """The API field an error is about: its ``field:`` prefix, else ``default``."""
    m = _PREFIX.match(str(exc))
    return _FIELDS.get(m.group(1), m.group(1)) if m else default


def status_of(exc: UserError) -> int:
    """404 for a missing rule, route or destination; 409 for a clash; 400 for anything else."""
    text = str(exc)
    if any(marker in text for marker in _NOT_FOUND):
        return 404
    if any(marker in text for marker in _CONFLICT):
        return 409
    return 400


def error_body(exc: UserError, default_field: str | None = None) -> dict[str, object]:
    return {"error": str(exc), "field": field_of(exc, default_field)}


def destination_field(exc: UserError) -> str:
    """admin.add_destination words its refusals without a field prefix: the name's, or else the transfer's."""
    return "name" if str(exc).startswith("destination name") else "transfer"
