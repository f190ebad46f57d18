"""The node's wall clock, in milliseconds since the Unix epoch, as an injectable function.

Block times (decision 26) are the only wall-clock readings that reach
consensus data: the proposer stamps its block with one, and a validator
compares a fresh proposal's stamp with its own reading when it arrives.
Both take the clock as a ``WallClock`` so that a simulation can drive it
from its simulated time and replay a run by its seed. The proposer reads it
on the work queue (a thread in a real node, the loop in a simulation), so a
``WallClock`` must be safe to call from either.

This module must never be read from ``consensus``: the core stays clock-free.
"""

from __future__ import annotations

import time
from collections.abc import Callable

WallClock = Callable[[], int]


def system_wall_ms() -> int:
    return time.time_ns() // 1_000_000
