"""Judging a proposal: a validator recomputes its model work; a node that never votes may take it from the commit."""

from __future__ import annotations

import pytest
from consensus_fixtures import (
    CLIENT,
    BodyParts,
    FakeOracle,
    build_block,
    genesis_state,
    keypair,
    make_job_spec,
    sign_tx,
)

from consensus.prevote import validate_proposal
from consensus.state import LedgerState, get_validator_set
from consensus.transition import InvalidBlock
from consensus.types import Amount, Block, Hash32, SubmitJob

OUTSIDER = keypair(90)


def _block_with_a_wrong_initial_root() -> tuple[LedgerState, Block]:
    state = genesis_state(FakeOracle())
    spec = make_job_spec()
    tx = sign_tx(keypair(CLIENT), 0, SubmitJob(spec, Amount(10_000), Hash32(b"\x07" * 32)))
    return state, build_block(state, BodyParts(transactions=(tx,)), work=None)


def test_a_node_that_takes_the_model_work_from_the_commit_applies_what_it_cannot_recompute() -> None:
    state, block = _block_with_a_wrong_initial_root()
    assert OUTSIDER.public_key not in get_validator_set(state)
    result = validate_proposal(state, block, OUTSIDER, FakeOracle(), {}, None)
    (job,) = result.state.jobs.values()
    assert job.model_root == Hash32(b"\x07" * 32)
    # With the model work recomputed, the same block is refused.
    with pytest.raises(InvalidBlock, match="initial model root"):
        validate_proposal(state, block, OUTSIDER, FakeOracle(), {}, FakeOracle())


def test_a_validator_refuses_to_judge_a_proposal_without_recomputing_its_model_work() -> None:
    state, block = _block_with_a_wrong_initial_root()
    validator = next(k for k in map(keypair, range(8)) if k.public_key in get_validator_set(state))
    with pytest.raises(ValueError, match="recomputes"):
        validate_proposal(state, block, validator, FakeOracle(), {}, None)
