"""Builders shared by the consensus tests: keys, genesis, jobs, work, blocks, a fake work oracle.

Everything here plays the part of a proposer or a client: it signs with
cached deterministic keys and builds blocks the way a proposer does (execute
the body with ``transition.apply_body``, then write the header around the
resulting state root), so tests state their pre-state, their block and the
post-state they expect and nothing else.

The module has a distinctive name because ``tests/`` is not a package: pytest
puts this directory on ``sys.path`` and a generic name such as ``helpers``
could collide with another test directory's module.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache

import pytest
from hypothesis import HealthCheck, settings

from consensus import crypto
from consensus.codec import encode
from consensus.crypto import Keypair
from consensus.state import LedgerState, get_validator_set
from consensus.transition import (
    BlockContext,
    InvalidBlock,
    apply_block,
    apply_body,
    compute_block_hash,
    compute_body_hash,
    make_genesis_state,
)
from consensus.types import (
    PRECOMMIT,
    PREVOTE,
    ROLE_TRAINER,
    ROLE_VALIDATOR,
    Address,
    Amount,
    Block,
    BlockBody,
    BlockHeader,
    ChainParams,
    CommitCertificate,
    CommitSig,
    Decimal,
    DecimalArg,
    Equivocation,
    Evidence,
    ExecutionProfile,
    FalseVerdict,
    Genesis,
    GenesisBalance,
    GenesisNode,
    Hash32,
    Height,
    IntArg,
    JobSpec,
    JobState,
    ModelSpec,
    OptimizerSpec,
    PublicKey,
    RegisterNode,
    Round,
    ScheduleSpec,
    SignedTransaction,
    SignedVerdict,
    SignedVote,
    SignedWorkSubmission,
    StepOutcome,
    SubmitJob,
    Transaction,
    Transfer,
    Verdict,
    VerificationPolicy,
    Vote,
    WorkFraud,
    WorkSubmission,
)
from consensus.validators import ValidatorSet
from consensus.work import (
    PASSED,
    CheckResult,
    StepResult,
    WorkView,
    compute_checker_slots,
    make_verdict,
    sample_for,
    sign_submission,
)

CHAIN_ID = "tdml-test"

Payload = Transfer | RegisterNode | SubmitJob

# Key indices: validators, trainers and a client are kept apart so a test can
# tell from an index what role a key plays.
VALIDATORS = (0, 1, 2, 3)
TRAINERS = (10, 11, 12)
CLIENT = 20
OUTSIDER = 30
DEFAULT_VALIDATOR_STAKES = tuple((i, 1000) for i in VALIDATORS)
DEFAULT_TRAINER_STAKES = tuple((i, 100) for i in TRAINERS)

PARAMS = ChainParams(
    min_validator_stake=Amount(100),
    min_trainer_stake=Amount(10),
    slash_fraction_bps=5000,
    reporter_reward_bps=1000,
    max_jobs_active=4,
)

PROFILE = ExecutionProfile(
    dtype="float32", threads=1, deterministic=True, device="cpu", torch_version="2.13.0"
)


@cache
def keypair(index: int) -> Keypair:
    """A deterministic key per index, made once per process (key derivation is not free)."""
    return Keypair.from_seed(crypto.sha256(b"tdml-test-key/" + index.to_bytes(4, "big")))


@cache
def _keys_by_public() -> dict[bytes, Keypair]:
    return {keypair(i).public_key: keypair(i) for i in range(64)}


def keypair_of(public_key: bytes) -> Keypair:
    """The test keypair behind a public key (every test key has an index below 64)."""
    return _keys_by_public()[bytes(public_key)]


def address(index: int) -> Address:
    return keypair(index).address


# ---------------------------------------------------------------------------
# Property-test budget


def property_settings(examples: int) -> settings:
    """Hypothesis settings for one property: ``examples`` in CI, more on request.

    ``HYPOTHESIS_PROFILE=thorough`` multiplies every budget by 50 and
    ``TDML_HYPOTHESIS_EXAMPLES=N`` sets it outright, so a long fuzzing run
    needs no code change. There is no deadline: CI machines are slow and
    uneven, and a timing failure there says nothing about the codec.
    """
    if os.environ.get("TDML_HYPOTHESIS_EXAMPLES"):
        examples = int(os.environ["TDML_HYPOTHESIS_EXAMPLES"])
    elif os.environ.get("HYPOTHESIS_PROFILE") == "thorough":
        examples *= 50
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# ---------------------------------------------------------------------------
# Genesis


def make_genesis(
    *,
    validators: Sequence[tuple[int, int]] = DEFAULT_VALIDATOR_STAKES,
    trainers: Sequence[tuple[int, int]] = DEFAULT_TRAINER_STAKES,
    balances: Sequence[tuple[int, int]] = ((CLIENT, 1_000_000),),
    transactions: Sequence[SignedTransaction] = (),
    chain_id: str = CHAIN_ID,
    params: ChainParams = PARAMS,
) -> Genesis:
    nodes = [GenesisNode(keypair(i).public_key, Amount(s), ROLE_VALIDATOR, f"v{i}") for i, s in validators]
    nodes += [GenesisNode(keypair(i).public_key, Amount(s), ROLE_TRAINER, f"t{i}") for i, s in trainers]
    return Genesis(
        chain_id=chain_id,
        params=params,
        balances=tuple(GenesisBalance(address(i), Amount(b)) for i, b in balances),
        nodes=tuple(nodes),
        transactions=tuple(transactions),
    )


def genesis_state(work: FakeOracle | None = None, **kwargs: object) -> LedgerState:
    return make_genesis_state(make_genesis(**kwargs), work)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# Transactions and jobs


def sign_tx(
    signer: Keypair, nonce: int, payload: Payload, *, fee: int = 0, chain_id: str = CHAIN_ID
) -> SignedTransaction:
    tx = Transaction(signer.public_key, nonce, Amount(fee), payload)
    return SignedTransaction(tx, signer.sign_value(crypto.DOMAIN_TX, chain_id, tx))


def make_job_spec(
    *,
    shards: int = 2,
    inner_steps: int = 1,
    steps: int = 2,
    checked_steps: int = 1,
    checkers: int = 1,
    timeout: int = 3,
    reward_per_unit: int = 10,
    reward_per_verdict: int = 2,
    tolerance: str = "0",
) -> JobSpec:
    outer = OptimizerSpec("sgd", (DecimalArg("lr", Decimal("0.7")),)) if inner_steps > 1 else None
    return JobSpec(
        name="test-job",
        task="classification",
        model=ModelSpec("mlp", (IntArg("hidden", 8),)),
        dataset=crypto.sha256(b"dataset"),
        seq_len=0,
        loss="cross_entropy",
        optimizer=OptimizerSpec("sgd", (DecimalArg("lr", Decimal("0.1")),)),
        outer_optimizer=outer,
        schedule=ScheduleSpec("constant", 0, Decimal("1")),
        global_batch=8 * shards,
        shards=shards,
        inner_steps=inner_steps,
        steps=steps,
        seed=7,
        eval_every=0,
        profile=PROFILE,
        verification=VerificationPolicy(checked_steps, checkers, Decimal(tolerance), timeout),
        reward_per_unit=Amount(reward_per_unit),
        reward_per_verdict=Amount(reward_per_verdict),
    )


@dataclass
class FakeOracle:
    """A ``WorkOracle`` with fixed answers: roots are hashes of their inputs.

    The torch executor is tested on its own; here only the protocol's use of
    the oracle matters, so every answer is a pure function of its arguments;
    ``upheld`` decides what a re-check of a failing verdict finds and
    ``pass_was_false`` what a re-check of a passing one finds.
    """

    upheld: bool = True
    pass_was_false: bool = True
    rechecks: int = 0

    def initial_model_root(self, spec: JobSpec) -> Hash32:
        return crypto.sha256(b"init/" + encode(spec))

    def step_outcome(self, job: WorkView, results: tuple[Hash32, ...]) -> StepResult:
        root = crypto.sha256(b"agg/" + job.model_root + b"".join(results))
        return StepResult(root, 1000 + job.step, 2000 + job.step, 3, 4)

    def recheck(self, job: WorkView, submission: WorkSubmission, verdict: Verdict) -> bool:
        self.rechecks += 1
        return self.upheld

    def recheck_pass(self, job: WorkView, submission: WorkSubmission, verdict: Verdict) -> bool:
        self.rechecks += 1
        return self.pass_was_false


def make_outcome(oracle: FakeOracle, job: JobState, results: Sequence[Hash32]) -> StepOutcome:
    """The outcome a proposer claims for ``job``'s current step once ``results`` are accepted."""
    return oracle.step_outcome(job, tuple(results)).outcome(job.job_id, job.step)


