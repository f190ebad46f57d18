"""The validator's condition for prevoting a proposal: ``valid(v)`` of the Tendermint paper.

A validator prevotes a proposed block only if the block applies to the
committed state (every transaction valid, every unit signed by its assigned
trainer and bound to the committed model state, the aggregation's roots
equal to its own execution) and every unit of the block that this validator
is a designated checker of passes its own sampled replay. Where it already
signed a verdict on a unit, that verdict stands for the replay.

This module must never run the model work itself: the executor (the
``WorkExecutor`` oracle) does, and the caller runs the whole check off the
event loop.
"""

from __future__ import annotations

from collections.abc import Mapping

from consensus.crypto import Keypair
from consensus.errors import FaultKind
from consensus.state import LedgerState, get_validator_set
from consensus.transition import BlockResult, InvalidBlock, apply_block
from consensus.types import Block, SignedVerdict
from consensus.work import (
    WorkExecutor,
    WorkOracle,
    check_unit,
    compute_checker_slots,
    sample_for,
    submission_id,
)


class FailedOwnReplay(InvalidBlock):
    """The block includes a unit that fails this validator's own replay."""

    default_kind = FaultKind.INVALID


def validate_proposal(
    state: LedgerState,
    block: Block,
    checker: Keypair,
    executor: WorkExecutor,
    own_verdicts: Mapping[bytes, SignedVerdict],
    model_work: WorkOracle | None,
) -> BlockResult:
    """The state after ``block`` if this validator may prevote it; raises ``InvalidBlock`` otherwise.

    ``own_verdicts`` are the verdicts this validator already signed, by
    submission id. ``model_work`` is what the block's model work is
    recomputed with: the executor on a validator; None on a node that takes
    it from the commit (it never votes).
    """
    validators = get_validator_set(state)
    me = checker.public_key
    if me in validators and model_work is None:
        raise ValueError("a validator recomputes the model work of what it prevotes")
    result = apply_block(state, block, model_work)
    if me not in validators:
        return result
    for signed in block.body.submissions:
        sub = signed.submission
        job = state.jobs.get(sub.job)
        # A job created by this very block has no checkers of ours yet; its
        # units still need their designated checkers' verdicts to apply.
        if job is None or me not in compute_checker_slots(job, sub.shard, sub.trainer, validators).designated:
            continue
        sid = submission_id(sub)
        verdict = own_verdicts.get(sid)
        if verdict is None:
            _, steps = sample_for(checker, state.chain_id, job, sub)
            failure = check_unit(executor, job, sub, steps).failure
        else:
            failure = verdict.verdict.failure
        if failure:
            raise FailedOwnReplay(f"the block includes unit {sid.hex()[:16]}, which failed our replay")
    return result
