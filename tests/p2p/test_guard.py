"""The connection guard: its slot accounting, and its limits and deadlines on real loopback sockets.

The socket tests serve a small aiohttp app through a ``ConnectionGuard``
with short deadlines and a budget of its own (not the process's), and talk
to it with raw TCP clients, some bound to other loopback addresses
(127.0.0.2, ...) to stand for other client IPs.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from p2p_fixtures import wait_until

from p2p.guard import ConnectionGuard, GuardLimits, SlotCounter
from tests.sockets import closed_within, connect

pytestmark = pytest.mark.timeout(60)

BIG = 16 * 1024 * 1024
REQUEST = b"GET /small HTTP/1.1\r\nHost: t\r\n\r\n"


# ---------------------------------------------------------------- accounting


def test_slots_are_capped_in_total_and_per_key_and_reserved_for_known_keys() -> None:
    slots = SlotCounter(total=6, per_key=2, reserved=2)
    a = [slots.try_acquire("a") for _ in range(3)]
    assert a[0] and a[1] and a[2] is None  # per key
    b = [slots.try_acquire("b") for _ in range(2)]
    assert all(b)
    assert slots.try_acquire("c") is None  # 4 of 6 held: the last 2 are for known keys
    known = [slots.try_acquire("k", known=True) for _ in range(3)]
    assert known[0] and known[1] and known[2] is None  # the total binds known keys too
    assert slots.count == 6


def test_release_is_idempotent_and_gives_back_exactly_one_slot() -> None:
    slots = SlotCounter(total=2, per_key=2)
    first = slots.try_acquire("a")
    second = slots.try_acquire("a")
    assert first is not None and second is not None
    first.release()
    first.release()
    assert slots.count == 1 and slots.held_by("a") == 1 and not first.held
    second.release()
    assert slots.count == 0 and slots.held_by("a") == 0
    assert slots.try_acquire("a") is not None


def test_impossible_limits_are_refused() -> None:
    for total, per_key, reserved in ((0, 1, 0), (2, 0, 0), (2, 2, 2), (2, 2, -1)):
        with pytest.raises(ValueError):
            SlotCounter(total, per_key, reserved)


# ---------------------------------------------------------------- on sockets


@dataclass
class Served:
    guard: ConnectionGuard
    shared: SlotCounter
    port: int


async def _small(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _big(request: web.Request) -> web.Response:
    return web.Response(body=b"x" * BIG)


@contextlib.asynccontextmanager
async def serve(limits: GuardLimits) -> AsyncIterator[Served]:
    shared = SlotCounter(1000, 1000, 10)
    guard = ConnectionGuard(limits, is_known=lambda ip: ip == "127.0.0.1", shared=shared)
    app = web.Application(middlewares=[guard.middleware])
    app.router.add_get("/small", _small)
    app.router.add_get("/big", _big)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    assert runner.server is not None
    port = await guard.serve(runner.server, "127.0.0.1", 0)
    try:
        yield Served(guard, shared, port)
    finally:
        guard.close()
        await runner.cleanup()
        guard.abort_all()






SHORT = GuardLimits(max_connections=50, max_per_ip=4, reserved_known=10, header_timeout=0.5, idle_timeout=1.0)


async def test_an_idle_socket_is_closed_by_the_header_deadline() -> None:
    async with serve(SHORT) as s:
        reader, writer = await connect(s.port)
        assert await closed_within(reader, 5.0)
        writer.close()
        assert s.guard.stats.timeouts_by_kind.get("header") == 1
        await wait_until(lambda: s.guard.slots.count == 0 and s.shared.count == 0, 5.0, "slots released")


async def test_headers_sent_a_byte_at_a_time_are_cut_at_the_header_deadline() -> None:
    async with serve(SHORT) as s:
        reader, writer = await connect(s.port)
        closed = asyncio.create_task(closed_within(reader, 5.0))
        with contextlib.suppress(ConnectionError):
            for byte in b"GET /small HTTP/1.1\r\nHost: slow\r\nX-Pad: " + b"a" * 200:
                if closed.done():
                    break
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.05)  # progress, but never a whole request
        assert await closed
        writer.close()
        assert s.guard.stats.timeouts_by_kind.get("header") == 1


async def test_a_kept_alive_connection_serves_requests_and_then_idles_out() -> None:
    async with serve(SHORT) as s:
        reader, writer = await connect(s.port)
        for _ in range(3):
            writer.write(REQUEST)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            assert head.startswith(b"HTTP/1.1 200")
            assert await asyncio.wait_for(reader.readexactly(2), 5.0) == b"ok"
        assert await closed_within(reader, 5.0)
        writer.close()
        assert s.guard.stats.timed_out == 1


async def test_strangers_over_the_per_ip_limit_are_refused_while_a_known_ip_is_served() -> None:
    async with serve(SHORT) as s:
        held = [await connect(s.port, "127.0.0.2") for _ in range(SHORT.max_per_ip)]
        extra = [await connect(s.port, "127.0.0.2") for _ in range(3)]
        for reader, _ in extra:
            assert await closed_within(reader, 2.0)  # aborted at once, long before any deadline
        other = await connect(s.port, "127.0.0.3")  # another stranger still has its own share
        reader, writer = await connect(s.port)
        writer.write(REQUEST)
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)).startswith(b"HTTP/1.1 200")
        assert s.guard.stats.refused_limit == 3
        assert s.guard.slots.held_by("127.0.0.2") == SHORT.max_per_ip
        for _, w in [*held, *extra, other, (reader, writer)]:
            w.close()
        await wait_until(lambda: s.guard.slots.count == 0 and s.shared.count == 0, 5.0, "every slot released")


async def test_the_reserve_lets_a_known_ip_in_when_strangers_filled_the_rest() -> None:
    limits = GuardLimits(max_connections=8, max_per_ip=8, reserved_known=2, header_timeout=5.0, idle_timeout=5.0)
    async with serve(limits) as s:
        strangers = [await connect(s.port, f"127.0.0.{2 + i % 3}") for i in range(10)]
        await wait_until(lambda: s.guard.stats.refused_limit == 4, 5.0, "strangers over 6 refused")
        reader, writer = await connect(s.port)
        writer.write(REQUEST)
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)).startswith(b"HTTP/1.1 200")
        for _, w in [*strangers, (reader, writer)]:
            w.close()


async def test_a_big_response_to_a_reader_that_reads_outlives_the_idle_deadline_and_one_that_never_reads_does_not() -> None:
    limits = GuardLimits(header_timeout=2.0, idle_timeout=0.6)
    async with serve(limits) as s:
        reader, writer = await connect(s.port)
        # A small receive buffer, so the response really waits on this reader.
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        writer.write(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        got = 0
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with asyncio.timeout(30):
            await reader.readuntil(b"\r\n\r\n")
            while got < BIG:
                chunk = await reader.read(256 * 1024)
                assert chunk, f"cut after {got} bytes"
                got += len(chunk)
                await asyncio.sleep(0.01)
        assert loop.time() - started > limits.idle_timeout  # it really outlived one idle period
        writer.close()

        assert s.guard.stats.timed_out == 0
        _, stuck = await connect(s.port)
        stuck.write(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        await wait_until(lambda: s.guard.stats.timeouts_by_kind.get("idle", 0) >= 1, 10.0, "the non-reader cut")
        stuck.close()


@contextlib.asynccontextmanager
async def serve_ws(limits: GuardLimits, heartbeat: float | None, *, push: bool = False) -> AsyncIterator[Served]:
    """A websocket route; with ``push`` it sends 64 KiB messages as fast as the client takes them."""
    shared = SlotCounter(100, 100, 10)
    guard = ConnectionGuard(limits, shared=shared)

    async def handle(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=heartbeat)
        await ws.prepare(request)
        if push:
            with contextlib.suppress(ConnectionError):
                while not ws.closed:
                    await ws.send_bytes(bytes(65536))
        async for _ in ws:
            pass
        return ws

    app = web.Application(middlewares=[guard.middleware])
    app.router.add_get("/ws", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    assert runner.server is not None
    port = await guard.serve(runner.server, "127.0.0.1", 0)
    try:
        yield Served(guard, shared, port)
    finally:
        guard.close()
        await runner.cleanup()
        guard.abort_all()


async def test_a_websocket_that_only_reads_lives_on_its_heartbeat_pongs_and_a_deaf_one_does_not() -> None:
    limits = GuardLimits(header_timeout=2.0, idle_timeout=0.8)
    async with serve_ws(limits, heartbeat=0.2) as s, aiohttp.ClientSession() as session:
        # aiohttp's client answers pings by itself while this task waits on receive().
        ws = await session.ws_connect(f"http://127.0.0.1:{s.port}/ws", autoping=True)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.receive(), 3.0)  # nothing comes, and the socket stays
        assert not ws.closed and s.guard.stats.timed_out == 0
        await ws.close()

        # A client that sends nothing at all, not even pongs: only the guard's idle deadline ends it.
        reader, writer = await connect(s.port)
        writer.write(
            b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)).startswith(b"HTTP/1.1 101")
        assert await closed_within(reader, 10.0)
        writer.close()


_ACCEPT_CHILD = """
import asyncio, logging, resource, sys
from aiohttp import web
from p2p.guard import ConnectionGuard, GuardLimits, SlotCounter

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")