def make_submission(
    job: JobState,
    shard: int,
    *,
    trainer: Keypair | None = None,
    result: Hash32 | None = None,
    chain_id: str = CHAIN_ID,
    changes: Mapping[str, object] | None = None,
) -> SignedWorkSubmission:
    """A signed unit for ``shard`` of the job's current step by its assigned trainer."""
    kp = trainer if trainer is not None else keypair_of_address(job.assignment[shard])
    h = job.spec.inner_steps
    sub = WorkSubmission(
        job=job.job_id,
        step=job.step,
        shard=shard,
        trainer=kp.public_key,
        parent_model_root=job.model_root,
        checkpoint_digests=tuple(crypto.sha256(b"ckpt/%d/%d" % (shard, i)) for i in range(h)) if h > 1 else (),
        result_digest=result if result is not None else crypto.sha256(b"result/%d/%d" % (job.step, shard)),
        losses=tuple(range(h)),
        receipt=job.spec.profile,
    )
    if changes:
        sub = dataclasses.replace(sub, **changes)  # type: ignore[arg-type]
    return sign_submission(kp, chain_id, sub)


def keypair_of_address(addr: Address) -> Keypair:
    for kp in _keys_by_public().values():
        if kp.address == addr:
            return kp
    raise KeyError(addr.hex())


