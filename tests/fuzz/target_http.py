"""Fuzz target (d): raw HTTP requests over a real loopback socket to a live, listening RPC server.

A real node (as in ``target_rpc``) serves its RPC on 127.0.0.1; each input
is a whole HTTP request, written to a fresh connection. Properties, for every request:

- the server answers with a status line under 500 (no 5xx: 503 and 507 are
  documented only for a halted node or a failed disk), or closes the
  connection, or says nothing until the client gives up; never a traceback
  or any record at ERROR in the logs;
- at the end of a run the node has not halted, ``/health`` answers 200, and
  no websocket upgrade left a block listener behind.

Inputs: valid requests of every kind the server serves (JSON-RPC posts,
chunked bodies, blob uploads with and without the token, health, metrics,
blob reads, websocket upgrades, CORS preflights, foreign origins and hosts,
wrong content types, oversized declared lengths, HTTP/1.0), then mutated:
header values swapped for hostile ones, headers duplicated or dropped, line
endings broken, methods and paths replaced, bytes flipped, inserted,
deleted or cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from tdml_node.node import Node
from tdml_node.rpc import RpcPolicy, RpcServer

from .common import FuzzFailure
from .mutate import m_delete, m_flip, m_insert, m_truncate
from .target_rpc import live_node, wait_height

TARGET = "http"
TOKEN = "fuzz-token"
ANSWER_WAIT = 0.5
"""Seconds a request may go unanswered before the client gives up (it counts as "silent")."""
POLICY = RpcPolicy(tokens=(TOKEN,), max_blob_bytes=64 * 1024, body_timeout_s=0.5, blob_timeout_s=0.5)

HOSTILE_VALUES = (
    b"", b"-1", b"0", b"1", b"18446744073709551616", b"99999999999999999999999", b"\x00", b"\xff\xfe", b"a" * 9000,
    b"chunked", b"gzip, chunked", b"identity", b"application/json; charset=latin-1", b"application/json;;",
    b"text/plain", b"multipart/form-data; boundary=", b"http://evil.example", b"null", b"[::1", b"localhost:99999",
    b"Bearer", b"Bearer " + TOKEN.encode(), b"Basic Zm9vOmJhcg==", b"websocket", b"Upgrade", b"13", b"100-continue",
)
METHODS = (b"GET", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"HEAD", b"PATCH", b"CONNECT", b"G\x00T", b"POST POST", b"")
PATHS = (b"/", b"/ws", b"/blob", b"/blob/" + b"00" * 32, b"/health", b"/metrics", b"*", b"/../../etc/passwd",
         b"/%00", b"/blob/" + b"f" * 5000, b"//", b"http://evil.example/", b"/?" + b"a=1&" * 500)


@dataclass(frozen=True)
class HttpInput:
    data: bytes
    category: str
    mutators: tuple[str, ...] = ()

    def context(self) -> str:
        return f"category={self.category} mutators={','.join(self.mutators) or '-'}"


def _request(head: str, body: bytes = b"") -> bytes:
    return head.replace("\n", "\r\n").encode() + b"\r\n" + body


def seed_requests() -> list[tuple[str, bytes]]:
    """Valid requests, one per kind of thing the server serves (the Host is the default's loopback name)."""
    call = b'{"jsonrpc":"2.0","id":1,"method":"tdml_blockNumber","params":[]}'
    batch = b'[{"jsonrpc":"2.0","id":1,"method":"tdml_blockNumber"},{"jsonrpc":"2.0","method":"tdml_peers"}]'
    json_head = "POST / HTTP/1.1\nHost: 127.0.0.1\nContent-Type: application/json\n"
    blob_head = f"POST /blob HTTP/1.1\nHost: localhost\nContent-Type: application/octet-stream\nAuthorization: Bearer {TOKEN}\n"
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(call), call)
    return [
        ("post-json", _request(json_head + f"Content-Length: {len(call)}\n", call)),
        ("post-batch", _request(json_head + f"Content-Length: {len(batch)}\n", batch)),
        ("post-chunked", _request(json_head + "Transfer-Encoding: chunked\n", chunked)),
        ("post-blob", _request(blob_head + "Content-Length: 5\n", b"hello")),
        ("post-blob-chunked", _request(blob_head + "Transfer-Encoding: chunked\n", b"5\r\nhello\r\n0\r\n\r\n")),
        ("post-blob-no-token", _request("POST /blob HTTP/1.1\nHost: 127.0.0.1\nContent-Type: application/octet-stream\nContent-Length: 3\n", b"abc")),
        ("get-health", _request("GET /health HTTP/1.1\nHost: 127.0.0.1\n")),
        ("get-metrics", _request("GET /metrics HTTP/1.1\nHost: 127.0.0.1\n")),
        ("get-blob", _request(f"GET /blob/{'00' * 32} HTTP/1.1\nHost: 127.0.0.1\n")),
        ("ws-upgrade", _request(
            "GET /ws HTTP/1.1\nHost: 127.0.0.1\nUpgrade: websocket\nConnection: Upgrade\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\nSec-WebSocket-Version: 13\n")),
        ("preflight", _request("OPTIONS / HTTP/1.1\nHost: 127.0.0.1\nOrigin: http://localhost:3000\nAccess-Control-Request-Method: POST\n")),
        ("foreign-origin", _request(json_head + f"Origin: http://evil.example\nContent-Length: {len(call)}\n", call)),
        ("foreign-host", _request(f"POST / HTTP/1.1\nHost: evil.example\nContent-Type: application/json\nContent-Length: {len(call)}\n", call)),
        ("text-plain", _request(f"POST / HTTP/1.1\nHost: 127.0.0.1\nContent-Type: text/plain\nContent-Length: {len(call)}\n", call)),
        ("huge-length", _request(json_head + "Content-Length: 5242880\n", call)),
        ("http10", _request(f"POST / HTTP/1.0\nContent-Type: application/json\nContent-Length: {len(call)}\n", call)),
    ]


