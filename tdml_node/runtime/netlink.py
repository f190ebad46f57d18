"""What the node needs of the peer-to-peer network, and fetching blobs through it.

``Network`` is the narrow face of ``p2p.network.P2PNetwork`` the node uses;
``NoNetwork`` is the single-node stand-in that reaches no one. ``BlobFetcher``
gets a missing blob (a dataset, a model state, a trainer's result or
checkpoint) from peers at most once at a time per digest and stores it; the
network has already checked it against its digest, and the store checks again.

This module must never interpret gossip: the node does.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol, runtime_checkable

from consensus.crypto import sha256
from consensus.types import Hash32
from p2p.messages import GossipPayload
from tdml_node.runtime.workqueue import Offload, in_thread
from tdml_node.storage import ChainStore

log = logging.getLogger("tdml.net")


class Network(Protocol):
    async def broadcast(self, payload: GossipPayload, exclude: object = None) -> None: ...

    def send_to(self, peer_id: bytes, payload: GossipPayload) -> bool: ...

    def forget(self, payload: GossipPayload) -> None: ...

    def penalize(self, peer_id: bytes, reason: str, severity: int) -> None: ...

    async def request_blob(self, digest: Hash32, timeout: float) -> bytes | None: ...

    async def request_blocks(self, start: int, count: int, timeout: float) -> list[tuple[bytes, bytes]]: ...

    def best_peer_height(self) -> int: ...

    def announce_status(self) -> None: ...

    def peer_count(self) -> int: ...

    def connected_keys(self) -> frozenset[bytes]: ...

    def peers(self) -> list[dict[str, Any]]: ...

    def banned(self) -> list[str]: ...


@runtime_checkable
class Partitionable(Protocol):
    """A network a test can cut off from some peers (dev networks' ``tdml_devPartition``)."""

    def set_partitioned(self, keys: set[bytes]) -> None: ...


class NoNetwork:
    """A node alone: gossip goes nowhere and nothing can be fetched."""

    async def broadcast(self, payload: GossipPayload, exclude: object = None) -> None:
        return None

    def send_to(self, peer_id: bytes, payload: GossipPayload) -> bool:
        return False

    def forget(self, payload: GossipPayload) -> None:
        return None

    def penalize(self, peer_id: bytes, reason: str, severity: int) -> None:
        return None

    async def request_blob(self, digest: Hash32, timeout: float) -> bytes | None:
        return None

    async def request_blocks(self, start: int, count: int, timeout: float) -> list[tuple[bytes, bytes]]:
        return []

    def best_peer_height(self) -> int:
        return 0

    def announce_status(self) -> None:
        return None

    def peer_count(self) -> int:
        return 0

    def connected_keys(self) -> frozenset[bytes]:
        return frozenset()

    def peers(self) -> list[dict[str, Any]]:
        return []

    def banned(self) -> list[str]:
        return []


class BlobFetcher:
    def __init__(self, store: ChainStore, network: Network, *, offload: Offload = in_thread, timeout: float = 20.0) -> None:
        self.store = store
        self.network = network
        self.timeout = timeout
        self._offload = offload
        self._inflight: dict[bytes, asyncio.Future[bool]] = {}
        self.fetched = 0

    async def ensure(self, digest: bytes) -> bool:
        """True once the blob is in the store (fetched from peers if needed)."""
        if self.store.has(Hash32(digest)):
            return True
        pending = self._inflight.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._inflight[digest] = future
        try:
            data = await self.network.request_blob(Hash32(digest), self.timeout)
            ok = data is not None and sha256(data) == digest
            if ok:
                assert data is not None
                await self._offload(self.store.put, data)
                self.fetched += 1
            else:
                log.info("no peer served blob %s", digest.hex()[:16])
            future.set_result(ok)
            return ok
        except BaseException:
            future.set_result(False)
            raise
        finally:
            del self._inflight[digest]
