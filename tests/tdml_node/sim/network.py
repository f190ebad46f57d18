"""A simulated network between in-process nodes: delays, drops, duplicates, partitions, on the simulated clock.

``SimHub`` joins one ``SimLink`` per node. A link is what the node sees as
its ``Network`` (``tdml_node.runtime.netlink``): gossip goes to every
reachable peer after a delay drawn from the hub's seeded generator, may be
duplicated before the stabilisation time (GST), and never crosses a
partition; requests for blobs and blocks are answered from the peer's own
handlers after a delay. Each delivery runs as a task, as a real
connection's does.

Nodes talk over websockets, so a message on a live connection is never
lost: a "dropped" message is a connection that broke. The pair stays apart
for a while, then reconnects, and both sides catch each other up
(``on_peer_connected``), as a real reconnection does.

Every consensus message a node publishes passes through the hub, which
records it for the invariants (no honest key signs two different votes or
proposals for one height, round and step).

This module must never use a real socket or thread: everything happens on
the simulated clock.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from consensus.types import Hash32, SignedProposal, SignedVote
from p2p.gossip import message_id
from p2p.messages import GossipPayload
from tdml_node.node.handlers import PeerHandlers


@dataclass
class NetworkModel:
    """How the simulated network misbehaves before GST (``gst_ms``); after it, delays stay under ``delta_ms``."""

    gst_ms: int = 0
    delta_ms: int = 20
    max_delay_ms: int = 600
    drop: float = 0.0
    duplicate: float = 0.0
    partitions: list[tuple[int, int, frozenset[int]]] = field(default_factory=list)
    """(start ms, end ms, nodes cut off from the rest) — all end before GST."""
    lagging: frozenset[int] = frozenset()
    lag_ms: int = 3_000
    """Before GST, messages to the ``lagging`` nodes take up to ``lag_ms`` (so arrive far out of
    order, heights ahead of the one they are at), as they do to a node too busy to keep up."""


class SimHub:
    def __init__(self, rng: random.Random, model: NetworkModel, spawn: Callable[[Coroutine[Any, Any, Any], str], None]) -> None:
        self.rng = rng
        self.model = model
        self._spawn = spawn
        self.links: dict[int, SimLink] = {}
        self.up: set[int] = set()
        self.signed: list[tuple[int, SignedProposal | SignedVote]] = []
        self.penalties: list[tuple[int, int, str, int]] = []
        self.broken: dict[tuple[int, int], int] = {}
        """Pairs whose connection is broken now, each with the number of its latest break."""
        self._breaks = 0
        self.reconnected: Callable[[int, int], None] = lambda a, b: None

    def link(self, index: int, key: bytes) -> SimLink:
        link = SimLink(self, index, key)
        self.links[index] = link
        return link

    def now_ms(self) -> float:
        return asyncio.get_running_loop().time() * 1000

    def reachable(self, a: int, b: int) -> bool:
        if a == b or a not in self.up or b not in self.up:
            return False
        now = self.now_ms()
        if (min(a, b), max(a, b)) in self.broken:
            return False
        return not any(start <= now < end and ((a in cut) != (b in cut)) for start, end, cut in self.model.partitions)

    def delay_s(self, dst: int | None = None) -> float:
        model = self.model
        if self.now_ms() >= model.gst_ms:
            return self.rng.uniform(1, model.delta_ms) / 1000
        longest = model.lag_ms if dst in model.lagging else model.max_delay_ms
        return self.rng.uniform(1, longest) / 1000

    def deliver(self, src: int, dst: int, payload: GossipPayload) -> None:
        if not self.reachable(src, dst):
            return
        before_gst = self.now_ms() < self.model.gst_ms
        if before_gst and self.rng.random() < self.model.drop:
            self._break(src, dst)
            return
        copies = 2 if before_gst and self.rng.random() < self.model.duplicate else 1
        for _ in range(copies):
            asyncio.get_running_loop().call_later(self.delay_s(dst), self._arrive, src, dst, payload)

    def _break(self, a: int, b: int) -> None:
        pair = (min(a, b), max(a, b))
        self._breaks += 1
        self.broken[pair] = self._breaks
        asyncio.get_running_loop().call_later(self.rng.uniform(0.05, 0.5), self._reconnect, pair, self._breaks)

    def _reconnect(self, pair: tuple[int, int], which: int) -> None:
        if self.broken.get(pair) != which:
            return  # it broke again meanwhile; the later break's reconnection is the one
        del self.broken[pair]
        if self.reachable(*pair):
            self.reconnected(*pair)

    def deliver_status(self, src: int, dst: int, height: int) -> None:
        if self.reachable(src, dst):
            asyncio.get_running_loop().call_later(self.delay_s(dst), self._status_arrives, src, dst, height)

    def _status_arrives(self, src: int, dst: int, height: int) -> None:
        link = self.links[dst]
        if link.handlers is not None and self.reachable(src, dst):
            link.handlers.on_peer_status(self.links[src].key, height)

    def _arrive(self, src: int, dst: int, payload: GossipPayload) -> None:
        link = self.links[dst]
        if link.handlers is None or not self.reachable(src, dst) or not link.first_sight(payload):
            return
        self._spawn(link.handlers.on_gossip(payload, self.links[src].key), f"deliver-{src}-{dst}")


class SimLink:
    """One node's face of the simulated network (the ``Network`` protocol the node uses)."""

    def __init__(self, hub: SimHub, index: int, key: bytes) -> None:
        self.hub = hub
        self.index = index
        self.key = key
        self.handlers: PeerHandlers | None = None
        self._seen: set[bytes] = set()

    def attach(self, handlers: PeerHandlers | None) -> None:
        """The node behind this link, or None while it is down (a restarted node has seen nothing yet)."""
        self.handlers = handlers
        self._seen.clear()

    def first_sight(self, payload: GossipPayload) -> bool:
        """Whether this node has not seen the payload yet (the real network's seen-cache)."""
        digest = message_id(payload)
        if digest in self._seen:
            return False
        self._seen.add(digest)
        return True

    def _peers(self) -> list[SimLink]:
        return [link for i, link in sorted(self.hub.links.items()) if self.hub.reachable(self.index, i)]

    async def broadcast(self, payload: GossipPayload, exclude: object = None) -> None:
        self._seen.add(message_id(payload))
        if isinstance(payload, SignedProposal | SignedVote):
            self.hub.signed.append((self.index, payload))
        for peer in self._peers():
            if peer.key != exclude:
                self.hub.deliver(self.index, peer.index, payload)

    def send_to(self, peer_id: bytes, payload: GossipPayload) -> bool:
        if isinstance(payload, SignedProposal | SignedVote):
            self.hub.signed.append((self.index, payload))
        for peer in self._peers():
            if peer.key == peer_id:
                self.hub.deliver(self.index, peer.index, payload)
                return True
        return False

    def penalize(self, peer_id: bytes, reason: str, severity: int) -> None:
        src = next((i for i, link in self.hub.links.items() if link.key == peer_id), -1)
        self.hub.penalties.append((self.index, src, reason, severity))

    async def request_blob(self, digest: Hash32, timeout: float) -> bytes | None:
        for peer in self._peers():
            await asyncio.sleep(2 * self.hub.delay_s(self.index))
            if peer.handlers is not None and self.hub.reachable(self.index, peer.index):
                data = peer.handlers.get_blob(digest)
                if data is not None:
                    return data
        return None

    async def request_blocks(self, start: int, count: int, timeout: float) -> list[tuple[bytes, bytes]]:
        peers = sorted(self._peers(), key=lambda p: -p.height())
        for peer in peers:
            if peer.height() < start:
                break
            await asyncio.sleep(2 * self.hub.delay_s(self.index))
            if peer.handlers is not None and self.hub.reachable(self.index, peer.index):
                found = peer.handlers.get_blocks(start, count)
                if found:
                    return found
        return []

    def height(self) -> int:
        return self.handlers.status()[0] if self.handlers is not None else 0

    def best_peer_height(self) -> int:
        return max((p.height() for p in self._peers()), default=0)

    def forget(self, payload: GossipPayload) -> None:
        self._seen.discard(message_id(payload))

    def announce_status(self) -> None:
        for peer in self._peers():
            self.hub.deliver_status(self.index, peer.index, self.height())

    def peer_count(self) -> int:
        return len(self._peers())

    def connected_keys(self) -> frozenset[bytes]:
        return frozenset(p.key for p in self._peers())

    def peers(self) -> list[dict[str, Any]]:
        return [{"node_id": "0x" + p.key.hex(), "height": p.height()} for p in self._peers()]

    def banned(self) -> list[str]:
        return []
