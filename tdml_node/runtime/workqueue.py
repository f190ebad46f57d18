"""One worker thread for the node's torch work, served by priority.

Torch work (training, replay, aggregation, block validation) must never run
on the event loop. It runs here, one call at a time so the execution profile
(thread count, determinism flags) applies to the whole call, highest
priority first: consensus-critical work (building and validating blocks)
before checking other trainers' units before training our own.

Blocking calls that are not torch work (database writes) go through an
``Offload``: a thread in a real node (``in_thread``), the caller itself in a
simulation with a virtual clock (``inline``), where a thread would let
simulated time run on while the call is in flight.

This module must never know what the work means.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

PRIORITY_CONSENSUS = 0
PRIORITY_CHECK = 1
PRIORITY_TRAIN = 2

RECENT_JOBS = 16


class Offload(Protocol):
    """Runs one blocking call off the event loop and awaits its result."""

    def __call__(self, fn: Callable[..., T], /, *args: Any) -> Awaitable[T]: ...


def in_thread(fn: Callable[..., T], /, *args: Any) -> Awaitable[T]:
    return asyncio.to_thread(fn, *args)


async def inline(fn: Callable[..., T], /, *args: Any) -> T:
    return fn(*args)


class Worker(Protocol):
    """What the node needs of its work queue (a thread in a real node, inline in a simulation)."""

    def submit(self, priority: int, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]: ...

    def longest_recent_seconds(self) -> float: ...

    def close(self, timeout: float = 30.0) -> None: ...


class WorkQueue:
    def __init__(self, name: str = "tdml-work") -> None:
        self._heap: list[tuple[int, int, Callable[[], None]]] = []
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self.busy_seconds = 0.0
        self._recent_seconds: collections.deque[float] = collections.deque(maxlen=RECENT_JOBS)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, priority: int, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run ``fn(*args)`` on the worker; the returned future resolves on the caller's loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def job() -> None:
            started = time.perf_counter()
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the awaiting coroutine, which decides
                self._record(time.perf_counter() - started)
                loop.call_soon_threadsafe(_set_exception, future, exc)
            else:
                # Recorded before the caller is woken, so a caller that asks
                # right after its call sees that call counted.
                self._record(time.perf_counter() - started)
                loop.call_soon_threadsafe(_set_result, future, result)

        with self._cond:
            if self._closed:
                raise RuntimeError("work queue is closed")
            heapq.heappush(self._heap, (priority, next(self._counter), job))
            self._cond.notify()
        return future

    def pending(self) -> int:
        with self._cond:
            return len(self._heap)

    def longest_recent_seconds(self) -> float:
        """The longest of the last few calls: how long urgent work may wait behind a call already running."""
        with self._cond:
            return max(self._recent_seconds, default=0.0)

    def close(self, timeout: float = 30.0) -> None:
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify_all()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                _, _, job = heapq.heappop(self._heap)
            job()

    def _record(self, took: float) -> None:
        with self._cond:
            self.busy_seconds += took
            self._recent_seconds.append(took)


def _set_result(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
