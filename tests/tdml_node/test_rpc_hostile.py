"""The RPC server against hostile clients, over real sockets on loopback, on a real in-process node.

Covers body limits applied while reading (chunked bodies, slow bodies),
cross-site writes (content types, Host, Origin, the blob token and its
cookie), websocket frames and subscriptions (binary frames, refused
subscribes, notifications, slow consumers, the subscription limit, heads in
order), strict params and block numbers, and the metrics the node exports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from consensus.crypto import Keypair
from tdml_node.client import NodeClient, RpcCallError
from tdml_node.config import NodeConfig
from tdml_node.genesis import compose_genesis
from tdml_node.node import Node, open_node
from tdml_node.rpc import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    LIMIT_EXCEEDED,
    PARSE_ERROR,
    RpcPolicy,
    RpcServer,
    WsLimits,
    write_cookie,
)

TOKEN = "right-token"
JSON = {"Content-Type": "application/json"}
BLOB_LIMIT = 1024 * 1024


@dataclass
class Live:
    node: Node
    port: int
    http: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def rpc(self, method: str, params: Any = None, **headers: str) -> tuple[int, Any]:
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method}
        if params is not None:
            body["params"] = params
        async with self.http.post(self.url + "/", data=json.dumps(body), headers={**JSON, **headers}) as resp:
            text = await resp.text()
            return resp.status, (json.loads(text) if resp.content_type == "application/json" else text)

    async def wait_height(self, height: int, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            while self.node.state.height < height:
                await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def serving(node: Node, policy: RpcPolicy, ws_limits: WsLimits | None = None) -> AsyncIterator[int]:
    server = RpcServer(node, "127.0.0.1", 0, dev=True, policy=policy, ws_limits=ws_limits)
    port = await server.start()
    try:
        yield port
    finally:
        await server.stop()


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    key = Keypair.generate()
    genesis = compose_genesis("rpc-hostile", [(key.public_key, "")])
    config = NodeConfig(home=tmp_path, rpc_port=0, dev=True, block_interval_ms=40)
    async with open_node(config, key, genesis) as n:
        task = asyncio.create_task(n.run())
        try:
            yield n
        finally:
            n.request_stop()
            async with asyncio.timeout(30):
                await task


@pytest.fixture
async def live(node: Node) -> AsyncIterator[Live]:
    policy = RpcPolicy(tokens=(TOKEN,), max_blob_bytes=BLOB_LIMIT, body_timeout_s=1.0)
    async with serving(node, policy) as port, aiohttp.ClientSession() as http:
        yield Live(node, port, http)


# ----------------------------------------------------------------- bodies


async def _send_chunked(port: int, path: str, headers: str, total: int) -> tuple[bytes, int]:
    """Send a chunked body of ``total`` bytes until the server answers; the status line and the bytes sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n{headers}\r\n".encode())
    answer = asyncio.create_task(reader.readline())
    piece, sent = b"7" * 65536, 0
    try:
        async with asyncio.timeout(60):
            while sent < total and not answer.done():
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                sent += len(piece)
                with contextlib.suppress(ConnectionError):
                    await writer.drain()
            return await answer, sent
    finally:
        answer.cancel()
        writer.close()


async def test_chunked_oversized_bodies_are_refused_at_the_limit(live: Live) -> None:
    status, sent = await _send_chunked(live.port, "/", "Content-Type: application/json\r\n", 256 * 1024 * 1024)
    assert status.startswith(b"HTTP/1.1 413"), status
    assert sent < 64 * 1024 * 1024  # answered long before the whole body was sent
    blob_headers = f"Content-Type: application/octet-stream\r\nAuthorization: Bearer {TOKEN}\r\n"
    status, sent = await _send_chunked(live.port, "/blob", blob_headers, 256 * 1024 * 1024)
    assert status.startswith(b"HTTP/1.1 413"), status
    assert sent < 64 * 1024 * 1024
    async with live.http.post(live.url + "/", data=b"x", headers={**JSON, "Content-Length": str(5 * 1024 * 1024)}) as resp:
        assert resp.status == 413
    code, answer = await live.rpc("tdml_blockNumber")
    assert code == 200 and isinstance(answer["result"], int)


