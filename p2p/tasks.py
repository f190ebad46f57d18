"""The tasks one network owns: started by name, failures logged, all cancelled and awaited at the end.

Every background task of a ``P2PNetwork`` (its loops, one reader and one
writer per connection, the dials) is started through its ``TaskSet``, so
``aclose`` can cancel and await whatever is left and nothing outlives the
network. Unlike ``asyncio.TaskGroup``, one task that fails does not cancel
the others: a broken connection must not take the network down; the failure
is logged.

This module must never know what its tasks do.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger("tdml.p2p")


class TaskSet:
    """Tasks that belong to one owner; ``owner`` names it in log lines."""

    def __init__(self, owner: str = "") -> None:
        self._owner = owner
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run ``coro`` in a task of this set; it leaves the set when it ends."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    async def aclose(self) -> None:
        """Cancel every task and await them, including any they start while being cancelled."""
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: p2p task %s failed", self._owner, task.get_name(), exc_info=task.exception())


async def every(interval: float, action: Callable[[], None], *, first: bool = False) -> None:
    """Run ``action`` every ``interval`` seconds, forever (``first``: also once at the start)."""
    if first:
        action()
    while True:
        await asyncio.sleep(interval)
        action()
