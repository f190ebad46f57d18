"""Fuzz target (e): websocket frames, text and binary, well-formed and not, on a live server's ``/ws``.

Each input is one to three frames written on a fresh, real websocket
connection (the handshake done by hand on a loopback socket), followed by a
probe request. Properties, for every input:

- every message the server sends is a well-formed frame, and every text
  frame is a JSON-RPC 2.0 object (an answer or a notification);
- the server either answers the probe or closes with a standard close code
  (1000, 1002, 1003, 1007, 1008, 1009; never 1011, internal error), or says
  nothing while a frame it was promised is still incomplete; nothing is
  logged at ERROR;
- at the end of a run every connection's block listener is gone, the node
  has not halted and ``/health`` answers 200.

Inputs: JSON-RPC requests, subscriptions and notifications as text or
binary frames, their payloads mutated at the byte level (invalid UTF-8
among them); and frames with a random opcode, reserved bits set, no mask,
a length that lies, fragments, oversized control frames, pings and closes
with odd codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import struct
from dataclasses import dataclass

from .common import FuzzFailure
from .mutate import m_delete, m_flip, m_insert, m_truncate
from .target_http import HttpHarness, check_logs

TARGET = "ws"
ANSWER_WAIT = 0.5
STANDARD_CLOSES = {1000, 1002, 1003, 1007, 1008, 1009}
PROBE_ID = "probe-0f3a"
"""An id no payload below has, so a mutated payload cannot pass for the probe."""
PROBE = b'{"jsonrpc":"2.0","id":"probe-0f3a","method":"tdml_blockNumber"}'
HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
PAYLOADS = (
    b'{"jsonrpc":"2.0","id":"x","method":"tdml_blockNumber"}',
    b'{"jsonrpc":"2.0","id":1,"method":"tdml_subscribe","params":["newBlocks"]}',
    b'{"jsonrpc":"2.0","method":"tdml_subscribe","params":["newBlocks"]}',
    b'{"id":2,"method":"tdml_subscribe","params":["newBlocks"]}',
    b'{"jsonrpc":"2.0","id":3,"method":"tdml_unsubscribe","params":["0x00"]}',
    b'{"jsonrpc":"2.0","id":4,"method":"tdml_getBlockByNumber","params":["0x1",false]}',
    b'{"jsonrpc":"2.0","method":"tdml_blockNumber"}',
    b'[{"jsonrpc":"2.0","id":5,"method":"tdml_peers"},{"jsonrpc":"2.0","id":6,"method":"tdml_subscribe","params":["newBlocks"]}]',
    b'{"jsonrpc":"2.0","id":7,"method":"tdml_getBlockByNumber","params":"latest"}',
)


@dataclass(frozen=True)
class WsInput:
    frames: tuple[bytes, ...]
    category: str

    @property
    def data(self) -> bytes:
        return b"".join(self.frames)

    def context(self) -> str:
        return f"category={self.category} frames={len(self.frames)}"


def frame(payload: bytes, opcode: int = 0x1, *, fin: bool = True, rsv: int = 0, mask: bytes | None = b"\x00\x00\x00\x00",
          claimed: int | None = None) -> bytes:
    """A client frame (masked unless ``mask`` is None), with the length it claims possibly not its own."""
    length = len(payload) if claimed is None else claimed
    head = bytes([(0x80 if fin else 0) | (rsv & 0x7) << 4 | (opcode & 0xF)])
    bit = 0x80 if mask is not None else 0
    if length < 126:
        head += bytes([bit | length])
    elif length < 2**16:
        head += bytes([bit | 126]) + struct.pack(">H", length)
    else:
        head += bytes([bit | 127]) + struct.pack(">Q", length)
    if mask is None:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _mutated_payload(rng: random.Random) -> bytes:
    data = rng.choice(PAYLOADS)
    for _ in range(rng.choice([0, 1, 1, 2])):
        data = rng.choice((m_flip, m_insert, m_delete, m_truncate))(data, None, rng, ())
    return data


def _odd_frame(rng: random.Random) -> tuple[bytes, str]:
    payload = _mutated_payload(rng)
    roll = rng.random()
    if roll < 0.15:
        return frame(payload, rng.randrange(16)), "opcode"
    if roll < 0.3:
        return frame(payload, rsv=rng.randrange(1, 8)), "rsv"
    if roll < 0.4:
        return frame(payload, mask=None), "unmasked"
    if roll < 0.55:
        claimed = rng.choice([0, 1, len(payload) - 1, len(payload) + 1, 125, 126, 2**16 - 1, 2**16, 2**31, 2**63 - 1])
        return frame(payload, claimed=max(0, claimed)), "length-lie"
    if roll < 0.7:
        cut = rng.randrange(len(payload) + 1)
        return frame(payload[:cut], fin=False) + frame(payload[cut:], opcode=0x0), "fragments"
    if roll < 0.8:
        return frame(rng.randbytes(rng.choice([0, 10, 125, 126, 300])), rng.choice([0x8, 0x9, 0xA])), "control"
    if roll < 0.9:
        code = rng.choice([0, 999, 1000, 1004, 1005, 1006, 1015, 2999, 3000, 4999, 5000, 65535])
        return frame(struct.pack(">H", code) + rng.randbytes(rng.randrange(4)), 0x8), "close"
    return frame(rng.randbytes(rng.randrange(1, 40)), rng.choice([0x1, 0x2])), "random"


def generate(rng: random.Random) -> WsInput:
    frames: list[bytes] = []
    kinds: list[str] = []
    for _ in range(rng.choice([1, 1, 2, 3])):
        if rng.random() < 0.6:
            frames.append(frame(_mutated_payload(rng), rng.choice([0x1, 0x2])))
            kinds.append("message")
        else:
            data, kind = _odd_frame(rng)
            frames.append(data)
            kinds.append(kind)
    return WsInput(tuple(frames), "+".join(sorted(set(kinds))))


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readexactly(2)
    if head[1] & 0x80:
        raise FuzzFailure("frame", "the server sent a masked frame")
    length = head[1] & 0x7F
    if length == 126:
        length = struct.unpack(">H", await reader.readexactly(2))[0]
    elif length == 127:
        length = struct.unpack(">Q", await reader.readexactly(8))[0]
    if length > 8 * 1024 * 1024:
        raise FuzzFailure("frame", f"the server claimed a {length}-byte frame")
    return head[0] & 0x0F, await reader.readexactly(length)


async def check(h: HttpHarness, inp: WsInput) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", h.port)
    try:
        writer.write(HANDSHAKE)
        async with asyncio.timeout(10):
            status = await reader.readuntil(b"\r\n\r\n")
        if not status.startswith(b"HTTP/1.1 101"):
            raise FuzzFailure("upgrade", f"the upgrade was answered {status[:60]!r}")
        writer.write(inp.data + frame(PROBE))
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        outcome = await _until_probe(reader)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    check_logs(h)
    return f"{inp.category} -> {outcome}"


async def _until_probe(reader: asyncio.StreamReader) -> str:
    try:
        async with asyncio.timeout(ANSWER_WAIT):
            while True:
                opcode, payload = await _read_frame(reader)
                if opcode == 0x8:
                    code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
                    if code not in STANDARD_CLOSES | {1005}:
                        raise FuzzFailure("close-code", f"closed with {code}: {payload[2:80]!r}")
                    return f"closed:{code}"
                if opcode == 0x1:
                    try:
                        message = json.loads(payload)
                    except ValueError as exc:
                        raise FuzzFailure("answer", f"a text frame that is not JSON: {payload[:200]!r}") from exc
                    if not isinstance(message, dict | list):
                        raise FuzzFailure("answer", f"not a JSON-RPC message: {payload[:200]!r}")
                    if isinstance(message, dict) and message.get("id") == PROBE_ID:
                        if "result" not in message:
                            raise FuzzFailure("probe", f"the probe got {payload[:200]!r}")
                        return "probe"
    except TimeoutError:
        return "silent"
    except (asyncio.IncompleteReadError, ConnectionError):
        return "eof"
