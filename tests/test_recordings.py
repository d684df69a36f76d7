"""The FreeSWITCH recordings the fake and the ESL tests are built from are in the package, byte for byte."""

from __future__ import annotations

import hashlib

from fs_dynroute.fakeswitch.captures import CAPTURE_DIR


def test_every_recording_is_present_and_unaltered() -> None:
    listed = {}
    for line in (CAPTURE_DIR / "SHA256SUMS").read_text(encoding="ascii").splitlines():
        digest, name = line.split(maxsplit=1)
        listed[name.removeprefix("./")] = digest
    present = {str(p.relative_to(CAPTURE_DIR)) for p in CAPTURE_DIR.rglob("*") if p.is_file()} - {"SHA256SUMS"}
    assert present == set(listed), "recordings added or removed without updating SHA256SUMS"
    changed = [name for name, digest in listed.items()
               if hashlib.sha256((CAPTURE_DIR / name).read_bytes()).hexdigest() != digest]
    assert changed == []
    assert {"sync/S18.repr", "multiset/S20_multiset_close.repr", "inbound/i2_events_plain.repr"} <= set(listed)
