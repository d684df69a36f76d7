"""Caller-ID normalisation and key extraction, table-driven, including every shape FreeSWITCH sent."""

from __future__ import annotations

import pytest

from fs_dynroute.callerid import CallerIDError, call_key, stored_key

# (caller ID as the call carries it after URL-decoding, digits_match, expected key)
CALL_KEYS = [
    # the README's captured Caller-Caller-ID-Number values
    ("+15551111111", 10, "5551111111"),
    ("15552222222", 10, "5552222222"),
    ("+1 (555) 222-2222", 10, "5552222222"),
    ("anonymous", 10, None),
    ("0000000000", 10, None),  # FreeSWITCH's value for an empty or unset caller ID
    # the brief's three spellings of one customer
    ("+1-555-111-1111", 10, "5551111111"),
    ("5551111111", 10, "5551111111"),
    # withheld words, any case
    ("Anonymous", 10, None), ("restricted", 10, None), ("UNKNOWN", 10, None), ("private", 10, None),
    ("", 10, None), (None, 10, None), ("   ", 10, None),
    # shorter than digits_match never matches
    ("5551111", 10, None), ("1001", 4, "1001"), ("1001", 5, None),
    # not a phone number at all
    ("sip:1001@example.com", 4, None), ("555abc1111", 7, None),
    # other lengths
    ("+44 20 7946 0958", 7, "9460958"), ("+15551111111", 11, "15551111111"), ("+15551111111", 20, None),
    ("0044 20 7946 0958", 12, "442079460958"),
    ("(555) 111.1111", 10, "5551111111"),
]


@pytest.mark.parametrize("caller_id, digits, expected", CALL_KEYS)
def test_call_key(caller_id: str | None, digits: int, expected: str | None) -> None:
    assert call_key(caller_id, digits) == expected


@pytest.mark.parametrize("spelling", ["+15551111111", "1-555-111-1111", "5551111111", "+1 (555) 111-1111"])
def test_stored_spellings_are_one_key(spelling: str) -> None:
    assert stored_key(spelling, 10) == "5551111111" == call_key(spelling, 10)


@pytest.mark.parametrize("caller_id, digits, prefix, expected", [
    ("555", 10, True, "555"), ("+1 555", 10, True, "1555"), ("5551111111", 10, True, "5551111111"),
])
def test_stored_prefix(caller_id: str, digits: int, prefix: bool, expected: str) -> None:
    assert stored_key(caller_id, digits, prefix) == expected


@pytest.mark.parametrize("caller_id, digits, prefix, reason", [
    ("anonymous", 10, False, "not a phone number"),
    ("0000000000", 10, False, "not a phone number"),
    ("555-1111", 10, False, "fewer than"),
    ("1-800-FLOWERS", 10, False, "not a phone number"),
    ("15551111111", 10, True, "more than"),
])
def test_stored_key_refuses_with_reason(caller_id: str, digits: int, prefix: bool, reason: str) -> None:
    with pytest.raises(CallerIDError, match=reason):
        stored_key(caller_id, digits, prefix)


@pytest.mark.parametrize("digits", ["٥٥٥١١١١١١١", "555¹¹¹¹¹¹¹", "５５５１１１１１１１", "555\u0660111111"])
def test_only_ascii_digits_make_a_key(digits: str) -> None:
    """str.isdigit() says yes to these; no call can ever carry them as a key, so nothing may store them."""
    assert call_key(digits, 10) is None
    with pytest.raises(CallerIDError, match="not a phone number"):
        stored_key(digits, 10)
