"""The narrow views the node's parts see each other through.

- ``ChainHead`` holds the committed chain's head: the ledger state after the
  last committed block. The node replaces it at each commit; everyone else
  reads it through ``ChainView`` and cannot change it.
- ``CommittedBlock`` is the notice a committed block sends to its listeners
  (websocket subscriptions, say).
- ``NodeView`` is what the RPC server may see of a running node: reads of
  the chain, the store and the pools, the one entry point that takes a
  transaction, the network's face, and the node's health.

This module must never give a part more than it needs: ``Duties`` and the
RPC server receive these views, never the ``Node``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from consensus.state import LedgerState, get_validator_set
from consensus.types import Block, CommitCertificate, Genesis, Hash32, PublicKey, SignedTransaction
from consensus.validators import ValidatorSet
from tdml_node.metrics import NodeMetrics
from tdml_node.pools import WorkPool
from tdml_node.runtime.netlink import Network
from tdml_node.storage import ChainStore


class ChainView(Protocol):
    """The committed chain, read-only."""

    @property
    def chain_id(self) -> str: ...

    @property
    def state(self) -> LedgerState: ...

    def validators(self) -> ValidatorSet: ...


class ChainHead:
    """The ledger state after the last committed block; only the node's commit replaces it."""

    def __init__(self, chain_id: str, state: LedgerState) -> None:
        self._chain_id = chain_id
        self._state = state
        self._validators: ValidatorSet | None = None

    @property
    def chain_id(self) -> str:
        return self._chain_id

    @property
    def state(self) -> LedgerState:
        return self._state

    @property
    def height(self) -> int:
        return self._state.height

    def validators(self) -> ValidatorSet:
        """The validators of the next height (computed once per committed state)."""
        if self._validators is None:
            self._validators = get_validator_set(self._state)
        return self._validators

    def advance(self, state: LedgerState) -> None:
        self._state = state
        self._validators = None


@dataclass(frozen=True, slots=True)
class CommittedBlock:
    block: Block
    block_hash: Hash32
    commit: CommitCertificate
    state: LedgerState


BlockListener = Callable[[CommittedBlock], Awaitable[None] | None]


class NodeView(Protocol):
    """What the RPC server reads of a running node, and the two things it may ask of it."""

    @property
    def chain(self) -> ChainView: ...

    @property
    def genesis(self) -> Genesis: ...

    @property
    def genesis_hash(self) -> Hash32: ...

    @property
    def store(self) -> ChainStore: ...

    @property
    def workpool(self) -> WorkPool: ...

    @property
    def network(self) -> Network: ...

    @property
    def metrics(self) -> NodeMetrics: ...

    @property
    def node_key(self) -> PublicKey: ...

    @property
    def torch_version(self) -> str: ...

    @property
    def model_state(self) -> str: ...

    @property
    def started_at(self) -> float: ...

    @property
    def syncing_to(self) -> int: ...

    @property
    def fatal(self) -> BaseException | None: ...

    async def submit_transaction(self, signed: SignedTransaction) -> Hash32:
        """Check a transaction, admit it to the mempool and gossip it; ``TxRejected`` if it cannot apply."""
        ...

    def halt(self, exc: BaseException) -> None:
        """Stop the node because it cannot go on safely (a storage failure the RPC server ran into)."""
        ...

    def add_block_listener(self, fn: BlockListener) -> None: ...

    def remove_block_listener(self, fn: BlockListener) -> None: ...
