"""Answering what peers ask of this node: blob chunks, block ranges and addresses to dial.

``Server.answer`` turns one request from an established peer into the
message to send back (or None when it gets no answer):

- ``BlobRequest``: the chunk at the asked offset of the blob the store has
  under that digest, with the blob's total size, or ``NotFound``;
- ``BlocksRequest``: as many committed (block, commit) pairs from the asked
  height on as fit in one ``Blocks`` frame, or ``NotFound``;
- ``PeersRequest``: the addresses of our other peers and of the address
  book's good entries, without the asker's or our own; answered at most
  twice per peer-exchange interval, since each answer costs up to 16 KiB.

An exception from the store is logged and answered as if it had nothing, so
a broken store never breaks a connection.

This module must never send, close or score: it returns the answer and the
network sends it. It must never trust a stored block's size blindly: a block
too large for a frame is not sent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import Protocol

from consensus.types import Hash32
from p2p.link import Link
from p2p.messages import (
    BLOCKS_LIMIT,
    MAX_BLOCK_BYTES,
    MAX_COMMIT_BYTES,
    MAX_PEERS_PER_MESSAGE,
    BlobChunk,
    BlobRequest,
    Blocks,
    BlocksRequest,
    BlockWithCommit,
    NotFound,
    Peers,
    PeersRequest,
)
from p2p.peers import PeerBook

log = logging.getLogger("tdml.p2p")

# Room kept in a Blocks frame for its envelope and each item's framing.
_BLOCKS_ENVELOPE = 1024
_BLOCK_ITEM_OVERHEAD = 16

ServedRequest = BlobRequest | BlocksRequest | PeersRequest


class Store(Protocol):
    """What serving needs of the node: its blobs and its committed blocks."""

    def get_blob(self, digest: Hash32) -> bytes | None: ...

    def get_blocks(self, start: int, count: int) -> list[tuple[bytes, bytes]]: ...


class Server:
    """Answers peers' requests from the node's store, the peer book and the peers connected now."""

    def __init__(
        self,
        store: Store,
        book: PeerBook,
        peers: Callable[[], Collection[Link]],
        *,
        own_addr: str,
        pex_interval: float,
        me: str = "",
    ) -> None:
        self._store = store
        self._book = book
        self._peers = peers
        self._own_addr = own_addr
        self._pex_interval = pex_interval
        self._me = me

    def answer(self, asker: Link, req: ServedRequest, now: float) -> Blocks | BlobChunk | NotFound | Peers | None:
        """The answer to ``req`` from ``asker``, or None when it gets none."""
        if isinstance(req, BlobRequest):
            return self.answer_blob(req)
        if isinstance(req, BlocksRequest):
            return self.answer_blocks(req)
        if now - asker.last_peers_answer < self._pex_interval / 2:
            return None
        asker.last_peers_answer = now
        return Peers(tuple(self.get_addresses_to_share(asker, now)))

    def answer_blob(self, req: BlobRequest) -> BlobChunk | NotFound:
        try:
            blob = self._store.get_blob(req.digest)
        except Exception:
            log.exception("%s: handler.get_blob failed", self._me)
            blob = None
        if blob is None or req.offset > len(blob) or (req.offset == len(blob) and blob):
            return NotFound(req.req_id)
        data = blob[req.offset : req.offset + req.length]
        return BlobChunk(req.req_id, req.digest, req.offset, len(blob), bytes(data))

    def answer_blocks(self, req: BlocksRequest) -> Blocks | NotFound:
        try:
            found = self._store.get_blocks(req.start_height, req.count)
        except Exception:
            log.exception("%s: handler.get_blocks failed", self._me)
            found = []
        items: list[BlockWithCommit] = []
        budget = BLOCKS_LIMIT - _BLOCKS_ENVELOPE
        for block, commit in found[: req.count]:
            if len(block) > MAX_BLOCK_BYTES or len(commit) > MAX_COMMIT_BYTES:
                log.error("%s: a stored block of %d bytes is too large to send", self._me, len(block))
                break
            item = BlockWithCommit(bytes(block), bytes(commit))
            cost = len(item.block) + len(item.commit) + _BLOCK_ITEM_OVERHEAD
            if cost > budget:
                break
            budget -= cost
            items.append(item)
        if not items:
            return NotFound(req.req_id)
        return Blocks(req.req_id, tuple(items))

    def get_addresses_to_share(self, asker: Link, now: float) -> list[str]:
        """Up to ``MAX_PEERS_PER_MESSAGE`` addresses for ``asker``: our other peers', then the book's."""
        out = [c.listen_addr for c in self._peers() if c is not asker and c.listen_addr]
        out += self._book.shareable_addresses(now, MAX_PEERS_PER_MESSAGE)
        skip = {asker.listen_addr, asker.dial_addr, self._own_addr}
        unique = [a for a in dict.fromkeys(out) if a not in skip]
        return unique[:MAX_PEERS_PER_MESSAGE]