def checkers_of(state: LedgerState, job: JobState, signed: SignedWorkSubmission) -> list[Keypair]:
    """The designated checkers of a unit, in rank order, as keypairs."""
    sub = signed.submission
    slots = compute_checker_slots(job, sub.shard, sub.trainer, get_validator_set(state))
    return [keypair_of(k) for k in slots.designated]


def make_verdict_by(
    checker: Keypair,
    job: JobState,
    signed: SignedWorkSubmission,
    result: CheckResult = PASSED,
    *,
    chain_id: str = CHAIN_ID,
) -> SignedVerdict:
    sig, steps = sample_for(checker, chain_id, job, signed.submission)
    if result.failed_step == -2:
        # A sentinel for "fail at the first sampled step": tests cannot know it in advance.
        result = dataclasses.replace(result, failed_step=steps[0])
    return make_verdict(checker, chain_id, signed.submission, result, steps, sig, job.spec.profile)


def passing_verdicts(state: LedgerState, job: JobState, signed: SignedWorkSubmission) -> tuple[SignedVerdict, ...]:
    return tuple(make_verdict_by(c, job, signed) for c in checkers_of(state, job, signed))


def make_fraud(
    state: LedgerState, job: JobState, signed: SignedWorkSubmission, *, false_claim: bool = False
) -> WorkFraud | FalseVerdict:
    """Evidence from the first designated checker that the unit failed replay."""
    checker = checkers_of(state, job, signed)[0]
    failing = CheckResult(2, -2, crypto.sha256(b"observed"), 99)
    verdict = make_verdict_by(checker, job, signed, failing)
    return FalseVerdict(signed, verdict) if false_claim else WorkFraud(signed, verdict)


def make_equivocation(index: int, height: int, round_: int = 0, *, chain_id: str = CHAIN_ID) -> Equivocation:
    kp = keypair(index)
    votes = [
        Vote(PREVOTE, Height(height), Round(round_), crypto.sha256(b"block-%d" % i), kp.public_key) for i in (1, 2)
    ]
    a, b = (SignedVote(v, kp.sign_value(crypto.DOMAIN_VOTE, chain_id, v)) for v in votes)
    return Equivocation(a, b)


# ---------------------------------------------------------------------------
# Blocks


class _Auto:
    """Marker: let ``build_block`` fill the field the way an honest proposer would."""


AUTO = _Auto()


@dataclass(frozen=True)
class BodyParts:
    transactions: tuple[SignedTransaction, ...] = ()
    submissions: tuple[SignedWorkSubmission, ...] = ()
    verdicts: tuple[SignedVerdict, ...] = ()
    evidence: tuple[Evidence, ...] = ()
    outcomes: tuple[StepOutcome, ...] = ()
    last_commit: CommitCertificate | _Auto | None = AUTO


def get_proposer(state: LedgerState, round_: int = 0) -> Keypair:
    """The keypair of the proposer of the next height at ``round_``."""
    key = get_validator_set(state).get_proposer(state.chain_id, state.height + 1, round_)
    return keypair_of(key)


def make_commit(
    state: LedgerState,
    *,
    round_: int = 0,
    signers: Iterable[PublicKey] | None = None,
    block_hash: Hash32 | None = None,
    chain_id: str | None = None,
) -> CommitCertificate:
    """Precommits for the state's last block by ``signers`` (default: all its voters)."""
    keys = list(signers) if signers is not None else [e.public_key for e in state.last_validators]
    target = block_hash if block_hash is not None else state.tip_hash
    sigs = []
    for key in sorted(keys):
        vote = Vote(PRECOMMIT, Height(state.height), Round(round_), target, key)
        sig = keypair_of(key).sign_value(crypto.DOMAIN_VOTE, chain_id or state.chain_id, vote)
        sigs.append(CommitSig(key, sig))
    return CommitCertificate(Height(state.height), Round(round_), target, tuple(sigs))


BLOCK_SPACING_MS = 1000
"""Each built block's time is its parent's plus this: increasing, as the transition wants."""


