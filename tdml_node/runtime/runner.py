"""Running torch work on the work queue, fetching a blob it finds missing and trying again.

Work that reads a blob this node does not hold (a peer's result, a
checkpoint, a model state) raises ``WorkUnavailable`` naming the digest;
the runner fetches it from peers and runs the work again, up to
``FETCH_ATTEMPTS`` times, so its callers see either the result or a
``WorkUnavailable`` that fetching could not cure.

This module must never know what the work means, and never run work on the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from consensus.work import WorkUnavailable
from tdml_node.runtime.netlink import BlobFetcher
from tdml_node.runtime.workqueue import Worker

T = TypeVar("T")

FETCH_ATTEMPTS = 8


class WorkRunner:
    def __init__(self, worker: Worker, blobs: BlobFetcher) -> None:
        self.worker = worker
        self.blobs = blobs

    async def run(self, priority: int, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the work queue; a missing blob is fetched from peers and the call retried."""
        for _ in range(FETCH_ATTEMPTS):
            try:
                return await self.worker.submit(priority, fn, *args)
            except WorkUnavailable as exc:
                if exc.digest is None or not await self.blobs.ensure(exc.digest):
                    raise
        return await self.worker.submit(priority, fn, *args)

    async def ensure_blob(self, digest: bytes) -> bool:
        """True once the blob is held here (fetched from peers if needed)."""
        return await self.blobs.ensure(digest)

    def longest_recent_seconds(self) -> float:
        return self.worker.longest_recent_seconds()
