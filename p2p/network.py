"""The peer-to-peer network of one node: connections, discovery, gossip and requests.

``P2PNetwork`` listens for websocket connections, dials bootstrap and
discovered peers with back-off, runs one ``Session`` per connection and
carries out its events. Once a peer is established it exchanges addresses
(``PeersRequest`` on connect and every ``pex_interval``), reports its status
(``Status`` on connect and every ``status_interval``), relays gossip that the
node hands it, and answers and makes block-range and blob requests.

Tasks. Every task belongs to the network's task set: the dial, peer-exchange
and status loops, one task per connection and one writer per connection. An
inbound connection runs in a task of that set too; the aiohttp handler only
waits for it. ``aclose`` says goodbye to every peer, then cancels and awaits
whatever is left, so nothing outlives the object.

One connection per node key. Two nodes that dial each other at once end up
with two connections; each keeps the one *initiated by the smaller node key*
(bytewise) and closes the other with ``Goodbye("duplicate connection")``.
Both sides know both keys and who dialled whom, so they drop the same one
without talking about it. Two connections with the same initiator (a peer
that reconnected before we noticed the old one died) keep the newer one.

Penalties. Only a peer that has proved its key is scored: before that, a key
is just a claim, and penalising it would let anyone get an honest node's key
banned. A pre-handshake violation closes the connection, and, when we were
the dialler, counts as a failed dial of that address.

Back-pressure. Each peer has a bounded send queue (frames and bytes); a peer
whose queue is full cannot keep up, and is disconnected (with a minor
penalty) rather than buffered without bound.

This module must never decide whether a gossiped message is valid (the
handler does, and calls ``penalize``), and must never block the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from consensus.crypto import Keypair, sha256
from consensus.types import ZERO_HASH, Hash32, Height, PublicKey
from p2p.gossip import DEFAULT_SEEN_CAPACITY, DEFAULT_SEEN_TTL, SeenCache, message_id
from p2p.messages import (
    BLOB_CHUNK_SIZE,
    BLOCKS_LIMIT,
    MAX_BLOCK_BYTES,
    MAX_BLOCKS_PER_REQUEST,
    MAX_COMMIT_BYTES,
    MAX_PEERS_PER_MESSAGE,
    BlobChunk,
    BlobRequest,
    Blocks,
    BlocksRequest,
    BlockWithCommit,
    Gossip,
    GossipPayload,
    NotFound,
    Peers,
    PeersRequest,
    RequestId,
    ResponseMessage,
    Status,
    WireMessage,
    encode_frame,
)
from p2p.peers import (
    DEFAULT_BACKOFF_MAX,
    DEFAULT_BACKOFF_MIN,
    DEFAULT_BAN_DURATION,
    DEFAULT_BAN_THRESHOLD,
    SOURCE_BOOTSTRAP,
    SOURCE_HANDSHAKE,
    SOURCE_PEX,
    PeerBook,
    is_dialable,
)
from p2p.session import (
    SEVERITY_MAJOR,
    SEVERITY_MINOR,
    Closed,
    Established,
    Message,
    RateLimit,
    Send,
    Session,
    SessionEvent,
    Violation,
)
from p2p.transport import BadFrame, Connection, Dialer, Listener, TransportError

log = logging.getLogger("tdml.p2p")

PeerId = PublicKey
"""A peer is named by its node key, which the handshake proved."""

MAX_BLOB_SIZE = 1 << 30
# Room kept in a Blocks frame for its envelope and each item's framing.
_BLOCKS_ENVELOPE = 1024
_BLOCK_ITEM_OVERHEAD = 16

REASON_DUPLICATE = "duplicate connection"
REASON_SHUTDOWN = "shutting down"
REASON_TOO_MANY = "too many peers"
REASON_SELF = "connected to self"


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


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    """Timings and limits of the network; the defaults suit a real deployment."""

    dial_interval: float = 1.0  # how often the dial loop looks for peers to connect to
    pex_interval: float = 10.0  # how often each peer is asked for addresses
    status_interval: float = 5.0  # how often our Status goes to every peer
    handshake_timeout: float = 10.0  # a connection not established by then is dropped
    request_timeout: float = 10.0  # the longest wait for one response from one peer
    connect_timeout: float = 5.0  # the longest wait for a websocket to open
    close_timeout: float = 2.0  # the longest wait for a Goodbye to go out and a close to finish
    heartbeat: float = 15.0  # websocket ping interval; a peer that stops answering is dropped
    stable_after: float = 10.0  # an outbound connection that lasted this long counts as a success
    max_pending_handshakes: int = 64  # inbound connections still in their handshake
    send_queue_frames: int = 1024  # frames queued for one peer before it counts as too slow
    send_queue_bytes: int = 64 * 1024 * 1024  # bytes queued for one peer before it is too slow
    max_blob_size: int = MAX_BLOB_SIZE  # the largest blob we agree to download
    rate_limit: RateLimit = field(default_factory=RateLimit)  # per-peer received traffic
    seen_capacity: int = DEFAULT_SEEN_CAPACITY  # gossip ids remembered for dedup
    seen_ttl: float = DEFAULT_SEEN_TTL  # seconds a gossip id is remembered
    ban_threshold: float = DEFAULT_BAN_THRESHOLD  # score at which a peer is banned
    ban_duration: float = DEFAULT_BAN_DURATION  # seconds a ban lasts
    backoff_min: float = DEFAULT_BACKOFF_MIN  # first redial delay after a failure
    backoff_max: float = DEFAULT_BACKOFF_MAX  # longest redial delay


@dataclass(frozen=True, slots=True)
class Disconnect:
    """A record of a connection that ended, kept for diagnostics."""

    remote: str
    node_id: str
    reason: str
    by_peer: bool
    was_established: bool


@dataclass(eq=False, slots=True)
class _Conn:
    """One connection's runtime state (identity-compared)."""

    conn: Connection
    session: Session
    dial_addr: str | None
    queue: deque[bytes | None] = field(default_factory=deque)
    queued_bytes: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    writer: asyncio.Task[None] | None = None
    runner: asyncio.Task[Any] | None = None
    ending: bool = False
    registered: bool = False
    established_at: float | None = None
    listen_addr: str = ""
    height: int = 0
    tip: Hash32 = ZERO_HASH
    closed_by_peer: bool = False
    last_peers_answer: float = float("-inf")
    clean_close: bool = False
    """Closed by our own decision (duplicate, shutdown, ban): not a failure of the address."""

    @property
    def outbound(self) -> bool:
        return self.dial_addr is not None

    @property
    def address(self) -> str:
        return self.dial_addr or self.listen_addr or self.conn.remote