async def test_a_slow_body_is_cut_at_the_deadline(live: Live) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
    try:
        writer.write(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        await writer.drain()
        async with asyncio.timeout(20):
            assert (await reader.readline()).startswith(b"HTTP/1.1 408")
    finally:
        writer.close()


# ----------------------------------------------------------------- cross-site writes


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/jsonx"],
)
async def test_wrong_content_types_are_refused(live: Live, content_type: str | None) -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tdml_blockNumber"}).encode()
    headers = {} if content_type is None else {"Content-Type": content_type}
    async with live.http.post(live.url + "/", data=body, headers=headers, skip_auto_headers=["Content-Type"]) as resp:
        assert resp.status == 415
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with live.http.post(live.url + "/blob", data=b"blob", headers={**headers, **auth}, skip_auto_headers=["Content-Type"]) as resp:
        assert resp.status == 415
    async with live.http.post(live.url + "/", data=body, headers={"Content-Type": "application/json; charset=utf-8"}) as resp:
        assert resp.status == 200 and "result" in await resp.json()


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Origin": "http://evil.example"}, 403),
        ({"Origin": "http://localhost.evil.example"}, 403),
        ({"Origin": "null"}, 403),
        ({"Host": "evil.example"}, 403),
        ({"Host": "evil.example:8645"}, 403),
        ({"Origin": "http://localhost:3000"}, 200),
        ({"Origin": "https://127.0.0.1"}, 200),
        ({"Host": "localhost:8645"}, 200),
        ({"Host": "[::1]:1"}, 200),
        ({}, 200),
    ],
)
async def test_foreign_origins_and_hosts_are_refused(live: Live, headers: dict[str, str], status: int) -> None:
    got, _ = await live.rpc("tdml_blockNumber", **headers)
    assert got == status
    ws_status = 101
    try:
        async with live.http.ws_connect(live.url + "/ws", headers=headers):
            pass
    except aiohttp.WSServerHandshakeError as exc:
        ws_status = exc.status
    assert ws_status == (101 if status == 200 else 403)


async def test_an_allowed_origin_gets_cors_answers(live: Live) -> None:
    origin = {"Origin": "http://localhost:3000"}
    preflight = {**origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    async with live.http.options(live.url + "/", headers=preflight) as resp:
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == origin["Origin"]
        assert "content-type" in resp.headers["Access-Control-Allow-Headers"].lower()
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tdml_blockNumber"})
    async with live.http.post(live.url + "/", data=body, headers={**JSON, **origin}) as resp:
        assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == origin["Origin"]
    async with live.http.options(live.url + "/", headers={**preflight, "Origin": "http://evil.example"}) as resp:
        assert resp.status == 403 and "Access-Control-Allow-Origin" not in resp.headers


async def test_configured_vhosts_and_origins_replace_the_defaults(node: Node) -> None:
    policy = RpcPolicy(vhosts=("node.example",), cors_origins=("app.example",))
    async with serving(node, policy) as port, aiohttp.ClientSession() as http:
        live = Live(node, port, http)
        assert (await live.rpc("tdml_blockNumber", Host="node.example"))[0] == 200
        assert (await live.rpc("tdml_blockNumber", Host="localhost"))[0] == 403
        assert (await live.rpc("tdml_blockNumber", Origin="https://app.example"))[0] == 200
        assert (await live.rpc("tdml_blockNumber", Origin="http://localhost"))[0] == 403


async def test_blob_uploads_need_the_token(live: Live) -> None:
    blob = {"Content-Type": "application/octet-stream"}
    for auth in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}):
        async with live.http.post(live.url + "/blob", data=b"payload", headers={**blob, **auth}) as resp:
            assert resp.status == 401
    async with live.http.post(live.url + "/blob", data=b"payload", headers={**blob, "Authorization": f"Bearer {TOKEN}"}) as resp:
        assert resp.status == 200 and (await resp.json())["size"] == 7


async def test_the_cookie_authorizes_the_node_client(node: Node, tmp_path: Path) -> None:
    cookie = tmp_path / "cookie" / "rpc.cookie"
    first = write_cookie(cookie)
    token = write_cookie(cookie)
    assert token != first and cookie.read_text() == token
    assert cookie.stat().st_mode & 0o777 == 0o600
    async with serving(node, RpcPolicy(tokens=(token,))) as port:
        url = f"http://127.0.0.1:{port}"
        digest = await asyncio.to_thread(NodeClient(url, cookie=cookie).put_blob, b"dataset")
        assert await asyncio.to_thread(NodeClient(url).get_blob, digest) == b"dataset"
        for client in (NodeClient(url), NodeClient(url, token=first), NodeClient(url, cookie=tmp_path / "missing")):
            with pytest.raises(RpcCallError) as refused:
                await asyncio.to_thread(client.put_blob, b"dataset")
            assert refused.value.code == 401


# ----------------------------------------------------------------- websockets


