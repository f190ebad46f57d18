"""Hostile clients for the soak: each attack a bounded loop of real loopback sockets against a node's ports.

Every attack runs until its ``stop`` event is set, keeps at most a fixed
number of sockets open, sleeps between rounds so that the attacker does not
take the cores the nodes need, and counts what happened in an ``AttackStats``.
Sources are bound to addresses of 127.0.0.0/8 other than 127.0.0.1, so the
nodes see strangers while the soak's own probes (127.0.0.1) stay a known,
separate client.

This module must never send to an address outside 127.0.0.0/8, never assert
(the soak's checks do, from the counts) and never leave a socket open after
its attack returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp

HOST = "127.0.0.1"
SOURCES = tuple(f"127.0.0.{i}" for i in range(2, 10))


@dataclass
class AttackStats:
    name: str
    attempts: int = 0
    refused: int = 0
    """Connections the node closed or refused before the attack was done with them."""
    held_seconds_max: float = 0.0
    """The longest a connection that sent nothing more was kept open by the node."""
    answers: dict[str, int] = field(default_factory=dict)

    def answered(self, what: str) -> None:
        self.answers[what] = self.answers.get(what, 0) + 1


@dataclass(frozen=True, slots=True)
class Target:
    rpc_port: int
    p2p_port: int


Attack = Callable[[list[Target], asyncio.Event, AttackStats, random.Random], Awaitable[None]]


async def _open(port: int, rng: random.Random, *, rcvbuf: int | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection from one of the stranger sources; ``rcvbuf`` shrinks the receive side (a reader that
    never reads then holds little in its own kernel, so what piles up is the node's to bound)."""
    if rcvbuf is None:
        return await asyncio.wait_for(
            asyncio.open_connection(HOST, port, local_addr=(rng.choice(SOURCES), 0)), timeout=5)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((rng.choice(SOURCES), 0))
        sock.setblocking(False)
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (HOST, port)), timeout=5)
        return await asyncio.open_connection(sock=sock, limit=rcvbuf)
    except BaseException:
        sock.close()
        raise


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), timeout=2)