def _split(data: bytes) -> tuple[list[bytes], bytes]:
    head, sep, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n"), (sep + body if sep else b"")


def _join(lines: list[bytes], rest: bytes) -> bytes:
    return b"\r\n".join(lines) + (rest or b"\r\n\r\n")


def m_header_value(data: bytes, rng: random.Random) -> bytes:
    lines, rest = _split(data)
    if len(lines) < 2:
        return data
    i = rng.randrange(1, len(lines))
    name = lines[i].partition(b":")[0]
    lines[i] = name + b": " + rng.choice(HOSTILE_VALUES)
    return _join(lines, rest)


def m_header_dup_or_drop(data: bytes, rng: random.Random) -> bytes:
    lines, rest = _split(data)
    if len(lines) < 2:
        return data
    i = rng.randrange(1, len(lines))
    roll = rng.random()
    if roll < 0.4:
        lines.insert(i, lines[i])
    elif roll < 0.7:
        del lines[i]
    else:
        lines.insert(i, rng.choice([b"Transfer-Encoding: chunked", b"Content-Length: 3", b"Expect: 100-continue",
                                    b"Origin: null", b"Host: evil.example", b"Connection: keep-alive", b" folded",
                                    b"X-" + b"a" * 9000 + b": 1", b"NoColon", b": empty-name"]))
    return _join(lines, rest)


