"""CI share of the RPC fuzzing against a live in-process node, and the bugs it found, pinned.

Every body given to ``RpcServer.dispatch_bytes`` gets a well-formed JSON-RPC
answer with a standard code (never -32603, never an exception), the mempool
takes only what was accepted, and the node keeps committing blocks.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from consensus.codec import encode
from consensus.crypto import Keypair
from consensus.state import EMPTY_ACCOUNT, LedgerState
from consensus.types import (
    Address,
    Amount,
    ChainParams,
    Hash32,
    Height,
    RegisterNode,
    Transaction,
    Transfer,
)
from tdml_node.config import NodeConfig
from tdml_node.genesis import compose_genesis
from tdml_node.node import open_node
from tdml_node.rpc import INVALID_PARAMS, INVALID_REQUEST, PARSE_ERROR, TX_REJECTED, RpcServer
from tdml_node.rpc.websocket import handle_text

from . import target_rpc
from .run import run_rpc_async

SEED = int(os.environ.get("TDML_FUZZ_SEED", "20240611"))
CI_INPUTS = int(os.environ.get("TDML_FUZZ_CI_INPUTS", "4000"))


async def test_seeded_share_finds_no_failure() -> None:
    result = await run_rpc_async(SEED, 0, CI_INPUTS)
    assert result.failure_count == 0, "\n\n".join(f.describe() for f in result.failures)
    assert result.inputs == CI_INPUTS
    assert result.extra["rpc_heights"] > 0  # the chain went on while it was being fuzzed
    outcomes = set(result.outcomes)
    assert {
        "tx-valid -> result",
        "tx-bad-signature -> error:-32010",
        "tx-wrong-chain -> error:-32010",
        "tx-mutated-bytes -> error:-32602",
        "deep-nesting -> error:-32700",
        "envelope-nonfinite-id -> error:-32600",
        "call-bad-param -> error:-32602",
    } <= outcomes


def _code(answer: Any) -> int | None:
    assert isinstance(answer, dict), answer
    json.dumps(answer, allow_nan=False)  # strict JSON
    return answer["error"]["code"] if "error" in answer else None


async def test_bad_input_found_by_fuzzing_gets_standard_errors() -> None:
    """Each of these once escaped as an exception, an internal error or non-JSON output."""
    async with target_rpc.live_node(with_job_spec=False) as h:
        server = h.server
        # Nesting deeper than the JSON parser's recursion limit (was: RecursionError out of dispatch).
        for text in ("[" * 100_000 + "]" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000):
            assert _code(await server.dispatch_bytes(text.encode())) == PARSE_ERROR
            assert _code(await handle_text(text, {}, server.dispatcher)) == PARSE_ERROR
        # Non-finite ids (was: echoed, so the answer was not JSON).
        for rid in ("NaN", "Infinity", "-Infinity", "1e400"):
            body = f'{{"jsonrpc":"2.0","id":{rid},"method":"tdml_blockNumber"}}'
            answer = await server.dispatch_bytes(body.encode())
            assert _code(answer) == INVALID_REQUEST and answer["id"] is None
            sub = f'{{"jsonrpc":"2.0","id":{rid},"method":"tdml_subscribe","params":["newBlocks"]}}'
            assert _code(await handle_text(sub, {}, server.dispatcher)) == INVALID_REQUEST
        # Ids that are not ids, on the websocket's own methods (was: echoed back).
        for rid in ("true", "{}", "[1]"):
            sub = f'{{"jsonrpc":"2.0","id":{rid},"method":"tdml_unsubscribe","params":["0x00"]}}'
            assert _code(await handle_text(sub, {}, server.dispatcher)) == INVALID_REQUEST
        # Block numbers past 64 bits (was: OverflowError building the store key, -32603).
        for tag in (2**64, 2**200, "0x1" + "0" * 16, "0x" + "f" * 100):
            body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tdml_getBlockByNumber", "params": [tag]})
            assert _code(await server.dispatch_bytes(body.encode())) == INVALID_PARAMS
        assert _code(await server.dispatch_bytes(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tdml_getBlockByNumber", "params": [2**64 - 1]}).encode())) is None
        if "tdml_getRawBlock" in server.methods.table:
            body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tdml_getRawBlock", "params": [2**128 + 1]})
            assert _code(await server.dispatch_bytes(body.encode())) == INVALID_PARAMS
        assert h.node.fatal is None and len(h.node.mempool) == 0


async def test_two_pending_transactions_with_one_nonce_do_not_block_the_next_one(tmp_path: Path) -> None:
    """Found by fuzzing: a sender's transfer and registration both pending at nonce 0 made the
    node refuse every later transaction of that sender ("nonce 0 is not the account's next
    nonce 1", even for one with a bad signature) until a block took one of them."""
    key, client = target_rpc.node_key(), target_rpc.client_key()
    genesis = compose_genesis(target_rpc.CHAIN_ID, [(key.public_key, "")], clients=[client.public_key])
    config = NodeConfig(home=tmp_path, dev=True)
    async with open_node(config, key, genesis) as node:  # not running: no block takes them
        server = RpcServer(node, "127.0.0.1", 0, dev=True)
        await _pending_with_one_nonce(server, client)
        assert len(node.mempool) == 3


async def _pending_with_one_nonce(server: RpcServer, client: Keypair) -> None:

    async def send(nonce: int, payload: Transfer | RegisterNode, chain_id: str = target_rpc.CHAIN_ID) -> Any:
        signed = target_rpc._sign(client, Transaction(client.public_key, nonce, Amount(0), payload), chain_id)
        body = {"jsonrpc": "2.0", "id": 1, "method": "tdml_sendRawTransaction", "params": ["0x" + encode(signed).hex()]}
        return await server.dispatch_bytes(json.dumps(body).encode())

    assert "result" in await send(0, Transfer(Address(b"\x02" * 20), Amount(1)))
    assert "result" in await send(0, RegisterNode(Amount(0), 0, ""))  # the same nonce, also valid on its own
    assert "result" in await send(1, Transfer(Address(b"\x02" * 20), Amount(1)))
    wrong_chain = await send(2, Transfer(Address(b"\x02" * 20), Amount(1)), "another-chain")
    assert _code(wrong_chain) == TX_REJECTED and "signature" in wrong_chain["error"]["message"]


def test_a_state_with_an_empty_account_survives_the_store() -> None:
    """Found by the RPC fuzzer: a 0-amount transfer to a fresh address stores an empty account.

    The snapshot once listed it while ``LedgerState.from_snapshot`` dropped it,
    so a node restarting from its store computed other state roots than its
    peers. Empty accounts are now left out of the snapshot itself.
    """
    params = ChainParams(Amount(1), Amount(1), 5000, 1000, 4)
    state = LedgerState("c", Height(1), Hash32(bytes(32)), params, accounts={Address(b"\x01" * 20): EMPTY_ACCOUNT})
    assert LedgerState.decode(state.encode(), state.tip_hash).root == state.root
