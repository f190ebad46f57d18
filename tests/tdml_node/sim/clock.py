"""An asyncio event loop on a simulated clock, so real node code runs in simulated time.

The loop's ``time()`` is a counter that only moves when the loop has
nothing to do but wait: instead of blocking in ``select`` for the time to
the next timer, the selector moves the clock forward by that much and
returns at once. Everything the node awaits (``asyncio.sleep``,
``call_later``, ``asyncio.timeout``) then happens in simulated time, as
fast as the machine runs the code and in an order fixed by the schedule, so
a seed replays exactly.

Nothing may run in another thread while the loop waits (the clock would
jump past it): the simulated nodes use an inline work queue and offload.

This module must never touch a real socket: the only file descriptor it
watches is the loop's own wake-up pipe.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Mapping
from typing import Any


class Deadlock(RuntimeError):
    """The loop has nothing to run and no timer to wait for: every task waits on something that never comes."""


class _VirtualSelector(selectors.BaseSelector):
    def __init__(self) -> None:
        self._real = selectors.DefaultSelector()
        self.now = 0.0

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready:
            return ready
        if timeout is None:
            raise Deadlock("nothing to run and no timer to wait for")
        # At least a microsecond: a wait shorter than the clock's rounding
        # (``now + timeout == now``) would otherwise never move it.
        if timeout > 0:
            self.now += max(timeout, 1e-6)
        return []

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()


class VirtualClockLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._virtual = _VirtualSelector()
        super().__init__(self._virtual)
        self._clock_resolution = 1e-9

    def time(self) -> float:
        return self._virtual.now
