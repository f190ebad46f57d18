"""The block state transition, as pre-state / block / post-state vectors.

Blocks are built the way an honest proposer builds them (``build_block``);
a test then either applies one and states the post-state it expects, or
breaks one rule and checks that ``apply_block`` raises ``InvalidBlock`` and
leaves the pre-state exactly as it was (its root and every dict).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from consensus_fixtures import (
    CHAIN_ID,
    CLIENT,
    OUTSIDER,
    PARAMS,
    TRAINERS,
    VALIDATORS,
    BodyParts,
    FakeOracle,
    address,
    advance,
    assert_invalid,
    build_block,
    checkers_of,
    genesis_state,
    get_proposer,
    keypair,
    keypair_of,
    keypair_of_address,
    make_commit,
    make_equivocation,
    make_fraud,
    make_genesis,
    make_job_spec,
    make_outcome,
    make_submission,
    make_verdict_by,
    passing_verdicts,
    rebuild_header,
    sign_tx,
    state_contents,
    state_with_job,
    submit_job_tx,
    with_body,
)

from consensus import crypto, pipeline
from consensus.state import LedgerState, get_trainers, get_validator_set
from consensus.transition import (
    BlockContext,
    InvalidBlock,
    InvalidCommit,
    apply_block,
    apply_transaction,
    compute_block_hash,
    compute_genesis_hash,
    compute_job_id,
    make_genesis_state,
    validate_commit,
)
from consensus.types import (
    JOB_ACTIVE,
    JOB_DONE,
    JOB_STALLED,
    ROLE_TRAINER,
    ROLE_VALIDATOR,
    SEALED_KEY_BYTES,
    Amount,
    Block,
    CommitSig,
    Decimal,
    Equivocation,
    FalsePass,
    Hash32,
    Height,
    JobState,
    KeyShare,
    PipelineSpec,
    PublicKey,
    RegisterNode,
    Round,
    ShareDataKey,
    Signature,
    SignedTransaction,
    SignedVerdict,
    SignedVote,
    SignedWorkSubmission,
    StageLinks,
    SubmitJob,
    Transfer,
)
from consensus.validators import ValidatorSet
from consensus.work import PASSED, CheckResult

# ---------------------------------------------------------------------------
# Genesis


def test_genesis_state() -> None:
    genesis = make_genesis(balances=((CLIENT, 5000), (OUTSIDER, 7)))
    state = make_genesis_state(genesis, None)
    assert state.height == 0
    assert state.tip_hash == compute_genesis_hash(genesis) == crypto.hash_value(genesis)
    assert state.get_account(address(CLIENT)).balance == 5000
    assert state.get_account(address(OUTSIDER)).balance == 7
    for i in VALIDATORS:
        acct = state.get_account(address(i))
        assert (acct.stake, acct.roles, acct.public_key) == (1000, ROLE_VALIDATOR, keypair(i).public_key)
    for i in TRAINERS:
        assert state.get_account(address(i)).roles == ROLE_TRAINER
    vs = get_validator_set(state)
    assert set(vs.keys) == {keypair(i).public_key for i in VALIDATORS}
    assert state.last_validators == vs.entries
    assert set(get_trainers(state)) == {address(i) for i in TRAINERS}
    assert state.jobs == {}


def test_genesis_applies_its_transactions_and_skips_weak_nodes() -> None:
    tx = sign_tx(keypair(CLIENT), 0, Transfer(address(OUTSIDER), Amount(100)))
    genesis = make_genesis(validators=((0, 1000), (1, 50)), transactions=(tx,))
    state = make_genesis_state(genesis, None)
    assert state.get_account(address(OUTSIDER)).balance == 100
    assert state.get_account(address(CLIENT)).nonce == 1
    # Stake 50 is below the validator minimum of 100: the node is registered but does not vote.
    assert get_validator_set(state).keys == (keypair(0).public_key,)


def test_genesis_hash_depends_on_everything() -> None:
    a = compute_genesis_hash(make_genesis())
    assert a == compute_genesis_hash(make_genesis())
    assert a != compute_genesis_hash(make_genesis(chain_id="other"))
    assert a != compute_genesis_hash(make_genesis(balances=((CLIENT, 1),)))


def test_state_round_trips_through_its_snapshot() -> None:
    state, _ = state_with_job()
    again = LedgerState.decode(state.encode(), state.tip_hash)
    assert again.root == state.root
    assert state_contents(again) == state_contents(state)


# ---------------------------------------------------------------------------
# Transactions


def test_transfer_vector() -> None:
    pre = genesis_state()
    proposer = get_proposer(pre)
    tx = sign_tx(keypair(CLIENT), 0, Transfer(address(OUTSIDER), Amount(250)), fee=5)
    block = build_block(pre, BodyParts(transactions=(tx,)))
    post = apply_block(pre, block, None).state

    sender = post.get_account(address(CLIENT))
    assert (sender.balance, sender.nonce, sender.public_key) == (1_000_000 - 255, 1, keypair(CLIENT).public_key)
    assert post.get_account(address(OUTSIDER)).balance == 250
    assert post.get_account(proposer.address).balance == pre.get_account(proposer.address).balance + 5
    assert post.height == 1
    assert post.tip_hash == compute_block_hash(block.header)
    assert post.root == block.header.state_root
    # The pre-state is a value: applying a block never changed it.
    assert pre.get_account(address(CLIENT)).balance == 1_000_000


def test_two_transfers_in_one_block_use_consecutive_nonces() -> None:
    pre = genesis_state()
    txs = tuple(sign_tx(keypair(CLIENT), n, Transfer(address(OUTSIDER), Amount(10))) for n in range(2))
    post = advance(pre, BodyParts(transactions=txs))
    assert post.get_account(address(OUTSIDER)).balance == 20
    assert post.get_account(address(CLIENT)).nonce == 2


def test_transfer_to_self_keeps_the_balance() -> None:
    pre = genesis_state()
    post = advance(pre, BodyParts(transactions=(sign_tx(keypair(CLIENT), 0, Transfer(address(CLIENT), Amount(10))),)))
    assert post.get_account(address(CLIENT)).balance == 1_000_000


def test_register_node_vector() -> None:
    pre = genesis_state(balances=((OUTSIDER, 1000),))
    tx = sign_tx(keypair(OUTSIDER), 0, RegisterNode(Amount(400), ROLE_VALIDATOR | ROLE_TRAINER, "host:1"))
    post = advance(pre, BodyParts(transactions=(tx,)))
    acct = post.get_account(address(OUTSIDER))
    assert (acct.balance, acct.stake, acct.roles, acct.endpoint) == (600, 400, 3, "host:1")
    # It votes from the next height on, and trains.
    assert keypair(OUTSIDER).public_key in get_validator_set(post)
    assert keypair(OUTSIDER).public_key not in ValidatorSet(post.last_validators)
    assert address(OUTSIDER) in get_trainers(post)


def test_submit_job_vector() -> None:
    oracle = FakeOracle()
    spec = make_job_spec(shards=2, timeout=3)
    pre = genesis_state(oracle)
    tx = submit_job_tx(spec, oracle, budget=5000)
    block = build_block(pre, BodyParts(transactions=(tx,)), work=oracle)
    post = apply_block(pre, block, oracle).state

    job_id = compute_job_id(tx.tx)
    job = post.jobs[job_id]
    assert job.status == JOB_ACTIVE
    assert (job.step, job.escrow, job.submitter) == (0, 5000, address(CLIENT))
    assert job.model_root == oracle.initial_model_root(spec)
    assert job.step_seed == pre.tip_hash
    assert job.deadlines == (Height(4), Height(4))
    assert job.accepted == (None, None) and job.results == (None, None)
    assert len(set(job.assignment)) == 2 and set(job.assignment) <= set(get_trainers(pre))
    assert post.get_account(address(CLIENT)).balance == 1_000_000 - 5000


INVALID_TXS = [
    pytest.param(lambda: sign_tx(keypair(CLIENT), 1, Transfer(address(OUTSIDER), Amount(1))), "nonce", id="nonce-ahead"),
    pytest.param(
        lambda: sign_tx(keypair(OUTSIDER), 0, Transfer(address(CLIENT), Amount(1))), "cover the transfer", id="no-funds"
    ),
    pytest.param(
        lambda: sign_tx(keypair(CLIENT), 0, Transfer(address(OUTSIDER), Amount(1_000_001))),
        "cover the transfer",
        id="over-balance",
    ),
    pytest.param(
        lambda: sign_tx(keypair(CLIENT), 0, Transfer(address(OUTSIDER), Amount(1)), fee=1_000_001),
        "fee",
        id="fee-over-balance",
    ),
    pytest.param(
        lambda: sign_tx(keypair(CLIENT), 0, Transfer(address(OUTSIDER), Amount(1)), chain_id="other-chain"),
        "signature",
        id="other-chain",
    ),
    pytest.param(
        lambda: dataclasses.replace(
            sign_tx(keypair(CLIENT), 0, Transfer(address(OUTSIDER), Amount(1))), signature=Signature(bytes(64))
        ),
        "signature",
        id="bad-signature",
    ),
    pytest.param(
        lambda: dataclasses.replace(
            sign_tx(keypair(CLIENT), 0, Transfer(address(OUTSIDER), Amount(1))),
            tx=sign_tx(keypair(CLIENT), 0, Transfer(address(OUTSIDER), Amount(2))).tx,
        ),
        "signature",
        id="tampered",
    ),
    pytest.param(
        lambda: sign_tx(keypair(CLIENT), 0, RegisterNode(Amount(99), ROLE_VALIDATOR, "")),
        "validator minimum",
        id="stake-below-validator-minimum",
    ),
    pytest.param(
        lambda: sign_tx(keypair(CLIENT), 0, RegisterNode(Amount(9), ROLE_TRAINER, "")),
        "trainer minimum",
        id="stake-below-trainer-minimum",
    ),
    pytest.param(
        lambda: sign_tx(keypair(CLIENT), 0, RegisterNode(Amount(2_000_000), ROLE_VALIDATOR, "")),
        "stake",
        id="stake-over-balance",
    ),
    pytest.param(
        lambda: submit_job_tx(make_job_spec(), FakeOracle(), budget=2_000_000), "budget", id="budget-over-balance"
    ),
    pytest.param(
        lambda: sign_tx(keypair(CLIENT), 0, SubmitJob(make_job_spec(), Amount(10), Hash32(bytes(32)))),
        "initial model root",
        id="wrong-initial-root",
    ),
]


def _bad_spec_tx(**changes: Any) -> SignedTransaction:
    spec = dataclasses.replace(make_job_spec(), **changes)
    return sign_tx(keypair(CLIENT), 0, SubmitJob(spec, Amount(10), FakeOracle().initial_model_root(spec)))


BAD_SPECS = [
    pytest.param({"task": "poetry"}, id="task"),
    pytest.param({"loss": "mse"}, id="loss"),
    pytest.param({"global_batch": 7}, id="batch-not-divisible"),
    pytest.param({"task": "char_lm", "seq_len": 0}, id="char-lm-without-seq-len"),
    pytest.param({"inner_steps": 2}, id="inner-steps-without-outer-optimizer"),
    pytest.param({"verification": dataclasses.replace(make_job_spec().verification, checked_steps=2)}, id="checked>H"),
    pytest.param({"schedule": dataclasses.replace(make_job_spec().schedule, name="cosine")}, id="schedule"),
    pytest.param({"schedule": dataclasses.replace(make_job_spec().schedule, final_fraction=Decimal("x"))}, id="frac"),
    pytest.param({"verification": dataclasses.replace(make_job_spec().verification, tolerance=Decimal("-1"))}, id="tol"),
    pytest.param({"profile": dataclasses.replace(make_job_spec().profile, dtype="bfloat16")}, id="dtype"),
    pytest.param({"profile": dataclasses.replace(make_job_spec().profile, device="tpu")}, id="device"),
    pytest.param({"optimizer": dataclasses.replace(make_job_spec().optimizer, name="lion")}, id="optimizer"),
]


@pytest.mark.parametrize(("make_tx", "match"), INVALID_TXS)
def test_invalid_transaction_rejects_the_block(make_tx: object, match: str) -> None:
    oracle = FakeOracle()
    pre = genesis_state(oracle)
    tx = make_tx()  # type: ignore[operator]
    block = with_body(build_block(pre, work=oracle), transactions=(tx,))
    assert_invalid(pre, block, oracle, match)


@pytest.mark.parametrize("changes", BAD_SPECS)
def test_invalid_job_spec_rejects_the_block(changes: dict[str, object]) -> None:
    oracle = FakeOracle()
    pre = genesis_state(oracle)
    block = with_body(build_block(pre, work=oracle), transactions=(_bad_spec_tx(**changes),))
    assert_invalid(pre, block, oracle, "invalid job")


def test_invalid_transaction_after_a_valid_one_changes_nothing() -> None:
    pre = genesis_state()
    good = sign_tx(keypair(CLIENT), 0, Transfer(address(OUTSIDER), Amount(10)))
    replayed = good  # the same nonce again
    block = with_body(build_block(pre), transactions=(good, replayed))
    assert_invalid(pre, block, None, "nonce")


def test_too_many_jobs() -> None:
    oracle = FakeOracle()
    pre = genesis_state(oracle)
    txs = tuple(submit_job_tx(make_job_spec(), oracle, budget=10, nonce=n) for n in range(PARAMS.max_jobs_active + 1))
    block = with_body(build_block(pre, work=oracle), transactions=txs)
    assert_invalid(pre, block, oracle, "too many unfinished jobs")


def test_apply_transaction_is_the_mempool_check() -> None:
    pre = genesis_state()
    ctx = BlockContext(CHAIN_ID, Height(1), pre.tip_hash, get_proposer(pre).public_key)
    tx = sign_tx(keypair(CLIENT), 0, Transfer(address(OUTSIDER), Amount(10)))
    after = apply_transaction(pre, ctx, tx, None)
    assert after.get_account(address(OUTSIDER)).balance == 10
    assert pre.get_account(address(OUTSIDER)).balance == 0
    with pytest.raises(InvalidBlock, match="nonce"):
        apply_transaction(after, ctx, tx, None)


# ---------------------------------------------------------------------------
# Header rules


def _other_round_with_another_proposer(state: LedgerState) -> int:
    first = get_proposer(state, 0).public_key
    return next(r for r in range(1, 50) if get_proposer(state, r).public_key != first)


HEADER_CASES = [
    pytest.param(lambda s, b: rebuild_header(b, chain_id="other"), "chain id", id="chain-id"),
    pytest.param(lambda s, b: rebuild_header(b, height=Height(3)), "height", id="height-ahead"),
    pytest.param(lambda s, b: rebuild_header(b, height=Height(1)), "height", id="height-behind"),
    pytest.param(lambda s, b: rebuild_header(b, parent_hash=crypto.sha256(b"x")), "parent", id="parent"),
    pytest.param(
        lambda s, b: rebuild_header(
            b, proposer=next(keypair(i).public_key for i in VALIDATORS if keypair(i).public_key != b.header.proposer)
        ),
        "proposer",
        id="not-the-proposer",
    ),
    pytest.param(
        lambda s, b: rebuild_header(b, round=Round(_other_round_with_another_proposer(s))), "proposer", id="round"
    ),
    pytest.param(lambda s, b: rebuild_header(b, body_hash=crypto.sha256(b"x")), "body hash", id="body-hash"),
    pytest.param(lambda s, b: rebuild_header(b, state_root=crypto.sha256(b"x")), "state root", id="state-root"),
    pytest.param(
        lambda s, b: with_body(b, transactions=(sign_tx(keypair(CLIENT), 0, Transfer(address(OUTSIDER), Amount(1))),)),
        "state root",
        id="body-changed-root-stale",
    ),
    pytest.param(lambda s, b: rebuild_header(b, time_ms=s.tip_time_ms), "block time", id="time-equal-to-parent"),
    pytest.param(lambda s, b: rebuild_header(b, time_ms=s.tip_time_ms - 1), "block time", id="time-before-parent"),
    pytest.param(lambda s, b: rebuild_header(b, time_ms=0), "block time", id="time-zero"),
]


@pytest.mark.parametrize(("mutate", "match"), HEADER_CASES)
def test_header_rules(mutate: object, match: str) -> None:
    pre = advance(genesis_state())  # height 1, so the next block also needs a last commit
    block = build_block(pre)
    apply_block(pre, block, None)  # the unmutated block is valid
    assert_invalid(pre, mutate(pre, block), None, match)  # type: ignore[operator]


def test_first_block_needs_a_positive_time() -> None:
    pre = genesis_state()
    assert pre.tip_time_ms == 0
    assert_invalid(pre, rebuild_header(build_block(pre), time_ms=0), None, "block time")
    assert apply_block(pre, rebuild_header(build_block(pre), time_ms=1), None).state.tip_time_ms == 1


def test_block_time_stays_out_of_the_state_root() -> None:
    """The time is kept beside the state for the next block's check, but two blocks that differ
    only in their time lead to the same root: no clock reading enters the ledger state."""
    pre = advance(genesis_state())
    block = build_block(pre)
    early = apply_block(pre, block, None).state
    late = apply_block(pre, rebuild_header(block, time_ms=block.header.time_ms + 123_456), None).state
    assert early.root == late.root == block.header.state_root
    assert (early.tip_time_ms, late.tip_time_ms) == (block.header.time_ms, block.header.time_ms + 123_456)
    assert early.tip_hash != late.tip_hash  # the header, and so the block hash, does hold the time
    again = LedgerState.decode(late.encode(), late.tip_hash, late.tip_time_ms)
    assert again.tip_time_ms == late.tip_time_ms and again.root == late.root


def test_block_at_a_later_round_by_its_proposer() -> None:
    pre = genesis_state()
    r = _other_round_with_another_proposer(pre)
    block = build_block(pre, round=r)
    assert block.header.proposer == get_proposer(pre, r).public_key
    assert apply_block(pre, block, None).state.height == 1


def test_no_validators_no_blocks() -> None:
    pre = genesis_state(validators=())
    block = build_block(pre, proposer_keypair=keypair(0))
    assert_invalid(pre, block, None, "no validators")


# ---------------------------------------------------------------------------
# Last commit


def _chain_at_height_one() -> tuple[LedgerState, Block]:
    """State after block 1, and a valid block 2 on it."""
    one = advance(genesis_state())
    return one, build_block(one)


def test_last_commit_vector() -> None:
    one, two = _chain_at_height_one()
    assert two.body.last_commit is not None
    assert two.body.last_commit.block_hash == one.tip_hash
    post = apply_block(one, two, None).state
    assert post.height == 2


def test_first_block_has_no_last_commit() -> None:
    pre = genesis_state()
    block = build_block(pre)
    assert block.body.last_commit is None
    bogus = make_commit(dataclasses.replace(pre, height=Height(0)), block_hash=pre.tip_hash)
    assert_invalid(pre, with_body(block, last_commit=bogus), None, "first block has no last commit")


def _keys(*indices: int) -> list[PublicKey]:
    return [keypair(i).public_key for i in indices]


COMMIT_CASES = [
    pytest.param(lambda s: None, "missing the commit", id="missing"),
    pytest.param(lambda s: make_commit(s, signers=_keys(0, 1)), "two thirds", id="half-power"),
    pytest.param(lambda s: make_commit(s, signers=[]), "two thirds", id="empty"),
    pytest.param(lambda s: make_commit(s, signers=_keys(0, 1, 2, OUTSIDER)), "non-validator", id="outsider"),
    pytest.param(lambda s: make_commit(s, block_hash=crypto.sha256(b"other")), "another block", id="other-block"),
    pytest.param(lambda s: make_commit(s, chain_id="other-chain"), "signature", id="other-chain"),
    pytest.param(
        lambda s: dataclasses.replace(make_commit(s), height=Height(s.height + 1)), "another block", id="height"
    ),
    pytest.param(
        lambda s: dataclasses.replace(make_commit(s, round_=0), round=Round(1)), "signature", id="round-mismatch"
    ),
    pytest.param(
        lambda s: dataclasses.replace(
            make_commit(s), signatures=(*make_commit(s).signatures[:3], make_commit(s).signatures[0])
        ),
        "twice",
        id="duplicate-signer",
    ),
    pytest.param(
        lambda s: dataclasses.replace(
            make_commit(s),
            signatures=(
                CommitSig(make_commit(s).signatures[0].validator, Signature(bytes(64))),
                *make_commit(s).signatures[1:],
            ),
        ),
        "signature",
        id="forged-signature",
    ),
]


@pytest.mark.parametrize(("make", "match"), COMMIT_CASES)
def test_last_commit_rules(make: object, match: str) -> None:
    one, two = _chain_at_height_one()
    assert_invalid(one, with_body(two, last_commit=make(one)), None, match)  # type: ignore[operator]


def test_commit_of_exactly_a_quorum_and_a_later_round() -> None:
    one, _ = _chain_at_height_one()
    for cert in (make_commit(one, signers=_keys(0, 1, 2)), make_commit(one, round_=3)):
        block = build_block(one, BodyParts(last_commit=cert))
        assert apply_block(one, block, None).state.height == 2


def test_commit_checked_against_the_voters_of_the_last_block() -> None:
    # A validator registered in block 1 votes from block 2 on, so it cannot
    # help certify block 1 and is not needed to.
    pre = genesis_state(balances=((OUTSIDER, 10_000),))
    tx = sign_tx(keypair(OUTSIDER), 0, RegisterNode(Amount(5000), ROLE_VALIDATOR, ""))
    one = advance(pre, BodyParts(transactions=(tx,)))
    assert keypair(OUTSIDER).public_key in get_validator_set(one)
    block = build_block(one)  # the default commit is signed by last_validators only
    assert apply_block(one, block, None).state.height == 2
    with_outsider = make_commit(one, signers=_keys(0, 1, 2, 3, OUTSIDER))
    assert_invalid(one, with_body(block, last_commit=with_outsider), None, "non-validator")


def test_validate_commit_unequal_power() -> None:
    vs = ValidatorSet.of([(keypair(0).public_key, 97), (keypair(1).public_key, 1), (keypair(2).public_key, 2)])
    state = dataclasses.replace(genesis_state(), height=Height(1), last_validators=vs.entries)
    heavy = make_commit(state, signers=_keys(0))
    validate_commit(heavy, vs, CHAIN_ID, Height(1), state.tip_hash)
    with pytest.raises(InvalidCommit):
        validate_commit(make_commit(state, signers=_keys(1, 2)), vs, CHAIN_ID, Height(1), state.tip_hash)


# ---------------------------------------------------------------------------
# Work: submissions, verdicts, step completion, rewards


def _units(
    state: LedgerState, job: JobState, shards: list[int] | None = None
) -> tuple[tuple[SignedWorkSubmission, ...], tuple[SignedVerdict, ...]]:
    subs = tuple(make_submission(job, s) for s in (shards if shards is not None else range(job.spec.shards)))
    verdicts = tuple(v for sub in subs for v in passing_verdicts(state, job, sub))
    return subs, verdicts


def test_work_partial_step_vector() -> None:
    oracle = FakeOracle()
    pre, job = state_with_job(make_job_spec(shards=2, checkers=2), oracle)
    subs, verdicts = _units(pre, job, [0])
    block = build_block(pre, BodyParts(submissions=subs, verdicts=verdicts), work=oracle)
    post = apply_block(pre, block, oracle).state

    after = post.jobs[job.job_id]
    sid = crypto.hash_value(subs[0].submission)
    assert after.accepted == (sid, None)
    assert after.results == (subs[0].submission.result_digest, None)
    assert after.step == 0
    trainer = keypair_of_address(job.assignment[0]).address
    assert post.get_record(trainer).units_accepted == 1
    assert post.get_account(trainer).balance == pre.get_account(trainer).balance + 10
    checkers = checkers_of(pre, job, subs[0])
    assert len(checkers) == 2
    for c in checkers:
        assert post.get_record(c.address).verdicts_signed == 1
        assert post.get_account(c.address).balance == pre.get_account(c.address).balance + 2
    assert after.escrow == job.escrow - 10 - 2 * 2


def test_step_completion_vector() -> None:
    oracle = FakeOracle()
    pre, job = state_with_job(make_job_spec(shards=2, steps=3), oracle)
    subs, verdicts = _units(pre, job)
    results = [s.submission.result_digest for s in subs]
    completed = dataclasses.replace(job, results=tuple(results))
    outcome = make_outcome(oracle, completed, results)
    block = build_block(
        pre, BodyParts(submissions=subs, verdicts=verdicts, outcomes=(outcome,)), work=oracle
    )
    result = apply_block(pre, block, oracle)
    after = result.state.jobs[job.job_id]
    assert result.completed == (outcome,)
    assert after.step == 1
    assert after.model_root == outcome.model_root
    assert after.last_outcome == outcome
    # The next step is dealt afresh, seeded by this block's parent.
    assert after.accepted == (None, None) and after.results == (None, None)
    assert after.step_seed == pre.tip_hash
    assert after.step_started_height == 2
    assert after.deadlines == (Height(2 + job.spec.verification.unit_timeout_blocks),) * 2
    assert after.status == JOB_ACTIVE


def test_last_step_finishes_the_job_and_refunds_the_escrow() -> None:
    oracle = FakeOracle()
    pre, job = state_with_job(make_job_spec(shards=1, steps=1), oracle, budget=1000)
    subs, verdicts = _units(pre, job)
    outcome = make_outcome(oracle, job, [subs[0].submission.result_digest])
    block = build_block(
        pre, BodyParts(submissions=subs, verdicts=verdicts, outcomes=(outcome,)), work=oracle
    )
    post = apply_block(pre, block, oracle).state
    after = post.jobs[job.job_id]
    assert after.status == JOB_DONE
    assert after.finished_height == 2
    assert after.escrow == 0
    paid = 10 + 2 * len(verdicts)
    assert post.get_account(address(CLIENT)).balance == pre.get_account(address(CLIENT)).balance + 1000 - paid


def test_rewards_stop_when_the_escrow_runs_dry() -> None:
    oracle = FakeOracle()
    pre, job = state_with_job(make_job_spec(shards=2, checkers=1), oracle, budget=13)
    subs, verdicts = _units(pre, job)
    results = [s.submission.result_digest for s in subs]
    outcome = make_outcome(oracle, dataclasses.replace(job, results=tuple(results)), results)
    post = advance(pre, BodyParts(submissions=subs, verdicts=verdicts, outcomes=(outcome,)), oracle)
    # 10 to the first trainer, 2 to its checker, the last 1 to the second trainer, then nothing.
    assert post.jobs[job.job_id].escrow == 0
    rewards = sorted(post.get_record(a).rewards for a in post.records)
    assert sum(rewards) == 13


def test_outcome_claims_must_match_the_oracle() -> None:
    oracle = FakeOracle()
    pre, job = state_with_job(make_job_spec(shards=1, steps=3), oracle)
    subs, verdicts = _units(pre, job)
    honest = make_outcome(oracle, job, [subs[0].submission.result_digest])
    lie = dataclasses.replace(honest, model_root=crypto.sha256(b"lie"))
    parts = BodyParts(submissions=subs, verdicts=verdicts, outcomes=(lie,))
    # Without an oracle the claim is trusted (a certified block), so it builds.
    block = build_block(pre, parts, work=None)
    assert_invalid(pre, block, oracle, "does not match aggregation")
    assert apply_block(pre, block, None).state.jobs[job.job_id].model_root == lie.model_root
    # Missing, extra and wrong-step outcomes.
    base = build_block(pre, BodyParts(submissions=subs, verdicts=verdicts, outcomes=(honest,)), work=oracle)
    assert_invalid(pre, with_body(base, outcomes=()), oracle, "step outcomes")
    assert_invalid(pre, with_body(base, outcomes=(honest, honest)), oracle, "step outcomes")
    assert_invalid(pre, with_body(base, outcomes=(dataclasses.replace(honest, step=1),)), oracle, "another step")
    no_work = build_block(pre, work=oracle)
    assert_invalid(pre, with_body(no_work, outcomes=(honest,)), oracle, "step outcomes")


WORK_REJECTIONS = [
    pytest.param("too-few", "passing verdicts", id="too-few-verdicts"),
    pytest.param("outsider", "designated", id="verdict-by-undesignated"),
    pytest.param("failing", "evidence", id="failing-verdict-beside-unit"),
    pytest.param("twice", "two verdicts", id="same-checker-twice"),
    pytest.param("orphan", "does not include", id="verdict-without-its-unit"),
    pytest.param("duplicate-unit", "already has an accepted unit", id="shard-twice"),
    pytest.param("wrong-trainer", "not assigned", id="unassigned-trainer"),
    pytest.param("no-job", "not active", id="unknown-job"),
]


@pytest.mark.parametrize(("case", "match"), WORK_REJECTIONS)
def test_work_rejections(case: str, match: str) -> None:
    oracle = FakeOracle()
    pre, job = state_with_job(make_job_spec(shards=2, checkers=2), oracle)
    sub = make_submission(job, 0)
    verdicts = passing_verdicts(pre, job, sub)
    subs: tuple[SignedWorkSubmission, ...] = (sub,)
    vs = get_validator_set(pre)
    if case == "too-few":
        verdicts = verdicts[:1]
    elif case == "outsider":
        # The validator ranked last is neither designated nor a stand-in (2 + f = 3 of 4 are allowed).
        from consensus.work import compute_checkers

        ranked = compute_checkers(job, 0, sub.submission.trainer, vs)
        verdicts = (*verdicts[:1], make_verdict_by(keypair_of(ranked[-1]), job, sub))
    elif case == "failing":
        bad = make_verdict_by(checkers_of(pre, job, sub)[1], job, sub, CheckResult(3, -1, Hash32(bytes(32)), 0))
        verdicts = (verdicts[0], bad)
    elif case == "twice":
        verdicts = (verdicts[0], verdicts[0])
    elif case == "orphan":
        other_unit = make_submission(job, 1)
        verdicts = (*verdicts, *passing_verdicts(pre, job, other_unit))
    elif case == "duplicate-unit":
        subs = (sub, sub)
    elif case == "wrong-trainer":
        other = next(keypair(i) for i in TRAINERS if keypair(i).address != job.assignment[0])
        subs = (make_submission(job, 0, trainer=other),)
        verdicts = passing_verdicts(pre, job, subs[0])
    elif case == "no-job":
        ghost = dataclasses.replace(job, job_id=crypto.sha256(b"ghost"))
        subs = (make_submission(ghost, 0),)
        verdicts = ()
    block = with_body(build_block(pre, work=oracle), submissions=subs, verdicts=verdicts)
    assert_invalid(pre, block, oracle, match)


def test_stand_in_checker_may_replace_a_silent_one() -> None:
    oracle = FakeOracle()
    pre, job = state_with_job(make_job_spec(shards=1, checkers=1), oracle)
    sub = make_submission(job, 0)
    from consensus.work import compute_checkers

    ranked = compute_checkers(job, 0, sub.submission.trainer, get_validator_set(pre))
    stand_in = make_verdict_by(keypair_of(ranked[1]), job, sub)  # ranked second: allowed as f = 1
    outcome = make_outcome(oracle, job, [sub.submission.result_digest])
    post = advance(pre, BodyParts(submissions=(sub,), verdicts=(stand_in,), outcomes=(outcome,)), oracle)
    assert post.jobs[job.job_id].step == 1


# ---------------------------------------------------------------------------
# Deadlines


def _empty_blocks(state: LedgerState, n: int, oracle: FakeOracle | None = None) -> LedgerState:
    for _ in range(n):
        state = advance(state, None, oracle)
    return state


def test_deadline_reassignment_vector() -> None:
    oracle = FakeOracle()
    pre, job = state_with_job(make_job_spec(shards=2, timeout=3), oracle)  # created at height 1, deadline 4
    at_three = _empty_blocks(pre, 2, oracle)
    assert at_three.jobs[job.job_id].assignment == job.assignment  # not yet
    # Shard 0 is delivered in time; shard 1 misses its deadline at height 4.
    sub = make_submission(job, 0)
    post = advance(at_three, BodyParts(submissions=(sub,), verdicts=passing_verdicts(pre, job, sub)), oracle)
    after = post.jobs[job.job_id]
    assert post.height == 4
    assert after.assignment[0] == job.assignment[0]
    assert after.assignment[1] != job.assignment[1]
    # The newcomer is the trainer holding no shard (three trainers, two shards).
    idle = set(get_trainers(pre)) - set(job.assignment)
    assert {after.assignment[1]} == idle
    assert after.deadlines[1] == Height(4 + 3)
    assert post.get_record(job.assignment[1]).units_reassigned == 1
    assert post.get_record(job.assignment[0]).units_reassigned == 0
    # The late trainer can no longer submit; the new one can.
    late = make_submission(after, 1, trainer=keypair_of_address(job.assignment[1]))
    block = with_body(build_block(post, work=oracle), submissions=(late,), verdicts=passing_verdicts(post, after, late))
    assert_invalid(post, block, oracle, "not assigned")


def test_submission_in_the_deadline_block_is_still_accepted() -> None:
    oracle = FakeOracle()
    pre, job = state_with_job(make_job_spec(shards=1, steps=2, timeout=2), oracle)  # deadline 3
    at_two = _empty_blocks(pre, 1, oracle)
    sub = make_submission(job, 0)
    outcome = make_outcome(oracle, job, [sub.submission.result_digest])
    post = advance(at_two, BodyParts(submissions=(sub,), verdicts=passing_verdicts(pre, job, sub), outcomes=(outcome,)), oracle)
    assert post.height == 3 and post.jobs[job.job_id].step == 1


# ---------------------------------------------------------------------------
# Evidence and slashing


def test_work_fraud_vector() -> None:
    oracle = FakeOracle(upheld=True)
    pre, job = state_with_job(make_job_spec(shards=2, inner_steps=4, checked_steps=2), oracle)
    bad_unit = make_submission(job, 0)
    evidence = make_fraud(pre, job, bad_unit)
    cheat = keypair_of_address(job.assignment[0]).address
    reporter = evidence.verdict.verdict.validator
    block = build_block(pre, BodyParts(evidence=(evidence,)), work=oracle)
    post = apply_block(pre, block, oracle).state
    assert oracle.rechecks >= 1

    acct_before, acct = pre.get_account(cheat), post.get_account(cheat)
    penalty = acct_before.stake * PARAMS.slash_fraction_bps // 10_000
    assert acct.slashed and acct.stake == 0 and acct.roles == 0
    assert acct.balance == acct_before.balance + acct_before.stake - penalty
    assert post.get_record(cheat).times_slashed == 1
    assert post.get_record(cheat).units_rejected == 1
    reward = penalty * PARAMS.reporter_reward_bps // 10_000
    reporter_addr = crypto.address_of(reporter)
    assert post.get_account(reporter_addr).balance == pre.get_account(reporter_addr).balance + reward
    # The cheat's shard went to another trainer with a fresh deadline.
    after = post.jobs[job.job_id]
    assert cheat not in after.assignment
    assert cheat not in get_trainers(post)
    assert after.deadlines[0] == Height(2 + job.spec.verification.unit_timeout_blocks)
    assert post.get_record(cheat).units_reassigned == 1


def test_work_fraud_not_upheld_is_rejected_and_false_verdict_slashes_the_checker() -> None:
    oracle = FakeOracle(upheld=False)
    pre, job = state_with_job(make_job_spec(shards=2), oracle)
    unit = make_submission(job, 0)
    fraud = make_fraud(pre, job, unit)
    block = with_body(build_block(pre, work=oracle), evidence=(fraud,))
    assert_invalid(pre, block, oracle, "does not re-check")

    false_claim = make_fraud(pre, job, unit, false_claim=True)
    signer_key = false_claim.verdict.verdict.validator
    signer = crypto.address_of(signer_key)
    trainer = crypto.address_of(unit.submission.trainer)
    post = advance(pre, BodyParts(evidence=(false_claim,)), oracle)
    assert post.get_account(signer).slashed
    assert post.get_record(signer).false_verdicts == 1
    assert signer_key not in get_validator_set(post)
    penalty = 1000 * PARAMS.slash_fraction_bps // 10_000
    reward = penalty * PARAMS.reporter_reward_bps // 10_000
    assert post.get_account(trainer).balance == pre.get_account(trainer).balance + reward
    assert post.jobs[job.job_id].assignment == job.assignment  # the trainer keeps its shard


def test_false_verdict_when_upheld_is_rejected() -> None:
    oracle = FakeOracle(upheld=True)
    pre, job = state_with_job(make_job_spec(shards=2), oracle)
    evidence = make_fraud(pre, job, make_submission(job, 0), false_claim=True)
    assert_invalid(pre, with_body(build_block(pre, work=oracle), evidence=(evidence,)), oracle, "re-check")


def test_false_pass_slashes_the_checker_even_after_its_trainer_was_replaced() -> None:
    oracle = FakeOracle(pass_was_false=True)
    pre, job = state_with_job(make_job_spec(shards=2), oracle)
    unit = make_submission(job, 0)
    # The trainer is caught first (so its shard moves), then a validator that had passed the unit.
    fraud = make_fraud(pre, job, unit)
    checker = next(keypair(i) for i in VALIDATORS if keypair(i).public_key != fraud.verdict.verdict.validator)
    evidence = FalsePass(unit, make_verdict_by(checker, job, unit))
    post = advance(pre, BodyParts(evidence=(fraud, evidence)), oracle)
    assert post.get_account(checker.address).slashed
    assert post.get_record(checker.address).false_verdicts == 1
    assert checker.public_key not in get_validator_set(post)


def test_false_pass_rules() -> None:
    pre, job = state_with_job(make_job_spec(shards=2), FakeOracle())
    unit = make_submission(job, 0)
    checker = checkers_of(pre, job, unit)[0]
    honest_pass = FalsePass(unit, make_verdict_by(checker, job, unit))
    refuted = FakeOracle(pass_was_false=False)
    assert_invalid(pre, with_body(build_block(pre, work=refuted), evidence=(honest_pass,)), refuted, "re-check")
    failing = FalsePass(unit, make_fraud(pre, job, unit).verdict)
    oracle = FakeOracle()
    assert_invalid(pre, with_body(build_block(pre, work=oracle), evidence=(failing,)), oracle, "passing verdict")


def test_evidence_rules() -> None:
    oracle = FakeOracle()
    pre, job = state_with_job(make_job_spec(shards=2), oracle)
    unit = make_submission(job, 0)
    good = make_fraud(pre, job, unit)
    base = build_block(pre, work=oracle)
    passing = dataclasses.replace(good, verdict=make_verdict_by(checkers_of(pre, job, unit)[0], job, unit, PASSED))
    assert_invalid(pre, with_body(base, evidence=(passing,)), oracle, "failing verdict")
    forged = dataclasses.replace(good, submission=dataclasses.replace(unit, signature=Signature(bytes(64))))
    assert_invalid(pre, with_body(base, evidence=(forged,)), oracle, "trainer signature")
    other_step = make_submission(job, 0, changes={"step": 1})
    stale = make_fraud(pre, job, other_step)
    assert_invalid(pre, with_body(base, evidence=(stale,)), oracle, "no step in progress")
    other = next(keypair(i) for i in TRAINERS if keypair(i).address != job.assignment[0])
    unassigned = make_fraud(pre, job, make_submission(job, 0, trainer=other))
    assert_invalid(pre, with_body(base, evidence=(unassigned,)), oracle, "not assigned")
    outsider = make_verdict_by(keypair(OUTSIDER), job, unit, CheckResult(2, -2, Hash32(bytes(32)), 0))
    assert_invalid(pre, with_body(base, evidence=(dataclasses.replace(good, verdict=outsider),)), oracle, "rejected")


def test_duplicate_work_evidence_is_rejected() -> None:
    oracle = FakeOracle()
    pre, job = state_with_job(make_job_spec(shards=2), oracle)
    evidence = make_fraud(pre, job, make_submission(job, 0))
    twice = with_body(build_block(pre, work=oracle), evidence=(evidence, evidence))
    # Once slashed, the trainer no longer holds the shard the evidence is about.
    assert_invalid(pre, twice, oracle, "not assigned")
    post = advance(pre, BodyParts(evidence=(evidence,)), oracle)
    again = with_body(build_block(post, work=oracle), evidence=(evidence,))
    assert_invalid(post, again, oracle, "not assigned")


def test_equivocation_vector() -> None:
    pre = advance(genesis_state())
    evidence = make_equivocation(1, height=1)
    proposer = get_proposer(pre)
    if proposer.public_key == keypair(1).public_key:  # keep the reporter distinct from the offender
        pre = advance(pre)
        proposer = get_proposer(pre)
    block = build_block(pre, BodyParts(evidence=(evidence,)))
    post = apply_block(pre, block, None).state
    offender = address(1)
    assert post.get_account(offender).slashed
    assert keypair(1).public_key not in get_validator_set(post)
    penalty = 1000 * PARAMS.slash_fraction_bps // 10_000
    reward = penalty * PARAMS.reporter_reward_bps // 10_000
    assert post.get_account(proposer.address).balance == pre.get_account(proposer.address).balance + reward
    # The set that voted on this block still included the offender.
    assert keypair(1).public_key in ValidatorSet(post.last_validators)


def _resigned(ev: Equivocation, index: int, **changes: Any) -> Equivocation:
    from consensus.types import Vote

    kp = keypair(index)
    b = dataclasses.replace(ev.vote_b.vote, **changes)
    assert isinstance(b, Vote)
    return Equivocation(ev.vote_a, SignedVote(b, kp.sign_value(crypto.DOMAIN_VOTE, CHAIN_ID, b)))


def test_equivocation_rules() -> None:
    pre = advance(genesis_state())
    base = build_block(pre)
    ev = make_equivocation(1, height=1)
    cases = [
        (Equivocation(ev.vote_a, ev.vote_a), "same block"),
        (_resigned(ev, 1, round=Round(1)), "differ"),
        (_resigned(ev, 1, height=Height(2)), "differ"),
        (_resigned(ev, 1, kind=2), "differ"),
        (make_equivocation(1, height=5), "future"),
        (Equivocation(ev.vote_a, dataclasses.replace(ev.vote_b, signature=Signature(bytes(64)))), "signature"),
        (make_equivocation(1, height=1, chain_id="other"), "signature"),
    ]
    for bad, match in cases:
        assert_invalid(pre, with_body(base, evidence=(bad,)), None, match)
    # The same offence twice, in one block or in a later one.
    assert_invalid(pre, with_body(base, evidence=(ev, ev)), None, "already slashed")
    post = advance(pre, BodyParts(evidence=(ev,)))
    assert_invalid(post, with_body(build_block(post), evidence=(ev,)), None, "already slashed")


def test_equivocation_at_the_current_height_is_accepted() -> None:
    pre = advance(genesis_state())
    post = advance(pre, BodyParts(evidence=(make_equivocation(2, height=2),)))
    assert post.get_account(address(2)).slashed


def test_slashing_every_trainer_stalls_the_job_and_a_new_trainer_restarts_it() -> None:
    oracle = FakeOracle()
    pre, job = state_with_job(make_job_spec(shards=1), oracle, balances=((CLIENT, 1_000_000), (OUTSIDER, 1000)))
    state = pre
    for i in TRAINERS:
        live = state.jobs[job.job_id]
        if live.status != JOB_ACTIVE:
            break
        unit = make_submission(live, 0)
        state = advance(state, BodyParts(evidence=(make_fraud(state, live, unit),)), oracle)
        assert i in TRAINERS
    stalled = state.jobs[job.job_id]
    assert stalled.status == JOB_STALLED
    assert get_trainers(state) == ()
    tx = sign_tx(keypair(OUTSIDER), 0, RegisterNode(Amount(50), ROLE_TRAINER, ""))
    restarted = advance(state, BodyParts(transactions=(tx,)), oracle)
    job_after = restarted.jobs[job.job_id]
    assert job_after.status == JOB_ACTIVE
    assert job_after.assignment == (address(OUTSIDER),)
    assert job_after.step == 0


def test_slashed_account_cannot_register_again() -> None:
    pre = advance(genesis_state(balances=((1, 5000),)), BodyParts(evidence=(make_equivocation(1, height=0),)))
    assert pre.get_account(address(1)).slashed
    tx = sign_tx(keypair(1), 0, RegisterNode(Amount(500), ROLE_VALIDATOR, ""))
    assert_invalid(pre, with_body(build_block(pre), transactions=(tx,)), None, "slashed")


def test_a_block_of_everything_is_all_or_nothing() -> None:
    """One bad part at the end of a busy block leaves no trace of the good parts."""
    oracle = FakeOracle()
    pre, job = state_with_job(make_job_spec(shards=2), oracle)
    transfer = sign_tx(keypair(CLIENT), 1, Transfer(address(OUTSIDER), Amount(5)))
    subs, verdicts = _units(pre, job, [0])
    good = build_block(pre, BodyParts(transactions=(transfer,), submissions=subs, verdicts=verdicts), work=oracle)
    bad_ev = make_equivocation(1, height=9)
    assert_invalid(pre, with_body(good, evidence=(bad_ev,)), oracle, "future")
    assert apply_block(pre, good, oracle).state.get_account(address(OUTSIDER)).balance == 5


def test_balance_overflow_is_an_invalid_block_not_a_crash() -> None:
    # Reachable only from a genesis whose total supply exceeds u64 (supply is
    # conserved after it), but a peer's block must never raise anything but InvalidBlock.
    pre = genesis_state(balances=((CLIENT, 2**64 - 1), (OUTSIDER, 10)))
    tx = sign_tx(keypair(OUTSIDER), 0, Transfer(address(CLIENT), Amount(10)))
    assert_invalid(pre, with_body(build_block(pre), transactions=(tx,)), None, "overflows")


# ---------------------------------------------------------------------------
# Pipeline jobs: stage units dealt out, linked and accepted in chain order


def _pipeline_spec(*, shards: int = 2, timeout: int = 3, steps: int = 2) -> Any:
    return dataclasses.replace(
        make_job_spec(shards=shards, timeout=timeout, steps=steps), pipeline=PipelineSpec((0, 1, 2, 3), 2)
    )


def _stage_unit(job: JobState, u: int, *, inputs: tuple[Hash32, ...] | None = None) -> SignedWorkSubmission:
    """Unit ``u``'s submission, linked to the job's accepted outputs (or to ``inputs``)."""
    spec = job.spec
    linked = inputs if inputs is not None else pipeline.expected_inputs(spec, u, job.results, job.output_gradients)
    assert linked is not None
    gradient = crypto.sha256(b"act_grad/%d/%d" % (job.step, u)) if pipeline.emits_gradient(spec, u) else None
    links = StageLinks(crypto.sha256(b"stage/%d" % pipeline.place_of(spec, u).stage), linked, gradient)
    losses = (5,) if pipeline.has_loss(spec, u) else ()
    return make_submission(job, u, changes={"links": links, "losses": losses})


def _accept_in_order(state: LedgerState, job_id: Hash32, units: list[int], oracle: FakeOracle) -> LedgerState:
    """One block with ``units`` in order, each linked to what the block accepted before it."""
    draft_job = state.jobs[job_id]
    subs, verdicts = [], []
    for u in units:
        sub = _stage_unit(draft_job, u)
        subs.append(sub)
        verdicts.extend(passing_verdicts(state, draft_job, sub))
        results, gradients = list(draft_job.results), list(draft_job.output_gradients)
        results[u], gradients[u] = sub.submission.result_digest, sub.submission.links.output_gradient  # type: ignore[union-attr]
        draft_job = dataclasses.replace(draft_job, results=tuple(results), output_gradients=tuple(gradients))
    outcomes = ()
    if all(r is not None for r in draft_job.results):  # the block completes the step
        outcomes = (make_outcome(oracle, draft_job, [r for r in draft_job.results if r is not None]),)
    parts = BodyParts(submissions=tuple(subs), verdicts=tuple(verdicts), outcomes=outcomes)
    return apply_block(state, build_block(state, parts, work=oracle), oracle).state


def test_a_pipeline_step_deals_each_stage_of_a_shard_to_one_trainer_and_opens_only_the_first_units() -> None:
    oracle = FakeOracle()
    pre, job = state_with_job(_pipeline_spec(), oracle)
    spec = job.spec
    units = pipeline.units_per_step(spec)
    assert units == 10 and len(job.assignment) == len(job.accepted) == len(job.output_gradients) == units
    for u in range(units):
        place = pipeline.place_of(spec, u)
        assert job.assignment[u] == job.assignment[pipeline.unit_index(spec, place.shard, place.stage)]
        open_now = place.position == 0
        assert (job.deadlines[u] == Height(1 + 3)) == open_now
        assert (job.deadlines[u] == pipeline.NO_DEADLINE) == (not open_now)
    # Past the first deadlines the open units move, each with its pair's other phase (one trainer per
    # (shard, stage)); the units moved along and every other unit wait for their inputs, with no deadline.
    later = _empty_blocks(pre, 3, oracle).jobs[job.job_id]
    moved = {u for u in range(units) if later.assignment[u] != job.assignment[u]}
    first = {pipeline.unit_index(spec, k, 0) for k in range(spec.shards)}
    partners = {pipeline.partner(spec, u) for u in first}
    assert moved & first and moved <= first | partners
    assert all(later.assignment[pipeline.partner(spec, u)] == later.assignment[u] for u in moved & first)  # type: ignore[index]
    assert all(later.deadlines[u] == pipeline.NO_DEADLINE for u in range(units) if u not in first)


def test_pipeline_units_are_accepted_in_chain_order_in_one_block_and_open_their_successors() -> None:
    oracle = FakeOracle()
    pre, job = state_with_job(_pipeline_spec(), oracle)
    post = _accept_in_order(pre, job.job_id, [0, 1], oracle)  # F_0 then F_1 of shard 0
    after = post.jobs[job.job_id]
    assert after.accepted[0] is not None and after.accepted[1] is not None
    assert after.deadlines[2] == Height(post.height + 3)  # the last stage of shard 0 may now start
    assert after.deadlines[3] == pipeline.NO_DEADLINE


@pytest.mark.parametrize("case", ["before its input", "wrong input", "no links", "no gradient", "a loss too many"])
def test_pipeline_link_rules_reject_the_block(case: str) -> None:
    oracle = FakeOracle()
    pre, job = state_with_job(_pipeline_spec(), oracle)
    bad = {
        "before its input": lambda: _stage_unit(job, 1, inputs=(crypto.sha256(b"unaccepted"),)),
        "wrong input": lambda: _stage_unit(job, 0, inputs=(crypto.sha256(b"x"),)),
        "no links": lambda: make_submission(job, 0, changes={"losses": ()}),
        "no gradient": lambda: make_submission(
            job, 4, changes={"links": StageLinks(crypto.sha256(b"s"), (), None), "losses": ()}
        ),
        "a loss too many": lambda: make_submission(
            job, 0, changes={"links": StageLinks(crypto.sha256(b"s"), (), None), "losses": (1,)}
        ),
    }[case]()
    match = {
        "before its input": "not accepted yet",
        "wrong input": "accepted outputs",
        "no links": "stage links",
        "no gradient": "inputs are not accepted yet|hand on a gradient",
        "a loss too many": "losses",
    }[case]
    block = with_body(build_block(pre, work=oracle), submissions=(bad,), verdicts=passing_verdicts(pre, job, bad))
    assert_invalid(pre, block, oracle, match)


def test_a_whole_pipeline_step_completes_with_every_unit_result_in_unit_order() -> None:
    oracle = FakeOracle()
    pre, job = state_with_job(_pipeline_spec(), oracle)
    state = pre
    per_shard = pipeline.units_per_shard(job.spec)
    for k in range(job.spec.shards):
        state = _accept_in_order(state, job.job_id, list(range(k * per_shard, (k + 1) * per_shard)), oracle)
    after = state.jobs[job.job_id]
    assert after.step == 1 and after.status == JOB_ACTIVE
    assert after.last_outcome is not None
    assert after.output_gradients == (None,) * pipeline.units_per_step(job.spec)


def test_a_pipeline_job_breaking_the_chain_rules_is_refused() -> None:
    oracle = FakeOracle()
    spec = dataclasses.replace(_pipeline_spec(), pipeline=PipelineSpec((0, 1, 2, 3), 3))  # 8 rows in 3 micro-batches
    with pytest.raises(InvalidBlock, match="micro_batches"):
        advance(genesis_state(oracle), BodyParts(transactions=(submit_job_tx(spec, oracle),)), oracle)


def _private_tx(private: bool, shares: tuple[KeyShare, ...]) -> SignedTransaction:
    oracle = FakeOracle()
    spec = dataclasses.replace(make_job_spec(), private=private)
    return sign_tx(keypair(CLIENT), 0, SubmitJob(spec, Amount(10_000), oracle.initial_model_root(spec), shares))


def _share(index: int, size: int = SEALED_KEY_BYTES) -> KeyShare:
    return KeyShare(keypair(index).public_key, bytes(size))


@pytest.mark.parametrize(("private", "shares", "match"), [
    pytest.param(False, (_share(0),), "public job carries no key shares", id="public-with-shares"),
    pytest.param(True, (), "at least one member", id="private-without-shares"),
    pytest.param(True, (_share(0), _share(0)), "each member once", id="twice"),
    pytest.param(True, (_share(0, 79),), "80-byte sealed box", id="short-share"),
])
def test_a_private_jobs_key_shares_must_name_each_member_once(
    private: bool, shares: tuple[KeyShare, ...], match: str
) -> None:
    oracle = FakeOracle()
    pre = genesis_state(oracle)
    block = with_body(build_block(pre, work=oracle), transactions=(_private_tx(private, shares),))
    assert_invalid(pre, block, oracle, match)


def test_a_private_job_keeps_its_key_shares_in_its_state() -> None:
    oracle = FakeOracle()
    shares = (_share(0), _share(1))
    post = advance(genesis_state(oracle), BodyParts(transactions=(_private_tx(True, shares),)), oracle)
    (job,) = post.jobs.values()
    assert job.spec.private and job.key_shares == shares


def _share_tx(sender: int, job_id: Hash32, shares: tuple[KeyShare, ...], nonce: int = 0) -> SignedTransaction:
    return sign_tx(keypair(sender), nonce, ShareDataKey(job_id, shares))


def _private_state() -> tuple[LedgerState, Hash32]:
    oracle = FakeOracle()
    post = advance(genesis_state(oracle), BodyParts(transactions=(_private_tx(True, (_share(VALIDATORS[0]),)),)), oracle)
    (job,) = post.jobs.values()
    return post, job.job_id


def test_a_member_shares_a_private_jobs_key_with_a_registered_node_that_has_none() -> None:
    state, job_id = _private_state()
    newcomer = TRAINERS[0]  # registered at genesis, not sealed to
    post = advance(state, BodyParts(transactions=(_share_tx(VALIDATORS[0], job_id, (_share(newcomer),)),)))
    assert [s.recipient for s in post.jobs[job_id].key_shares] == [keypair(VALIDATORS[0]).public_key, keypair(newcomer).public_key]


@pytest.mark.parametrize(("sender", "recipient", "match"), [
    pytest.param(VALIDATORS[1], TRAINERS[0], "only a member", id="not-a-member"),
    pytest.param(VALIDATORS[0], VALIDATORS[0], "already holds a share", id="already-a-member"),
    pytest.param(VALIDATORS[0], OUTSIDER, "registered node only", id="unregistered"),
])
def test_a_key_share_from_a_non_member_to_a_member_or_to_a_stranger_is_refused(sender: int, recipient: int, match: str) -> None:
    state, job_id = _private_state()
    block = with_body(build_block(state), transactions=(_share_tx(sender, job_id, (_share(recipient),)),))
    assert_invalid(state, block, None, match)
