"""Ethereum-compatible reads (``eth_``, ``net_``, ``web3_``), so Ethereum tools read a TDML chain.

Only reads: nothing here writes, so ``eth_sendRawTransaction`` and the
other Ethereum writes are "method not found" (TDML transactions are not
Ethereum transactions; ``tdml_sendRawTransaction`` takes them). Block tags
``pending``, ``safe`` and ``finalized`` are the latest block: a committed
TDML block is final at once, and there is no pending block.
Account reads (``eth_getBalance``, ``eth_getTransactionCount``: TDML
addresses are 20 bytes too) answer for the latest state only, the one the
node keeps. ``eth_subscribe``/``eth_unsubscribe`` (``newHeads``) live in
``websocket``.

This module must never change node state.
"""

from __future__ import annotations

import sys
from typing import Any

from consensus.codec import encode
from consensus.transition import compute_block_hash
from consensus.types import Account, Address
from tdml_node import __version__
from tdml_node.rpc.ethview import (
    compute_eth_chain_id,
    eth_block,
    eth_genesis_block,
    eth_receipt,
    eth_transaction,
    quantity,
)
from tdml_node.rpc.params import (
    INVALID_PARAMS,
    Method,
    Param,
    RpcError,
    parse_address,
    parse_block_tag,
    parse_bool,
    parse_hash,
)
from tdml_node.runtime.views import NodeView

FINAL_TAGS = ("pending", "safe", "finalized")
"""Tags that name the latest block here: BFT commits are final, and no block is pending."""


def parse_eth_block(value: Any) -> int | str:
    """An Ethereum block parameter: a 0x quantity or a tag; the final-at-once tags are ``latest``."""
    if value in FINAL_TAGS:
        return "latest"
    return parse_block_tag(value)


def client_version() -> str:
    """geth's form: name/version/runtime."""
    return f"tdml-node/v{__version__}/python{sys.version_info.major}.{sys.version_info.minor}"


class EthMethods:
    def __init__(self, node: NodeView) -> None:
        self.node = node
        self.eth_chain_id = compute_eth_chain_id(node.chain.chain_id)
        self.table: dict[str, Method] = {
            "eth_chainId": Method(self.chain_id, ()),
            "eth_blockNumber": Method(self.block_number, ()),
            "eth_getBlockByNumber": Method(
                self.get_block_by_number, (Param("block", parse_eth_block), Param("full", parse_bool, False))
            ),
            "eth_getBlockByHash": Method(
                self.get_block_by_hash, (Param("hash", parse_hash), Param("full", parse_bool, False))
            ),
            "eth_getTransactionByHash": Method(self.get_transaction, (Param("hash", parse_hash),)),
            "eth_getTransactionReceipt": Method(self.get_receipt, (Param("hash", parse_hash),)),
            "eth_getBalance": Method(
                self.get_balance, (Param("address", parse_address), Param("block", parse_eth_block, "latest"))
            ),
            "eth_getTransactionCount": Method(
                self.get_transaction_count,
                (Param("address", parse_address), Param("block", parse_eth_block, "latest")),
            ),
            "eth_syncing": Method(self.syncing, ()),
            "net_version": Method(self.net_version, ()),
            "net_peerCount": Method(self.peer_count, ()),
            "net_listening": Method(self.listening, ()),
            "web3_clientVersion": Method(self.client_version, ()),
        }

    async def chain_id(self) -> str:
        return quantity(self.eth_chain_id)

    async def block_number(self) -> str:
        return quantity(self.node.chain.state.height)

    async def get_block_by_number(self, tag: int | str, full: bool) -> Any:
        if tag == "earliest":
            return self._genesis()
        height = self.node.chain.state.height if tag == "latest" else int(tag)
        return self._block_at(height, full)

    async def get_block_by_hash(self, digest: bytes, full: bool) -> Any:
        if digest == self.node.genesis_hash:
            return self._genesis()
        height = self.node.store.get_height_of(digest)
        return None if height is None else self._block_at(height, full)

    async def get_transaction(self, digest: bytes) -> Any:
        found = self.node.store.get_tx_block(digest)
        if found is None:
            return None
        block, index = found
        signed = block.body.transactions[index]
        return eth_transaction(signed, block.header.height, compute_block_hash(block.header), index, self.eth_chain_id)

    async def get_receipt(self, digest: bytes) -> Any:
        found = self.node.store.get_tx_block(digest)
        if found is None:
            return None
        block, index = found
        return eth_receipt(block.body.transactions[index], block.header.height, compute_block_hash(block.header), index)

    async def get_balance(self, address: bytes, tag: int | str) -> str:
        return quantity(self._account_at(address, tag).balance)

    async def get_transaction_count(self, address: bytes, tag: int | str) -> str:
        return quantity(self._account_at(address, tag).nonce)

    def _account_at(self, address: bytes, tag: int | str) -> Account:
        state = self.node.chain.state
        if tag != "latest" and tag != state.height:
            # Only the state after the last block is kept (as a pruned Ethereum node).
            raise RpcError(INVALID_PARAMS, f"only the latest state (block {state.height}) is kept")
        return state.get_account(Address(address))

    async def syncing(self) -> Any:
        node = self.node
        height = node.chain.state.height
        highest = max(node.syncing_to, node.network.best_peer_height())
        if highest <= height + 1:
            return False
        # The node does not record where a catch-up began: the start is reported as where it is now.
        return {"startingBlock": quantity(height), "currentBlock": quantity(height), "highestBlock": quantity(highest)}

    async def net_version(self) -> str:
        return str(self.eth_chain_id)

    async def peer_count(self) -> str:
        return quantity(self.node.network.peer_count())

    async def listening(self) -> bool:
        return True

    async def client_version(self) -> str:
        return client_version()

    def _block_at(self, height: int, full: bool) -> Any:
        if height == 0:
            return self._genesis()
        store = self.node.store
        raw = store.get_block_bytes(height)
        block = store.get_block(height)
        if raw is None or block is None:
            return None
        return eth_block(block, compute_block_hash(block.header), len(raw), self.eth_chain_id, full)

    def _genesis(self) -> Any:
        return eth_genesis_block(self.node.genesis, self.node.genesis_hash, len(encode(self.node.genesis)))
