"""Gossip deduplication: message ids and a bounded, expiring cache of the ids already seen.

A gossiped payload is identified by the hash of its canonical bytes, so the
same message relayed by several peers is handled once. The cache forgets an
id ``ttl`` seconds after it was last seen, and the least recently seen ids
first when it is full, so its memory is bounded whatever peers send.

This module must never do I/O or read a clock: the time comes in as ``now``.
"""

from __future__ import annotations

from collections import OrderedDict

from consensus.crypto import hash_value
from consensus.types import Hash32
from p2p.messages import GossipPayload

DEFAULT_SEEN_CAPACITY = 100_000
DEFAULT_SEEN_TTL = 600.0


def message_id(payload: GossipPayload) -> Hash32:
    """The id of a gossiped payload: the hash of its canonical bytes."""
    return hash_value(payload)


class SeenCache:
    """The ids seen in the last ``ttl`` seconds, at most ``capacity`` of them."""

    def __init__(self, capacity: int = DEFAULT_SEEN_CAPACITY, ttl: float = DEFAULT_SEEN_TTL) -> None:
        if capacity < 1 or ttl <= 0:
            raise ValueError("a seen-cache needs a positive capacity and ttl")
        self.capacity = capacity
        self.ttl = ttl
        # id -> expiry time, oldest first: an id seen again moves to the end,
        # so expiries are in order and expiring stops at the first live one.
        self._expiry: OrderedDict[bytes, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._expiry)

    def add(self, msg_id: bytes, now: float) -> bool:
        """Record ``msg_id`` as seen at ``now``; True if it was not already seen."""
        self.expire(now)
        fresh = msg_id not in self._expiry
        self._expiry[msg_id] = now + self.ttl
        self._expiry.move_to_end(msg_id)
        while len(self._expiry) > self.capacity:
            self._expiry.popitem(last=False)
        return fresh

    def discard(self, msg_id: bytes) -> None:
        self._expiry.pop(msg_id, None)

    def contains(self, msg_id: bytes, now: float) -> bool:
        expiry = self._expiry.get(msg_id)
        return expiry is not None and expiry > now

    def expire(self, now: float) -> None:
        while self._expiry:
            oldest, expiry = next(iter(self._expiry.items()))
            if expiry > now:
                break
            del self._expiry[oldest]
