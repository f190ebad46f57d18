"""Transaction lookup and receipts, the method listing, and 0x ids in every answer, on a real node over HTTP.

Also the transaction index's life: it survives a restart, an old store is
indexed when opened, and a node that fetched the blocks by sync from a peer
(real p2p on loopback) indexes them too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import plyvel
import pytest

from consensus.codec import encode
from consensus.crypto import Keypair
from consensus.transition import compute_genesis_hash, compute_job_id
from consensus.types import ROLE_TRAINER, Genesis, SignedTransaction
from p2p.network import P2PNetwork
from p2p.settings import ChainIdentity, PeerSettings
from tdml_node.app import PROTOCOL_VERSION
from tdml_node.client import make_register, make_submit_job, make_transfer
from tdml_node.config import NodeConfig
from tdml_node.genesis import compose_genesis
from tdml_node.node import open_node
from tdml_node.pools import tx_hash
from tdml_node.rpc import INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, RpcServer
from tdml_node.rpc.methods import RpcMethods
from tdml_node.storage import ChainStore
from tdml_node.storage.chainstore import TX_INDEXED, compute_tx_hash
from tdml_node.work.executor import TorchExecutor
from tdml_node.work.jobs import get_job
from tests.tdml_node.test_rpc import LiveNode, live

__all__ = ["live"]


@contextlib.asynccontextmanager
async def networked(
    home: Path, key: Keypair, genesis: Genesis, client_key: Keypair, bootstrap: tuple[str, ...] = ()
) -> AsyncIterator[tuple[LiveNode, P2PNetwork]]:
    """A running node with real p2p and RPC servers on loopback (free ports), stopped and reaped at the end."""
    config = NodeConfig(home=home, rpc_port=0, dev=True, block_interval_ms=50)
    identity = ChainIdentity(genesis.chain_id, compute_genesis_hash(genesis), PROTOCOL_VERSION)
    network = P2PNetwork(key, identity, PeerSettings(port=0, bootstrap=bootstrap))
    async with open_node(config, key, genesis, network=network) as node:
        server = RpcServer(node, "127.0.0.1", 0, dev=True)
        try:
            await network.start(node.handlers)
            port = await server.start()
            task = asyncio.create_task(node.run())
            try:
                async with aiohttp.ClientSession() as http:
                    yield LiveNode(node, f"http://127.0.0.1:{port}/", client_key, http), network
            finally:
                node.request_stop()
                async with asyncio.timeout(30):
                    await task
        finally:
            await network.aclose()
            await server.stop()


async def _send(live: LiveNode, signed: SignedTransaction) -> str:
    digest: str = await live.result("tdml_sendRawTransaction", "0x" + encode(signed).hex())
    return digest


async def _receipt(live: LiveNode, digest: str) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while (receipt := await live.result("tdml_getTransactionReceipt", digest)) is None:
            await asyncio.sleep(0.05)
    assert isinstance(receipt, dict)
    return receipt


async def _job_txs(live: LiveNode) -> tuple[SignedTransaction, SignedTransaction, SignedTransaction]:
    key = live.client_key
    spec, dataset = get_job("digits-mlp", steps=1)
    live.node.store.put(dataset)
    root = TorchExecutor(live.node.store).initial_model_root(spec)
    recipient = Keypair.generate().address
    return (
        make_transfer(key, "rpc-test", 0, recipient, 500, fee=3),
        make_register(key, "rpc-test", 1, 100_000, ROLE_TRAINER, "127.0.0.1:1"),
        make_submit_job(key, "rpc-test", 2, spec, 10**6, root),
    )


async def test_committed_transactions_are_found_with_their_block_index_and_effect(live: LiveNode) -> None:
    transfer, register, job = await _job_txs(live)
    digests = [await _send(live, t) for t in (transfer, register, job)]
    assert digests == ["0x" + tx_hash(t).hex() for t in (transfer, register, job)]
    assert all(compute_tx_hash(t) == tx_hash(t) for t in (transfer, register, job))
    receipts = [await _receipt(live, d) for d in digests]

    for digest, receipt, signed in zip(digests, receipts, (transfer, register, job), strict=True):
        block = await live.result("tdml_getBlockByNumber", receipt["blockNumber"], False)
        assert receipt["blockHash"] == block["hash"]
        assert block["transactions"][receipt["index"]] == digest
        assert receipt["transactionHash"] == digest and receipt["status"] == "applied"
        assert receipt["from"] == "0x" + live.client_key.address.hex()
        found = await live.result("tdml_getTransactionByHash", digest)
        assert (found["hash"], found["blockNumber"], found["index"]) == (digest, receipt["blockNumber"], receipt["index"])
        assert found["transaction"]["tx"]["nonce"] == signed.tx.nonce and found["nonce"] == signed.tx.nonce
        eth = await live.result("eth_getTransactionByHash", digest)
        assert eth["hash"] == digest and eth["blockNumber"] == hex(receipt["blockNumber"])
        assert eth["transactionIndex"] == hex(receipt["index"]) and eth["input"] == "0x" + encode(signed).hex()

    assert receipts[0]["kind"] == "Transfer" and receipts[0]["fee"] == 3
    assert receipts[0]["effect"] == {"to": "0x" + transfer.tx.payload.to.hex(), "amount": 500}  # type: ignore[union-attr]
    assert receipts[1]["kind"] == "RegisterNode"
    assert receipts[1]["effect"] == {"stake": 100_000, "roles": ["trainer"], "endpoint": "127.0.0.1:1"}
    job_id = "0x" + compute_job_id(job.tx).hex()
    assert receipts[2]["kind"] == "SubmitJob" and receipts[2]["effect"] == {"jobId": job_id, "budget": 10**6}
    assert (await live.result("tdml_getJob", job_id))["id"] == job_id

    unknown = "0x" + "ab" * 32
    for method in ("tdml_getTransactionByHash", "tdml_getTransactionReceipt", "eth_getTransactionByHash"):
        assert await live.result(method, unknown) is None
        assert (await live.call(method, "0x1234"))["error"]["code"] == INVALID_PARAMS


async def test_a_rejected_transaction_has_no_receipt(live: LiveNode) -> None:
    poor = make_transfer(Keypair.generate(), "rpc-test", 0, b"\x01" * 20, 1)
    answer = await live.call("tdml_sendRawTransaction", "0x" + encode(poor).hex())
    assert "error" in answer
    start = await live.result("tdml_blockNumber")
    await live.wait_height(start + 2)
    assert await live.result("tdml_getTransactionReceipt", "0x" + tx_hash(poor).hex()) is None


async def test_the_method_listing_is_the_dispatch_table(live: LiveNode) -> None:
    listing = await live.result("tdml_methods")
    names = [m["name"] for m in listing]
    assert names == sorted(names)
    table = RpcMethods(live.node, dev=True).table
    assert {m["name"]: m["params"] for m in listing} == {n: [p.name for p in m.params] for n, m in table.items()}
    by_name = {m["name"]: m["params"] for m in listing}
    assert by_name["tdml_getBlockByNumber"] == ["block", "full"]
    assert by_name["tdml_getTransactionReceipt"] == ["hash"]
    assert {"eth_chainId", "eth_subscribe", "rpc_modules", "tdml_methods", "tdml_devPartition"} <= set(names)
    assert await live.result("rpc_modules") == {"eth": "1.0", "net": "1.0", "rpc": "1.0", "tdml": "1.0", "web3": "1.0"}
    for name, params in by_name.items():
        # Every listed name is answered: named params of the listed names bind (a wrong value may be refused).
        answer = await live.call(name) if not params else (await live.post(
            {"jsonrpc": "2.0", "id": 1, "method": name, "params": {params[0]: None}}
        ))[1]
        assert answer.get("error", {}).get("code") != METHOD_NOT_FOUND, name
        assert "unknown params" not in answer.get("error", {}).get("message", ""), name
    over_http = await live.call("eth_subscribe", "newHeads")
    assert over_http["error"]["code"] == INVALID_REQUEST and "websocket" in over_http["error"]["message"]


SYNC_LOGGER = "tdml.sync"
HEXISH = re.compile(r"[0-9a-fA-F]{8,}")
DIGITS = re.compile(r"[0-9]+")
NOT_READS = {"tdml_sendRawTransaction", "tdml_devPartition", *(f"{p}_{s}" for p in ("tdml", "eth") for s in ("subscribe", "unsubscribe"))}


def _strings(value: Any, path: str) -> list[tuple[str, str]]:
    if isinstance(value, str):
        return [(path, value)]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _strings(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [s for i, v in enumerate(value) for s in _strings(v, f"{path}[{i}]")]
    return []


async def test_every_read_answers_hex_with_0x(tmp_path: Path) -> None:
    key, client_key = Keypair.generate(), Keypair.generate()
    genesis = compose_genesis("rpc-test", [(key.public_key, "")], clients=[client_key.public_key])
    async with networked(tmp_path, key, genesis, client_key) as (live, network):
        # A banned node id, so tdml_bannedPeers has one to show.
        network.penalize(Keypair.generate().public_key, "a test", 10**6)
        await _walk_every_read(live)


async def _walk_every_read(live: LiveNode) -> None:
    transfer, register, job = await _job_txs(live)
    digests = [await _send(live, t) for t in (transfer, register, job)]
    receipt = await _receipt(live, digests[-1])
    job_id = receipt["effect"]["jobId"]
    block = await live.result("tdml_getBlockByNumber", receipt["blockNumber"], True)
    address = "0x" + live.client_key.address.hex()
    args: dict[str, list[Any]] = {
        "tdml_getBlockByNumber": [receipt["blockNumber"], True],
        "tdml_getBlockByHash": [block["hash"], False],
        "tdml_getRawBlock": [1],
        "tdml_getTransactionByHash": [digests[0]],
        "tdml_getTransactionReceipt": [digests[2]],
        "tdml_getJob": [job_id],
        "tdml_getJobSpec": [job_id],
        "tdml_getJobHistory": [job_id],
        "tdml_getWork": ["0x" + "00" * 32],
        "tdml_getAccount": [address],
        "tdml_getTrainer": [address],
        "tdml_getModel": [job_id],
        "eth_getBlockByNumber": [hex(receipt["blockNumber"]), True],
        "eth_getBlockByHash": [block["hash"], True],
        "eth_getTransactionByHash": [digests[1]],
        "eth_getTransactionReceipt": [digests[0]],
        "eth_getBalance": [address],
        "eth_getTransactionCount": [address, "pending"],
    }
    listed = [m["name"] for m in await live.result("tdml_methods")]
    answers = {}
    for name in listed:
        if name in NOT_READS:
            continue
        answers[name] = await live.result(name, *args.get(name, []))
    answers["earliest"] = await live.result("tdml_getBlockByNumber", "earliest")
    answers["eth_earliest"] = await live.result("eth_getBlockByNumber", "earliest", True)
    assert answers["tdml_bannedPeers"], "the ban above shows in the answer"
    assert all(answers[m] is not None for m in ("tdml_getTransactionByHash", "tdml_getModel", "eth_getTransactionReceipt"))
    bad = [
        (path, s)
        for name, answer in answers.items()
        for path, s in _strings(answer, name)
        if (HEXISH.fullmatch(s) and not DIGITS.fullmatch(s))
        or (s.startswith(("0x", "0X")) and not re.fullmatch(r"0x[0-9a-f]*", s))
        or ("/" in s and re.search(r"/[0-9a-f]{16,}", s))
    ]
    assert bad == [], bad


async def test_the_index_survives_a_restart_and_an_old_store_is_indexed_when_opened(tmp_path: Path) -> None:
    key, client_key = Keypair.generate(), Keypair.generate()
    genesis = compose_genesis("rpc-test", [(key.public_key, "")], clients=[client_key.public_key])
    async with networked(tmp_path, key, genesis, client_key) as (live, _):
        digest = await _send(live, make_transfer(client_key, "rpc-test", 0, b"\x02" * 20, 9))
        receipt = await _receipt(live, digest)
    location = (receipt["blockNumber"], receipt["index"])
    data_dir = NodeConfig(home=tmp_path).data_dir
    store = ChainStore(data_dir)
    assert store.get_tx_location(bytes.fromhex(digest[2:])) == location
    store.close()

    # A store written before the index existed: no t keys, no marker.
    db = plyvel.DB(str(data_dir))
    with db.write_batch() as wb:
        for k in db.iterator(prefix=b"t", include_value=False):
            wb.delete(k)
        wb.delete(TX_INDEXED)
    db.close()
    store = ChainStore(data_dir)
    assert store.get_tx_location(bytes.fromhex(digest[2:])) == location
    assert store.get_meta(TX_INDEXED[1:]) == b""
    store.close()
    async with networked(tmp_path, key, genesis, client_key) as (live, _):
        assert (await live.result("tdml_getTransactionReceipt", digest))["blockNumber"] == location[0]


async def test_a_node_that_synced_the_blocks_indexes_their_transactions(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=SYNC_LOGGER)
    key, client_key, follower_key = Keypair.generate(), Keypair.generate(), Keypair.generate()
    genesis = compose_genesis("rpc-test", [(key.public_key, "")], clients=[client_key.public_key])
    async with networked(tmp_path / "a", key, genesis, client_key) as (validator, network):
        digest = await _send(validator, make_transfer(client_key, "rpc-test", 0, b"\x03" * 20, 5))
        receipt = await _receipt(validator, digest)
        await validator.wait_height(receipt["blockNumber"] + 5)
        # The follower starts behind by several blocks: it fetches them by sync, not consensus gossip.
        async with networked(
            tmp_path / "b", follower_key, genesis, client_key, bootstrap=(f"127.0.0.1:{network.port}",)
        ) as (follower, _):
            await follower.wait_height(receipt["blockNumber"] + 1, timeout=60)
            # It did sync the transaction's block: a catch-up that started below it.
            started = [r for r in caplog.records if r.name == SYNC_LOGGER and r.getMessage() == "sync started"]
            assert any(r.height < receipt["blockNumber"] for r in started), [r.__dict__ for r in started]
            assert await follower.result("tdml_getTransactionReceipt", digest) == receipt
            assert await follower.result("tdml_getTransactionByHash", digest) == await validator.result(
                "tdml_getTransactionByHash", digest
            )
