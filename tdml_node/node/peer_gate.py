"""The bound on peers' consensus messages waiting in the node's inbox.

The inbox also carries the node's own events (timeouts, its votes, built
values, synced blocks), which must never be refused: losing one would stall
the node. Peers' proposals and votes are different: a flood of them is
attack traffic, and an honest message dropped under such a flood costs at
most a round, which the timeouts recover. So peers' messages are admitted
only while fewer than ``limit`` items wait, and the drops are counted.

This module must never drop the node's own events, nor judge a message.
"""

from __future__ import annotations

import asyncio
from typing import Generic, Protocol, TypeVar

T = TypeVar("T")


class DropCounter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


PEER_INBOX_LIMIT = 4096
"""Room for every vote of a 100-validator network for about ten rounds."""


class PeerInboxGate(Generic[T]):
    def __init__(self, inbox: asyncio.Queue[T], dropped: DropCounter, limit: int = PEER_INBOX_LIMIT) -> None:
        self._inbox = inbox
        self._dropped = dropped
        self._limit = limit

    def admit(self, item: T) -> bool:
        """Queue a peer's message unless the inbox is over the bound; say whether it was queued."""
        if self._inbox.qsize() >= self._limit:
            self._dropped.inc()
            return False
        self._inbox.put_nowait(item)
        return True
