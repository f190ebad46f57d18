"""The real web3.py client reads a real node on loopback: chain id, blocks, net, syncing, newHeads.

web3.py formats every answer (checksums addresses, parses quantities,
checks hash lengths), so a field in the wrong shape fails here as it would
for any Ethereum tool. The synchronous ``Web3`` runs in a thread, since the
node runs on this test's event loop.

Importing web3 imports py_ecc, which raises the interpreter's recursion
limit to 100000 for its own maths. Every test module is imported into one
process, where the RPC's deep-nesting tests need the default limit (a
200000-deep JSON array must raise RecursionError, not overflow the C stack
and kill the process), so the limit is put back right after the import.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from datetime import datetime
from typing import Any

import pytest

from consensus.codec import encode
from consensus.crypto import Keypair, address_of
from tdml_node.client import make_transfer
from tdml_node.rpc import INVALID_PARAMS, METHOD_NOT_FOUND
from tdml_node.rpc.ethview import compute_eth_chain_id
from tests.tdml_node.test_rpc import LiveNode, live

_RECURSION_LIMIT = sys.getrecursionlimit()
from web3 import AsyncWeb3, HTTPProvider, Web3, WebSocketProvider  # noqa: E402
from web3.exceptions import Web3RPCError  # noqa: E402

sys.setrecursionlimit(_RECURSION_LIMIT)

__all__ = ["live"]


RECIPIENT = Keypair.generate().address


async def _send_transfer(live: LiveNode) -> str:
    account = await live.result("tdml_getAccount", "0x" + live.client_key.address.hex())
    tx = make_transfer(live.client_key, "rpc-test", account["nonce"], RECIPIENT, 77)
    digest: str = await live.result("tdml_sendRawTransaction", "0x" + encode(tx).hex())
    async with asyncio.timeout(20):
        while await live.result("tdml_getTransactionReceipt", digest) is None:
            await asyncio.sleep(0.05)
    return digest


def _http_reads(url: str, tx_height: int, digest: str, sender: str) -> dict[str, Any]:
    w3 = Web3(HTTPProvider(url, request_kwargs={"timeout": 10}))
    latest = w3.eth.get_block("latest")
    recipient = Web3.to_checksum_address("0x" + RECIPIENT.hex())
    try:
        w3.eth.get_balance(recipient, 1)
        old_state: Exception | None = None
    except Web3RPCError as exc:
        old_state = exc
    return {
        "tx": w3.eth.get_transaction(digest),  # type: ignore[arg-type]
        "receipt": w3.eth.get_transaction_receipt(digest),  # type: ignore[arg-type]
        "balance": w3.eth.get_balance(recipient),
        "sender_nonce": w3.eth.get_transaction_count(Web3.to_checksum_address(sender)),
        "old_state": old_state,
        "chain_id": w3.eth.chain_id,
        "block_number": w3.eth.block_number,
        "latest": latest,
        "by_hash": w3.eth.get_block(latest["hash"]),
        "full": w3.eth.get_block(tx_height, full_transactions=True),
        "earliest": w3.eth.get_block("earliest"),
        "finalized": w3.eth.get_block("finalized"),
        "version": w3.net.version,
        "peer_count": w3.net.peer_count,
        "client_version": w3.client_version,
        "syncing": w3.eth.syncing,
    }


async def test_web3_http_provider_reads_the_chain(live: LiveNode) -> None:
    digest = await _send_transfer(live)
    receipt = await live.result("tdml_getTransactionReceipt", digest)
    await live.wait_height(receipt["blockNumber"] + 1)
    sender = "0x" + live.client_key.address.hex()
    got = await asyncio.wait_for(asyncio.to_thread(_http_reads, live.url, receipt["blockNumber"], digest, sender), 60)

    assert got["chain_id"] == compute_eth_chain_id("rpc-test") and 0 < got["chain_id"] < 2**53
    assert got["version"] == str(got["chain_id"])
    latest = got["latest"]
    assert latest["number"] >= receipt["blockNumber"] + 1 and got["block_number"] >= latest["number"]
    assert got["by_hash"] == latest
    assert latest["gasUsed"] == 0 and latest["difficulty"] == 0 and latest["uncles"] == []
    assert latest["logsBloom"] == bytes(256)
    ours = await live.result("tdml_getBlockByNumber", latest["number"], False)
    assert latest["timestamp"] == ours["time"] // 1000 > 0
    assert "0x" + latest["hash"].hex() == ours["hash"]
    assert "0x" + latest["parentHash"].hex() == ours["header"]["parent_hash"]
    assert "0x" + latest["stateRoot"].hex() == ours["header"]["state_root"]
    proposer = address_of(bytes.fromhex(ours["header"]["proposer"][2:]))
    assert latest["miner"] == Web3.to_checksum_address("0x" + proposer.hex())
    assert latest["size"] == len(bytes.fromhex((await live.result("tdml_getRawBlock", latest["number"]))[2:]))

    full = got["full"]
    assert full["number"] == receipt["blockNumber"]
    (tx,) = [t for t in full["transactions"] if "0x" + t["hash"].hex() == digest]
    assert tx["blockNumber"] == receipt["blockNumber"] and tx["transactionIndex"] == receipt["index"]
    assert tx["from"] == Web3.to_checksum_address("0x" + live.client_key.address.hex())
    assert tx["value"] == 77 and tx["gas"] == 0 and tx["chainId"] == got["chain_id"]

    assert got["tx"] == tx
    eth_receipt = got["receipt"]
    assert eth_receipt["status"] == 1 and eth_receipt["blockNumber"] == receipt["blockNumber"]
    assert eth_receipt["transactionIndex"] == receipt["index"] and eth_receipt["logs"] == []
    assert eth_receipt["to"] == Web3.to_checksum_address("0x" + RECIPIENT.hex())
    assert got["balance"] == 77
    assert got["sender_nonce"] == (await live.result("tdml_getAccount", sender))["nonce"]
    assert got["old_state"] is not None and "latest state" in str(got["old_state"])

    assert got["earliest"]["number"] == 0 and got["earliest"]["hash"].hex() == live.node.genesis_hash.hex()
    assert got["finalized"]["number"] >= latest["number"]
    assert got["peer_count"] == 0 and got["syncing"] is False
    assert got["client_version"].startswith("tdml-node/v")


@pytest.mark.parametrize("method", ["eth_sendRawTransaction", "eth_sendTransaction", "eth_sign", "personal_sign"])
async def test_nothing_writes_through_eth(live: LiveNode, method: str) -> None:
    height = await live.result("tdml_blockNumber")
    answer = await live.call(method, "0x" + "00" * 40)
    assert answer["error"]["code"] == METHOD_NOT_FOUND
    assert len(live.node.mempool) == 0 and await live.result("tdml_blockNumber") >= height


def _web3_timestamps(url: str, heights: range) -> list[int]:
    w3 = Web3(HTTPProvider(url, request_kwargs={"timeout": 10}))
    return [int(w3.eth.get_block(h)["timestamp"]) for h in heights]


async def test_blocks_carry_increasing_times_from_the_proposers_clock(live: LiveNode) -> None:
    """Every committed block's time exceeds its parent's and is the proposer's wall clock when it
    built the block, as both ``tdml_getBlockByNumber`` and web3's ``get_block`` show it."""
    first = await live.result("tdml_blockNumber") + 1
    before_ms = time.time_ns() // 1_000_000
    await live.wait_height(first + 3)
    after_ms = time.time_ns() // 1_000_000
    heights = range(first, first + 4)
    blocks = [await live.result("tdml_getBlockByNumber", h, False) for h in heights]
    times = [b["time"] for b in blocks]
    assert all(a < b for a, b in itertools.pairwise(times)), times
    # Loose bounds (a slow machine may build late): the times are from this run's clock.
    assert before_ms - 60_000 <= times[0] and times[-1] <= after_ms + 60_000, (before_ms, times, after_ms)
    for block in blocks:
        assert block["header"]["time_ms"] == block["time"]
        parsed = datetime.fromisoformat(block["time_iso"].replace("Z", "+00:00"))
        assert parsed.tzinfo is not None and round(parsed.timestamp() * 1000) == block["time"]
    stamps = await asyncio.wait_for(asyncio.to_thread(_web3_timestamps, live.url, range(0, first + 4)), 60)
    assert stamps[0] == 0  # the genesis has no time
    assert stamps[first:] == [t // 1000 for t in times]
    assert all(a <= b for a, b in itertools.pairwise(stamps[1:]))


async def test_web3_websocket_provider_receives_new_heads_in_order(live: LiveNode) -> None:
    ws_url = live.url.replace("http://", "ws://") + "ws"
    heads: list[dict[str, Any]] = []
    async with asyncio.timeout(60):
        async with AsyncWeb3(WebSocketProvider(ws_url)) as w3:
            assert await w3.eth.chain_id == compute_eth_chain_id("rpc-test")
            sub_id = await w3.eth.subscribe("newHeads")
            async for message in w3.socket.process_subscriptions():
                assert message["subscription"] == sub_id
                heads.append(message["result"])
                if len(heads) == 4:
                    break
            assert await w3.eth.unsubscribe(sub_id) is True
    numbers = [h["number"] for h in heads]
    assert numbers == list(range(numbers[0], numbers[0] + 4))
    for parent, child in itertools.pairwise(heads):
        assert child["parentHash"] == parent["hash"]
    ours = await live.result("tdml_getBlockByNumber", numbers[-1], False)
    assert "0x" + heads[-1]["hash"].hex() == ours["hash"]


def test_the_eth_chain_id_is_stable_and_the_documented_one() -> None:
    # Tools are configured with this number: it must not change for a chain (docs/rpc.md, decision 25).
    assert compute_eth_chain_id("tdml-devnet") == 7281167605738
    assert compute_eth_chain_id("tdml-devnet") != compute_eth_chain_id("tdml-devnet2")


async def test_one_websocket_holds_both_kinds_of_subscription(live: LiveNode) -> None:
    async with asyncio.timeout(30), live.http.ws_connect(live.url + "ws") as ws:
        await ws.send_json({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newBlocks"]})
        assert (await ws.receive_json())["error"]["code"] == INVALID_PARAMS
        await ws.send_json({"jsonrpc": "2.0", "id": 2, "method": "eth_subscribe", "params": ["logs"]})
        assert "newHeads" in (await ws.receive_json())["error"]["message"]
        await ws.send_json({"jsonrpc": "2.0", "id": 3, "method": "eth_subscribe", "params": ["newHeads"]})
        eth_id = (await ws.receive_json())["result"]
        await ws.send_json({"jsonrpc": "2.0", "id": 4, "method": "tdml_subscribe", "params": ["newBlocks"]})
        tdml_id = (await ws.receive_json())["result"]
        seen: dict[str, list[dict[str, Any]]] = {eth_id: [], tdml_id: []}
        while min(len(v) for v in seen.values()) < 2:
            message = await ws.receive_json()
            kind = {eth_id: "eth_subscription", tdml_id: "tdml_subscription"}[message["params"]["subscription"]]
            assert message["method"] == kind
            seen[message["params"]["subscription"]].append(message["params"]["result"])
        heads, blocks = seen[eth_id], seen[tdml_id]
        assert isinstance(heads[0]["number"], str) and heads[0]["number"].startswith("0x")
        assert isinstance(blocks[0]["number"], int) and "transactions" not in heads[0]
        assert {int(h["number"], 16) for h in heads} & {b["number"] for b in blocks}
        await ws.send_json({"jsonrpc": "2.0", "id": 5, "method": "eth_unsubscribe", "params": [tdml_id]})
        await ws.send_json({"jsonrpc": "2.0", "id": 6, "method": "tdml_unsubscribe", "params": [tdml_id]})
        answers = {}
        while len(answers) < 2:
            message = await ws.receive_json()
            if "id" in message:
                answers[message["id"]] = message["result"]
        assert answers == {5: True, 6: False}
