"""Block sync: fetching certified blocks while peers report a higher height than ours.

One height behind is normal for an instant (a peer committed first), so a
sync starts only if it lasts past one check. While blocks come, the next
batch is asked for at once. Fetched blocks go to the node's inbox, which
applies them in order with the commits that certify them (the model work is
not recomputed: the commit proves that more than two thirds of the power
did); the loop waits until they are applied before it asks again.

This module must never apply a block itself, nor trust one without its commit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from consensus.codec import DecodeError, decode_as
from consensus.types import Block, CommitCertificate
from tdml_node.runtime.netlink import Network
from tdml_node.runtime.views import ChainView

log = logging.getLogger("tdml.sync")

SYNC_BATCH = 64
CHECK_SECONDS = 0.5
REQUEST_TIMEOUT = 10.0


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

    async def run(self) -> None:
        behind_by_one_since: int | None = None
        while True:
            if not self.syncing_to:
                await asyncio.sleep(CHECK_SECONDS)
            best = self.network.best_peer_height()
            height = self.chain.state.height
            if best <= height or (best == height + 1 and behind_by_one_since != height):
                behind_by_one_since = height if best == height + 1 else None
                self.syncing_to = 0
                continue
            self.syncing_to = best
            start = height + 1
            items = await self._fetch(start)
            if not items:
                self.syncing_to = 0
                continue
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._deliver(SyncedBlocks(tuple(items), done))
            await done
            if self.chain.state.height < start:  # nothing applied: back off before asking again
                self.syncing_to = 0

    async def _fetch(self, start: int) -> list[tuple[Block, CommitCertificate]]:
        raw = await self.network.request_blocks(start, SYNC_BATCH, timeout=REQUEST_TIMEOUT)
        try:
            return [(decode_as(b, Block), decode_as(c, CommitCertificate)) for b, c in raw]
        except DecodeError as exc:
            log.warning("a peer sent undecodable blocks: %s", exc)
            return []
