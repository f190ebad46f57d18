"""Wire clients for tests: peers that speak only the p2p protocol, to attack a devnet or watch it.

Each proves a real key in the handshake (``p2p.session``) and then:

- ``RogueClient`` plays the attacks that are no node's behaviour (a node's
  seams bend what it computes, not the wire): ``flood`` sends well-formed
  transactions whose signatures cannot verify, as gossip, in bursts;
  ``malformed`` sends frames that are not valid messages. It uses a
  stranger's key, or a validator's whose node is not running; when a node
  drops it, it dials again (bounded), and a banned key is refused after the
  handshake. ``sent`` counts the faulty frames it got out.
- ``WireObserver`` keeps a quiet connection to every node and records every
  signed proposal and vote gossiped to it, so a test can check signatures
  directly (no key signs two different messages for one height, round and
  step).

Both run on an event loop in a thread of their own, beside a devnet of real
processes. This module must never reach into a node: it only speaks the
wire protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from dataclasses import dataclass, field

from consensus.codec import encode
from consensus.crypto import Keypair
from consensus.types import (
    Address,
    Amount,
    Hash32,
    PublicKey,
    Signature,
    SignedProposal,
    SignedTransaction,
    SignedVote,
    Transaction,
    Transfer,
)
from p2p.messages import Gossip, encode_frame
from p2p.session import Message, Send, Session
from p2p.transport import Connection, Dialer, TransportError

MODES = ("flood", "malformed")
BURST = 200
PAUSE_SECONDS = 0.1
MAX_DIALS_PER_NODE = 20
HANDSHAKE_SECONDS = 5.0


def junk_transaction() -> SignedTransaction:
    """A well-formed transaction whose signature cannot verify."""
    tx = Transaction(PublicKey(os.urandom(32)), 0, Amount(0), Transfer(Address(os.urandom(20)), Amount(1)))
    return SignedTransaction(tx, Signature(os.urandom(64)))


def malformed_frame() -> bytes:
    return os.urandom(64) + b"\xc1" + os.urandom(64)


async def handshake(
    dialer: Dialer, addr: str, keypair: Keypair, chain_id: str, genesis_hash: Hash32, version: int = 1
) -> tuple[Connection, Session] | None:
    """A connection with a finished handshake, or None if the node hung up first."""
    conn = await dialer.dial(addr)
    loop = asyncio.get_running_loop()
    session = Session(keypair, chain_id, genesis_hash, version, "", 0, now=loop.time(), challenge=os.urandom(32))
    for frame in session.start():
        await conn.send(frame)
    async with asyncio.timeout(HANDSHAKE_SECONDS):
        while not session.is_established:
            received = await conn.receive()
            if received is None:
                await conn.close()
                return None
            for event in session.receive(received, loop.time()):
                if isinstance(event, Send):
                    await conn.send(event.frame)
    return conn, session


@dataclass
class _ThreadedClient:
    keypair: Keypair
    chain_id: str
    genesis_hash: Hash32
    dials: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self, addrs: list[str]) -> None:
        """Connect to ``addrs`` from a thread of its own until ``stop``."""
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run(addrs)), name="wire", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    async def _run(self, addrs: list[str]) -> None:
        dialer = Dialer(connect_timeout=5.0)
        try:
            await asyncio.gather(*(self._keep_dialling(dialer, addr) for addr in addrs))
        finally:
            await dialer.aclose()

    async def _keep_dialling(self, dialer: Dialer, addr: str) -> None:
        while not self._stop.is_set() and self.dials.get(addr, 0) < MAX_DIALS_PER_NODE:
            self.dials[addr] = self.dials.get(addr, 0) + 1
            with contextlib.suppress(TransportError, TimeoutError, OSError):
                connected = await handshake(dialer, addr, self.keypair, self.chain_id, self.genesis_hash)
                if connected is not None:
                    conn, session = connected
                    try:
                        await self._use(conn, session)
                    finally:
                        await conn.close()
            await asyncio.sleep(0.5)

    async def _use(self, conn: Connection, session: Session) -> None:
        raise NotImplementedError


@dataclass
class RogueClient(_ThreadedClient):
    mode: str = "flood"
    sent: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")

    async def _use(self, conn: Connection, session: Session) -> None:
        # Read what the node sends, so its Goodbye (a ban) ends the attack on this connection.
        reader = asyncio.create_task(_drain(conn))
        try:
            while not self._stop.is_set() and not reader.done():
                for _ in range(BURST):
                    frame = encode_frame(Gossip(junk_transaction())) if self.mode == "flood" else malformed_frame()
                    await conn.send(frame)
                    self.sent += 1
                await asyncio.sleep(PAUSE_SECONDS)
        finally:
            reader.cancel()


@dataclass
class WireObserver(_ThreadedClient):
    signed: list[SignedProposal | SignedVote] = field(default_factory=list)

    async def _use(self, conn: Connection, session: Session) -> None:
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            try:
                async with asyncio.timeout(0.5):
                    frame = await conn.receive()
            except TimeoutError:
                continue
            if frame is None:
                return
            for event in session.receive(frame, loop.time()):
                if isinstance(event, Send):
                    await conn.send(event.frame)
                elif isinstance(event, Message) and isinstance(event.msg, Gossip):
                    payload = event.msg.payload
                    if isinstance(payload, SignedProposal | SignedVote):
                        self.signed.append(payload)

    def conflicting_signatures(self, key: bytes) -> list[tuple[int, int, int]]:
        """(height, round, step) at which ``key`` signed two different proposals or votes."""
        seen: dict[tuple[int, int, int], bytes] = {}
        conflicts: list[tuple[int, int, int]] = []
        for message in list(self.signed):
            if isinstance(message, SignedProposal):
                signer, position, body = message.proposal.proposer, (message.proposal.height, message.proposal.round, 0), encode(message.proposal)
            else:
                v = message.vote
                signer, position, body = v.validator, (v.height, v.round, v.kind), encode(v)
            if signer != key:
                continue
            if seen.setdefault(position, body) != body:
                conflicts.append(position)
        return conflicts


async def _drain(conn: Connection) -> None:
    """Read until the connection closes (the node said goodbye or hung up)."""
    with contextlib.suppress(TransportError):
        while await conn.receive() is not None:
            pass
