"""The RPC port under hostile clients: deadlines, per-IP limits with loopback reserved, and junk kept out of the log.

A real node (in this process, real LevelDB) behind an ``RpcServer`` with
short deadlines; the hostile clients are raw TCP sockets bound to other
loopback addresses (127.0.0.2, ...) so that they count as other IPs, while
the operator's client comes from 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from consensus.crypto import Keypair
from p2p.guard import GuardLimits
from tdml_node.config import NodeConfig
from tdml_node.genesis import compose_genesis
from tdml_node.node import open_node
from tdml_node.rpc import RpcServer
from tests.sockets import closed_within, connect

pytestmark = pytest.mark.timeout(60)

LIMITS = GuardLimits(max_connections=40, max_per_ip=5, reserved_known=10, header_timeout=0.5, idle_timeout=1.5)
HEALTH = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@pytest.fixture
async def rpc(tmp_path: Path) -> AsyncIterator[RpcServer]:
    key = Keypair.generate()
    genesis = compose_genesis("rpc-guard-test", [(key.public_key, "")])
    config = NodeConfig(home=tmp_path, rpc_port=0, dev=True, block_interval_ms=50)
    async with open_node(config, key, genesis) as node:
        server = RpcServer(node, "127.0.0.1", 0, dev=True, limits=LIMITS)
        await server.start()
        try:
            yield server
        finally:
            await server.stop()






async def health(port: int) -> bytes:
    reader, writer = await connect(port)
    try:
        writer.write(HEALTH)
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
    finally:
        writer.close()


async def test_idle_and_half_sent_connections_are_closed_by_the_deadline(rpc: RpcServer) -> None:
    idle_reader, idle = await connect(rpc.port, "127.0.0.2")
    half_reader, half = await connect(rpc.port, "127.0.0.3")
    half.write(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl")
    assert await closed_within(idle_reader, 5.0)
    assert await closed_within(half_reader, 5.0)
    idle.close()
    half.close()
    assert rpc.guard.stats.timeouts_by_kind.get("header") == 2


async def test_strangers_over_their_limit_are_refused_while_health_answers_on_loopback(rpc: RpcServer) -> None:
    strangers = [await connect(rpc.port, f"127.0.0.{2 + i % 4}") for i in range(40)]
    try:
        await asyncio.sleep(0.1)
        assert (await health(rpc.port)).startswith(b"HTTP/1.1 200")
        assert rpc.guard.stats.refused_limit == 40 - 4 * LIMITS.max_per_ip
        assert rpc.guard.slots.count <= 4 * LIMITS.max_per_ip + 1
    finally:
        for _, writer in strangers:
            writer.close()


async def test_junk_requests_log_a_few_short_warnings_and_no_traceback(
    rpc: RpcServer, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    junk = b"POST / HTTP/1.1\r\nX-Junk: " + bytes(range(256)) * 400 + b"\r\n\r\n"
    for i in range(40):
        reader, writer = await connect(rpc.port, f"127.0.0.{2 + i % 8}")
        with contextlib.suppress(ConnectionError):
            writer.write(junk)
            await writer.drain()
        await closed_within(reader, 5.0)
        writer.close()
    assert (await health(rpc.port)).startswith(b"HTTP/1.1 200")
    ours = [r for r in caplog.records if r.name.startswith(("aiohttp", "tdml"))]
    assert len(ours) <= 30, [r.getMessage()[:100] for r in ours]
    for record in ours:
        assert record.levelno <= logging.WARNING, record.getMessage()[:200]
        assert record.exc_info is None and record.exc_text is None
        assert len(record.getMessage()) <= 300
