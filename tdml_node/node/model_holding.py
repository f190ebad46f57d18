"""Whether this node recomputes a block's model work, or takes it from the validators who certify the block.

A node holds the model one of two ways (the ``model_state`` setting):

- ``all`` (a full node): every block's model work is recomputed here, each
  step's aggregation and each new job's initial root, so the node holds every
  stage of every job and checks what its validators signed.
- ``assigned``: a node that trains but does not validate applies blocks as
  sync does, taking step outcomes and initial roots from the commit the
  validators sign; it fetches and holds only the partitions it is dealt (a
  pipeline stage trainer: its range's bundle). Its trust in the model state is
  a light client's: +2/3 of the voting power recomputed it.

A validator always recomputes, whatever the setting: its prevote vouches for
the outcome. Either way a node that cannot read a private job's data (no
key share of its own, ``NoDataKey``) applies a *certified* block's steps of
that job as sync does: it has nothing to recompute them with, and the
commit already vouches for them. This module must never decide anything
else about a block.
"""

from __future__ import annotations

from dataclasses import dataclass

from consensus.state import LedgerState
from consensus.transition import BlockResult, apply_block
from consensus.types import Block, PublicKey
from consensus.validators import ValidatorSet
from consensus.work import WorkOracle
from tdml_node.config import MODEL_ALL
from tdml_node.work.sealed import NoDataKey


@dataclass(frozen=True, slots=True)
class ModelHolding:
    mode: str
    key: PublicKey
    executor: WorkOracle

    def oracle(self, validators: ValidatorSet) -> WorkOracle | None:
        """The model work a block is applied with here: the executor, or None to take it from the commit."""
        return self.executor if self.mode == MODEL_ALL or self.key in validators else None

    def apply_certified(self, state: LedgerState, block: Block, validators: ValidatorSet) -> BlockResult:
        """The state after a block its commit certifies, recomputed where this node can."""
        try:
            return apply_block(state, block, self.oracle(validators))
        except NoDataKey:
            return apply_block(state, block, None)
