"""Block sync: fetching certified blocks while peers report a higher height than ours.

One height behind is normal for an instant (a peer committed first), so a
sync starts only if it lasts past one check. While blocks come, the next
batch is asked for at once. Fetched blocks go to the node's inbox, which
applies them in order with the commits that certify them (the model work is
not recomputed: the commit proves that more than two thirds of the power
did); the loop waits until they are applied before it asks again.

A sync of ``LOG_MIN_BLOCKS`` or more is reported at INFO: when it starts,
then at most every ``PROGRESS_SECONDS`` or each further tenth of the way
(height, percent, blocks/s), and when it ends; a shorter one (a node a
block or two behind under load) only at DEBUG.

This module must never apply a block itself, nor trust one without its commit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from consensus.codec import DecodeError, decode_as
from consensus.types import Block, CommitCertificate
from tdml_node.runtime.netlink import Network
from tdml_node.runtime.views import ChainView

log = logging.getLogger("tdml.sync")

SYNC_BATCH = 64
CHECK_SECONDS = 0.5
REQUEST_TIMEOUT = 10.0
LOG_MIN_BLOCKS = 10
PROGRESS_SECONDS = 5.0


@dataclass(slots=True)
class SyncProgress:
    """One sync's report card: where it started and aims, and when it last said so (the clock is an input)."""

    start: int
    target: int
    started_at: float
    last_height: int = field(init=False)
    last_at: float = field(init=False)

    def __post_init__(self) -> None:
        self.last_height, self.last_at = self.start, self.started_at

    def percent(self, height: int) -> int:
        return min(100, 100 * (height - self.start) // max(1, self.target - self.start))

    def should_report(self, height: int, now: float) -> bool:
        """Every ``PROGRESS_SECONDS``, or as the sync crosses another tenth of the way."""
        return now - self.last_at >= PROGRESS_SECONDS or self.percent(height) // 10 > self.percent(self.last_height) // 10

    def report(self, height: int, now: float) -> dict[str, int | float]:
        fields: dict[str, int | float] = {
            "height": height, "target": self.target, "percent": self.percent(height),
            "blocks_per_s": round((height - self.start) / max(now - self.started_at, 1e-3), 1),
        }
        self.last_height, self.last_at = height, now
        return fields


@dataclass(frozen=True, slots=True)
class SyncedBlocks:
    """Certified blocks fetched from a peer, to apply in order."""

    items: tuple[tuple[Block, CommitCertificate], ...]
    done: asyncio.Future[None]
    """Resolved by the node once it has applied (or refused) the blocks."""


class Syncer:
    def __init__(self, chain: ChainView, network: Network, deliver: Callable[[SyncedBlocks], None]) -> None:
        self.chain = chain
        self.network = network
        self._deliver = deliver
        self.syncing_to = 0
        """The height being synced to, 0 when in step with the peers."""
        self._progress: SyncProgress | None = None

    async def run(self) -> None:
        behind_by_one_since: int | None = None
        while True:
            if not self.syncing_to:
                await asyncio.sleep(CHECK_SECONDS)
            best = self.network.best_peer_height()
            height = self.chain.state.height
            if best <= height or (best == height + 1 and behind_by_one_since != height):
                behind_by_one_since = height if best == height + 1 else None
                self._finish(height)
                continue
            self.syncing_to = best
            self._note(height, best)
            start = height + 1
            items = await self._fetch(start)
            if not items:
                self._finish(height)
                continue
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._deliver(SyncedBlocks(tuple(items), done))
            await done
            if self.chain.state.height < start:  # nothing applied: back off before asking again
                self._finish(self.chain.state.height)

    def _note(self, height: int, best: int) -> None:
        now = time.monotonic()
        progress = self._progress
        if progress is None:
            progress = self._progress = SyncProgress(height, best, now)
            level = logging.INFO if best - height >= LOG_MIN_BLOCKS else logging.DEBUG
            log.log(level, "sync started", extra={"height": height, "target": best})
            return
        progress.target = max(progress.target, best)
        if progress.target - progress.start >= LOG_MIN_BLOCKS and progress.should_report(height, now):
            log.info("sync progress", extra=progress.report(height, now))

    def _finish(self, height: int) -> None:
        self.syncing_to = 0
        progress, self._progress = self._progress, None
        if progress is None:
            return
        level = logging.INFO if progress.target - progress.start >= LOG_MIN_BLOCKS else logging.DEBUG
        fields = progress.report(height, time.monotonic())
        log.log(level, "sync finished", extra={**fields, "blocks": height - progress.start})

    async def _fetch(self, start: int) -> list[tuple[Block, CommitCertificate]]:
        raw = await self.network.request_blocks(start, SYNC_BATCH, timeout=REQUEST_TIMEOUT)
        try:
            return [(decode_as(b, Block), decode_as(c, CommitCertificate)) for b, c in raw]
        except DecodeError as exc:
            log.warning("a peer sent undecodable blocks: %s", exc)
            return []
