"""The node's one torch worker: priority order, errors handed back, and how long its calls run."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from tdml_node.runtime.workqueue import (
    PRIORITY_CHECK,
    PRIORITY_CONSENSUS,
    PRIORITY_TRAIN,
    RECENT_JOBS,
    WorkQueue,
)


@pytest.fixture
def queue() -> Iterator[WorkQueue]:
    q = WorkQueue("test-work")
    yield q
    q.close(timeout=10)


async def test_waiting_calls_run_by_priority_then_arrival(queue: WorkQueue) -> None:
    gate = threading.Event()
    order: list[str] = []
    first = queue.submit(PRIORITY_TRAIN, gate.wait, 10)
    waiting = [
        queue.submit(PRIORITY_TRAIN, order.append, "train"),
        queue.submit(PRIORITY_CHECK, order.append, "check"),
        queue.submit(PRIORITY_CONSENSUS, order.append, "consensus-1"),
        queue.submit(PRIORITY_CONSENSUS, order.append, "consensus-2"),
    ]
    gate.set()
    async with asyncio.timeout(10):
        await first
        await asyncio.gather(*waiting)
    assert order == ["consensus-1", "consensus-2", "check", "train"]


async def test_an_exception_reaches_the_caller_and_the_worker_goes_on(queue: WorkQueue) -> None:
    def fail() -> None:
        raise ValueError("bad unit")

    async with asyncio.timeout(10):
        with pytest.raises(ValueError, match="bad unit"):
            await queue.submit(PRIORITY_TRAIN, fail)
        assert await queue.submit(PRIORITY_TRAIN, lambda: 42) == 42


async def test_longest_recent_call_is_remembered_then_forgotten(queue: WorkQueue) -> None:
    assert queue.longest_recent_seconds() == 0.0
    async with asyncio.timeout(20):
        await queue.submit(PRIORITY_TRAIN, time.sleep, 0.2)
        assert queue.longest_recent_seconds() >= 0.2
        for _ in range(RECENT_JOBS):  # as many short calls push the long one out
            await queue.submit(PRIORITY_TRAIN, lambda: None)
    assert queue.longest_recent_seconds() < 0.2


def test_a_closed_queue_refuses_work() -> None:
    q = WorkQueue("closed")
    q.close(timeout=10)

    async def submit() -> None:
        q.submit(PRIORITY_TRAIN, lambda: None)

    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(submit())
