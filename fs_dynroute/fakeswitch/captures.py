"""Loads the byte-exact FreeSWITCH captures (``.repr`` files) that the ESL tests and the fake switch replay.

Each line of a capture is ``<<< +T b'...'`` (bytes FreeSWITCH sent in one recv()), ``>>> +T b'...'`` (bytes the
recording server sent) or ``### +T note``. They ship with the package (``recordings/``, copied byte for byte
from the project's ground truth, with a SHA256SUMS list that a test checks), so nothing outside it is read.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

CAPTURE_DIR = Path(__file__).resolve().parent / "recordings"

RECEIVED = "<<<"  # FreeSWITCH -> server
SENT = ">>>"  # server -> FreeSWITCH


def resolve(path: str | os.PathLike[str]) -> Path:
    """A capture path, relative to CAPTURE_DIR unless absolute (``"sync/S18.repr"``)."""
    candidate = Path(path)
    return candidate if candidate.is_absolute() else CAPTURE_DIR / candidate


def load(path: str | os.PathLike[str]) -> list[tuple[str, float, bytes]]:
    """Every wire line of a capture as (direction, seconds since accept, bytes), notes left out."""
    records = []
    for number, line in enumerate(resolve(path).read_text(encoding="ascii").splitlines(), 1):
        if not line or line.startswith("###"):
            continue
        direction, stamp, literal = line.split(" ", 2)
        data = ast.literal_eval(literal)
        if direction not in (RECEIVED, SENT) or not isinstance(data, bytes):
            raise ValueError(f"{path}:{number}: not a capture line: {line[:60]!r}")
        records.append((direction, float(stamp), data))
    return records


def received(path: str | os.PathLike[str]) -> list[bytes]:
    """The chunks FreeSWITCH sent, one per recv(), in order."""
    return [data for direction, _, data in load(path) if direction == RECEIVED]


def sent(path: str | os.PathLike[str]) -> list[bytes]:
    """The chunks the recording server sent, one per send(), in order."""
    return [data for direction, _, data in load(path) if direction == SENT]


def notes(path: str | os.PathLike[str]) -> list[str]:
    """The recording server's ``###`` notes (scenario, EOF, send errors), without the marker and timestamp."""
    lines = resolve(path).read_text(encoding="ascii").splitlines()
    return [line.split(" ", 2)[2] for line in lines if line.startswith("### ")]


def names(*subdirs: str) -> list[str]:
    """Sorted capture names such as ``"sync/S18.repr"`` in the given subdirectories."""
    return sorted(f"{sub}/{p.name}" for sub in subdirs for p in (CAPTURE_DIR / sub).glob("*.repr"))


def scenario_chunks(path: str | os.PathLike[str]) -> list[tuple[str, bytes]]:
    """The chunks FreeSWITCH sent, each with the scenario running when it came (``s1``...; ``""`` before the
    first): a ``### +T scenario sN: ...`` note starts a scenario (the inbound captures mark them so)."""
    current, out = "", []
    for line in resolve(path).read_text(encoding="ascii").splitlines():
        if line.startswith("### ") and line.split(" ", 3)[2:3] == ["scenario"]:
            current = line.split(" ", 4)[3].rstrip(":")
        elif line.startswith(RECEIVED + " "):
            out.append((current, ast.literal_eval(line.split(" ", 2)[2])))
    return out
