"""One live connection to a peer: its session, its bounded send queue and the task that writes it.

A ``Link`` is what the network keeps per connection: the transport
``Connection``, the sans-I/O ``Session`` running over it, what the peer told
us (its listen address, height and tip), and the outgoing frames.
``receive`` turns the next frame (or the handshake deadline, or the end of
the connection) into session events. Frames are queued, never written by the
caller; one writer task per link (``write_loop``) drains the queue, so no
caller ever waits on a slow socket.

Back-pressure. The queue is bounded in frames and in bytes. A frame that
would overflow it means the peer does not read as fast as we send: what is
queued is dropped, the session closes, the writer ends, the connection's
task is cancelled (the writer may be stuck sending to a peer that reads
nothing), and ``on_slow`` is told, so the network can score the peer. Frames
queued with ``force`` (handshake, Goodbye, session replies) bypass the bound:
the session produces few of them, and they must go out.

Ending. ``close`` queues the session's Goodbye, then a marker that makes the
writer close the socket after it; ``aclose`` waits for that with a timeout,
cancels a writer that is stuck, and closes the socket itself.

This module must never decide anything about the peer (scores, bans, which
of two connections to keep): the network does, and is told through
``on_slow``. It must never start tasks itself: the network owns every task.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from consensus.types import ZERO_HASH, Hash32, PublicKey
from p2p.logbound import excerpt, peer_extra
from p2p.messages import WireMessage
from p2p.session import SEVERITY_MAJOR, Session, SessionEvent, Violation
from p2p.transport import BadFrame, Connection, TransportError

log = logging.getLogger("tdml.p2p")

REASON_SLOW = "send queue full"


@dataclass(frozen=True, slots=True)
class Disconnect:
    """A record of a connection that ended, kept for diagnostics."""

    remote: str  # the address we dialled, the one the peer announced, or where it came from
    node_id: str  # the peer's key in hex, or "" when it never named one
    reason: str  # why the session closed (ours or the peer's Goodbye)
    by_peer: bool  # the peer ended it
    was_established: bool  # the peer had been registered as one of ours


@dataclass(eq=False, slots=True)
class Link:
    """One connection's runtime state (compared by identity)."""

    conn: Connection
    session: Session
    dial_addr: str | None  # the address we dialled; None for an inbound connection
    max_frames: int  # frames queued before the peer counts as too slow
    max_bytes: int  # bytes queued before the peer counts as too slow
    on_slow: Callable[[Link], None]  # told once the queue overflowed and the link is ending
    me: str = ""  # our short node id, for log lines
    queue: deque[bytes | None] = field(default_factory=deque)  # None: close after what is before it
    queued_bytes: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    writer: asyncio.Task[None] | None = None
    runner: asyncio.Task[Any] | None = None  # the task that reads the connection and owns the link
    ending: bool = False  # no more frames are queued; the writer closes the socket when done
    registered: bool = False  # established and kept as the network's one link to this peer
    established_at: float | None = None
    listen_addr: str = ""  # the dialable address the peer announced in its handshake
    height: int = 0  # the peer's committed height, from its latest Status
    tip: Hash32 = ZERO_HASH  # the hash of the peer's last block, from its latest Status
    closed_by_peer: bool = False
    last_peers_answer: float = float("-inf")  # when we last answered its PeersRequest
    clean_close: bool = False
    """Closed by our own decision (duplicate, shutdown, ban): not a failure of the address."""

    @property
    def outbound(self) -> bool:
        return self.dial_addr is not None

    @property
    def address(self) -> str:
        return self.dial_addr or self.listen_addr or self.conn.remote

    @property
    def peer_key(self) -> PublicKey | None:
        """The key the peer proved in its handshake (None before)."""
        return self.session.peer_key

    @property
    def sort_key(self) -> bytes:
        """The peer's key as bytes, for deterministic orderings (empty before the handshake)."""
        return bytes(self.session.peer_key or b"")

    def describe(self, score: float) -> dict[str, Any]:
        """The peer as ``P2PNetwork.peers`` lists it, with its current score."""
        return {
            "node_id": "0x" + self.sort_key.hex(),
            "address": self.address,
            "direction": "outbound" if self.outbound else "inbound",
            "height": self.height,
            "score": score,
        }

    # ------------------------------------------------------------ sending

    def enqueue(self, frame: bytes, *, force: bool = False) -> None:
        """Queue a frame for the writer; without ``force``, a frame that overflows the queue ends the link."""
        if self.ending:
            return
        if not force and (len(self.queue) >= self.max_frames or self.queued_bytes + len(frame) > self.max_bytes):
            self._overflow()
            return
        self.queue.append(frame)
        self.queued_bytes += len(frame)
        self.wake.set()

    def send(self, msg: WireMessage) -> None:
        """Encode and queue a message; nothing is sent before the handshake or once the link is ending."""
        if self.ending or not self.session.is_established:
            return
        self.enqueue(self.session.send(msg))

    def close(self, reason: str, *, clean: bool = False) -> None:
        """Close from our side: queue the Goodbye, then the writer closes the socket.

        ``clean`` marks the close as our decision, not a failure of the address.
        """
        if clean:
            self.clean_close = True
        if self.ending:
            return
        for frame in self.session.close(reason):
            self.enqueue(frame, force=True)
        self.end_writer()

    def end_writer(self) -> None:
        """Queue nothing more: the writer sends what is queued, then closes the socket."""
        if not self.ending:
            self.ending = True
            self.queue.append(None)
            self.wake.set()

    def _overflow(self) -> None:
        log.warning(
            "%s: %s cannot keep up (send queue full); disconnecting", self.me, self.address,
            extra=peer_extra(self.conn.remote),
        )
        self.queue.clear()
        self.queued_bytes = 0
        self.session.close(REASON_SLOW)
        self.end_writer()
        self.on_slow(self)
        # The writer may be stuck in a send to a peer that reads nothing, so
        # the connection's task is cancelled rather than left to flush.
        if self.runner is not None and self.runner is not asyncio.current_task():
            self.runner.cancel()

    # ------------------------------------------------------------ receiving

    async def receive(self) -> list[SessionEvent]:
        """Wait for the next frame and return the session's events for it.

        Before the handshake the wait ends at the handshake deadline (the
        session then times out); a frame the transport refuses (text, or a
        broken websocket frame) is a major violation, and ends the connection.
        """
        session = self.session
        try:
            if session.is_established:
                frame = await self.conn.receive()
            else:
                async with asyncio.timeout_at(session.handshake_deadline):
                    frame = await self.conn.receive()
        except TimeoutError:
            return session.on_tick(_now())
        except BadFrame as exc:
            return [Violation(str(exc), SEVERITY_MAJOR), *session.on_connection_lost(str(exc))]
        if frame is None:
            return session.on_connection_lost()
        return session.receive(frame, _now())

    # ------------------------------------------------------------ tasks

    async def write_loop(self) -> None:
        """Write queued frames in order until the end marker or a broken socket, then close the socket."""
        while True:
            while not self.queue:
                self.wake.clear()
                await self.wake.wait()
            frame = self.queue.popleft()
            if frame is None:
                break
            self.queued_bytes -= len(frame)
            try:
                await self.conn.send(frame)
            except TransportError as exc:
                log.debug("%s: %s: %s", self.me, self.address, exc)
                break
        await self.conn.close()

    async def aclose(self, timeout: float) -> Disconnect:
        """End the session and the writer, close the socket, and log and return the record of the end.

        Each wait is bounded by ``timeout``.
        """
        if not self.session.is_closed:
            self.session.on_connection_lost("connection ended")
        self.end_writer()
        if self.writer is not None:
            await asyncio.wait({self.writer}, timeout=timeout)
            if not self.writer.done():
                self.writer.cancel()
                await asyncio.wait({self.writer})
        try:
            async with asyncio.timeout(timeout):
                await self.conn.close()
        except TimeoutError:
            log.debug("%s: closing %s timed out", self.me, self.address)
        key, reason = self.peer_key, self.session.close_reason or "closed"
        by = "by peer" if self.closed_by_peer else "by us"
        log.info(
            "%s: %s %s closed (%s): %s", self.me, key.hex()[:12] if key else "?", self.address, by, excerpt(reason),
            extra=peer_extra(self.conn.remote),
        )
        node_id = key.hex() if key else ""
        return Disconnect(self.address, node_id, reason, self.closed_by_peer, self.established_at is not None)


def _now() -> float:
    return asyncio.get_running_loop().time()
