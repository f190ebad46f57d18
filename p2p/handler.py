"""What the network needs of the node: the ``NetworkHandler`` protocol, and how peers are named.

The node implements ``NetworkHandler`` and hands it to ``P2PNetwork.start``;
the network calls it for gossip it has not seen, for what peers ask of us,
for our status, and when a peer connects.

This module must never hold behaviour: it only declares the interface.
"""

from __future__ import annotations

from typing import Protocol

from consensus.types import Hash32, PublicKey
from p2p.messages import GossipPayload

PeerId = PublicKey
"""A peer is named by its node key, which the handshake proved."""


class NetworkHandler(Protocol):
    """What the network needs of the node."""

    async def on_gossip(self, payload: GossipPayload, peer_id: PeerId) -> None:
        """A gossiped payload not seen before; the node checks it and relays it with ``broadcast``."""

    def get_blob(self, digest: Hash32) -> bytes | None:
        """The blob with this SHA-256 digest, or None when the node does not have it."""

    def get_blocks(self, start: int, count: int) -> list[tuple[bytes, bytes]]:
        """Up to ``count`` committed (block, commit) canonical bytes from height ``start`` on."""

    def status(self) -> tuple[int, Hash32]:
        """The node's committed height and the hash of its last block."""

    def on_peer_connected(self, peer_id: PeerId) -> None:
        """A peer finished its handshake (the node may catch it up with ``send_to``)."""

    def on_peer_status(self, peer_id: PeerId, height: int) -> None:
        """A peer reported a committed height other than the one it reported before."""