@dataclass(slots=True)
class _Pending:
    conn: _Conn
    future: asyncio.Future[ResponseMessage | None]


class P2PNetwork:
    """The node's peer-to-peer network; ``start`` it, then ``aclose`` it (or use ``async with``)."""

    def __init__(
        self,
        identity: Keypair,
        chain_id: str,
        genesis_hash: Hash32,
        protocol_version: int,
        host: str,
        port: int,
        handler: NetworkHandler,
        *,
        bootstrap: list[str] | tuple[str, ...] = (),
        max_peers: int = 32,
        advertise_addr: str | None = None,
        config: NetworkConfig | None = None,
    ) -> None:
        self.identity = identity
        self.node_key: PublicKey = identity.public_key
        self.chain_id = chain_id
        self.genesis_hash = genesis_hash
        self.protocol_version = protocol_version
        self.host = host
        self.port = port
        self.handler = handler
        self.bootstrap = tuple(bootstrap)
        self.max_peers = max_peers
        self.config = config or NetworkConfig()
        self.advertise_addr = advertise_addr
        cfg = self.config
        self.book = PeerBook(
            ban_threshold=cfg.ban_threshold,
            ban_duration=cfg.ban_duration,
            backoff_min=cfg.backoff_min,
            backoff_max=cfg.backoff_max,
            jitter_seed=bytes(self.node_key),
        )
        self.seen = SeenCache(cfg.seen_capacity, cfg.seen_ttl)
        self._listener = Listener(
            host,
            port,
            self._on_inbound,
            accept=self._accepting,
            heartbeat=cfg.heartbeat,
            close_timeout=cfg.close_timeout,
        )
        self._dialer = Dialer(
            heartbeat=cfg.heartbeat, close_timeout=cfg.close_timeout, connect_timeout=cfg.connect_timeout
        )
        self._conns: set[_Conn] = set()
        self._peers: dict[bytes, _Conn] = {}
        self._dialing: set[str] = set()
        self._partitioned: set[bytes] = set()
        self._pending: dict[int, _Pending] = {}
        self._next_req_id = 1
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._disconnects: deque[Disconnect] = deque(maxlen=256)
        self._started = False
        self._closing = False
        self._closed = asyncio.Event()

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Listen, then start dialling the bootstrap peers."""
        if self._started:
            raise RuntimeError("the network is already started")
        self._started = True
        await self._listener.start()
        self.port = self._listener.port
        if self.advertise_addr is None:
            self.advertise_addr = _default_advertise(self.host, self.port)
        if self.advertise_addr:
            self.book.add_own_address(self.advertise_addr)
        for addr in self.bootstrap:
            if not self.book.add_address(addr, SOURCE_BOOTSTRAP) and not is_dialable(addr):
                log.warning("%s: ignoring bootstrap address %r: not host:port", self._me, addr)
        self._loops = [
            self._spawn(self._dial_loop(), "p2p-dial"),
            self._spawn(self._every(self.config.pex_interval, self._send_peers_requests), "p2p-pex"),
            self._spawn(self._every(self.config.status_interval, self._send_status_all), "p2p-status"),
        ]
        log.info("%s: p2p listening on %s:%d", self._me, self.host, self.port)

    async def aclose(self) -> None:
        """Say goodbye to every peer, stop listening, and cancel and await every task."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        for task in self._loops:
            task.cancel()
        for c in list(self._conns):
            self._close(c, REASON_SHUTDOWN)
        runners = {c.runner for c in self._conns if c.runner is not None}
        if runners:
            await asyncio.wait(runners, timeout=self.config.close_timeout * 2)
        # Inbound handlers only wait for connection tasks, which are done or
        # closing, so the listener's shutdown does not wait long.
        await self._listener.aclose()
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._dialer.aclose()
        self._closed.set()

    async def __aenter__(self) -> P2PNetwork:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------ queries

    @property
    def listen_addr(self) -> str:
        return self.advertise_addr or ""

    def peer_count(self) -> int:
        return len(self._peers)

    def peer_ids(self) -> list[PeerId]:
        return [PublicKey(k) for k in self._peers]

    def connected_keys(self) -> frozenset[bytes]:
        """The node keys of the peers connected now."""
        return frozenset(self._peers)

    def peers(self) -> list[dict[str, Any]]:
        now = self._now()
        return [
            {
                "node_id": key.hex(),
                "address": c.address,
                "direction": "outbound" if c.outbound else "inbound",
                "height": c.height,
                "score": round(self.book.get_score(key, now), 1),
            }
            for key, c in sorted(self._peers.items())
        ]

    def banned(self) -> list[str]:
        """Node ids (hex) banned now."""
        return sorted(k.hex() for k in self.book.banned_keys(self._now()))

    def best_peer_height(self) -> int:
        """The highest height a connected peer reports (0 with no peers)."""
        return max((c.height for c in self._peers.values()), default=0)

    def recent_disconnects(self) -> list[Disconnect]:
        return list(self._disconnects)

    def connect(self, addr: str) -> bool:
        """Learn ``addr`` as if it were a bootstrap peer and dial it now; False if it cannot be dialled."""
        self.book.add_address(addr, SOURCE_BOOTSTRAP)
        if self._closing or addr in self._dialing or self.book.is_own_address(addr) or not is_dialable(addr):
            return False
        self._dialing.add(addr)
        self._spawn(self._dial(addr), f"p2p-dial-{addr}")
        return True

    # ------------------------------------------------------------ gossip

    async def broadcast(self, payload: GossipPayload, exclude: object = None) -> None:
        """Send a payload to every established peer except ``exclude`` (a peer id), marking it seen."""
        self.seen.add(message_id(payload), self._now())
        frame = encode_frame(Gossip(payload))
        for key, c in list(self._peers.items()):
            if exclude is not None and (key == exclude or c is exclude):
                continue
            self._enqueue(c, frame)

    def send_to(self, peer_id: bytes, payload: GossipPayload) -> bool:
        """Send a payload to one established peer, bypassing dedup; False if it is not connected.

        For catching up a peer that connected late (a restarted validator
        needs the votes of the height in progress, which it cannot have seen).
        """
        c = self._peers.get(peer_id)
        if c is None:
            return False
        self._enqueue(c, encode_frame(Gossip(payload)))
        return True

    def set_partitioned(self, keys: set[bytes]) -> None:
        """Cut this node off from ``keys`` until called again without them (test networks only).

        Connections to them close now; they are neither dialled nor accepted.
        """
        self._partitioned = set(keys)
        for key in keys:
            c = self._peers.get(key)
            if c is not None:
                c.clean_close = True
                self._close(c, "partitioned (test network)")

    def send_raw_all(self, frame: bytes) -> None:
        """Send raw bytes as a frame to every peer (test networks only: how a malformed peer is played)."""
        for c in list(self._peers.values()):
            self._enqueue(c, frame)

    def penalize(self, peer_id: bytes, reason: str, severity: int) -> None:
        """Lower a peer's score for something invalid it sent; a peer that falls too low is banned."""
        c = self._peers.get(peer_id)
        addr = c.dial_addr if c is not None else None
        log.info("%s: penalising %s by %d: %s", self._me, peer_id.hex()[:12], severity, reason)
        if self.book.penalize(peer_id, severity, self._now(), addr=addr) and c is not None:
            c.clean_close = True
            self._close(c, f"banned: {reason}")

    # ------------------------------------------------------------ requests

    async def request_blob(self, digest: Hash32, timeout: float) -> bytes | None:
        """Fetch a blob by its SHA-256 digest, asking one peer after another; None if none had it."""
        deadline = self._now() + timeout
        for c in self._request_order():
            if self._now() >= deadline:
                break
            data = await self._fetch_blob(c, digest, deadline)
            if data is not None:
                return data
        return None

    async def request_blocks(self, start: int, count: int, timeout: float) -> list[tuple[bytes, bytes]]:
        """Up to ``count`` (block, commit) bytes from ``start`` on, from the highest peer that answers.

        The bytes are as the peer sent them: the node decodes and checks them.
        """
        count = min(count, MAX_BLOCKS_PER_REQUEST)
        if count < 1 or start < 0:
            return []
        deadline = self._now() + timeout
        candidates = sorted(
            (c for c in self._peers.values() if c.height >= start),
            key=lambda c: (-c.height, _key_of(c)),
        )
        for c in candidates:
            remaining = deadline - self._now()
            if remaining <= 0:
                break
            req = BlocksRequest(self._new_req_id(), Height(start), count)
            resp = await self._request(c, req, min(remaining, self.config.request_timeout))
            if resp is None or isinstance(resp, NotFound):
                continue
            if not isinstance(resp, Blocks) or len(resp.items) > count:
                self._penalize_conn(c, "answered a block request with something else", SEVERITY_MAJOR)
                continue
            if resp.items:
                return [(item.block, item.commit) for item in resp.items]
        return []

    # ------------------------------------------------------------ internals: tasks

    @property
    def _me(self) -> str:
        return self.node_key.hex()[:12]

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: p2p task %s failed", self._me, task.get_name(), exc_info=task.exception())

    async def _every(self, interval: float, action: Callable[[], None]) -> None:
        while True:
            await asyncio.sleep(interval)
            action()

    def _accepting(self) -> bool:
        handshaking = sum(1 for c in self._conns if not c.registered)
        return not self._closing and handshaking < self.config.max_pending_handshakes

    # ------------------------------------------------------------ internals: dialling

    async def _dial_loop(self) -> None:
        while True:
            self._dial_due()
            await asyncio.sleep(self.config.dial_interval)

    def _dial_due(self) -> None:
        slots = self.max_peers - len(self._peers) - len(self._dialing)
        if slots <= 0 or self._closing:
            return
        busy = set(self._dialing)
        busy.update(c.listen_addr for c in self._peers.values() if c.listen_addr)
        busy.update(c.dial_addr for c in self._conns if c.dial_addr)
        for addr in self.book.addresses_to_dial(
            self._now(), exclude_addrs=busy, exclude_keys=set(self._peers) | self._partitioned, limit=slots
        ):
            self._dialing.add(addr)
            self._spawn(self._dial(addr), f"p2p-dial-{addr}")

    async def _dial(self, addr: str) -> None:
        try:
            try:
                conn = await self._dialer.dial(addr)
            except TransportError as exc:
                delay = self.book.record_failure(addr, self._now())
                log.debug("%s: %s (retry in %.1fs)", self._me, exc, delay)
                return
            await self._run_connection(conn, addr)
        finally:
            self._dialing.discard(addr)

    # ------------------------------------------------------------ internals: connections

    async def _on_inbound(self, conn: Connection) -> None:
        # The connection runs in a task this network owns; the aiohttp
        # handler only waits for it, so aclose() can cancel it.
        task = self._spawn(self._run_connection(conn, None), f"p2p-in-{conn.remote}")
        await asyncio.wait({task})

    async def _run_connection(self, conn: Connection, dial_addr: str | None) -> None:
        cfg = self.config
        session = Session(
            self.identity,
            self.chain_id,
            self.genesis_hash,
            self.protocol_version,
            self.listen_addr,
            self._our_height,
            now=self._now(),
            challenge=os.urandom(32),
            rate_limit=cfg.rate_limit,
            handshake_timeout=cfg.handshake_timeout,
        )
        c = _Conn(conn, session, dial_addr)
        c.runner = asyncio.current_task()
        self._conns.add(c)
        c.writer = self._spawn(self._write_loop(c), f"p2p-write-{conn.remote}")
        try:
            if self._closing:
                self._close(c, REASON_SHUTDOWN)
                return
            for frame in session.start():
                self._enqueue(c, frame, force=True)
            await self._read_loop(c)
        finally:
            await self._finish(c)

    async def _read_loop(self, c: _Conn) -> None:
        session = c.session
        while not session.is_closed:
            events: list[SessionEvent]
            try:
                if session.is_established:
                    frame = await c.conn.receive()
                else:
                    async with asyncio.timeout_at(session.handshake_deadline):
                        frame = await c.conn.receive()
            except TimeoutError:
                events = session.on_tick(self._now())
            except BadFrame as exc:
                events = [Violation(str(exc), SEVERITY_MAJOR), *session.on_connection_lost(str(exc))]
            else:
                if frame is None:
                    events = session.on_connection_lost()
                else:
                    events = session.receive(frame, self._now())
            await self._process(c, events)

    async def _process(self, c: _Conn, events: list[SessionEvent]) -> None:
        for event in events:
            if isinstance(event, Send):
                self._enqueue(c, event.frame, force=True)
            elif isinstance(event, Established):
                self._on_established(c, event)
            elif isinstance(event, Message):
                if not c.session.is_closed:
                    await self._on_message(c, event.msg)
            elif isinstance(event, Violation):
                self._on_violation(c, event)
            elif isinstance(event, Closed):
                c.closed_by_peer = event.by_peer
                if event.by_peer and event.reason == REASON_DUPLICATE:
                    # The peer kept our other connection: not a failure of this address.
                    c.clean_close = True
                self._end_writer(c)

    def _on_established(self, c: _Conn, event: Established) -> None:
        key = event.peer_key
        now = self._now()
        c.listen_addr = event.listen_addr if is_dialable(event.listen_addr) else ""
        c.height = event.height
        if c.dial_addr is not None:
            self.book.record_verified(c.dial_addr, key)
        if self.book.is_banned(now, node_key=key):
            c.clean_close = True
            self._close(c, "banned")
            return
        if key in self._partitioned:
            c.clean_close = True
            self._close(c, "partitioned (test network)")
            return
        existing = self._peers.get(key)
        if existing is not None:
            if self._initiator(c) == self._initiator(existing):
                keep, drop = c, existing  # the same side dialled twice: the old one is stale
            elif self._initiator(c) < self._initiator(existing):
                keep, drop = c, existing
            else:
                keep, drop = existing, c
            drop.clean_close = True
            self._close(drop, REASON_DUPLICATE)
            if keep is not c:
                return
        elif len(self._peers) >= self.max_peers:
            self._close(c, REASON_TOO_MANY)
            return
        self._peers[key] = c
        c.registered = True
        c.established_at = now
        if c.listen_addr and c.listen_addr != c.dial_addr:
            self.book.add_address(c.listen_addr, SOURCE_HANDSHAKE)
        log.info(
            "%s: connected to %s at %s (%s, height %d)",
            self._me,
            key.hex()[:12],
            c.address,
            "outbound" if c.outbound else "inbound",
            c.height,
        )
        self._send_status(c)
        self._send(c, PeersRequest())
        try:
            self.handler.on_peer_connected(key)
        except Exception:
            log.exception("%s: handler.on_peer_connected failed", self._me)

    def _initiator(self, c: _Conn) -> bytes:
        """The node key of the side that dialled this connection."""
        if c.outbound:
            return bytes(self.node_key)
        return bytes(c.session.peer_key or b"")

    def _on_violation(self, c: _Conn, event: Violation) -> None:
        key = c.session.peer_key
        if not c.registered or key is None:
            log.info("%s: dropping %s before its handshake: %s", self._me, c.address, event.reason)
            return
        self._penalize_conn(c, event.reason, event.severity)

    def _penalize_conn(self, c: _Conn, reason: str, severity: int) -> None:
        key = c.session.peer_key
        if key is None or not c.registered:
            return
        self.penalize(key, reason, severity)

    def _close(self, c: _Conn, reason: str) -> None:
        """Close from our side: queue the Goodbye, then the writer closes the socket."""
        if c.ending:
            return
        for frame in c.session.close(reason):
            self._enqueue(c, frame, force=True)
        self._end_writer(c)

    def _end_writer(self, c: _Conn) -> None:
        if not c.ending:
            c.ending = True
            c.queue.append(None)
            c.wake.set()

    async def _finish(self, c: _Conn) -> None:
        now = self._now()
        self._conns.discard(c)
        key = c.session.peer_key
        if c.registered and key is not None and self._peers.get(key) is c:
            del self._peers[key]
        for req_id, pending in list(self._pending.items()):
            if pending.conn is c:
                del self._pending[req_id]
                if not pending.future.done():
                    pending.future.set_result(None)
        if not c.session.is_closed:
            c.session.on_connection_lost("connection ended")
        self._end_writer(c)
        if c.writer is not None:
            await asyncio.wait({c.writer}, timeout=self.config.close_timeout)
            if not c.writer.done():
                c.writer.cancel()
                await asyncio.wait({c.writer})
        try:
            async with asyncio.timeout(self.config.close_timeout):
                await c.conn.close()
        except TimeoutError:
            log.debug("%s: closing %s timed out", self._me, c.address)
        reason = c.session.close_reason or "closed"
        if c.dial_addr is not None:
            if reason == REASON_SELF:
                self.book.add_own_address(c.dial_addr)
            elif not c.clean_close and not self._closing:
                stable = c.established_at is not None and now - c.established_at >= self.config.stable_after
                if stable:
                    self.book.record_success(c.dial_addr, now)
                else:
                    self.book.record_failure(c.dial_addr, now)
        self._disconnects.append(
            Disconnect(c.address, key.hex() if key else "", reason, c.closed_by_peer, c.established_at is not None)
        )
        log.info(
            "%s: %s %s closed (%s): %s",
            self._me,
            key.hex()[:12] if key else "?",
            c.address,
            "by peer" if c.closed_by_peer else "by us",
            reason,
        )

    async def _write_loop(self, c: _Conn) -> None:
        while True:
            while not c.queue:
                c.wake.clear()
                await c.wake.wait()
            frame = c.queue.popleft()
            if frame is None:
                break
            c.queued_bytes -= len(frame)
            try:
                await c.conn.send(frame)
            except TransportError as exc:
                log.debug("%s: %s: %s", self._me, c.address, exc)
                break
        await c.conn.close()

    def _enqueue(self, c: _Conn, frame: bytes, *, force: bool = False) -> None:
        if c.ending:
            return
        cfg = self.config
        if not force and (
            len(c.queue) >= cfg.send_queue_frames or c.queued_bytes + len(frame) > cfg.send_queue_bytes
        ):
            self._drop_slow_peer(c)
            return
        c.queue.append(frame)
        c.queued_bytes += len(frame)
        c.wake.set()

    def _drop_slow_peer(self, c: _Conn) -> None:
        """The peer does not read as fast as we send: drop what is queued and disconnect it."""
        log.warning("%s: %s cannot keep up (send queue full); disconnecting", self._me, c.address)
        c.queue.clear()
        c.queued_bytes = 0
        c.session.close("send queue full")
        self._end_writer(c)
        self._penalize_conn(c, "send queue full", SEVERITY_MINOR)
        # The writer may be stuck in a send to a peer that reads nothing, so
        # the connection's task is cancelled rather than left to flush.
        if c.runner is not None and c.runner is not asyncio.current_task():
            c.runner.cancel()

    def _send(self, c: _Conn, msg: WireMessage) -> None:
        if c.ending or not c.session.is_established:
            return
        self._enqueue(c, c.session.send(msg))

    def _our_height(self) -> int:
        return self._get_status()[0]

    def _get_status(self) -> tuple[int, Hash32]:
        try:
            return self.handler.status()
        except Exception:
            log.exception("%s: handler.status() failed", self._me)
            return 0, ZERO_HASH

    def _send_status(self, c: _Conn) -> None:
        height, tip = self._get_status()
        self._send(c, Status(Height(height), tip))

    def announce_status(self) -> None:
        """Tell every peer our height now (after a commit), rather than at the next status tick."""
        self._send_status_all()

    def _send_status_all(self) -> None:
        height, tip = self._get_status()
        for c in list(self._peers.values()):
            self._send(c, Status(Height(height), tip))

    def _send_peers_requests(self) -> None:
        for c in list(self._peers.values()):
            self._send(c, PeersRequest())

    # ------------------------------------------------------------ internals: messages

    async def _on_message(self, c: _Conn, msg: WireMessage) -> None:
        if isinstance(msg, Gossip):
            await self._on_gossip(c, msg.payload)
        elif isinstance(msg, Status):
            c.height = msg.height
            c.tip = msg.tip_hash
        elif isinstance(msg, PeersRequest):
            # A peer that asks more than twice per exchange interval gets no
            # more answers than that: each answer costs us up to 16 KiB.
            now = self._now()
            if now - c.last_peers_answer >= self.config.pex_interval / 2:
                c.last_peers_answer = now
                self._send(c, Peers(tuple(self._addresses_to_share(c))))
        elif isinstance(msg, Peers):
            for addr in msg.addrs:
                self.book.add_address(addr, SOURCE_PEX)
        elif isinstance(msg, BlobRequest):
            self._send(c, self._serve_blob(msg))
        elif isinstance(msg, BlocksRequest):
            self._send(c, self._serve_blocks(msg))
        elif isinstance(msg, Blocks | BlobChunk | NotFound):
            self._on_response(c, msg)

    async def _on_gossip(self, c: _Conn, payload: GossipPayload) -> None:
        if not self.seen.add(message_id(payload), self._now()):
            return
        key = c.session.peer_key
        assert key is not None, "messages are delivered only after the handshake"
        try:
            await self.handler.on_gossip(payload, key)
        except Exception:
            log.exception("%s: the gossip handler failed on %s", self._me, type(payload).__name__)

    def _addresses_to_share(self, asker: _Conn) -> list[str]:
        out: list[str] = []
        for c in self._peers.values():
            if c is not asker and c.listen_addr:
                out.append(c.listen_addr)
        out += self.book.shareable_addresses(self._now(), MAX_PEERS_PER_MESSAGE)
        skip = {asker.listen_addr, asker.dial_addr, self.listen_addr}
        unique = [a for a in dict.fromkeys(out) if a not in skip]
        return unique[:MAX_PEERS_PER_MESSAGE]

    def _serve_blob(self, req: BlobRequest) -> BlobChunk | NotFound:
        try:
            blob = self.handler.get_blob(req.digest)
        except Exception:
            log.exception("%s: handler.get_blob failed", self._me)
            blob = None
        if blob is None or req.offset > len(blob) or (req.offset == len(blob) and blob):
            return NotFound(req.req_id)
        data = blob[req.offset : req.offset + req.length]
        return BlobChunk(req.req_id, req.digest, req.offset, len(blob), bytes(data))

    def _serve_blocks(self, req: BlocksRequest) -> Blocks | NotFound:
        try:
            found = self.handler.get_blocks(req.start_height, req.count)
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

    def _on_response(self, c: _Conn, msg: ResponseMessage) -> None:
        pending = self._pending.get(msg.req_id)
        if pending is None or pending.conn is not c:
            # A late answer to a request that timed out, or noise: the rate
            # limit bounds what it costs us, so it is dropped without penalty.
            log.debug("%s: unexpected response %d from %s", self._me, msg.req_id, c.address)
            return
        del self._pending[msg.req_id]
        if not pending.future.done():
            pending.future.set_result(msg)

    def _new_req_id(self) -> RequestId:
        req_id = self._next_req_id
        self._next_req_id += 1
        return RequestId(req_id)

    async def _request(self, c: _Conn, req: BlobRequest | BlocksRequest, timeout: float) -> ResponseMessage | None:
        if c.ending or not c.session.is_established:
            return None
        future: asyncio.Future[ResponseMessage | None] = asyncio.get_running_loop().create_future()
        self._pending[req.req_id] = _Pending(c, future)
        try:
            self._send(c, req)
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            return None
        finally:
            self._pending.pop(req.req_id, None)

    def _request_order(self) -> list[_Conn]:
        """Established peers to ask, best score first, then by key (deterministic)."""
        now = self._now()
        return sorted(
            self._peers.values(),
            key=lambda c: (-self.book.get_score(_key_of(c), now), _key_of(c)),
        )

    async def _fetch_blob(self, c: _Conn, digest: Hash32, deadline: float) -> bytes | None:
        parts: list[bytes] = []
        offset = 0
        total: int | None = None
        while total is None or offset < total:
            remaining = deadline - self._now()
            if remaining <= 0 or c.ending:
                return None
            req = BlobRequest(self._new_req_id(), digest, offset, BLOB_CHUNK_SIZE)
            resp = await self._request(c, req, min(remaining, self.config.request_timeout))
            if resp is None or isinstance(resp, NotFound):
                return None
            if not isinstance(resp, BlobChunk) or resp.digest != digest or resp.offset != offset:
                self._penalize_conn(c, "answered a blob request with the wrong chunk", SEVERITY_MAJOR)
                return None
            if total is None:
                if resp.total_size > self.config.max_blob_size:
                    log.info("%s: blob %s of %d bytes is over our limit", self._me, digest.hex()[:12], resp.total_size)
                    return None
                total = resp.total_size
            elif resp.total_size != total:
                self._penalize_conn(c, "changed a blob's size between chunks", SEVERITY_MAJOR)
                return None
            if len(resp.data) != min(BLOB_CHUNK_SIZE, total - offset):
                self._penalize_conn(c, "sent a blob chunk of the wrong length", SEVERITY_MAJOR)
                return None
            parts.append(resp.data)
            offset += len(resp.data)
        blob = b"".join(parts)
        if sha256(blob) != digest:
            self._penalize_conn(c, "sent a blob that does not match its digest", SEVERITY_MAJOR)
            return None
        return blob


def _key_of(c: _Conn) -> bytes:
    return bytes(c.session.peer_key or b"")


def _default_advertise(host: str, port: int) -> str:
    """The address peers should dial us at, when it can be told from the bind address."""
    addr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return addr if is_dialable(addr) else ""

