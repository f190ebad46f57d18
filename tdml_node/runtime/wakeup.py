"""A level-triggered notice that something changed, for a waiter that re-checks its condition.

``notify`` bumps a counter and wakes every waiter; ``wait(since, timeout)``
returns as soon as the counter has moved past ``since`` (at once if it
already has), or when the timeout passes. A notice that comes between a
waiter's check and its wait is therefore never lost, which an
``asyncio.Event`` cleared and re-awaited can lose.

This module must never know what changed, and is used from the event loop only.
"""

from __future__ import annotations

import asyncio


class Wakeup:
    def __init__(self) -> None:
        self._count = 0
        self._waiters: set[asyncio.Future[None]] = set()

    @property
    def count(self) -> int:
        return self._count

    def notify(self) -> None:
        self._count += 1
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def wait(self, since: int, timeout: float | None) -> bool:
        """True if notified after ``since`` (the ``count`` the caller checked at), False on timeout."""
        if self._count != since:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            pass
        finally:
            self._waiters.discard(waiter)
        return self._count != since
