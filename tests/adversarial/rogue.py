"""A rogue wire client: a peer that proves a real key in the handshake, then floods junk or sends garbage.

Floods and malformed frames are no node's behaviour (a node's seams bend what
it computes, not the wire): this client plays them against a devnet from
the test process. It dials every node's p2p address, completes the real
handshake (``p2p.session``) with its key (a stranger's, or a validator's
whose node is not running), and then:

- ``flood``: sends well-formed transactions whose signatures cannot verify,
  as gossip, in bursts, as fast as the connection takes them;
- ``malformed``: sends frames that are not valid messages.

When a node drops it, it dials again (bounded): a banned key is refused
after the handshake. ``sent`` counts the faulty frames it got out, which the
adversarial suite compares with the bans it sees.

This module must never reach into a node: it only speaks the wire protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from dataclasses import dataclass, field

from consensus.crypto import Keypair
from consensus.types import (
    Address,
    Amount,
    Hash32,
    PublicKey,
    Signature,
    SignedTransaction,
    Transaction,
    Transfer,
)
from p2p.messages import Gossip, encode_frame
from p2p.session import Send, Session
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


@dataclass
class RogueClient:
    keypair: Keypair
    chain_id: str
    genesis_hash: Hash32
    mode: str
    protocol_version: int = 1
    sent: int = 0
    dials: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")

    def start(self, addrs: list[str]) -> None:
        """Attack ``addrs`` from a thread of its own until ``stop``."""
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run(addrs)), name="rogue", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    async def _run(self, addrs: list[str]) -> None:
        dialer = Dialer(connect_timeout=5.0)
        try:
            await asyncio.gather(*(self._attack(dialer, addr) for addr in addrs))
        finally:
            await dialer.aclose()

    async def _attack(self, dialer: Dialer, addr: str) -> None:
        while not self._stop.is_set() and self.dials.get(addr, 0) < MAX_DIALS_PER_NODE:
            self.dials[addr] = self.dials.get(addr, 0) + 1
            with contextlib.suppress(TransportError, TimeoutError, OSError):
                await self._one_connection(dialer, addr)
            await asyncio.sleep(0.5)

    async def _one_connection(self, dialer: Dialer, addr: str) -> None:
        conn = await dialer.dial(addr)
        loop = asyncio.get_running_loop()
        session = Session(
            self.keypair, self.chain_id, self.genesis_hash, self.protocol_version, "", 0,
            now=loop.time(), challenge=os.urandom(32),
        )
        try:
            for frame in session.start():
                await conn.send(frame)
            async with asyncio.timeout(HANDSHAKE_SECONDS):
                while not session.is_established:
                    received = await conn.receive()
                    if received is None:
                        return
                    for event in session.receive(received, loop.time()):
                        if isinstance(event, Send):
                            await conn.send(event.frame)
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
        finally:
            await conn.close()


async def _drain(conn: Connection) -> None:
    """Read until the connection closes (the node said goodbye or hung up)."""
    with contextlib.suppress(TransportError):
        while await conn.receive() is not None:
            pass
