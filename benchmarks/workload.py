"""The benchmark's routes and calls: which keys are stored, which caller IDs call, and where each must end.

Shared by ``make_routes`` (what goes into the database) and ``loadgen`` (what it dials and what it expects),
so the expected target of every call is computed, never looked up.
"""

from __future__ import annotations

import random

RULE = "Customer Routing"  # the demo rule: source 5550100, last 10 digits, No Match = main-ivr
SOURCE = "5550100"
DIGITS = 10
NO_MATCH_TARGET = "5000 XML default"  # main-ivr, the demo's named No Match Destination
DEFAULT_CONTEXT = "default"

HIT_BASE = 5_550_000_000  # route i has key HIT_BASE + i (5550000000..5550999999 for 1M routes)
MISS_BASE = 5_559_000_000  # never stored; the demo's own routes (5551111111, 5552222222) are outside both ranges
MAX_ROUTES = 1_000_000 * 4  # keys stay below MISS_BASE


def route_key(i: int) -> str:
    return str(HIT_BASE + i)


def route_destination(i: int) -> str:
    """A bare extension 1000-1999, spread so neighbouring keys go to different extensions."""
    return str(1000 + (i * 7919) % 1000)


def expected_target(key: str, routes: int) -> str:
    """Where a call with this 10-digit key must be sent: its route's extension, else the No Match Destination."""
    i = int(key) - HIT_BASE
    if 0 <= i < routes:
        return f"{route_destination(i)} XML {DEFAULT_CONTEXT}"
    return NO_MATCH_TARGET


def caller_formats(key: str) -> tuple[str, str, str]:
    """The same caller three ways, as carriers send it: E.164, national with a 1, and bare."""
    return "+1" + key, "1" + key, key


class Calls:
    """An endless, seeded stream of (caller ID, key) with ``hit_ratio`` of them stored in the database."""

    def __init__(self, routes: int, hit_ratio: float = 0.5, seed: int = 1) -> None:
        self.routes = routes
        self.hit_ratio = hit_ratio
        self.rng = random.Random(seed)

    def next(self) -> tuple[str, str]:
        rng = self.rng
        i = rng.randrange(max(self.routes, 1))
        key = route_key(i) if rng.random() < self.hit_ratio and self.routes else str(MISS_BASE + i)
        return caller_formats(key)[rng.randrange(3)], key
