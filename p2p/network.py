"""The peer-to-peer network of one node: the facade that owns connections, discovery and gossip.

``P2PNetwork`` listens for websocket connections, dials bootstrap and
discovered peers with back-off, runs one ``Session`` per connection over a
``Link`` and carries out its events. Once a peer is established it exchanges
addresses (``PeersRequest`` on connect and every ``pex_interval``), reports
its status (``Status`` on connect and every ``status_interval``), relays
gossip the node hands it, answers requests (``serving``) and makes them
(``requests``).

Life cycle. The network is built from its settings alone; the node, built
after it, hands its ``NetworkHandler`` to ``start(handler)``. ``aclose`` says
goodbye to every peer, then cancels and awaits every task of its ``TaskSet``
(loops, dials, one reader and one writer per connection), so nothing outlives
it. ``async with`` only closes it: ``start`` is always called explicitly.

One connection per node key. Two nodes that dial each other at once end up
with two connections; each keeps the one *initiated by the smaller node key*
(bytewise) and closes the other with ``Goodbye("duplicate connection")``.
Both sides know both keys and who dialled whom, so they drop the same one
without talking about it. Two connections with the same initiator (a peer
that reconnected before we noticed the old one died) keep the newer one.

Penalties. Only a peer that has proved its key is scored: before that, a key
is just a claim, and penalising it would let anyone get an honest node's key
banned. A pre-handshake violation closes the connection, and, when we were
the dialler, counts as a failed dial of that address. A peer that cannot
keep up with its send queue (``link``) is dropped with a minor penalty.

This module must never decide whether a gossiped message is valid (the
handler does, and calls ``penalize``), and must never block the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from typing import Any

from consensus.crypto import Keypair
from consensus.types import ZERO_HASH, Hash32, Height, PublicKey
from p2p.admission import Admission, listener_limits
from p2p.gossip import SeenCache, message_id
from p2p.guard import Slot
from p2p.handler import NetworkHandler, PeerId
from p2p.link import REASON_SLOW, Disconnect, Link
from p2p.logbound import excerpt, peer_extra
from p2p.messages import (
    Gossip,
    GossipPayload,
    Peers,
    PeersRequest,
    ResponseMessage,
    Status,
    WireMessage,
    encode_frame,
)
from p2p.peers import SOURCE_BOOTSTRAP, SOURCE_HANDSHAKE, SOURCE_PEX, PeerBook, is_dialable
from p2p.requests import Requests
from p2p.serving import ServedRequest, Server
from p2p.session import (
    SEVERITY_MINOR,
    Closed,
    Established,
    Message,
    Send,
    Session,
    SessionEvent,
    Violation,
)
from p2p.settings import ChainIdentity, NetworkConfig, PeerSettings
from p2p.tasks import TaskSet, every
from p2p.transport import Connection, Dialer, Listener, TransportError

log = logging.getLogger("tdml.p2p")

REASON_DUPLICATE = "duplicate connection"
REASON_SHUTDOWN = "shutting down"
REASON_TOO_MANY = "too many peers"
REASON_SELF = "connected to self"
REASON_PARTITIONED = "partitioned (test network)"

DEFAULT_PEER_SETTINGS = PeerSettings()
"""The default ``peers`` of a network (frozen, so one shared value is safe)."""


class P2PNetwork:
    """The node's peer-to-peer network; ``start(handler)`` it, then ``aclose`` it (``async with`` closes it)."""

    def __init__(
        self,
        identity: Keypair,
        chain: ChainIdentity,
        peers: PeerSettings = DEFAULT_PEER_SETTINGS,
        config: NetworkConfig | None = None,
    ) -> None:
        self.node_key: PublicKey = identity.public_key
        self.chain = chain
        self.settings = peers
        self.config = cfg = config or NetworkConfig()
        self._identity = identity
        self.book = PeerBook(
            ban_threshold=cfg.ban_threshold, ban_duration=cfg.ban_duration, jitter_seed=bytes(self.node_key),
            backoff_min=cfg.backoff_min, backoff_max=cfg.backoff_max,
        )
        self.seen = SeenCache(cfg.seen_capacity, cfg.seen_ttl)
        self.admission = Admission(cfg, peers.bootstrap, self.book, self._now)
        self.listener = Listener(
            peers.host, peers.port, self._on_inbound,
            admit=self._admit, limits=listener_limits(cfg), is_known=self.admission.is_known,
            heartbeat=cfg.heartbeat, close_timeout=cfg.close_timeout,
        )
        self._dialer = Dialer(heartbeat=cfg.heartbeat, close_timeout=cfg.close_timeout, connect_timeout=cfg.connect_timeout)
        self._requests = Requests(self._penalize_link, request_timeout=cfg.request_timeout, max_blob_size=cfg.max_blob_size)
        self._handler: NetworkHandler | None = None
        self._server: Server | None = None
        self._advertise = peers.advertise_addr or ""
        self._conns: set[Link] = set()
        self._peers: dict[bytes, Link] = {}
        self._dialing: set[str] = set()
        self._partitioned: set[bytes] = set()
        self._tasks = TaskSet(self._me)
        self._loops: list[asyncio.Task[None]] = []
        self._disconnects: deque[Disconnect] = deque(maxlen=256)
        self._closing = False
        self._closed = asyncio.Event()

    # ------------------------------------------------------------ lifecycle

    async def start(self, handler: NetworkHandler) -> None:
        """Serve ``handler`` (the node): listen, then start dialling the bootstrap peers."""
        if self._handler is not None:
            raise RuntimeError("the network is already started")
        if self._closing:
            raise RuntimeError("the network is closed")
        self._handler = handler
        await self.listener.start()
        self._advertise = self.settings.get_advertise_addr(self.port)
        if self._advertise:
            self.book.add_own_address(self._advertise)
        self._server = Server(
            handler, self.book, self._peers.values,
            own_addr=self._advertise, pex_interval=self.config.pex_interval, me=self._me,
        )
        for addr in self.settings.bootstrap:
            if not self.book.add_address(addr, SOURCE_BOOTSTRAP) and not is_dialable(addr):
                log.warning("%s: ignoring bootstrap address %r: not host:port", self._me, addr)
        self._loops = [
            self._tasks.spawn(every(self.config.dial_interval, self._dial_due, first=True), "p2p-dial"),
            self._tasks.spawn(every(self.config.pex_interval, lambda: self._send_all(PeersRequest())), "p2p-pex"),
            self._tasks.spawn(every(self.config.status_interval, self.announce_status), "p2p-status"),
        ]
        log.info("%s: p2p listening on %s:%d", self._me, self.settings.host, self.port)

    async def aclose(self) -> None:
        """Say goodbye to every peer, stop listening, and cancel and await every task."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        for task in self._loops:
            task.cancel()
        for c in list(self._conns):
            c.close(REASON_SHUTDOWN)
        runners = {c.runner for c in self._conns if c.runner is not None}
        if runners:
            await asyncio.wait(runners, timeout=self.config.close_timeout * 2)
        # Inbound handlers only wait for connection tasks, which are done or
        # closing, so the listener's shutdown does not wait long.
        await self.listener.aclose()
        await self._tasks.aclose()
        await self._dialer.aclose()
        self._closed.set()

    async def __aenter__(self) -> P2PNetwork:
        """Enter without starting: call ``start(handler)`` inside the block."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------ queries

    @property
    def port(self) -> int:
        """The port listened on: the configured one, or after ``start`` the one the system chose for 0."""
        return self.listener.port

    @property
    def listen_addr(self) -> str:
        """The address peers are told to dial us at ("" when it cannot be told)."""
        return self._advertise

    def peer_count(self) -> int:
        return len(self._peers)

    def peer_ids(self) -> list[PeerId]:
        return [PublicKey(k) for k in self._peers]

    def connected_keys(self) -> frozenset[bytes]:
        """The node keys of the peers connected now."""
        return frozenset(self._peers)

    def peers(self) -> list[dict[str, Any]]:
        """One entry per connected peer, by key: ``node_id`` (0x-prefixed hex), address, direction, height, score."""
        now = self._now()
        return [c.describe(round(self.book.get_score(key, now), 1)) for key, c in sorted(self._peers.items())]

    def banned(self) -> list[str]:
        """Node ids (hex, without 0x) banned now."""
        return sorted(k.hex() for k in self.book.banned_keys(self._now()))

    def best_peer_height(self) -> int:
        """The highest height a connected peer reports (0 with no peers)."""
        return max((c.height for c in self._peers.values()), default=0)

    def recent_disconnects(self) -> list[Disconnect]:
        return list(self._disconnects)

    def connect(self, addr: str) -> bool:
        """Learn ``addr`` as if it were a bootstrap peer and dial it now; False if it cannot be dialled now.

        Before ``start`` the address is only learnt: the dial loop dials it once the network runs.
        """
        self.book.add_address(addr, SOURCE_BOOTSTRAP)
        if self._handler is None or self._closing or addr in self._dialing or self.book.is_own_address(addr):
            return False
        if not is_dialable(addr):
            return False
        self._start_dial(addr)
        return True

    # ------------------------------------------------------------ gossip and penalties

    async def broadcast(self, payload: GossipPayload, exclude: object = None) -> None:
        """Send a payload to every established peer except ``exclude`` (a peer id), marking it seen."""
        self.seen.add(message_id(payload), self._now())
        frame = encode_frame(Gossip(payload))
        for key, c in list(self._peers.items()):
            if exclude is not None and (key == exclude or c is exclude):
                continue
            c.enqueue(frame)

    def send_to(self, peer_id: bytes, payload: GossipPayload) -> bool:
        """Send a payload to one established peer, bypassing dedup; False if it is not connected.

        For catching up a peer that connected late (a restarted validator
        needs the votes of the height in progress, which it cannot have seen).
        """
        c = self._peers.get(peer_id)
        if c is None:
            return False
        c.enqueue(encode_frame(Gossip(payload)))
        return True

    def forget(self, payload: GossipPayload) -> None:
        """Take a payload out of the seen-cache: the node dropped it unread, and a later copy must get through."""
        self.seen.discard(message_id(payload))

    def announce_status(self) -> None:
        """Tell every peer our height now (after a commit), rather than at the next status tick."""
        self._send_all(self._get_status())

    def set_partitioned(self, keys: set[bytes]) -> None:
        """Cut this node off from ``keys`` until called again without them (test networks only).

        Connections to them close now; they are neither dialled nor accepted.
        """
        self._partitioned = set(keys)
        for key in keys:
            c = self._peers.get(key)
            if c is not None:
                c.close(REASON_PARTITIONED, clean=True)

    def penalize(self, peer_id: bytes, reason: str, severity: int) -> None:
        """Lower a peer's score for something invalid it sent; a peer that falls too low is banned."""
        c = self._peers.get(peer_id)
        addr = c.dial_addr if c is not None else None
        log.info("%s: penalising %s by %d: %s", self._me, peer_id.hex()[:12], severity, reason)
        if self.book.penalize(peer_id, severity, self._now(), addr=addr) and c is not None:
            c.close(f"banned: {reason}", clean=True)

    def _penalize_link(self, c: Link, reason: str, severity: int) -> None:
        """Penalise the peer behind a link, if it is one: registered, with a proved key."""
        key = c.peer_key
        if key is not None and c.registered:
            self.penalize(key, reason, severity)

    def _on_slow(self, c: Link) -> None:
        self._penalize_link(c, REASON_SLOW, SEVERITY_MINOR)

    # ------------------------------------------------------------ requests

    async def request_blob(self, digest: Hash32, timeout: float) -> bytes | None:
        """Fetch a blob by its SHA-256 digest, asking one peer after another; None if none had it.

        Peers are asked best score first, then by key (deterministic).
        """
        now = self._now()
        order = sorted(self._peers.values(), key=lambda c: (-self.book.get_score(c.sort_key, now), c.sort_key))
        return await self._requests.request_blob(order, digest, timeout)

    async def request_blocks(self, start: int, count: int, timeout: float) -> list[tuple[bytes, bytes]]:
        """Up to ``count`` (block, commit) bytes from ``start`` on, from the highest peer that answers.

        The bytes are as the peer sent them: the node decodes and checks them.
        """
        return await self._requests.request_blocks(list(self._peers.values()), start, count, timeout)

    # ------------------------------------------------------------ internals: tasks

    @property
    def _me(self) -> str:
        return self.node_key.hex()[:12]

    @property
    def _node(self) -> NetworkHandler:
        assert self._handler is not None, "connections run only once the network is started with its handler"
        return self._handler

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _admit(self, ip: str) -> Slot | None:
        return None if self._closing else self.admission.admit(ip)

    def _get_status(self) -> Status:
        try:
            height, tip = self._node.status()
        except Exception:
            log.exception("%s: handler.status() failed", self._me)
            height, tip = 0, ZERO_HASH
        return Status(Height(height), tip)

    def _send_all(self, msg: WireMessage) -> None:
        for c in list(self._peers.values()):
            c.send(msg)

    # ------------------------------------------------------------ internals: dialling

    def _dial_due(self) -> None:
        slots = self.settings.max_peers - len(self._peers) - len(self._dialing)
        if slots <= 0 or self._closing:
            return
        busy = set(self._dialing)
        busy.update(c.listen_addr for c in self._peers.values() if c.listen_addr)
        busy.update(c.dial_addr for c in self._conns if c.dial_addr)
        for addr in self.book.addresses_to_dial(
            self._now(), exclude_addrs=busy, exclude_keys=set(self._peers) | self._partitioned, limit=slots
        ):
            self._start_dial(addr)

    def _start_dial(self, addr: str) -> None:
        self._dialing.add(addr)
        self._tasks.spawn(self._dial(addr), f"p2p-dial-{addr}")

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
        task = self._tasks.spawn(self._run_connection(conn, None), f"p2p-in-{conn.remote}")
        await asyncio.wait({task})

    async def _run_connection(self, conn: Connection, dial_addr: str | None) -> None:
        cfg, chain = self.config, self.chain
        session = Session(
            self._identity, chain.chain_id, chain.genesis_hash, chain.protocol_version, self.listen_addr,
            lambda: self._get_status().height, now=self._now(), challenge=os.urandom(32),
            rate_limit=cfg.rate_limit, handshake_timeout=cfg.handshake_timeout,
        )
        c = Link(conn, session, dial_addr, cfg.send_queue_frames, cfg.send_queue_bytes, self._on_slow, self._me)
        c.runner = asyncio.current_task()
        self._conns.add(c)
        c.writer = self._tasks.spawn(c.write_loop(), f"p2p-write-{conn.remote}")
        try:
            if self._closing:
                c.close(REASON_SHUTDOWN)
                return
            for frame in session.start():
                c.enqueue(frame, force=True)
            while not session.is_closed:
                await self._process(c, await c.receive())
        finally:
            await self._finish(c)

    async def _process(self, c: Link, events: list[SessionEvent]) -> None:
        for event in events:
            if isinstance(event, Send):
                c.enqueue(event.frame, force=True)
            elif isinstance(event, Established):
                self._on_established(c, event)
            elif isinstance(event, Message):
                if not c.session.is_closed:
                    await self._on_message(c, event.msg)
            elif isinstance(event, Violation):
                if c.registered:
                    self._penalize_link(c, event.reason, event.severity)
                else:
                    log.info(
                        "%s: dropping %s before its handshake: %s", self._me, c.address, excerpt(event.reason),
                        extra=peer_extra(c.conn.remote),
                    )
            elif isinstance(event, Closed):
                c.closed_by_peer = event.by_peer
                if event.by_peer and event.reason == REASON_DUPLICATE:
                    # The peer kept our other connection: not a failure of this address.
                    c.clean_close = True
                c.end_writer()

    def _on_established(self, c: Link, event: Established) -> None:
        key = event.peer_key
        now = self._now()
        c.listen_addr = event.listen_addr if is_dialable(event.listen_addr) else ""
        c.height = event.height
        if c.dial_addr is not None:
            self.book.record_verified(c.dial_addr, key)
        if self.book.is_banned(now, node_key=key):
            c.close("banned", clean=True)
            return
        if key in self._partitioned:
            c.close(REASON_PARTITIONED, clean=True)
            return
        existing = self._peers.get(key)
        if existing is not None:
            # The same side dialled twice: the old one is stale. Otherwise the smaller initiator wins.
            keep, drop = (c, existing) if self._initiator(c) <= self._initiator(existing) else (existing, c)
            drop.close(REASON_DUPLICATE, clean=True)
            if keep is not c:
                return
        elif len(self._peers) >= self.settings.max_peers:
            c.close(REASON_TOO_MANY)
            return
        self._peers[key] = c
        c.registered = True
        c.conn.mark_established()
        c.established_at = now
        if c.listen_addr and c.listen_addr != c.dial_addr:
            self.book.add_address(c.listen_addr, SOURCE_HANDSHAKE)
        direction = "outbound" if c.outbound else "inbound"
        log.info(
            "%s: connected to %s at %s (%s, height %d)", self._me, key.hex()[:12], c.address, direction, c.height,
            extra=peer_extra(c.conn.remote),
        )
        c.send(self._get_status())
        c.send(PeersRequest())
        try:
            self._node.on_peer_connected(key)
        except Exception:
            log.exception("%s: handler.on_peer_connected failed", self._me)

    def _initiator(self, c: Link) -> bytes:
        """The node key of the side that dialled this connection."""
        return bytes(self.node_key) if c.outbound else c.sort_key

    async def _on_message(self, c: Link, msg: WireMessage) -> None:
        if isinstance(msg, Gossip):
            if self.seen.add(message_id(msg.payload), self._now()):
                await self._on_gossip(c, msg.payload)
        elif isinstance(msg, Status):
            moved = msg.height != c.height
            c.height = msg.height
            c.tip = msg.tip_hash
            if moved and c.peer_key is not None:
                try:
                    self._node.on_peer_status(c.peer_key, msg.height)
                except Exception:
                    log.exception("%s: handler.on_peer_status failed", self._me)
        elif isinstance(msg, Peers):
            for addr in msg.addrs:
                self.book.add_address(addr, SOURCE_PEX)
        elif isinstance(msg, ServedRequest):
            assert self._server is not None, "the server exists from start on"
            reply = self._server.answer(c, msg, self._now())
            if reply is not None:
                c.send(reply)
        elif isinstance(msg, ResponseMessage):
            self._requests.on_response(c, msg)

    async def _on_gossip(self, c: Link, payload: GossipPayload) -> None:
        key = c.peer_key
        assert key is not None, "messages are delivered only after the handshake"
        try:
            await self._node.on_gossip(payload, key)
        except Exception:
            log.exception("%s: the gossip handler failed on %s", self._me, type(payload).__name__)

    async def _finish(self, c: Link) -> None:
        now = self._now()
        self._conns.discard(c)
        key = c.peer_key
        if c.registered and key is not None and self._peers.get(key) is c:
            del self._peers[key]
        self._requests.on_link_closed(c)
        record = await c.aclose(self.config.close_timeout)
        if c.dial_addr is not None:
            if record.reason == REASON_SELF:
                self.book.add_own_address(c.dial_addr)
            elif not c.clean_close and not self._closing:
                stable = c.established_at is not None and now - c.established_at >= self.config.stable_after
                if stable:
                    self.book.record_success(c.dial_addr, now)
                else:
                    self.book.record_failure(c.dial_addr, now)
        self._disconnects.append(record)
