"""The p2p port under hostile clients: deadlines, the exact pending-handshake cap, the pre-handshake budget, logs.

Real ``P2PNetwork`` instances on loopback with short deadlines; the hostile
clients are raw TCP sockets or aiohttp websockets bound to other loopback
addresses (127.0.0.2, ...) so that they count as other IPs. A real peer
always comes from 127.0.0.1, which each test makes known to the node (the
host of a bootstrap address), as an operator's configured peers are.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from p2p_fixtures import CHAIN_ID, GENESIS, VERSION, MemoryHandler, keypair, wait_until

from p2p.messages import MAX_FRAME
from p2p.network import P2PNetwork
from p2p.settings import ChainIdentity, NetworkConfig, PeerSettings
from tests.sockets import closed_within

pytestmark = pytest.mark.timeout(90)

CHAIN = ChainIdentity(CHAIN_ID, GENESIS, VERSION)
CONFIG = NetworkConfig(
    dial_interval=0.05, handshake_timeout=20.0, connect_timeout=2.0, close_timeout=0.5, heartbeat=5.0,
    backoff_min=0.05, backoff_max=0.3, header_timeout=0.5, idle_timeout=6.0,
    max_pending_handshakes=12, max_pending_handshakes_per_ip=3, reserved_pending_handshakes=4,
)
STRANGERS = [f"127.0.0.{i}" for i in range(2, 10)]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def network(index: int, config: NetworkConfig = CONFIG, bootstrap: tuple[str, ...] = ()) -> AsyncIterator[P2PNetwork]:
    # A bootstrap address on 127.0.0.1 that nothing listens on makes 127.0.0.1 a known IP without a dial succeeding.
    net = P2PNetwork(
        keypair(index), CHAIN, PeerSettings(bootstrap=bootstrap or (f"127.0.0.1:{closed_port()}",), max_peers=8), config,
    )
    handler = MemoryHandler()
    handler.network = net
    await net.start(handler)
    try:
        yield net
    finally:
        await net.aclose()




async def test_idle_and_half_sent_sockets_are_closed_by_the_header_deadline() -> None:
    async with network(1) as net:
        idle_reader, idle = await asyncio.open_connection("127.0.0.1", net.port, local_addr=("127.0.0.2", 0))
        half_reader, half = await asyncio.open_connection("127.0.0.1", net.port, local_addr=("127.0.0.3", 0))
        half.write(b"GET /p2p HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
        assert await closed_within(idle_reader, 5.0)
        assert await closed_within(half_reader, 5.0)
        idle.close()
        half.close()
        assert net.listener.guard.stats.timeouts_by_kind.get("header") == 2
        await wait_until(lambda: net.listener.guard.slots.count == 0, 5.0, "the guard's slots released")


async def _silent_websocket(port: int, source: str, sessions: list[aiohttp.ClientSession]) -> aiohttp.ClientWebSocketResponse | None:
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source, 0)))
    sessions.append(session)
    try:
        return await session.ws_connect(f"http://127.0.0.1:{port}/p2p", timeout=aiohttp.ClientWSTimeout(ws_close=0.5))
    except aiohttp.WSServerHandshakeError as exc:
        assert exc.status == 503
        return None


async def test_silent_websockets_cannot_pass_the_pending_handshake_cap_and_a_known_peer_still_connects() -> None:
    sessions: list[aiohttp.ClientSession] = []
    async with network(1) as net:
        seen: list[int] = []

        async def watch() -> None:
            while True:
                seen.append(net.admission.pending.count)
                await asyncio.sleep(0.005)

        watcher = asyncio.create_task(watch())
        try:
            attempts = [_silent_websocket(net.port, ip, sessions) for ip in STRANGERS for _ in range(5)]
            results = await asyncio.wait_for(asyncio.gather(*attempts), 30.0)
            held = [ws for ws in results if ws is not None]
            stranger_cap = CONFIG.max_pending_handshakes - CONFIG.reserved_pending_handshakes
            assert len(held) == stranger_cap  # exactly: the slot is taken before the upgrade
            assert net.admission.pending.count == stranger_cap

            async with network(2, bootstrap=(net.listen_addr,)) as peer:
                await wait_until(lambda: net.peer_count() == 1 and peer.peer_count() == 1, 15.0, "the real peer")
                assert net.admission.pending.count == stranger_cap  # its slot went back on establishment
            for ws in held:
                await ws.close()
            await wait_until(lambda: net.admission.pending.count == 0, 10.0, "every pending slot released")
        finally:
            watcher.cancel()
            for session in sessions:
                await session.close()
        assert max(seen) <= CONFIG.max_pending_handshakes
        assert max(seen) >= CONFIG.max_pending_handshakes - CONFIG.reserved_pending_handshakes


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _send_big_frame_before_hello(port: int, source: str, size: int) -> bool:
    """Upgrade by hand, then stream one binary frame of ``size`` bytes; True once the node closed the socket."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(
        b"GET /p2p HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
    assert head.startswith(b"HTTP/1.1 101"), head[:80]
    # FIN + binary, masked with a zero key (so the payload goes as it is), 64-bit length.
    writer.write(b"\x82\xff" + size.to_bytes(8, "big") + b"\0\0\0\0")
    chunk = bytes(64 * 1024)

    async def stream() -> None:
        with contextlib.suppress(ConnectionError):
            for _ in range(size // len(chunk)):
                writer.write(chunk)
                await writer.drain()

    sender = asyncio.create_task(stream())
    closed = await closed_within(reader, 20.0)
    sender.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sender
    writer.transport.abort()
    return closed


async def test_a_frame_before_the_handshake_is_cut_at_the_budget_not_buffered() -> None:
    config = dataclasses.replace(CONFIG, header_timeout=1.0, handshake_timeout=1.0)
    size = MAX_FRAME - 1024  # a frame aiohttp's own size limit lets in
    async with network(1, config) as net:
        base = peak = _rss()

        async def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, _rss())
                await asyncio.sleep(0.01)

        sampler = asyncio.create_task(sample())
        try:
            results = await asyncio.wait_for(
                asyncio.gather(*(_send_big_frame_before_hello(net.port, ip, size) for ip in STRANGERS[:6])), 30.0,
            )
        finally:
            sampler.cancel()
        assert all(results)  # closed (by the session's handshake timeout or the guard's deadline)
        assert net.peer_count() == 0
        assert peak - base < size  # six frames buffered would be six times that


async def test_junk_on_the_p2p_port_logs_a_few_short_warnings_and_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    junk = b"GET /p2p HTTP/1.1\r\nX-Junk: " + bytes(range(256)) * 400 + b"\r\n\r\n"
    async with network(1) as net:
        for i in range(40):
            reader, writer = await asyncio.open_connection("127.0.0.1", net.port, local_addr=(STRANGERS[i % 8], 0))
            with contextlib.suppress(ConnectionError):
                writer.write(junk)
                await writer.drain()
            await closed_within(reader, 5.0)
            writer.close()
    ours = [r for r in caplog.records if r.name.startswith(("aiohttp", "tdml"))]
    assert len(ours) <= 30, [r.getMessage()[:100] for r in ours]
    for record in ours:
        assert record.levelno <= logging.WARNING, record.getMessage()[:200]
        assert record.exc_info is None and record.exc_text is None
        assert len(record.getMessage()) <= 300