def m_request_line(data: bytes, rng: random.Random) -> bytes:
    lines, rest = _split(data)
    parts = lines[0].split(b" ")
    if len(parts) == 3:
        which = rng.randrange(3)
        parts[which] = (rng.choice(METHODS), rng.choice(PATHS), rng.choice([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/9", b"HTTP/1.1x", b""]))[which]
    lines[0] = b" ".join(parts)
    return _join(lines, rest)


def m_line_endings(data: bytes, rng: random.Random) -> bytes:
    return data.replace(b"\r\n", rng.choice([b"\n", b"\r", b"\r\r\n", b"\n\r"]), rng.choice([1, 2, -1]))


def _bytes_level(fn: object) -> object:
    def apply(data: bytes, rng: random.Random) -> bytes:
        return fn(data, None, rng, ())  # type: ignore[operator, no-any-return]

    apply.__name__ = getattr(fn, "__name__", "bytes")
    return apply


MUTATORS = (m_header_value, m_header_dup_or_drop, m_request_line, m_line_endings,
            *(_bytes_level(f) for f in (m_flip, m_insert, m_delete, m_truncate)))
WEIGHTS = (4, 3, 2, 1, 2, 1, 1, 1)


def generate(seeds: list[tuple[str, bytes]], rng: random.Random) -> HttpInput:
    category, data = rng.choice(seeds)
    if rng.random() < 0.2:
        return HttpInput(data, category)
    names = []
    for _ in range(rng.choice([1, 1, 2, 3])):
        fn = rng.choices(MUTATORS, WEIGHTS)[0]
        data = fn(data, rng)  # type: ignore[operator]
        names.append(getattr(fn, "__name__", "?"))
    return HttpInput(data, category + "~", tuple(names))


class ErrorRecords(logging.Handler):
    """Every record at ERROR or above, from any logger, while a run lasts."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class HttpHarness:
    node: Node
    server: RpcServer
    port: int
    errors: ErrorRecords
    seeds: list[tuple[str, bytes]] = field(default_factory=seed_requests)
    listeners: int = 0


@contextlib.asynccontextmanager
async def live_server() -> AsyncIterator[HttpHarness]:
    """A live node with its RPC server listening on loopback, and a trap for ERROR records."""
    errors = ErrorRecords()
    async with live_node(with_job_spec=False) as h:
        await wait_height(h, 1)
        server = RpcServer(h.node, "127.0.0.1", 0, dev=True, policy=POLICY)
        port = await server.start()
        logging.getLogger().addHandler(errors)
        try:
            yield HttpHarness(h.node, server, port, errors, listeners=len(h.node._listeners))
        finally:
            logging.getLogger().removeHandler(errors)
            await server.stop()


def _status(line: bytes) -> int | None:
    parts = line.split(b" ", 2)
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
        return int(parts[1])
    return None


def check_logs(h: HttpHarness) -> None:
    if h.errors.records:
        record = h.errors.records[0]
        h.errors.records.clear()
        detail = record.getMessage()
        if record.exc_info:
            detail += "\n" + logging.Formatter().formatException(record.exc_info)
        raise FuzzFailure("error-log", f"{record.name}: {detail[-2000:]}")


async def check(h: HttpHarness, inp: HttpInput) -> str:
    """Send one request on a fresh connection; returns the outcome class (the status, or closed/silent)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", h.port)
    try:
        writer.write(inp.data)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        try:
            async with asyncio.timeout(ANSWER_WAIT):
                line = await reader.readline()
        except TimeoutError:
            outcome = "silent"
        except ConnectionError:
            outcome = "reset"
        else:
            status = _status(line)
            if status is not None and status >= 500:
                raise FuzzFailure("5xx", f"answered {line[:80]!r}")
            outcome = "closed" if not line else str(status) if status is not None else "not-http"
            if status is None and line:
                raise FuzzFailure("not-http", f"answered {line[:80]!r}")
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    check_logs(h)
    return f"{inp.category} -> {outcome}"


async def check_final(h: HttpHarness) -> dict[str, int]:
    """After a run: the node runs, ``/health`` says so, and no connection left a listener behind."""
    if h.node.fatal is not None:
        raise FuzzFailure("halted", f"the node halted: {h.node.fatal!r}")
    reader, writer = await asyncio.open_connection("127.0.0.1", h.port)
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        async with asyncio.timeout(10):
            line = await reader.readline()
    finally:
        writer.close()
    if _status(line) != 200:
        raise FuzzFailure("unhealthy", f"/health answered {line[:80]!r}")
    try:
        async with asyncio.timeout(10):
            while len(h.node._listeners) > h.listeners:
                await asyncio.sleep(0.05)
    except TimeoutError as exc:
        raise FuzzFailure("leak", f"{len(h.node._listeners) - h.listeners} closed websockets left a block listener") from exc
    check_logs(h)
    return {"height": h.node.state.height}
