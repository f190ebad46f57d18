"""Checking a proposal before prevoting it: ``valid(v)`` of the Tendermint paper, off the event loop.

The check itself is ``consensus.prevote.validate_proposal``, run on the work
queue through the ``judge`` seam. While it runs, the round's propose
timeout is held back (``ProposalHold``), so a slow check does not throw away
a proposal already in hand. The state after each block found valid (and
after each block this node built itself) is remembered, so committing it
later does not execute it again.

This module must never decide validity itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from consensus.crypto import Keypair
from consensus.errors import ProtocolError
from consensus.prevote import validate_proposal
from consensus.state import LedgerState, get_validator_set
from consensus.tendermint import TimeoutElapsed, ValidityResult
from consensus.transition import BlockResult, compute_block_hash
from consensus.types import Block, Hash32, Height, Round, SignedVerdict
from consensus.work import WorkExecutor, WorkUnavailable
from tdml_node.node.model_holding import ModelHolding
from tdml_node.node.proposal_hold import ProposalHold
from tdml_node.pools import WorkPool
from tdml_node.runtime.runner import WorkRunner
from tdml_node.runtime.seams import Judgement, Seams
from tdml_node.runtime.views import ChainView
from tdml_node.runtime.workqueue import PRIORITY_CONSENSUS
from tdml_node.work.sealed import NoDataKey

log = logging.getLogger("tdml.node")


class ProposalChecker:
    def __init__(
        self,
        *,
        keypair: Keypair,
        chain: ChainView,
        workpool: WorkPool,
        runner: WorkRunner,
        executor: WorkExecutor,
        holding: ModelHolding,
        seams: Seams,
        hold: ProposalHold,
        deliver: Callable[[ValidityResult | TimeoutElapsed], None],
    ) -> None:
        self.keypair = keypair
        self.chain = chain
        self.workpool = workpool
        self.runner = runner
        self.executor = executor
        self.holding = holding
        self.seams = seams
        self.hold = hold
        self._deliver = deliver
        self._valid: dict[bytes, BlockResult] = {}

    def remember(self, block_hash: bytes, result: BlockResult) -> None:
        self._valid[block_hash] = result

    def result_for(self, block_hash: bytes) -> BlockResult | None:
        return self._valid.get(block_hash)

    def forget_all(self) -> None:
        """After a commit: the remembered states all build on a parent that is no longer the tip."""
        self._valid.clear()

    async def check(self, height: Height, round_: Round, block: Block) -> None:
        """Check a proposal and deliver its ``ValidityResult`` (and any timeout held meanwhile)."""
        self.hold.check_started(height, round_)
        try:
            await self._check(height, block)
        finally:
            held = self.hold.check_ended(height, round_)
            if held is not None:
                self._deliver(held)

    async def _check(self, height: Height, block: Block) -> None:
        block_hash = compute_block_hash(block.header)
        if block_hash in self._valid:
            self._deliver(ValidityResult(height, block_hash, True))
            return
        state = self.chain.state
        if state.height + 1 != height:
            return
        own = self.workpool.verdicts_by(self.keypair.public_key)

        async def validate() -> Judgement:
            return await self._validate(state, block, block_hash, own)

        judgement = await self.seams.judge(block, validate)
        if self.chain.state is not state:
            return
        if judgement.valid and judgement.result is not None:
            self._valid[block_hash] = judgement.result
        elif not judgement.valid:
            log.warning("proposal %s at height %d is invalid", block_hash.hex()[:16], height)
        self._deliver(ValidityResult(height, block_hash, judgement.valid))

    async def _validate(
        self, state: LedgerState, block: Block, block_hash: Hash32, own: dict[bytes, SignedVerdict]
    ) -> Judgement:
        validators = get_validator_set(state)
        oracle = self.holding.oracle(validators)
        try:
            try:
                result = await self.runner.run(
                    PRIORITY_CONSENSUS, validate_proposal, state, block, self.keypair, self.executor, own, oracle
                )
            except NoDataKey:
                if self.keypair.public_key in validators:
                    raise  # a validator that cannot read a private job's data cannot vouch for its step
                # A node that never votes follows what the validators certify.
                result = await self.runner.run(
                    PRIORITY_CONSENSUS, validate_proposal, state, block, self.keypair, self.executor, own, None
                )
        except (WorkUnavailable, ProtocolError) as exc:
            log.info("proposal %s cannot be accepted: %s", block_hash.hex()[:16], exc)
            return Judgement(False, None)
        return Judgement(True, result)
