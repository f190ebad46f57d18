"""TDML blocks and transactions in Ethereum's JSON-RPC shapes, so Ethereum tools (web3.py) read the chain.

The mapping (docs/rpc.md has the table): a TDML block keeps its number,
hash, parent hash and state root; ``transactionsRoot`` is the body hash (it
commits to the whole body, transactions first); ``miner`` is the
proposer's address; ``timestamp`` is the header's time in whole seconds
(decision 26; 0 for the genesis, which has none). What TDML does not have
is zero: gas, difficulty, nonce, logs bloom, receipts and uncles root, mix
hash. Numbers are 0x quantities, as Ethereum's clients expect.

This module must never decide anything: it presents what it is given.
"""

from __future__ import annotations

from typing import Any

from consensus import crypto
from consensus.codec import encode
from consensus.types import Block, Genesis, SignedTransaction, Transfer
from tdml_node.jsonview import hex0x
from tdml_node.pools import tx_hash

ZERO32 = "0x" + "00" * 32
ZERO_NONCE = "0x" + "00" * 8
ZERO_BLOOM = "0x" + "00" * 256
ZERO_ADDRESS = "0x" + "00" * 20
ETH_CHAIN_ID_BYTES = 6
"""The Ethereum chain id is the first 6 bytes of SHA-256(chain id): 48 bits, below JavaScript's 2^53 (EIP-2294)."""


def quantity(n: int) -> str:
    """An Ethereum QUANTITY: 0x, lower-case hex, no leading zeros."""
    return hex(n)


def compute_eth_chain_id(chain_id: str) -> int:
    """The integer Ethereum tools see as this chain's id (``eth_chainId``, ``net_version``); stable for a chain id."""
    return int.from_bytes(crypto.sha256(chain_id.encode("utf-8"))[:ETH_CHAIN_ID_BYTES], "big")


def eth_header(block: Block, block_hash: bytes) -> dict[str, Any]:
    """A block's header in Ethereum's shape (as ``newHeads`` notifies it)."""
    header = block.header
    return {
        "number": quantity(header.height),
        "hash": hex0x(block_hash),
        "parentHash": hex0x(header.parent_hash),
        "stateRoot": hex0x(header.state_root),
        "transactionsRoot": hex0x(header.body_hash),
        **_zero_fields(),
        "timestamp": quantity(header.time_ms // 1000),
        "miner": hex0x(crypto.address_of(header.proposer)),
    }


def eth_block(block: Block, block_hash: bytes, size: int, eth_chain_id: int, full: bool) -> dict[str, Any]:
    """A block in ``eth_getBlockBy*``'s shape: the header, size, transactions (hashes or objects), no uncles."""
    view = eth_header(block, block_hash)
    txs = block.body.transactions
    view["size"] = quantity(size)
    view["totalDifficulty"] = "0x0"
    view["transactions"] = (
        [eth_transaction(t, block.header.height, block_hash, i, eth_chain_id) for i, t in enumerate(txs)]
        if full
        else [hex0x(tx_hash(t)) for t in txs]
    )
    view["uncles"] = []
    return view


def eth_genesis_block(genesis: Genesis, genesis_hash: bytes, size: int) -> dict[str, Any]:
    """Block 0: the genesis hash, no parent, no transactions (genesis transactions are not in a block)."""
    return {
        "number": "0x0",
        "hash": hex0x(genesis_hash),
        "parentHash": ZERO32,
        "stateRoot": ZERO32,
        "transactionsRoot": ZERO32,
        **_zero_fields(),
        "miner": ZERO_ADDRESS,
        "size": quantity(size),
        "totalDifficulty": "0x0",
        "transactions": [],
        "uncles": [],
    }


def eth_transaction(
    signed: SignedTransaction, height: int, block_hash: bytes, index: int, eth_chain_id: int
) -> dict[str, Any]:
    """A committed transaction in Ethereum's shape; ``to`` and ``value`` only for a transfer, gas zero.

    ``input`` is the canonical encoding of the signed TDML transaction; its
    Ed25519 signature has no v, r, s, so those are left out.
    """
    tx = signed.tx
    payload = tx.payload
    return {
        "hash": hex0x(tx_hash(signed)),
        "nonce": quantity(tx.nonce),
        "blockHash": hex0x(block_hash),
        "blockNumber": quantity(height),
        "transactionIndex": quantity(index),
        "from": hex0x(crypto.address_of(tx.sender)),
        "to": hex0x(payload.to) if isinstance(payload, Transfer) else None,
        "value": quantity(payload.amount if isinstance(payload, Transfer) else 0),
        "gas": "0x0",
        "gasPrice": "0x0",
        "input": hex0x(encode(signed)),
        "type": "0x0",
        "chainId": quantity(eth_chain_id),
    }


def eth_receipt(signed: SignedTransaction, height: int, block_hash: bytes, index: int) -> dict[str, Any]:
    """A committed transaction's receipt in Ethereum's shape: status 1 (every committed one applied,
    decision 24), no gas, no logs; ``tdml_getTransactionReceipt`` says what it did."""
    payload = signed.tx.payload
    return {
        "transactionHash": hex0x(tx_hash(signed)),
        "transactionIndex": quantity(index),
        "blockHash": hex0x(block_hash),
        "blockNumber": quantity(height),
        "from": hex0x(crypto.address_of(signed.tx.sender)),
        "to": hex0x(payload.to) if isinstance(payload, Transfer) else None,
        "status": "0x1",
        "cumulativeGasUsed": "0x0",
        "gasUsed": "0x0",
        "effectiveGasPrice": "0x0",
        "contractAddress": None,
        "logs": [],
        "logsBloom": ZERO_BLOOM,
        "type": "0x0",
    }


def _zero_fields() -> dict[str, Any]:
    return {
        "sha3Uncles": ZERO32,
        "receiptsRoot": ZERO32,
        "logsBloom": ZERO_BLOOM,
        "mixHash": ZERO32,
        "nonce": ZERO_NONCE,
        "difficulty": "0x0",
        "gasLimit": "0x0",
        "gasUsed": "0x0",
        "timestamp": "0x0",
        "extraData": "0x",
    }
