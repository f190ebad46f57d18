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
the outcome. This module must never decide anything else about a block.
"""

from __future__ import annotations

from dataclasses import dataclass

from consensus.types import PublicKey
from consensus.validators import ValidatorSet
from consensus.work import WorkOracle
from tdml_node.config import MODEL_ALL


@dataclass(frozen=True, slots=True)
class ModelHolding:
    mode: str
    key: PublicKey
    executor: WorkOracle

    def oracle(self, validators: ValidatorSet) -> WorkOracle | None:
        """The model work a block is applied with here: the executor, or None to take it from the commit."""
        return self.executor if self.mode == MODEL_ALL or self.key in validators else None