def build_block(
    state: LedgerState,
    body_parts: BodyParts | None = None,
    proposer_keypair: Keypair | None = None,
    round: int = 0,
    work: FakeOracle | None = None,
) -> Block:
    """Build the next block on ``state`` as an honest proposer would.

    The body is executed with ``apply_body`` to learn the state root, and the
    header is written around it; the last commit is signed by every last
    validator unless the parts say otherwise.
    """
    parts = body_parts or BodyParts()
    proposer = proposer_keypair or get_proposer(state, round)
    last_commit = parts.last_commit
    if isinstance(last_commit, _Auto):
        last_commit = make_commit(state) if state.height > 0 else None
    body = BlockBody(
        transactions=parts.transactions,
        submissions=parts.submissions,
        verdicts=parts.verdicts,
        evidence=parts.evidence,
        outcomes=parts.outcomes,
        last_commit=last_commit,
    )
    height = Height(state.height + 1)
    ctx = BlockContext(state.chain_id, height, state.tip_hash, proposer.public_key)
    result = apply_body(state, ctx, body, work)
    header = BlockHeader(
        chain_id=state.chain_id,
        height=height,
        round=Round(round),
        parent_hash=state.tip_hash,
        proposer=proposer.public_key,
        body_hash=compute_body_hash(body),
        state_root=result.state.root,
        time_ms=state.tip_time_ms + BLOCK_SPACING_MS,
    )
    return Block(header, body)


def rebuild_header(block: Block, **changes: object) -> Block:
    """The block with header fields replaced (the body hash follows the body unless given)."""
    header = dataclasses.replace(block.header, **changes)  # type: ignore[arg-type]
    return Block(header, block.body)


def advance(state: LedgerState, parts: BodyParts | None = None, work: FakeOracle | None = None) -> LedgerState:
    """Apply an honestly built next block and return the post-state."""
    block = build_block(state, parts, work=work)
    return apply_block(state, block, work).state


def state_contents(state: LedgerState) -> tuple[object, ...]:
    """Everything a state holds, for "the input was not changed" checks beyond the root."""
    return (
        state.chain_id,
        state.height,
        state.tip_hash,
        state.params,
        dict(state.accounts),
        dict(state.records),
        dict(state.jobs),
        state.last_validators,
        state.root,
    )


def validator_set(powers: Sequence[int], *, offset: int = 0) -> tuple[ValidatorSet, list[Keypair]]:
    """A validator set of test keys ``offset, offset + 1, ...`` with the given powers."""
    kps = [keypair(offset + i) for i in range(len(powers))]
    vs = ValidatorSet.of((kp.public_key, p) for kp, p in zip(kps, powers, strict=True))
    return vs, kps


__all__ = [
    "AUTO",
    "CHAIN_ID",
    "CLIENT",
    "OUTSIDER",
    "PARAMS",
    "PROFILE",
    "TRAINERS",
    "VALIDATORS",
    "BodyParts",
    "FakeOracle",
    "advance",
    "assert_invalid",
    "build_block",
    "checkers_of",
    "compute_block_hash",
    "genesis_state",
    "get_proposer",
    "keypair",
    "keypair_of",
    "make_commit",
    "make_equivocation",
    "make_fraud",
    "make_genesis",
    "make_job_spec",
    "make_outcome",
    "make_submission",
    "make_verdict_by",
    "passing_verdicts",
    "rebuild_header",
    "sign_tx",
    "state_contents",
    "state_with_job",
    "submit_job_tx",
    "validator_set",
    "with_body",
]


def submit_job_tx(
    spec: JobSpec, oracle: FakeOracle, *, budget: int = 10_000, nonce: int = 0, signer: int = CLIENT
) -> SignedTransaction:
    return sign_tx(keypair(signer), nonce, SubmitJob(spec, Amount(budget), oracle.initial_model_root(spec)))


def state_with_job(
    spec: JobSpec | None = None, oracle: FakeOracle | None = None, *, budget: int = 10_000, **genesis: object
) -> tuple[LedgerState, JobState]:
    """The state after block 1, which submits one job; and that job."""
    work = oracle or FakeOracle()
    job_spec = spec or make_job_spec()
    state = advance(genesis_state(work, **genesis), BodyParts(transactions=(submit_job_tx(job_spec, work, budget=budget),)), work)
    (job,) = state.jobs.values()
    return state, job


def with_body(block: Block, **changes: object) -> Block:
    """The block with body fields replaced and the header's body hash following them.

    The state root is left as it was: blocks made this way are meant to fail
    before the root is compared (or to show that the root comparison catches them).
    """
    body = dataclasses.replace(block.body, **changes)  # type: ignore[arg-type]
    return Block(dataclasses.replace(block.header, body_hash=compute_body_hash(body)), body)


def assert_invalid(state: LedgerState, block: Block, work: FakeOracle | None, match: str) -> None:
    """``apply_block`` refuses ``block`` with a message matching ``match`` and leaves ``state`` as it was."""
    before = state_contents(state)
    with pytest.raises(InvalidBlock, match=match):
        apply_block(state, block, work)
    assert state_contents(state) == before
