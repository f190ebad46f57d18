"""The background tasks a node owns: started by name, reported when they fail, all cancelled at the end.

A task that ends with a ``LocalFault`` (storage failed, an invariant broke)
stops the node through the ``on_fatal`` callback; any other failure is
logged and the node carries on. ``aclose`` cancels and awaits every task
still running, so nothing outlives its owner.

This module must never start a task that nobody owns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from consensus.errors import LocalFault

log = logging.getLogger("tdml.tasks")


class TaskOwner:
    def __init__(self, on_fatal: Callable[[BaseException], None]) -> None:
        self._on_fatal = on_fatal
        self._tasks: set[asyncio.Future[Any]] = set()

    def spawn(self, aw: Coroutine[Any, Any, Any] | asyncio.Future[Any], name: str) -> None:
        """Run ``aw`` as a task this owner cancels and awaits at the end."""
        task = asyncio.ensure_future(aw)
        if isinstance(task, asyncio.Task):
            task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def __len__(self) -> int:
        return len(self._tasks)

    def _done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        name = task.get_name() if isinstance(task, asyncio.Task) else "?"
        if isinstance(exc, LocalFault):
            log.error("task %s: %s", name, exc)
            self._on_fatal(exc)
        elif exc is not None:
            log.error("task %s failed: %r", name, exc, exc_info=exc)

    async def aclose(self) -> None:
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t


class StopSignal:
    """Why and when a node stops: asked to (``request``), or halted by a fault it cannot go on after."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.fatal: BaseException | None = None

    def request(self) -> None:
        self.event.set()

    def halt(self, exc: BaseException) -> None:
        if self.fatal is None:
            self.fatal = exc
        self.event.set()