async def _answer(ws: aiohttp.ClientWebSocketResponse, rid: Any, timeout: float = 10.0) -> dict[str, Any]:
    """The next message that is not a block notification (failing if it does not carry ``rid``)."""
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive_json()
            if msg.get("method") != "tdml_subscription":
                assert msg.get("id") == rid, msg
                return dict(msg)


async def test_websocket_binary_frames_are_json(live: Live) -> None:
    async with live.http.ws_connect(live.url + "/ws") as ws:
        await ws.send_bytes(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tdml_blockNumber"}).encode())
        assert isinstance((await _answer(ws, 1))["result"], int)
        await ws.send_bytes(b"\xff\xfe")
        assert (await _answer(ws, None))["error"]["code"] == PARSE_ERROR
        await ws.send_bytes(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tdml_subscribe", "params": ["newBlocks"]}).encode())
        assert (await _answer(ws, 2))["result"].startswith("0x")


async def test_invalid_subscribes_and_notifications_get_no_subscription_and_no_answer(live: Live) -> None:
    async with live.http.ws_connect(live.url + "/ws") as ws:
        await ws.send_json({"id": 1, "method": "tdml_subscribe", "params": ["newBlocks"]})
        assert (await _answer(ws, 1))["error"]["code"] == INVALID_REQUEST
        await ws.send_json({"jsonrpc": "1.0", "id": 2, "method": "tdml_subscribe", "params": ["newBlocks"]})
        assert (await _answer(ws, 2))["error"]["code"] == INVALID_REQUEST
        await ws.send_json({"jsonrpc": "2.0", "id": 3, "method": "tdml_subscribe", "params": "newBlocks"})
        assert (await _answer(ws, 3))["error"]["code"] == INVALID_REQUEST
        await ws.send_json({"jsonrpc": "2.0", "method": "tdml_subscribe", "params": ["newBlocks"]})
        await ws.send_json({"jsonrpc": "2.0", "method": "tdml_blockNumber"})
        await ws.send_json({"jsonrpc": "2.0", "method": "tdml_unsubscribe", "params": ["0x00"]})
        await ws.send_json({"jsonrpc": "2.0", "id": 4, "method": "tdml_blockNumber"})
        start = (await ws.receive_json(timeout=10))
        assert start["id"] == 4, start  # the three notifications were not answered
        await live.wait_height(start["result"] + 3)
        await ws.send_json({"jsonrpc": "2.0", "id": 5, "method": "tdml_blockNumber"})
        # Blocks were committed meanwhile, and no notification came: nothing was subscribed.
        assert (await ws.receive_json(timeout=10))["id"] == 5


async def test_the_subscription_limit_is_enforced_at_subscribe(live: Live) -> None:
    async with live.http.ws_connect(live.url + "/ws") as ws:
        subs = []
        for rid in range(WsLimits().max_subscriptions):
            await ws.send_json({"jsonrpc": "2.0", "id": rid, "method": "tdml_subscribe", "params": ["newBlocks"]})
            subs.append((await _answer(ws, rid))["result"])
        await ws.send_json({"jsonrpc": "2.0", "id": "over", "method": "tdml_subscribe", "params": ["newBlocks"]})
        assert (await _answer(ws, "over"))["error"]["code"] == LIMIT_EXCEEDED
        await ws.send_json({"jsonrpc": "2.0", "id": "un", "method": "tdml_unsubscribe", "params": [subs[0]]})
        assert (await _answer(ws, "un"))["result"] is True
        await ws.send_json({"jsonrpc": "2.0", "id": "again", "method": "tdml_subscribe", "params": ["newBlocks"]})
        assert "result" in await _answer(ws, "again")
        # With every allowed subscription, a client that reads is not cut off and misses nothing.
        seen: dict[str, list[int]] = {}
        async with asyncio.timeout(30):
            while min((len(v) for v in seen.values()), default=0) < 5 or len(seen) < len(subs):
                msg = await ws.receive_json()
                if msg.get("method") == "tdml_subscription":
                    seen.setdefault(msg["params"]["subscription"], []).append(msg["params"]["result"]["number"])
        for numbers in seen.values():
            assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))


async def test_heads_arrive_in_order_with_none_skipped(live: Live) -> None:
    async with live.http.ws_connect(live.url + "/ws") as ws:
        await ws.send_json({"jsonrpc": "2.0", "id": 1, "method": "tdml_subscribe", "params": ["newBlocks"]})
        await _answer(ws, 1)
        numbers: list[int] = []
        async with asyncio.timeout(60):
            while len(numbers) < 25:
                msg = await ws.receive_json()
                numbers.append(msg["params"]["result"]["number"])
        assert numbers == list(range(numbers[0], numbers[0] + 25))


