"""JSON-RPC over real HTTP on loopback against a real node (in this process, real LevelDB).

Covers the methods, the block tags, batches and notifications, and that bad
input gets the standard error code and changes nothing.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from consensus.codec import encode
from consensus.crypto import Keypair
from consensus.types import Address, Amount, SignedTransaction, Transaction, Transfer
from tdml_node.client import make_transfer, sign_transaction
from tdml_node.config import NodeConfig
from tdml_node.genesis import compose_genesis
from tdml_node.node import Node, open_node
from tdml_node.rpc import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    TX_REJECTED,
    RpcPolicy,
    RpcServer,
)

BLOB_TOKEN = "test-token"


@dataclass
class LiveNode:
    node: Node
    url: str
    client_key: Keypair
    http: aiohttp.ClientSession

    async def post(self, body: Any, raw: bytes | None = None) -> tuple[int, Any]:
        data = io.BytesIO(raw if raw is not None else json.dumps(body).encode())
        async with self.http.post(self.url, data=data, headers={"Content-Type": "application/json"}) as resp:
            text = await resp.text()
            return resp.status, (json.loads(text) if text else None)

    async def call(self, method: str, *params: Any) -> Any:
        _, answer = await self.post({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
        return answer

    async def result(self, method: str, *params: Any) -> Any:
        answer = await self.call(method, *params)
        assert "result" in answer, answer
        return answer["result"]

    async def wait_height(self, height: int, timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout):
            while await self.result("tdml_blockNumber") < height:
                await asyncio.sleep(0.02)


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[LiveNode]:
    key, client_key = Keypair.generate(), Keypair.generate()
    genesis = compose_genesis("rpc-test", [(key.public_key, "")], clients=[client_key.public_key])
    config = NodeConfig(home=tmp_path, rpc_port=0, dev=True, block_interval_ms=50)
    async with open_node(config, key, genesis) as node:
        server = RpcServer(node, "127.0.0.1", 0, dev=config.dev, policy=RpcPolicy(tokens=(BLOB_TOKEN,)))
        port = await server.start()
        task = asyncio.create_task(node.run())
        try:
            async with aiohttp.ClientSession() as http:
                yield LiveNode(node, f"http://127.0.0.1:{port}/", client_key, http)
        finally:
            node.request_stop()
            async with asyncio.timeout(30):
                await task
            await server.stop()


async def test_blocks_are_served_by_number_tag_and_hash(live: LiveNode) -> None:
    await live.wait_height(2)
    latest = await live.result("tdml_getBlockByNumber", "latest", False)
    assert latest["number"] >= 2 and latest["commit"]["type"] == "CommitCertificate"
    one = await live.result("tdml_getBlockByNumber", "0x1", True)
    assert one["number"] == 1 and one["body"]["type"] == "BlockBody"
    assert (await live.result("tdml_getBlockByHash", one["hash"], True))["number"] == 1
    earliest = await live.result("tdml_getBlockByNumber", "earliest")
    assert earliest["number"] == 0 and earliest["genesis"]["chain_id"] == "rpc-test"
    assert await live.result("tdml_getBlockByNumber", 10**6) is None
    assert await live.result("tdml_getBlockByHash", "0x" + "ab" * 32) is None
    info = await live.result("tdml_nodeInfo")
    assert info["chainId"] == "rpc-test" and info["validator"] is True


async def test_transfer_is_committed_and_visible(live: LiveNode) -> None:
    recipient = Keypair.generate().address
    before = await live.result("tdml_getAccount", "0x" + live.client_key.address.hex())
    tx = make_transfer(live.client_key, "rpc-test", before["nonce"], recipient, 1234)
    tx_hash = await live.result("tdml_sendRawTransaction", "0x" + encode(tx).hex())
    assert tx_hash.startswith("0x") and len(tx_hash) == 66
    async with asyncio.timeout(20):
        while (await live.result("tdml_getAccount", "0x" + recipient.hex()))["balance"] != 1234:
            await asyncio.sleep(0.05)
    after = await live.result("tdml_getAccount", "0x" + live.client_key.address.hex())
    assert after["nonce"] == before["nonce"] + 1
    again = await live.call("tdml_sendRawTransaction", "0x" + encode(tx).hex())
    assert again["error"]["code"] == TX_REJECTED and "nonce" in again["error"]["message"]


def _tampered(key: Keypair) -> SignedTransaction:
    """A transfer of 1 whose amount was changed to 2 after signing."""
    signed = sign_transaction(key, "rpc-test", Transaction(key.public_key, 0, Amount(0), Transfer(Address(b"\x01" * 20), Amount(1))))
    forged = Transaction(key.public_key, 0, Amount(0), Transfer(Address(b"\x01" * 20), Amount(2)))
    return SignedTransaction(forged, signed.signature)


@pytest.mark.parametrize(
    ("make_tx", "reason"),
    [
        (lambda k: make_transfer(k, "another-chain", 0, b"\x01" * 20, 1), "signature"),
        (lambda k: make_transfer(Keypair.generate(), "rpc-test", 0, b"\x01" * 20, 1), "balance"),
        (lambda k: make_transfer(k, "rpc-test", 0, b"\x01" * 20, 10**15), "balance"),
        (lambda k: _tampered(k), "signature"),
    ],
)
async def test_bad_transactions_are_rejected_with_reason(live: LiveNode, make_tx: Any, reason: str) -> None:
    answer = await live.call("tdml_sendRawTransaction", "0x" + encode(make_tx(live.client_key)).hex())
    assert answer["error"]["code"] == TX_REJECTED
    assert reason in answer["error"]["message"]
    assert len(live.node.mempool) == 0


@pytest.mark.parametrize(
    ("request_body", "code"),
    [
        ({"jsonrpc": "2.0", "id": 1, "method": "tdml_nope"}, METHOD_NOT_FOUND),
        ({"jsonrpc": "1.0", "id": 1, "method": "tdml_blockNumber"}, INVALID_REQUEST),
        ({"id": 1, "method": "tdml_blockNumber"}, INVALID_REQUEST),
        ({"jsonrpc": "2.0", "id": {"x": 1}, "method": "tdml_blockNumber"}, INVALID_REQUEST),
        ({"jsonrpc": "2.0", "id": 1, "method": 7}, INVALID_REQUEST),
        ([], INVALID_REQUEST),
        ({"jsonrpc": "2.0", "id": 1, "method": "tdml_getBlockByNumber", "params": ["pending"]}, INVALID_PARAMS),
        ({"jsonrpc": "2.0", "id": 1, "method": "tdml_getBlockByNumber", "params": [-1]}, INVALID_PARAMS),
        ({"jsonrpc": "2.0", "id": 1, "method": "tdml_getBlockByNumber", "params": []}, INVALID_PARAMS),
        ({"jsonrpc": "2.0", "id": 1, "method": "tdml_getBlockByNumber", "params": [1, "yes"]}, INVALID_PARAMS),
        ({"jsonrpc": "2.0", "id": 1, "method": "tdml_blockNumber", "params": [1]}, INVALID_PARAMS),
        ({"jsonrpc": "2.0", "id": 1, "method": "tdml_blockNumber", "params": "x"}, INVALID_REQUEST),
        ({"jsonrpc": "2.0", "id": 1, "method": "tdml_getJob", "params": ["0x1234"]}, INVALID_PARAMS),
        ({"jsonrpc": "2.0", "id": 1, "method": "tdml_getJob", "params": ["zz" * 32]}, INVALID_PARAMS),
        ({"jsonrpc": "2.0", "id": 1, "method": "tdml_getJob", "params": {"jobb": "0x00"}}, INVALID_PARAMS),
        ({"jsonrpc": "2.0", "id": 1, "method": "tdml_getAccount", "params": ["0x" + "11" * 19]}, INVALID_PARAMS),
        ({"jsonrpc": "2.0", "id": 1, "method": "tdml_sendRawTransaction", "params": ["0xzz"]}, INVALID_PARAMS),
        ({"jsonrpc": "2.0", "id": 1, "method": "tdml_sendRawTransaction", "params": ["0x92a3"]}, INVALID_PARAMS),
        ({"jsonrpc": "2.0", "id": 1, "method": "tdml_sendRawTransaction", "params": [12]}, INVALID_PARAMS),
    ],
)
async def test_bad_requests_get_standard_codes(live: LiveNode, request_body: Any, code: int) -> None:
    height_before = live.node.state.height
    _, answer = await live.post(request_body)
    assert answer["error"]["code"] == code, answer
    assert answer["error"]["message"]
    assert len(live.node.mempool) == 0
    assert live.node.state.height >= height_before


async def test_parse_error_and_oversized_body(live: LiveNode) -> None:
    _, answer = await live.post(None, raw=b'{"jsonrpc": "2.0", "method": ')
    assert answer["error"]["code"] == PARSE_ERROR and answer["id"] is None
    _, answer = await live.post(None, raw=b"\xff\xfe")
    assert answer["error"]["code"] == PARSE_ERROR
    _, answer = await live.post(None, raw=b"[" + b"1," * (3 * 1024 * 1024) + b"1]")
    assert answer["error"]["code"] == INVALID_REQUEST


async def test_batches_and_notifications(live: LiveNode) -> None:
    batch = [
        {"jsonrpc": "2.0", "id": "a", "method": "tdml_blockNumber"},
        {"jsonrpc": "2.0", "method": "tdml_blockNumber"},
        {"jsonrpc": "2.0", "id": 2, "method": "tdml_missing"},
        5,
        {"jsonrpc": "2.0", "id": 3, "method": "tdml_getJob", "params": ["0x" + "00" * 32]},
    ]
    _, answers = await live.post(batch)
    by_id = {a["id"]: a for a in answers}
    assert len(answers) == 4
    assert isinstance(by_id["a"]["result"], int)
    assert by_id[2]["error"]["code"] == METHOD_NOT_FOUND
    assert by_id[None]["error"]["code"] == INVALID_REQUEST
    assert by_id[3]["result"] is None
    status, body = await live.post([{"jsonrpc": "2.0", "method": "tdml_blockNumber"}])
    assert status == 204 and body is None
    _, too_many = await live.post([{"jsonrpc": "2.0", "id": i, "method": "tdml_blockNumber"} for i in range(101)])
    assert too_many["error"]["code"] == INVALID_REQUEST


async def test_health_metrics_and_blobs(live: LiveNode) -> None:
    await live.wait_height(1)
    base = live.url.rstrip("/")
    async with live.http.get(base + "/health") as resp:
        assert resp.status == 200 and (await resp.json())["status"] == "ok"
    async with live.http.get(base + "/metrics") as resp:
        assert "tdml_height" in await resp.text()
    payload = b"\x00\x01" * 70_000
    headers = {"Authorization": f"Bearer {BLOB_TOKEN}", "Content-Type": "application/octet-stream"}
    async with live.http.post(base + "/blob", data=payload, headers=headers) as resp:
        digest = (await resp.json())["digest"]
    async with live.http.get(f"{base}/blob/{digest[2:]}") as resp:
        assert await resp.read() == payload
    async with live.http.get(f"{base}/blob/{'00' * 32}") as resp:
        assert resp.status == 404
    async with live.http.get(f"{base}/blob/xyz") as resp:
        assert resp.status == 400


async def test_websocket_methods_and_new_block_subscription(live: LiveNode) -> None:
    async with live.http.ws_connect(live.url + "ws") as ws:
        await ws.send_json({"jsonrpc": "2.0", "id": 1, "method": "tdml_subscribe", "params": ["newThings"]})
        assert (await ws.receive_json(timeout=10))["error"]["code"] == INVALID_PARAMS
        await ws.send_json({"jsonrpc": "2.0", "id": 2, "method": "tdml_subscribe", "params": ["newBlocks"]})
        sub_id = (await ws.receive_json(timeout=10))["result"]
        notes = []
        async with asyncio.timeout(20):
            while len(notes) < 2:
                msg = await ws.receive_json()
                if msg.get("method") == "tdml_subscription":
                    assert msg["params"]["subscription"] == sub_id
                    notes.append(msg["params"]["result"])
        assert notes[1]["number"] == notes[0]["number"] + 1
        await ws.send_json({"jsonrpc": "2.0", "id": 3, "method": "tdml_blockNumber"})
        await ws.send_json({"jsonrpc": "2.0", "id": 4, "method": "tdml_unsubscribe", "params": [sub_id]})
        answers: dict[int, Any] = {}
        async with asyncio.timeout(20):
            while len(answers) < 2:
                msg = await ws.receive_json()
                if "id" in msg:
                    answers[msg["id"]] = msg
        assert answers[3]["result"] >= notes[1]["number"]
        assert answers[4]["result"] is True