async def _held_until_closed(reader: asyncio.StreamReader, limit: float, stop: asyncio.Event) -> float:
    """Seconds until the node closed the connection (reading whatever it answered), at most ``limit``.

    Stops waiting, too, when the soak stops the attacks.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def drain() -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while await reader.read(65536):
                pass

    reading = asyncio.create_task(drain())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait((reading, stopping), timeout=limit, return_when=asyncio.FIRST_COMPLETED)
    reading.cancel()
    stopping.cancel()
    await asyncio.gather(reading, stopping, return_exceptions=True)
    return loop.time() - start


async def idle_connections(targets: list[Target], stop: asyncio.Event, stats: AttackStats, rng: random.Random,
                           *, per_round: int = 40, hold_limit: float = 120.0) -> None:
    """Open TCP connections to both ports and send nothing; see how long the node keeps them."""
    while not stop.is_set():
        target = rng.choice(targets)
        port = rng.choice((target.rpc_port, target.p2p_port))
        opened = []
        for _ in range(per_round):
            stats.attempts += 1
            try:
                opened.append(await _open(port, rng))
            except (OSError, TimeoutError):
                stats.refused += 1
        held = await asyncio.gather(*(_held_until_closed(r, hold_limit, stop) for r, _ in opened))
        stats.held_seconds_max = max([stats.held_seconds_max, *held])
        for _, writer in opened:
            await _close(writer)


async def slow_headers(targets: list[Target], stop: asyncio.Event, stats: AttackStats, rng: random.Random,
                       *, sockets: int = 20, drip: float = 2.0, hold_limit: float = 120.0) -> None:
    """Slowloris: a request line, then one header byte every ``drip`` seconds, never finishing."""
    async def one(port: int) -> None:
        stats.attempts += 1
        try:
            reader, writer = await _open(port, rng)
        except (OSError, TimeoutError):
            stats.refused += 1
            return
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            writer.write(f"POST / HTTP/1.1\r\nHost: {HOST}:{port}\r\n".encode())
            while not stop.is_set() and loop.time() - start < hold_limit:
                writer.write(b"X")
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    if await asyncio.wait_for(reader.read(65536), timeout=drip) == b"":
                        break
        except (ConnectionError, OSError):
            pass
        finally:
            stats.held_seconds_max = max(stats.held_seconds_max, loop.time() - start)
            await _close(writer)

    while not stop.is_set():
        target = rng.choice(targets)
        ports = [rng.choice((target.rpc_port, target.p2p_port)) for _ in range(sockets)]
        await asyncio.gather(*(one(p) for p in ports))


async def junk_bytes(targets: list[Target], stop: asyncio.Event, stats: AttackStats, rng: random.Random,
                     *, pause: float = 0.2) -> None:
    """Random bytes (up to 64 KiB), sometimes after a valid-looking request line, then close."""
    while not stop.is_set():
        target = rng.choice(targets)
        port = rng.choice((target.rpc_port, target.p2p_port))
        stats.attempts += 1
        try:
            reader, writer = await _open(port, rng)
        except (OSError, TimeoutError):
            stats.refused += 1
            continue
        prefix = rng.choice((b"", b"GET / HTTP/1.1\r\n", b"GET /p2p HTTP/1.1\r\nUpgrade: websocket\r\n"))
        try:
            writer.write(prefix + os.urandom(rng.randint(1, 65536)))
            await writer.drain()
            await _held_until_closed(reader, 5.0, stop)
        except (ConnectionError, OSError):
            pass
        await _close(writer)
        await asyncio.sleep(pause)


async def big_chunked_bodies(targets: list[Target], stop: asyncio.Event, stats: AttackStats, rng: random.Random,
                             *, body_mib: int = 64, concurrent: int = 4, pause: float = 1.0) -> None:
    """Chunked JSON-RPC and blob bodies far over the limits; count the bytes the node took before it stopped us."""
    chunk = b"x" * 65536

    async def one(port: int, path: str) -> None:
        stats.attempts += 1
        try:
            reader, writer = await _open(port, rng)
        except (OSError, TimeoutError):
            stats.refused += 1
            return
        sent = 0
        try:
            writer.write(
                f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
                "Transfer-Encoding: chunked\r\n\r\n".encode())
            while sent < body_mib << 20 and not stop.is_set():
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                await asyncio.wait_for(writer.drain(), timeout=10)
                sent += len(chunk)
            status = await asyncio.wait_for(reader.readline(), timeout=10)
            stats.answered(status.decode(errors="replace").strip()[:40] or "closed")
        except (ConnectionError, OSError, TimeoutError) as exc:
            stats.refused += 1
            stats.answered(f"cut {'within' if sent <= 8 << 20 else 'after'} 8 MiB ({type(exc).__name__})")
        finally:
            await _close(writer)

    while not stop.is_set():
        target = rng.choice(targets)
        await asyncio.gather(*(one(target.rpc_port, rng.choice(("/", "/blob"))) for _ in range(concurrent)))
        await asyncio.sleep(pause)


async def cross_site_writes(targets: list[Target], stop: asyncio.Event, stats: AttackStats, rng: random.Random,
                            *, pause: float = 0.5) -> None:
    """What a web page could send: text/plain and form bodies, a foreign Origin, a rebound Host."""
    body = b'{"jsonrpc":"2.0","id":1,"method":"tdml_blockNumber","params":[]}'
    variants = (
        {"Content-Type": "text/plain"},
        {"Content-Type": "application/x-www-form-urlencoded"},
        {"Content-Type": "application/json", "Origin": "http://evil.example"},
        {"Content-Type": "application/json", "Host": "evil.example"},
    )
    connector = aiohttp.TCPConnector(local_addr=(rng.choice(SOURCES), 0))
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as http:
        while not stop.is_set():
            target = rng.choice(targets)
            headers = rng.choice(variants)
            path = rng.choice(("/", "/blob"))
            stats.attempts += 1
            try:
                async with http.post(f"http://{HOST}:{target.rpc_port}{path}", data=body, headers=headers) as resp:
                    stats.answered(str(resp.status))
            except (aiohttp.ClientError, TimeoutError):
                stats.refused += 1
            await asyncio.sleep(pause)


def _ws_frame(payload_length: int, opcode: int = 0x2) -> bytes:
    """The header of one masked client websocket frame announcing ``payload_length`` bytes."""
    head = bytes([0x80 | opcode])
    if payload_length < 126:
        head += bytes([0x80 | payload_length])
    elif payload_length < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", payload_length)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", payload_length)
    return head + os.urandom(4)


async def _ws_upgrade(port: int, path: str, rng: random.Random, *, rcvbuf: int | None = None,
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await _open(port, rng, rcvbuf=rcvbuf)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), timeout=10)
    if b"101" not in status:
        await _close(writer)
        raise ConnectionError(f"upgrade refused: {status[:40]!r}")
    while (await asyncio.wait_for(reader.readline(), timeout=10)) not in (b"\r\n", b""):
        pass
    return reader, writer


async def prehandshake_frames(targets: list[Target], stop: asyncio.Event, stats: AttackStats, rng: random.Random,
                              *, frame_mib: int = 15, concurrent: int = 4, pause: float = 1.0) -> None:
    """Upgrade to the p2p websocket, then announce and stream one huge frame instead of a Hello."""
    async def one(port: int) -> None:
        stats.attempts += 1
        try:
            _reader, writer = await _ws_upgrade(port, "/p2p", rng)
        except (OSError, TimeoutError, ConnectionError):
            stats.refused += 1
            return
        size = frame_mib << 20
        sent = 0
        try:
            writer.write(_ws_frame(size))
            while sent < size and not stop.is_set():
                writer.write(b"\0" * 65536)
                await asyncio.wait_for(writer.drain(), timeout=10)
                sent += 65536
            stats.answered("sent whole frame")
        except (ConnectionError, OSError, TimeoutError):
            stats.answered("cut off")
        finally:
            await _close(writer)

    while not stop.is_set():
        target = rng.choice(targets)
        await asyncio.gather(*(one(target.p2p_port) for _ in range(concurrent)))
        await asyncio.sleep(pause)


async def silent_websockets(targets: list[Target], stop: asyncio.Event, stats: AttackStats, rng: random.Random,
                            *, per_round: int = 100, hold_limit: float = 120.0) -> None:
    """Websockets on the p2p port that never send Hello, to hold handshake slots."""
    while not stop.is_set():
        target = rng.choice(targets)
        opened = []
        for _ in range(per_round):
            stats.attempts += 1
            try:
                opened.append(await _ws_upgrade(target.p2p_port, "/p2p", rng))
            except (OSError, TimeoutError, ConnectionError):
                stats.refused += 1
        held = await asyncio.gather(*(_held_until_closed(r, hold_limit, stop) for r, _ in opened))
        stats.held_seconds_max = max([stats.held_seconds_max, *held])
        for _, writer in opened:
            await _close(writer)


async def non_reading_subscribers(targets: list[Target], stop: asyncio.Event, stats: AttackStats,
                                  rng: random.Random, *, per_round: int = 8, hold_limit: float = 300.0) -> None:
    """RPC websockets that subscribe to new blocks, then never read; see how long the node keeps them.

    Their receive buffers are small, so the notifications pile up on the node's side, where the
    documented bound (its send buffer and outbox) must cut them.
    """
    async def one(port: int) -> float:
        stats.attempts += 1
        try:
            _reader, writer = await _ws_upgrade(port, "/ws", rng, rcvbuf=4096)
        except (OSError, TimeoutError, ConnectionError):
            stats.refused += 1
            return 0.0
        text = b'{"jsonrpc":"2.0","id":1,"method":"tdml_subscribe","params":["newBlocks"]}'
        mask = os.urandom(4)
        writer.write(_ws_frame(len(text), opcode=0x1)[:-4] + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(text)))
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            await writer.drain()
            # Never read past the stream's buffer; a websocket ping a second (which the node does read)
            # fails once the node has reset the connection.
            while loop.time() - start < hold_limit and not stop.is_set():
                await asyncio.sleep(1.0)
                writer.write(_ws_frame(0, opcode=0x9))
                await asyncio.wait_for(writer.drain(), timeout=30)  # past the node's send deadline, so its cut comes first
                if writer.transport.is_closing():
                    break
        except (ConnectionError, OSError, TimeoutError):
            pass
        finally:
            await _close(writer)
        return loop.time() - start

    while not stop.is_set():
        target = rng.choice(targets)
        held = await asyncio.gather(*(one(target.rpc_port) for _ in range(per_round)))
        stats.held_seconds_max = max([stats.held_seconds_max, *held])
        if not stop.is_set():
            stats.refused += sum(1 for h in held if 0 < h < hold_limit - 1)  # cut by the node


async def connection_floods(targets: list[Target], stop: asyncio.Event, stats: AttackStats, rng: random.Random,
                            *, burst: int = 600, pause: float = 10.0) -> None:
    """Bursts of many more connections than the node admits, from several sources, held for a few seconds."""
    while not stop.is_set():
        target = rng.choice(targets)
        port = rng.choice((target.rpc_port, target.p2p_port))
        opened = []
        for _ in range(burst):
            stats.attempts += 1
            try:
                opened.append(await _open(port, rng))
            except (OSError, TimeoutError):
                stats.refused += 1
        await asyncio.sleep(3.0)
        for _, writer in opened:
            if writer.transport.is_closing():
                stats.refused += 1
            await _close(writer)
        await asyncio.sleep(pause)


ATTACKS: dict[str, Attack] = {
    "idle_connections": idle_connections,
    "slow_headers": slow_headers,
    "junk_bytes": junk_bytes,
    "big_chunked_bodies": big_chunked_bodies,
    "cross_site_writes": cross_site_writes,
    "prehandshake_frames": prehandshake_frames,
    "silent_websockets": silent_websockets,
    "non_reading_subscribers": non_reading_subscribers,
    "connection_floods": connection_floods,
}