def _ws_frame(payload: bytes) -> bytes:
    """A masked client text frame (the zero mask leaves the payload as it is)."""
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + b"\x00\x00\x00\x00" + payload


@pytest.mark.parametrize(
    ("flood", "limits", "reason"),
    [
        # Thousands of answers asked for: cut when one is not taken within the send deadline.
        (5000, WsLimits(max_backlog=8, max_subscriptions=2, send_timeout_s=1.0, send_buffer=4096), "not taken within"),
        # Only block notifications, and a deadline too long to matter: cut when the backlog is full.
        (0, WsLimits(max_backlog=4, max_subscriptions=2, send_timeout_s=3600.0, send_buffer=4096), "messages unread"),
    ],
)
async def test_a_consumer_that_does_not_read_is_cut_off(
    node: Node, flood: int, limits: WsLimits, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tdml.rpc")
    async with serving(node, RpcPolicy(), limits) as port:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock)
        listeners = len(node._listeners)
        try:
            key = "dGhlIHNhbXBsZSBub25jZQ=="
            writer.write(
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            async with asyncio.timeout(10):
                assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
            if not flood:  # (with subscriptions, a full backlog could cut the flooder first)
                writer.write(_ws_frame(b'{"jsonrpc":"2.0","id":0,"method":"tdml_subscribe","params":["newBlocks"]}'))
                writer.write(_ws_frame(b'{"jsonrpc":"2.0","id":1,"method":"tdml_subscribe","params":["newBlocks"]}'))
            async with asyncio.timeout(10):
                while len(node._listeners) == listeners:
                    await asyncio.sleep(0.01)
            request = _ws_frame(b'{"jsonrpc":"2.0","id":1,"method":"tdml_getBlockByNumber","params":["latest",true]}')
            with contextlib.suppress(ConnectionError):
                async with asyncio.timeout(30):
                    for _ in range(flood):
                        writer.write(request)
                        await writer.drain()
            # Not reading, wait for the server to drop this connection (its block listener goes away).
            async with asyncio.timeout(60):
                while len(node._listeners) > listeners:
                    await asyncio.sleep(0.05)
            received = 0
            async with asyncio.timeout(30):
                with contextlib.suppress(ConnectionError):
                    while chunk := await reader.read(65536):
                        received += len(chunk)
            assert received < 1024 * 1024, f"{received} bytes reached a client that never read"
            assert any("cut off" in r.message and reason in r.message for r in caplog.records)
        finally:
            writer.close()
        # The node and the server are fine for everyone else.
        async with aiohttp.ClientSession() as http:
            assert (await Live(node, port, http).rpc("tdml_blockNumber"))[0] == 200


# ----------------------------------------------------------------- conformance and metrics


@pytest.mark.parametrize("params", ["x", 5, True, False])
async def test_params_that_are_not_an_array_or_object_are_an_invalid_request(live: Live, params: Any) -> None:
    _, answer = await live.rpc("tdml_blockNumber", params)
    assert answer["error"]["code"] == INVALID_REQUEST and answer["id"] == 1


@pytest.mark.parametrize("tag", ["0x1_0", "0x0001", "0X1", "1", -1, "0x", "0xA", "0x-1", " 0x1", "0x" + "f" * 17])
async def test_block_numbers_are_strict(live: Live, tag: Any) -> None:
    _, answer = await live.rpc("tdml_getBlockByNumber", [tag, False])
    assert answer["error"]["code"] == INVALID_PARAMS


async def test_canonical_block_numbers_are_accepted(live: Live) -> None:
    await live.wait_height(16)
    for tag, number in (("0x0", 0), ("0x10", 16), (16, 16), ("earliest", 0)):
        _, answer = await live.rpc("tdml_getBlockByNumber", [tag, False])
        assert answer["result"]["number"] == number


async def test_metrics_name_rounds_rpc_latency_and_the_process(live: Live) -> None:
    await live.wait_height(2)
    await live.rpc("tdml_blockNumber")
    await live.rpc("tdml_noSuchMethod")
    async with live.http.get(live.url + "/metrics") as resp:
        text = await resp.text()
    for name in ("tdml_commit_round_bucket", 'tdml_rpc_seconds_count{method="tdml_blockNumber"}', "python_info"):
        assert name in text, name
    if os.path.exists("/proc/self/stat"):
        assert "process_resident_memory_bytes" in text
    assert "tdml_noSuchMethod" not in text
