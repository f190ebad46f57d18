"""The ledger state: an immutable value, an explicit draft to change, roots that survive the store."""

from __future__ import annotations

import dataclasses

import pytest
from consensus_fixtures import (
    CHAIN_ID,
    CLIENT,
    OUTSIDER,
    PARAMS,
    FakeOracle,
    genesis_state,
    get_proposer,
    keypair,
    make_job_spec,
    sign_tx,
    state_contents,
    state_with_job,
    submit_job_tx,
)

from consensus.state import EMPTY_ACCOUNT, BlockContext, LedgerState
from consensus.transition import InvalidTransaction, apply_transaction
from consensus.types import Address, Amount, Hash32, Height, Transfer


def _address(index: int) -> Address:
    return keypair(index).address


def test_a_state_cannot_be_changed_in_place() -> None:
    state, job = state_with_job()
    with pytest.raises(TypeError):
        state.accounts[_address(OUTSIDER)] = EMPTY_ACCOUNT  # type: ignore[index]
    with pytest.raises(TypeError):
        state.jobs[job.job_id] = job  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.height = Height(9)  # type: ignore[misc]


def test_tables_given_to_a_state_are_copied() -> None:
    accounts = {_address(OUTSIDER): dataclasses.replace(EMPTY_ACCOUNT, balance=Amount(5))}
    state = LedgerState(CHAIN_ID, Height(0), Hash32(bytes(32)), PARAMS, accounts=accounts)
    root = state.root
    accounts[_address(CLIENT)] = dataclasses.replace(EMPTY_ACCOUNT, balance=Amount(7))
    assert _address(CLIENT) not in state.accounts and state.root == root


def test_a_draft_changes_only_itself_and_cannot_be_written_once_frozen() -> None:
    base = genesis_state()
    before = state_contents(base)
    draft = base.draft()
    outsider = _address(OUTSIDER)
    draft.accounts[outsider] = dataclasses.replace(EMPTY_ACCOUNT, balance=Amount(3))
    assert draft.get_account(outsider).balance == 3 and base.get_account(outsider) == EMPTY_ACCOUNT
    after = draft.freeze(height=Height(1))
    assert after.height == 1 and after.last_validators == base.last_validators
    assert after.get_account(outsider).balance == 3
    with pytest.raises(TypeError):
        draft.accounts[outsider] = EMPTY_ACCOUNT
    assert state_contents(base) == before


def test_a_refused_transaction_leaves_the_state_as_it_was() -> None:
    """The job is refused after its fee was taken from the draft: the input state never sees it."""
    oracle = FakeOracle()
    pre = genesis_state(oracle)
    before = state_contents(pre)
    ctx = BlockContext(CHAIN_ID, Height(1), pre.tip_hash, get_proposer(pre).public_key)
    too_dear = submit_job_tx(make_job_spec(), oracle, budget=10**9)
    with pytest.raises(InvalidTransaction, match="budget"):
        apply_transaction(pre, ctx, too_dear, oracle)
    assert state_contents(pre) == before
    after = apply_transaction(pre, ctx, sign_tx(keypair(CLIENT), 0, Transfer(_address(OUTSIDER), Amount(1))), None)
    assert after.get_account(_address(OUTSIDER)).balance == 1 and state_contents(pre) == before


def test_encoding_round_trips_to_the_same_root() -> None:
    state, _ = state_with_job()
    again = LedgerState.decode(state.encode(), state.tip_hash)
    assert again.root == state.root and state_contents(again) == state_contents(state)
