"""Functional tests: real P2PNetwork instances talking over loopback websockets.

Each test starts its nodes on ports the system picks (port 0), with short
intervals so discovery and reconnection take fractions of a second, waits for
conditions with timeouts, and closes every node it started.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from p2p_fixtures import (
    CHAIN_ID,
    GENESIS,
    VERSION,
    MemoryHandler,
    keypair,
    make_session,
    signed_transfer,
    signed_vote,
    wait_until,
)

from consensus.crypto import sha256
from consensus.types import Hash32
from p2p.messages import Goodbye, decode_frame
from p2p.network import REASON_DUPLICATE, P2PNetwork
from p2p.peers import SOURCE_BOOTSTRAP
from p2p.session import Send, Session
from p2p.settings import ChainIdentity, NetworkConfig, PeerSettings
from p2p.transport import Connection, Dialer, TransportError

pytestmark = pytest.mark.timeout(60)

FAST = NetworkConfig(
    dial_interval=0.05,
    pex_interval=0.2,
    status_interval=0.2,
    handshake_timeout=2.0,
    request_timeout=2.0,
    connect_timeout=2.0,
    close_timeout=0.5,
    heartbeat=5.0,
    stable_after=1.0,
    backoff_min=0.05,
    backoff_max=0.3,
)
CHAIN = ChainIdentity(CHAIN_ID, GENESIS, VERSION)


@dataclass
class Swarm:
    """The nodes of one test; every one of them is closed at the end."""

    nets: list[P2PNetwork] = field(default_factory=list)
    handlers: dict[P2PNetwork, MemoryHandler] = field(default_factory=dict)

    async def add(
        self,
        index: int,
        *,
        bootstrap: tuple[str, ...] = (),
        chain_id: str = CHAIN_ID,
        handler: MemoryHandler | None = None,
        port: int = 0,
        config: NetworkConfig = FAST,
        max_peers: int = 8,
    ) -> P2PNetwork:
        handler = handler or MemoryHandler()
        net = P2PNetwork(
            keypair(index),
            ChainIdentity(chain_id, GENESIS, VERSION),
            PeerSettings(port=port, bootstrap=bootstrap, max_peers=max_peers),
            config,
        )
        handler.network = net
        self.nets.append(net)
        self.handlers[net] = handler
        await net.start(handler)
        return net

    def handler(self, net: P2PNetwork) -> MemoryHandler:
        return self.handlers[net]

    async def aclose(self) -> None:
        for net in self.nets:
            await net.aclose()


@pytest.fixture
async def swarm() -> AsyncIterator[Swarm]:
    s = Swarm()
    try:
        yield s
    finally:
        await s.aclose()


def _with(config: NetworkConfig, **changes: object) -> NetworkConfig:
    return dataclasses.replace(config, **changes)  # type: ignore[arg-type]


@dataclass
class CountingHandler(MemoryHandler):
    """Counts the blob reads, one per chunk served."""

    served: list[bytes] = field(default_factory=list)

    def get_blob(self, digest: Hash32) -> bytes | None:
        self.served.append(bytes(digest))
        return super().get_blob(digest)


def connected(a: P2PNetwork, b: P2PNetwork) -> bool:
    return b.node_key in a.peer_ids() and a.node_key in b.peer_ids()


# ---------------------------------------------------------------------------
# Discovery and gossip


async def test_discovery_by_peer_exchange_and_gossip_seen_once(swarm: Swarm) -> None:
    a = await swarm.add(1)
    b = await swarm.add(2, bootstrap=(a.listen_addr,))
    c = await swarm.add(3, bootstrap=(b.listen_addr,))
    await wait_until(lambda: connected(a, b) and connected(b, c), what="bootstrap connections")
    # C was told only of B; it learns A through B's answer to its PeersRequest.
    await wait_until(lambda: connected(a, c), what="C to find A by peer exchange")
    assert a.listen_addr in c.book.known_addresses()
    assert c.book.get_address(a.listen_addr).source != SOURCE_BOOTSTRAP  # type: ignore[union-attr]

    vote = signed_vote(7)
    await a.broadcast(vote)
    await wait_until(lambda: bool(swarm.handler(b).received and swarm.handler(c).received), what="gossip to arrive")
    await asyncio.sleep(0.3)  # room for any duplicate relays to arrive (they must not)
    assert swarm.handler(b).received == [(vote, a.node_key)]
    assert [p for p, _ in swarm.handler(c).received] == [vote]
    assert swarm.handler(a).received == []  # relays back to the origin are deduplicated

    # A relay from C reaches A and B only if it is new.
    tx = signed_transfer(8)
    await c.broadcast(tx)
    await wait_until(lambda: len(swarm.handler(a).received) == 1 and len(swarm.handler(b).received) == 2)
    await asyncio.sleep(0.2)
    assert [p for p, _ in swarm.handler(a).received] == [tx]  # from C, or relayed by B: once either way
    assert [p for p, _ in swarm.handler(b).received] == [vote, tx]

    peers = {p["node_id"]: p for p in b.peers()}
    a_id, c_id = "0x" + a.node_key.hex(), "0x" + c.node_key.hex()
    assert set(peers) == {a_id, c_id}
    assert peers[a_id]["direction"] == "outbound"
    assert peers[c_id]["direction"] == "inbound"
    assert peers[a_id]["address"] == a.listen_addr


async def test_broadcast_excludes_the_peer_a_message_came_from(swarm: Swarm) -> None:
    a = await swarm.add(1, handler=MemoryHandler(relay=False))
    b = await swarm.add(2, bootstrap=(a.listen_addr,), handler=MemoryHandler(relay=False))
    await wait_until(lambda: connected(a, b))
    await b.broadcast(signed_vote(1), exclude=a.node_key)
    await a.broadcast(signed_vote(2), exclude=b.node_key)
    await b.broadcast(signed_vote(3))
    await wait_until(lambda: len(swarm.handler(a).received) == 1)
    await asyncio.sleep(0.1)
    assert swarm.handler(a).received == [(signed_vote(3), b.node_key)]
    assert swarm.handler(b).received == []


async def test_a_forgotten_message_gets_through_again_and_a_repeat_does_not(swarm: Swarm) -> None:
    a = await swarm.add(1, handler=MemoryHandler(relay=False))
    b = await swarm.add(2, bootstrap=(a.listen_addr,), handler=MemoryHandler(relay=False))
    await wait_until(lambda: connected(a, b))
    vote = signed_vote(4)
    assert a.send_to(b.node_key, vote)
    await wait_until(lambda: len(swarm.handler(b).received) == 1)
    assert a.send_to(b.node_key, vote)  # seen: dropped by B's cache
    b.forget(vote)  # B's node dropped it unread, so the next copy must reach it
    assert a.send_to(b.node_key, vote)
    await wait_until(lambda: len(swarm.handler(b).received) == 2, what="the copy sent after forget")
    await asyncio.sleep(0.2)
    assert swarm.handler(b).received == [(vote, a.node_key)] * 2


async def test_a_peer_status_reaches_the_node_when_its_height_changes(swarm: Swarm) -> None:
    tall = await swarm.add(1, handler=MemoryHandler(height=3))
    c = await swarm.add(2, bootstrap=(tall.listen_addr,))
    await wait_until(lambda: c.best_peer_height() == 3, what="the handshake's height")
    await asyncio.sleep(0.5)  # statuses repeat every 0.2 s; the height the handshake gave is not news
    assert swarm.handler(c).statuses == []
    swarm.handler(tall).height = 4
    await wait_until(lambda: bool(swarm.handler(c).statuses), what="the changed status")
    await asyncio.sleep(0.5)
    assert swarm.handler(c).statuses == [(tall.node_key, 4)]


async def test_duplicate_connections_keep_the_one_the_smaller_key_dialled(swarm: Swarm) -> None:
    config = _with(FAST, dial_interval=60.0)
    a = await swarm.add(1, config=config)
    b = await swarm.add(2, config=config)
    # Both dial in the same tick, so both connections are opened.
    assert a.connect(b.listen_addr) and b.connect(a.listen_addr)
    await wait_until(lambda: connected(a, b), what="a connection")
    await wait_until(
        lambda: any(d.reason == REASON_DUPLICATE for d in a.recent_disconnects() + b.recent_disconnects()),
        what="the duplicate to be dropped",
    )
    await asyncio.sleep(0.3)
    assert a.peer_count() == 1 and b.peer_count() == 1
    a_dialled = bytes(a.node_key) < bytes(b.node_key)
    assert a.peers()[0]["direction"] == ("outbound" if a_dialled else "inbound")
    assert b.peers()[0]["direction"] == ("inbound" if a_dialled else "outbound")


# ---------------------------------------------------------------------------
# Requests


async def test_request_blob_in_verified_chunks(swarm: Swarm) -> None:
    blob = os.urandom(3 * 512 * 1024)  # 1.5 MiB: three chunks
    digest = sha256(blob)
    handler = CountingHandler(blobs={bytes(digest): blob})
    a = await swarm.add(1, handler=handler)
    b = await swarm.add(2, bootstrap=(a.listen_addr,))
    await wait_until(lambda: connected(a, b))

    assert await b.request_blob(digest, timeout=10.0) == blob
    assert handler.served == [bytes(digest)] * 3
    missing = Hash32(hashlib.sha256(b"nobody has this").digest())
    assert await b.request_blob(missing, timeout=5.0) is None

    empty = b""
    handler.blobs[bytes(sha256(empty))] = empty
    assert await b.request_blob(sha256(empty), timeout=5.0) == b""


async def test_a_peer_serving_bad_blob_data_is_penalized(swarm: Swarm) -> None:
    blob = os.urandom(600 * 1024)
    digest = sha256(blob)
    liar = await swarm.add(1, handler=MemoryHandler(blobs={bytes(digest): blob[:-1] + b"\x00"}))
    b = await swarm.add(2, bootstrap=(liar.listen_addr,))
    await wait_until(lambda: connected(liar, b))
    assert await b.request_blob(digest, timeout=5.0) is None
    assert b.peers()[0]["score"] < 0

    honest = await swarm.add(3, handler=MemoryHandler(blobs={bytes(digest): blob}))
    b.connect(honest.listen_addr)
    await wait_until(lambda: connected(honest, b))
    assert await b.request_blob(digest, timeout=5.0) == blob


async def test_request_blocks_from_the_highest_peer(swarm: Swarm) -> None:
    blocks = {h: (f"block {h}".encode(), f"commit {h}".encode()) for h in range(1, 6)}
    tall = await swarm.add(1, handler=MemoryHandler(blocks=dict(blocks), height=5))
    short = await swarm.add(
        2, handler=MemoryHandler(blocks={1: (b"other 1", b"c"), 2: (b"other 2", b"c")}, height=2)
    )
    c = await swarm.add(3, bootstrap=(tall.listen_addr, short.listen_addr))
    await wait_until(lambda: c.peer_count() == 2 and c.best_peer_height() == 5, what="statuses")
    assert await c.request_blocks(2, 10, timeout=5.0) == [blocks[h] for h in range(2, 6)]
    assert await c.request_blocks(6, 10, timeout=5.0) == []
    assert await c.request_blocks(1, 0, timeout=5.0) == []

    swarm.handler(tall).height = 9  # the next Status reports it
    await wait_until(lambda: c.best_peer_height() == 9)
    assert {p["height"] for p in c.peers()} == {9, 2}


# ---------------------------------------------------------------------------
# Refusals, bans, reconnection


async def test_a_peer_of_another_chain_is_refused_with_a_clear_reason_on_both_sides(swarm: Swarm) -> None:
    a = await swarm.add(1)
    other = await swarm.add(2, chain_id="other-chain", bootstrap=(a.listen_addr,))
    ours = f"chain id mismatch: ours {CHAIN_ID!r}, yours 'other-chain'"
    theirs = f"chain id mismatch: ours 'other-chain', yours {CHAIN_ID!r}"
    await wait_until(lambda: any(d.reason == ours for d in a.recent_disconnects()), what="A to refuse")
    await wait_until(lambda: any(d.reason == theirs for d in other.recent_disconnects()), what="B to refuse")
    assert a.peer_count() == 0 and other.peer_count() == 0
    # The refused address backs off rather than being redialled at once.
    info = other.book.get_address(a.listen_addr)
    assert info is not None and info.failures >= 1


async def test_reconnection_after_a_peer_restarts(swarm: Swarm) -> None:
    a = await swarm.add(1)
    b = await swarm.add(2, bootstrap=(a.listen_addr,))
    await wait_until(lambda: connected(a, b))
    port = a.port
    await a.aclose()
    await wait_until(lambda: b.peer_count() == 0, what="B to notice")
    assert any(d.reason == "shutting down" and d.by_peer for d in b.recent_disconnects())
    await asyncio.sleep(0.3)  # B keeps dialling and failing, with back-off

    again = await swarm.add(1, port=port)
    await wait_until(lambda: connected(again, b), what="B to reconnect")


async def _raw_handshake(addr: str, index: int, dialer: Dialer) -> tuple[Connection, Session]:
    """Dial a network with a bare Session, as a hand-written (and later misbehaving) peer."""
    conn = await dialer.dial(addr)
    session = make_session(index, listen_addr="", now=asyncio.get_running_loop().time())
    for hello in session.start():
        await conn.send(hello)
    async with asyncio.timeout(5.0):
        while not session.is_established:
            frame = await conn.receive()
            assert frame is not None, "the network closed the connection during the handshake"
            for event in session.receive(frame, asyncio.get_running_loop().time()):
                if isinstance(event, Send):
                    await conn.send(event.frame)
    return conn, session


async def _frames_until_closed(conn: Connection) -> list[object]:
    got: list[object] = []
    async with asyncio.timeout(5.0):
        while (frame := await conn.receive()) is not None:
            got.append(decode_frame(frame))
    return got


async def test_a_peer_flooding_malformed_frames_is_banned(swarm: Swarm) -> None:
    a = await swarm.add(1)
    dialer = Dialer()
    try:
        conn, _ = await _raw_handshake(a.listen_addr, 9, dialer)
        await wait_until(lambda: a.peer_count() == 1)
        for _ in range(10):
            try:
                await conn.send(b"\xc1 not msgpack")
            except TransportError:
                break
        got = await _frames_until_closed(conn)
        goodbyes = [m for m in got if isinstance(m, Goodbye)]
        assert len(goodbyes) == 1 and goodbyes[0].reason.startswith("banned: malformed frame")
        await wait_until(lambda: a.peer_count() == 0)
        assert a.book.is_banned(asyncio.get_running_loop().time(), node_key=keypair(9).public_key)

        # The key stays banned: a new connection is refused after the handshake.
        conn, _ = await _raw_handshake(a.listen_addr, 9, dialer)
        assert Goodbye("banned") in await _frames_until_closed(conn)
    finally:
        await dialer.aclose()


async def test_the_node_can_penalize_a_peer_for_invalid_gossip(swarm: Swarm) -> None:
    a = await swarm.add(1, handler=MemoryHandler(relay=False))
    b = await swarm.add(2, bootstrap=(a.listen_addr,))
    await wait_until(lambda: connected(a, b))
    a.penalize(b.node_key, "invalid vote signature", 20)
    assert a.peers()[0]["score"] == -20.0 and a.peer_count() == 1
    a.penalize(b.node_key, "invalid vote signature", 100)
    await wait_until(lambda: a.peer_count() == 0 and b.peer_count() == 0)
    assert any(d.reason == "banned: invalid vote signature" and d.by_peer for d in b.recent_disconnects())
    await asyncio.sleep(0.3)  # B redials; A refuses the banned key
    assert a.peer_count() == 0


async def test_a_peer_that_cannot_keep_up_is_disconnected(swarm: Swarm) -> None:
    a = await swarm.add(1, config=_with(FAST, send_queue_frames=4))
    dialer = Dialer()
    try:
        conn, _ = await _raw_handshake(a.listen_addr, 9, dialer)
        await wait_until(lambda: a.peer_count() == 1)
        # broadcast() never waits for the socket, so ten in a row overflow a queue of four.
        for i in range(10):
            await a.broadcast(signed_vote(20 + i))
        await wait_until(
            lambda: any(d.reason == "send queue full" for d in a.recent_disconnects()),
            what="the slow peer to be dropped",
        )
        assert a.peer_count() == 0
        await conn.close()
    finally:
        await dialer.aclose()


async def test_a_silent_connection_times_out_in_the_handshake(swarm: Swarm) -> None:
    a = await swarm.add(1, config=_with(FAST, handshake_timeout=0.3))
    dialer = Dialer()
    try:
        conn = await dialer.dial(a.listen_addr)
        got = await _frames_until_closed(conn)
        assert got[-1] == Goodbye("handshake timed out")
        assert a.peer_count() == 0
    finally:
        await dialer.aclose()


async def test_aclose_leaves_no_tasks_behind() -> None:
    before = asyncio.all_tasks()
    a = P2PNetwork(keypair(1), CHAIN, config=FAST)
    await a.start(MemoryHandler())
    async with P2PNetwork(keypair(2), CHAIN, PeerSettings(bootstrap=(a.listen_addr,)), FAST) as b:
        await b.start(MemoryHandler())
        await wait_until(lambda: connected(a, b))
    await a.aclose()
    await a.aclose()  # closing twice is harmless
    await asyncio.sleep(0)
    assert asyncio.all_tasks() - before == set()


async def test_a_block_range_is_cut_to_fit_one_frame(swarm: Swarm) -> None:
    big = {h: (bytes([h]) * (7 * 1024 * 1024), b"commit") for h in range(1, 4)}
    tall = await swarm.add(1, handler=MemoryHandler(blocks=big, height=3))
    c = await swarm.add(2, bootstrap=(tall.listen_addr,))
    await wait_until(lambda: c.best_peer_height() == 3)
    got = await c.request_blocks(1, 3, timeout=10.0)
    assert got == [big[1], big[2]]  # a third 7 MiB block would pass the 16 MiB frame limit


async def test_a_peer_that_does_not_answer_is_skipped_after_the_request_timeout(swarm: Swarm) -> None:
    blob = b"x" * 1000
    digest = sha256(blob)
    silent_index = 9
    # An honest node whose key sorts after the silent one's, so the silent one is asked first.
    honest_index = next(i for i in range(1, 9) if bytes(keypair(i).public_key) > bytes(keypair(9).public_key))
    honest = await swarm.add(honest_index, handler=MemoryHandler(blobs={bytes(digest): blob}))
    b = await swarm.add(10, bootstrap=(honest.listen_addr,), config=_with(FAST, request_timeout=0.3))
    await wait_until(lambda: connected(honest, b))
    dialer = Dialer()
    try:
        conn, _ = await _raw_handshake(b.listen_addr, silent_index, dialer)
        await wait_until(lambda: b.peer_count() == 2)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await b.request_blob(digest, timeout=5.0) == blob
        assert loop.time() - started >= 0.3  # it waited for the silent peer first
        await conn.close()
    finally:
        await dialer.aclose()


async def test_the_network_starts_once_with_its_handler_and_async_with_only_closes_it() -> None:
    handler = MemoryHandler()
    async with P2PNetwork(keypair(1), CHAIN, config=FAST) as net:
        # Entering does not start it: nothing listens, and an address is only learnt.
        assert net.port == 0 and net.listen_addr == ""
        assert not net.connect("127.0.0.1:9")
        assert net.book.get_address("127.0.0.1:9") is not None
        await net.start(handler)
        assert net.port != 0 and net.listen_addr == f"127.0.0.1:{net.port}"
        with pytest.raises(RuntimeError, match="already started"):
            await net.start(handler)
    with pytest.raises(RuntimeError, match="already started"):
        await net.start(handler)
    never = P2PNetwork(keypair(2), CHAIN, config=FAST)
    await never.aclose()  # closing a network that never started is harmless, and final
    with pytest.raises(RuntimeError, match="closed"):
        await never.start(handler)

