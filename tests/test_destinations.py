"""Destination validation and resolution: nothing unsafe or empty can become a transfer target."""

from __future__ import annotations

import pytest

from fs_dynroute.destinations import DestinationError, resolve, validate_transfer

NAMES = {"main-ivr": "5000 XML default", "vip": "7000 XML vip"}


@pytest.mark.parametrize("dest, expected", [
    ("main-ivr", "5000 XML default"),
    ("1001", "1001 XML public"),
    ("1001 XML default", "1001 XML default"),
    ("*98", "*98 XML public"),
    ("voicemail XML default", "voicemail XML default"),
])
def test_resolve(dest: str, expected: str) -> None:
    assert resolve(dest, NAMES, "public") == expected


@pytest.mark.parametrize("dest, reason", [
    ("", "empty"),
    ("sales-queue", "not a defined name"),
    ("1001 XML default\nCaller-Caller-ID-Number: 1", "control character"),
    ("1001\rXML", "control character"),
    ("${foo}", "EXTENSION"),
    ("1001 XML default extra", "EXTENSION"),
    ("1001 BOGUS default", "unknown dialplan"),
    ("1001  XML", "EXTENSION"),
    ("1001\x85XML", "control character"),  # C1 (NEL): str.splitlines breaks there
    ("1001\u2028", "control character"),
    ("1001|dynroute_result=match", "contains '|'"),  # the separator of the values sent in one multiset
    ("1" * 256, "longer than 255"),
])
def test_refuse(dest: str, reason: str) -> None:
    with pytest.raises(DestinationError, match=reason):
        resolve(dest, NAMES, "default")


def test_named_destination_pointing_at_garbage_is_refused() -> None:
    with pytest.raises(DestinationError):
        resolve("bad", {"bad": "x\ny"}, "default")
    assert validate_transfer("1001") == "1001"
