"""Taking in a transaction, from a client (RPC) or a peer (gossip).

A transaction is checked against the committed state after its sender's
pending ones (on the work queue: a job submission initialises its model),
admitted to the mempool, gossiped on, and the proposer is woken.

This module must never decide validity: ``consensus.transition`` does,
through ``pools.check_transaction``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from consensus.crypto import Keypair
from consensus.transition import BlockContext, compute_job_id
from consensus.types import Hash32, Height, SignedTransaction, SubmitJob
from tdml_node.node.model_holding import ModelHolding
from tdml_node.pools import Mempool, check_transaction, tx_hash
from tdml_node.runtime.netlink import Network
from tdml_node.runtime.views import ChainView
from tdml_node.runtime.workqueue import PRIORITY_CONSENSUS, Worker

log = logging.getLogger("tdml.intake")


class TransactionIntake:
    def __init__(
        self,
        *,
        keypair: Keypair,
        chain: ChainView,
        mempool: Mempool,
        worker: Worker,
        holding: ModelHolding,
        network: Network,
        wake: Callable[[], None],
    ) -> None:
        self.keypair = keypair
        self.chain = chain
        self.mempool = mempool
        self.worker = worker
        self.holding = holding
        self.network = network
        self._wake = wake

    async def submit(self, signed: SignedTransaction, origin: bytes | None = None) -> Hash32:
        """Check, admit and gossip a transaction; ``TxRejected`` (with its fault kind) when it cannot apply."""
        digest = tx_hash(signed)
        if digest in self.mempool:
            return digest
        state = self.chain.state
        ctx = BlockContext(state.chain_id, Height(state.height + 1), state.tip_hash, self.keypair.public_key)
        earlier = self.mempool.earlier_of(signed)
        oracle = self.holding.oracle(self.chain.validators())
        await self.worker.submit(PRIORITY_CONSENSUS, check_transaction, state, ctx, earlier, signed, oracle)
        self.mempool.admit(signed, state)
        payload = signed.tx.payload
        origin_name = "peer" if origin is not None else "client"
        if isinstance(payload, SubmitJob):
            log.info("job submitted", extra={
                "job": compute_job_id(signed.tx), "job_name": payload.spec.name, "steps": payload.spec.steps,
                "budget": payload.budget, "from": origin_name,
            })
        else:
            log.debug("transaction accepted", extra={"tx": digest, "kind": type(payload).__name__, "from": origin_name})
        await self.network.broadcast(signed, exclude=origin)
        self._wake()
        return digest