async def main() -> None:
    guard = ConnectionGuard(GuardLimits(header_timeout=0.3, idle_timeout=1.0), shared=SlotCounter(10000, 10000))
    runner = web.AppRunner(web.Application(middlewares=[guard.middleware]), access_log=None)
    await runner.setup()
    port = await guard.serve(runner.server, "127.0.0.1", 0)
    import os
    used = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (used + 4, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    print(port, flush=True)
    await asyncio.sleep(float(sys.argv[1]))
    guard.close()
    await runner.cleanup()


asyncio.run(main())
"""


def test_descriptor_exhaustion_on_accept_is_logged_once_per_interval_with_a_count() -> None:
    """A real listener out of descriptors: asyncio would log every retry, with a traceback; the guard logs once."""
    child = subprocess.Popen(
        [sys.executable, "-c", _ACCEPT_CHILD, "4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    clients: list[socket.socket] = []
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        for _ in range(40):
            c = socket.socket()
            c.settimeout(2.0)
            with contextlib.suppress(OSError):
                c.connect(("127.0.0.1", port))
            clients.append(c)
        _, err = child.communicate(timeout=30)
    finally:
        for c in clients:
            c.close()
        if child.poll() is None:
            child.kill()
            child.wait(10)
    assert child.returncode == 0, err[-2000:]
    lines = [line for line in err.splitlines() if line.strip()]
    accept_lines = [line for line in lines if "accept failed" in line]
    assert len(accept_lines) == 1, lines[-20:]  # 4 s of failures, one interval of 10 s
    assert "Too many open files" in accept_lines[0]
    assert "out of system resource" not in err and "Traceback" not in err


UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
PING = b"\x89\x80\0\0\0\0"  # a masked, empty ping


async def test_a_client_that_keeps_sending_but_never_reads_is_cut_at_the_write_deadline() -> None:
    limits = GuardLimits(header_timeout=2.0, idle_timeout=30.0, write_timeout=1.0)
    async with serve_ws(limits, heartbeat=None, push=True) as s:
        sock = socket.create_connection(("127.0.0.1", s.port), timeout=5.0)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(UPGRADE)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20.0
            with contextlib.suppress(OSError):
                while s.guard.stats.timed_out == 0 and loop.time() < deadline:
                    sock.sendall(PING)  # bytes in, all the time: not idle, but never reading
                    await asyncio.sleep(0.05)
            assert s.guard.stats.timeouts_by_kind == {"write": 1}
        finally:
            sock.close()


async def test_a_pushed_stream_to_a_client_that_reads_it_is_not_cut_at_the_write_deadline() -> None:
    limits = GuardLimits(header_timeout=2.0, idle_timeout=30.0, write_timeout=0.5)
    async with serve_ws(limits, heartbeat=None, push=True) as s, aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"http://127.0.0.1:{s.port}/ws", max_msg_size=0)
        got = 0
        async with asyncio.timeout(20):
            while got < 64 << 20:
                msg = await ws.receive()
                assert msg.type is aiohttp.WSMsgType.BINARY, msg
                got += len(msg.data)
                if got % (1 << 20) == 0:
                    await asyncio.sleep(0.05)  # a reader slower than the writer: the writer is paused often
        assert s.guard.stats.timed_out == 0
        # No closing handshake: the pushing handler never reads one; leaving the session drops the socket.
