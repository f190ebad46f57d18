"""Builders shared by the p2p tests: keys, sessions driven in memory, gossip payloads, a handler.

The module has a distinctive name because ``tests/`` is not a package: pytest
puts this directory on ``sys.path`` and a generic name such as ``helpers``
could collide with another test directory's module.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache

from hypothesis import HealthCheck, settings

from consensus import crypto
from consensus.crypto import Keypair
from consensus.types import (
    ZERO_HASH,
    ExecutionProfile,
    Hash32,
    Height,
    PublicKey,
    Round,
    SignedTransaction,
    SignedVote,
    Transaction,
    Transfer,
    Vote,
)
from p2p.link import Link
from p2p.messages import GossipPayload
from p2p.session import RateLimit, Send, Session, SessionEvent
from p2p.transport import Connection

CHAIN_ID = "tdml-p2p-test"
GENESIS = Hash32(hashlib.sha256(b"p2p test genesis").digest())
VERSION = 1


@cache
def keypair(index: int) -> Keypair:
    """A deterministic key per index (key derivation is not free, so it is made once)."""
    return Keypair.from_seed(crypto.sha256(b"tdml-p2p-test-key/" + index.to_bytes(4, "big")))


def challenge(index: int) -> bytes:
    return hashlib.sha256(b"challenge/" + index.to_bytes(4, "big")).digest()


def property_settings(examples: int) -> settings:
    """Hypothesis settings: ``examples`` by default, ``TDML_HYPOTHESIS_EXAMPLES`` to fuzz longer."""
    if os.environ.get("TDML_HYPOTHESIS_EXAMPLES"):
        examples = int(os.environ["TDML_HYPOTHESIS_EXAMPLES"])
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def make_session(
    index: int,
    *,
    chain_id: str = CHAIN_ID,
    genesis: Hash32 = GENESIS,
    version: int = VERSION,
    listen_addr: str | None = None,
    height: int | Callable[[], int] = 0,
    now: float = 0.0,
    rate_limit: RateLimit | None = None,
    key_index: int | None = None,
) -> Session:
    return Session(
        keypair(index if key_index is None else key_index),
        chain_id,
        genesis,
        version,
        f"127.0.0.1:{20000 + index}" if listen_addr is None else listen_addr,
        height,
        now=now,
        challenge=challenge(index),
        rate_limit=rate_limit,
    )


@dataclass
class Wire:
    """Two sessions joined in memory: frames each side sends are delivered to the other."""

    a: Session
    b: Session
    now: float = 0.0
    events_a: list[SessionEvent] = field(default_factory=list)
    events_b: list[SessionEvent] = field(default_factory=list)

    def open(self) -> None:
        """Start both sides and deliver until neither has anything more to say."""
        to_b = self.a.start()
        to_a = self.b.start()
        self.deliver(to_a, to_b)

    def deliver(self, to_a: Iterable[bytes], to_b: Iterable[bytes]) -> None:
        pending_a, pending_b = list(to_a), list(to_b)
        while pending_a or pending_b:
            next_a: list[bytes] = []
            next_b: list[bytes] = []
            for frame in pending_b:
                events = self.b.receive(frame, self.now)
                self.events_b += events
                next_a += [e.frame for e in events if isinstance(e, Send)]
            for frame in pending_a:
                events = self.a.receive(frame, self.now)
                self.events_a += events
                next_b += [e.frame for e in events if isinstance(e, Send)]
            pending_a, pending_b = next_a, next_b


def established_wire(**kwargs: object) -> Wire:
    wire = Wire(make_session(1, **kwargs), make_session(2, **kwargs))  # type: ignore[arg-type]
    wire.open()
    assert wire.a.is_established and wire.b.is_established
    return wire


# ---------------------------------------------------------------------------
# Links over a stand-in connection


class FakeConnection:
    """A transport ``Connection`` stand-in: keeps what is sent; ``gate`` cleared makes sends hang."""

    def __init__(self, remote: str = "127.0.0.1:30000") -> None:
        self.remote = remote
        self.inbound = False
        self.sent: list[bytes] = []
        self.closed = False
        self.gate = asyncio.Event()
        self.gate.set()

    async def send(self, frame: bytes) -> None:
        await self.gate.wait()
        self.sent.append(frame)

    async def receive(self) -> bytes | None:
        return None

    async def close(self) -> None:
        self.closed = True


def make_link(
    peer_index: int = 2,
    *,
    established: bool = True,
    dial_addr: str | None = None,
    max_frames: int = 1024,
    max_bytes: int = 1 << 26,
    on_slow: Callable[[Link], None] = lambda link: None,
) -> tuple[Link, Session]:
    """A link (our side, key 1) to the peer ``peer_index`` over a ``FakeConnection``, and the peer's session."""
    wire = Wire(make_session(1), make_session(peer_index))
    if established:
        wire.open()
    conn: Connection = FakeConnection()  # type: ignore[assignment]
    return Link(conn, wire.a, dial_addr, max_frames, max_bytes, on_slow, "us"), wire.b


# ---------------------------------------------------------------------------
# Gossip payloads


PROFILE = ExecutionProfile("float32", 1, True, "cpu", "2.3.0")


def signed_vote(index: int, height: int = 1) -> SignedVote:
    kp = keypair(index)
    vote = Vote(1, Height(height), Round(0), Hash32(bytes(32)), kp.public_key)
    return SignedVote(vote, kp.sign_value(crypto.DOMAIN_VOTE, CHAIN_ID, vote))


def signed_transfer(index: int, nonce: int = 0) -> SignedTransaction:
    kp = keypair(index)
    tx = Transaction(kp.public_key, nonce, 1, Transfer(keypair(index + 1).address, 5))  # type: ignore[arg-type]
    return SignedTransaction(tx, kp.sign_value(crypto.DOMAIN_TX, CHAIN_ID, tx))


# ---------------------------------------------------------------------------
# A node stand-in for the functional tests


@dataclass
class MemoryHandler:
    """A NetworkHandler that keeps what it is given, serves blobs and blocks from dicts, and relays.

    ``network`` is set once the P2PNetwork exists, so that accepted gossip is
    relayed the way the node does it: ``broadcast(payload, exclude=peer)``.
    """

    blobs: dict[bytes, bytes] = field(default_factory=dict)
    blocks: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    height: int = 0
    tip: Hash32 = ZERO_HASH
    received: list[tuple[GossipPayload, PublicKey]] = field(default_factory=list)
    connected: list[PublicKey] = field(default_factory=list)
    statuses: list[tuple[PublicKey, int]] = field(default_factory=list)
    relay: bool = True
    network: object = None

    async def on_gossip(self, payload: GossipPayload, peer_id: PublicKey) -> None:
        self.received.append((payload, peer_id))
        if self.relay and self.network is not None:
            await self.network.broadcast(payload, exclude=peer_id)  # type: ignore[attr-defined]

    def get_blob(self, digest: Hash32) -> bytes | None:
        return self.blobs.get(bytes(digest))

    def get_blocks(self, start: int, count: int) -> list[tuple[bytes, bytes]]:
        out = []
        for h in range(start, start + count):
            if h not in self.blocks:
                break
            out.append(self.blocks[h])
        return out

    def status(self) -> tuple[int, Hash32]:
        return self.height, self.tip

    def on_peer_connected(self, peer_id: PublicKey) -> None:
        self.connected.append(peer_id)

    def on_peer_status(self, peer_id: PublicKey, height: int) -> None:
        self.statuses.append((peer_id, height))


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``predicate`` until it holds; fail the test after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)
