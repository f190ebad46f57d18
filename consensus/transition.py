"""The block state transition: ``apply_block(state, block, work) -> BlockResult``.

A block is applied in a fixed order: transactions, evidence, work
submissions with their verdicts, completed steps (aggregation), then shard
deadlines. Any broken rule raises ``InvalidBlock`` and the input state is
left untouched, because all changes are made on a copy that is returned only
when the whole block is valid.

``work`` is the oracle that recomputes model roots and re-checks failure
claims. Passing ``None`` trusts the block's claims instead; that is only
sound for a block whose commit certificate the caller has verified.

This module must never perform I/O or read a clock; it is the protocol's
rules as pure functions.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from consensus import crypto
from consensus.codec import EncodeError, encode
from consensus.errors import FaultKind, ProtocolError
from consensus.state import (
    LedgerState,
    get_trainers,
    get_validator_set,
    is_trainer,
)
from consensus.types import (
    JOB_ACTIVE,
    JOB_DONE,
    JOB_STALLED,
    PRECOMMIT,
    ROLE_TRAINER,
    ROLE_VALIDATOR,
    Account,
    Address,
    Amount,
    Block,
    BlockBody,
    BlockHeader,
    CommitCertificate,
    Equivocation,
    FalsePass,
    FalseVerdict,
    Genesis,
    Hash32,
    Height,
    JobSpec,
    JobState,
    PublicKey,
    RegisterNode,
    SignedTransaction,
    SignedVerdict,
    StepOutcome,
    SubmitJob,
    Transaction,
    Transfer,
    Vote,
    WorkFraud,
)
from consensus.validators import ValidatorSet
from consensus.work import (
    InvalidWork,
    WorkOracle,
    WorkRejected,
    compute_assignment,
    compute_checker_slots,
    compute_reassignment,
    submission_id,
    validate_submission,
    validate_verdict,
)

SUPPORTED_TASKS = ("classification", "char_lm")
MAX_MISSED_STREAK = 10
SUPPORTED_OPTIMIZERS = ("sgd", "adamw")
SUPPORTED_SCHEDULES = ("constant", "linear")
_DECIMAL = re.compile(r"^\d{1,12}(\.\d{1,16})?([eE]-?\d{1,3})?$")


class InvalidBlock(ProtocolError):
    """The block breaks a protocol rule; the message says which, the kind how bad it is."""


class InvalidTransaction(InvalidBlock):
    """One transaction breaks a rule (raised by ``apply_transaction``)."""


class InvalidCommit(InvalidBlock):
    """A commit certificate does not certify what it claims."""


@dataclass(frozen=True, slots=True)
class BlockResult:
    state: LedgerState
    completed: tuple[StepOutcome, ...]


@dataclass(frozen=True, slots=True)
class BlockContext:
    """What the transition needs of a header besides the body."""

    chain_id: str
    height: Height
    parent_hash: Hash32
    proposer: PublicKey


def compute_block_hash(header: BlockHeader) -> Hash32:
    return crypto.hash_value(header)


def compute_body_hash(body: BlockBody) -> Hash32:
    return crypto.hash_value(body)


def compute_job_id(tx: Transaction) -> Hash32:
    return crypto.hash_value(tx)


# ---------------------------------------------------------------------------
# Genesis


def make_genesis_state(genesis: Genesis, work: WorkOracle | None) -> LedgerState:
    """The state at height 0: balances, registered nodes, then the genesis transactions."""
    state = LedgerState(
        chain_id=genesis.chain_id,
        height=Height(0),
        tip_hash=compute_genesis_hash(genesis),
        params=genesis.params,
    )
    for entry in genesis.balances:
        acct = state.get_account(entry.address)
        state.accounts[entry.address] = dataclasses.replace(acct, balance=Amount(acct.balance + entry.balance))
    for node in genesis.nodes:
        addr = crypto.address_of(node.public_key)
        acct = state.get_account(addr)
        state.accounts[addr] = dataclasses.replace(
            acct, stake=Amount(acct.stake + node.stake), roles=node.roles, public_key=node.public_key, endpoint=node.endpoint
        )
    ctx = BlockContext(genesis.chain_id, Height(0), state.tip_hash, PublicKey(bytes(32)))
    for tx in genesis.transactions:
        _apply_transaction(state, ctx, tx, work)
    return dataclasses.replace(state, last_validators=get_validator_set(state).entries)


def compute_genesis_hash(genesis: Genesis) -> Hash32:
    return crypto.hash_value(genesis)


# ---------------------------------------------------------------------------
# Blocks


def apply_block(state: LedgerState, block: Block, work: WorkOracle | None) -> BlockResult:
    """Validate ``block`` against ``state`` and return the state after it."""
    header = block.header
    validators = get_validator_set(state)
    validate_header(state, header, validators)
    if compute_body_hash(block.body) != header.body_hash:
        raise InvalidBlock("body hash does not match the header")
    validate_last_commit(state, block)
    ctx = BlockContext(header.chain_id, header.height, header.parent_hash, header.proposer)
    result = apply_body(state, ctx, block.body, work)
    try:
        root = result.state.root
    except EncodeError as exc:  # a balance or counter pushed past its bound (e.g. u64)
        raise InvalidBlock(f"the block overflows a bounded field: {exc}") from exc
    if root != header.state_root:
        raise InvalidBlock("state root does not match the result of executing the block")
    final = dataclasses.replace(result.state, tip_hash=compute_block_hash(header))
    return BlockResult(final, result.completed)


def validate_header(state: LedgerState, header: BlockHeader, validators: ValidatorSet) -> None:
    if header.chain_id != state.chain_id:
        raise InvalidBlock(f"chain id {header.chain_id!r} is not {state.chain_id!r}")
    if header.height != state.height + 1:
        raise InvalidBlock(f"height {header.height} does not follow {state.height}")
    if header.parent_hash != state.tip_hash:
        raise InvalidBlock("parent hash is not the hash of the last block")
    if not validators.entries:
        raise InvalidBlock("no validators")
    expected = validators.get_proposer(state.chain_id, header.height, header.round)
    if header.proposer != expected:
        raise InvalidBlock(f"proposer is not the one of height {header.height} round {header.round}")


def validate_last_commit(state: LedgerState, block: Block) -> None:
    cert = block.body.last_commit
    if state.height == 0:
        if cert is not None:
            raise InvalidBlock("the first block has no last commit")
        return
    if cert is None:
        raise InvalidBlock("missing the commit of the previous block")
    validate_commit(
        cert, ValidatorSet(state.last_validators), state.chain_id, Height(state.height), block.header.parent_hash
    )


def validate_commit(
    cert: CommitCertificate, validators: ValidatorSet, chain_id: str, height: Height, block_hash: Hash32
) -> None:
    """Raise ``InvalidCommit`` unless ``cert`` holds a quorum of precommits for ``block_hash``."""
    if cert.height != height or cert.block_hash != block_hash:
        raise InvalidCommit("commit is for another block")
    seen: set[bytes] = set()
    for sig in cert.signatures:
        if sig.validator in seen:
            raise InvalidCommit("a validator signs a commit twice")
        if sig.validator not in validators:
            raise InvalidCommit("commit signed by a non-validator")
        vote = Vote(PRECOMMIT, height, cert.round, block_hash, sig.validator)
        if not crypto.verify_value(sig.validator, crypto.DOMAIN_VOTE, chain_id, vote, sig.signature):
            raise InvalidCommit("bad precommit signature in commit", FaultKind.BAD_SIGNATURE)
        seen.add(sig.validator)
    if not validators.is_quorum(validators.power_of_all(seen)):
        raise InvalidCommit("commit lacks more than two thirds of the voting power")


def _due_jobs(state: LedgerState) -> list[Hash32]:
    return [
        j for j in sorted(state.jobs)
        if state.jobs[j].status == JOB_ACTIVE and state.jobs[j].accepted and all(state.jobs[j].accepted)
    ]


def apply_body(
    state: LedgerState, ctx: BlockContext, body: BlockBody, work: WorkOracle | None, *, propose: bool = False
) -> BlockResult:
    """Execute a block body on a copy of ``state``; used to validate and to build blocks.

    With ``propose`` the body's outcomes are ignored and computed instead
    (``BlockResult.completed``), which is how a proposer fills them in.
    """
    if propose and work is None:
        raise ValueError("a proposer needs the work oracle to compute outcomes")
    validators = get_validator_set(state)
    new = state.copy()
    for tx in body.transactions:
        _apply_transaction(new, ctx, tx, work)
    for ev in body.evidence:
        _apply_evidence(new, ctx, ev, validators, work)
    _apply_work(new, ctx, body, validators)
    completed = _complete_steps(new, ctx, None if propose else body.outcomes, work)
    _apply_deadlines(new, ctx)
    final = dataclasses.replace(new, height=ctx.height, last_validators=validators.entries)
    return BlockResult(final, completed)


# ---------------------------------------------------------------------------
# Transactions


def apply_transaction(state: LedgerState, ctx: BlockContext, tx: SignedTransaction, work: WorkOracle | None) -> LedgerState:
    """Apply one transaction to a copy of ``state`` (the mempool's admission check)."""
    new = state.copy()
    _apply_transaction(new, ctx, tx, work)
    return new


def _apply_transaction(
    state: LedgerState, ctx: BlockContext, signed: SignedTransaction, work: WorkOracle | None
) -> None:
    tx = signed.tx
    if not crypto.verify_value(tx.sender, crypto.DOMAIN_TX, state.chain_id, tx, signed.signature):
        raise InvalidTransaction("bad transaction signature", FaultKind.BAD_SIGNATURE)
    sender = crypto.address_of(tx.sender)
    acct = state.get_account(sender)
    if tx.nonce != acct.nonce:
        raise InvalidTransaction(f"nonce {tx.nonce} is not the account's next nonce {acct.nonce}", FaultKind.STALE)
    if acct.balance < tx.fee:
        raise InvalidTransaction("balance does not cover the fee")
    balance = acct.balance - tx.fee
    acct = dataclasses.replace(acct, balance=Amount(balance), nonce=acct.nonce + 1, public_key=tx.sender)
    payload = tx.payload
    if isinstance(payload, Transfer):
        if payload.amount > acct.balance:
            raise InvalidTransaction("balance does not cover the transfer")
        acct = dataclasses.replace(acct, balance=Amount(acct.balance - payload.amount))
        state.accounts[sender] = acct
        dest = state.get_account(payload.to)
        state.accounts[payload.to] = dataclasses.replace(dest, balance=Amount(dest.balance + payload.amount))
    elif isinstance(payload, RegisterNode):
        if acct.slashed:
            raise InvalidTransaction("a slashed account cannot register again")
        if payload.stake > acct.balance:
            raise InvalidTransaction("balance does not cover the stake")
        stake = acct.stake + payload.stake
        if payload.roles & ROLE_VALIDATOR and stake < state.params.min_validator_stake:
            raise InvalidTransaction("stake is below the validator minimum")
        if payload.roles & ROLE_TRAINER and stake < state.params.min_trainer_stake:
            raise InvalidTransaction("stake is below the trainer minimum")
        state.accounts[sender] = dataclasses.replace(
            acct,
            balance=Amount(acct.balance - payload.stake),
            stake=Amount(stake),
            roles=payload.roles,
            endpoint=payload.endpoint,
        )
    elif isinstance(payload, SubmitJob):
        try:
            validate_job_spec(payload.spec)
        except ValueError as exc:
            raise InvalidTransaction(f"invalid job: {exc}") from exc
        active = sum(1 for j in state.jobs.values() if j.status != JOB_DONE)
        if active >= state.params.max_jobs_active:
            raise InvalidTransaction("too many unfinished jobs")
        if payload.budget > acct.balance:
            raise InvalidTransaction("balance does not cover the job's budget")
        if work is not None:
            try:
                root = work.initial_model_root(payload.spec)
            except InvalidWork as exc:
                raise InvalidTransaction(f"invalid job: {exc}") from exc
            if root != payload.initial_model_root:
                raise InvalidTransaction("initial model root does not match the initialised model")
        state.accounts[sender] = dataclasses.replace(acct, balance=Amount(acct.balance - payload.budget))
        job_id = compute_job_id(tx)
        if job_id in state.jobs:
            raise InvalidTransaction("job already exists")
        job = JobState(
            job_id=job_id,
            spec=payload.spec,
            submitter=sender,
            status=JOB_ACTIVE,
            step=0,
            model_root=payload.initial_model_root,
            created_height=ctx.height,
            step_started_height=ctx.height,
            step_seed=ctx.parent_hash,
            assignment=(),
            deadlines=(),
            accepted=(),
            results=(),
            escrow=payload.budget,
            last_outcome=None,
            finished_height=Height(0),
        )
        state.jobs[job_id] = _start_step(state, job, ctx)
    else:  # pragma: no cover - the codec admits no other payload
        raise InvalidTransaction(f"unknown payload {type(payload).__name__}")
    if tx.fee:
        proposer = crypto.address_of(ctx.proposer)
        dest = state.get_account(proposer)
        state.accounts[proposer] = dataclasses.replace(dest, balance=Amount(dest.balance + tx.fee))


def validate_job_spec(spec: JobSpec) -> None:
    """Structural rules of a job; the executor checks the model and dataset."""
    if spec.task not in SUPPORTED_TASKS:
        raise ValueError(f"task must be one of {SUPPORTED_TASKS}")
    if spec.loss != "cross_entropy":
        raise ValueError("loss must be cross_entropy")
    if spec.global_batch % spec.shards:
        raise ValueError("global_batch must be a multiple of shards")
    if spec.task == "char_lm" and spec.seq_len < 1:
        raise ValueError("a char_lm job needs seq_len >= 1")
    if spec.verification.checked_steps > spec.inner_steps:
        raise ValueError("checked_steps cannot exceed inner_steps")
    if (spec.inner_steps > 1) != (spec.outer_optimizer is not None):
        raise ValueError("an outer optimizer is required exactly when inner_steps > 1")
    for opt in (spec.optimizer, spec.outer_optimizer):
        if opt is None:
            continue
        if opt.name not in SUPPORTED_OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {SUPPORTED_OPTIMIZERS}")
        _validate_args([(p.name, p.value) for p in opt.params], decimal=True)
    if spec.schedule.name not in SUPPORTED_SCHEDULES:
        raise ValueError(f"schedule must be one of {SUPPORTED_SCHEDULES}")
    if not _DECIMAL.match(spec.schedule.final_fraction):
        raise ValueError("schedule.final_fraction is not a decimal")
    if not _DECIMAL.match(spec.verification.tolerance):
        raise ValueError("verification.tolerance is not a decimal")
    _validate_args([(a.name, str(a.value)) for a in spec.model.args], decimal=False)
    if spec.profile.dtype not in ("float32", "float64"):
        raise ValueError("profile dtype must be float32 or float64")
    if spec.profile.device not in ("cpu", "cuda"):
        raise ValueError("profile device must be cpu or cuda")


def _validate_args(pairs: list[tuple[str, str]], *, decimal: bool) -> None:
    names = [n for n, _ in pairs]
    if names != sorted(set(names)):
        raise ValueError("arguments must be sorted by name and unique")
    if decimal:
        for name, value in pairs:
            if not _DECIMAL.match(value):
                raise ValueError(f"{name}={value!r} is not a decimal")


# ---------------------------------------------------------------------------
# Jobs: steps, assignment, deadlines


def _start_step(state: LedgerState, job: JobState, ctx: BlockContext) -> JobState:
    trainers = get_trainers(state, ctx.height)
    k = job.spec.shards
    if not trainers:
        return dataclasses.replace(
            job, status=JOB_STALLED, assignment=(), deadlines=(), accepted=(), results=(), step_seed=ctx.parent_hash
        )
    deadline = Height(ctx.height + job.spec.verification.unit_timeout_blocks)
    return dataclasses.replace(
        job,
        status=JOB_ACTIVE,
        step_started_height=ctx.height,
        step_seed=ctx.parent_hash,
        assignment=compute_assignment(ctx.parent_hash, job.job_id, job.step, k, trainers),
        deadlines=(deadline,) * k,
        accepted=(None,) * k,
        results=(None,) * k,
    )


def _reassign(state: LedgerState, job: JobState, shard: int, ctx: BlockContext, *, timed_out: bool) -> JobState:
    old = job.assignment[shard]
    rec = state.get_record(old)
    if timed_out:
        streak = min(rec.missed_streak + 1, MAX_MISSED_STREAK)
        bench = job.spec.verification.unit_timeout_blocks * (1 << streak)
        rec = dataclasses.replace(rec, missed_streak=streak, benched_until=Height(ctx.height + bench))
    state.records[old] = dataclasses.replace(rec, units_reassigned=rec.units_reassigned + 1)
    eligible = get_trainers(state, ctx.height)
    new_holder = compute_reassignment(job.assignment, shard, eligible, job.step_seed)
    if new_holder is None:
        return dataclasses.replace(job, status=JOB_STALLED)
    assignment = list(job.assignment)
    assignment[shard] = new_holder
    deadlines = list(job.deadlines)
    deadlines[shard] = Height(ctx.height + job.spec.verification.unit_timeout_blocks)
    return dataclasses.replace(job, assignment=tuple(assignment), deadlines=tuple(deadlines))


def _apply_deadlines(state: LedgerState, ctx: BlockContext) -> None:
    for job_id in sorted(state.jobs):
        job = state.jobs[job_id]
        if job.status == JOB_STALLED:
            if get_trainers(state, ctx.height):
                state.jobs[job_id] = _start_step(state, job, ctx)
            continue
        if job.status != JOB_ACTIVE:
            continue
        for shard in range(job.spec.shards):
            if job.accepted[shard] is None and job.deadlines[shard] <= ctx.height:
                job = _reassign(state, job, shard, ctx, timed_out=True)
                if job.status == JOB_STALLED:
                    break
        state.jobs[job_id] = job


def _reassign_trainer(state: LedgerState, trainer: Address, ctx: BlockContext) -> None:
    """Move every unfinished shard of a trainer that is no longer eligible."""
    for job_id in sorted(state.jobs):
        job = state.jobs[job_id]
        if job.status != JOB_ACTIVE:
            continue
        for shard in range(job.spec.shards):
            if job.assignment[shard] == trainer and job.accepted[shard] is None:
                job = _reassign(state, job, shard, ctx, timed_out=False)
                if job.status == JOB_STALLED:
                    break
        state.jobs[job_id] = job


def _pay(state: LedgerState, job_id: Hash32, to: Address, amount: int) -> None:
    job = state.jobs[job_id]
    paid = min(amount, job.escrow)
    if paid <= 0:
        return
    state.jobs[job_id] = dataclasses.replace(job, escrow=Amount(job.escrow - paid))
    acct = state.get_account(to)
    state.accounts[to] = dataclasses.replace(acct, balance=Amount(acct.balance + paid))
    rec = state.get_record(to)
    state.records[to] = dataclasses.replace(rec, rewards=Amount(rec.rewards + paid))


# ---------------------------------------------------------------------------
# Work submissions and verdicts


def _apply_work(state: LedgerState, ctx: BlockContext, body: BlockBody, validators: ValidatorSet) -> None:
    verdicts: dict[bytes, list[SignedVerdict]] = {}
    for sv in body.verdicts:
        verdicts.setdefault(sv.verdict.submission_id, []).append(sv)
    used: set[bytes] = set()
    for signed in body.submissions:
        sub = signed.submission
        job = state.jobs.get(sub.job)
        if job is None or job.status != JOB_ACTIVE:
            raise InvalidBlock("submission for a job that is not active")
        try:
            validate_submission(state.chain_id, job, signed)
        except WorkRejected as exc:
            raise InvalidBlock(f"submission rejected: {exc}") from exc
        sid = submission_id(sub)
        slots = compute_checker_slots(job, sub.shard, sub.trainer, validators)
        need = slots.need
        signers: list[bytes] = []
        for sv in verdicts.get(sid, []):
            try:
                validate_verdict(state.chain_id, job, sub, sv, validators, designated=slots.allowed)
            except WorkRejected as exc:
                raise InvalidBlock(f"verdict rejected: {exc}") from exc
            if sv.verdict.failure:
                raise InvalidBlock("a failing verdict belongs in evidence, not beside an accepted unit")
            if sv.verdict.validator in signers:
                raise InvalidBlock("two verdicts by one validator on one unit")
            signers.append(sv.verdict.validator)
        if len(signers) < need:
            raise InvalidBlock(f"unit has {len(signers)} passing verdicts, needs {need}")
        used.add(sid)
        accepted = list(job.accepted)
        results = list(job.results)
        accepted[sub.shard] = sid
        results[sub.shard] = sub.result_digest
        state.jobs[sub.job] = dataclasses.replace(job, accepted=tuple(accepted), results=tuple(results))
        trainer = crypto.address_of(sub.trainer)
        rec = state.get_record(trainer)
        state.records[trainer] = dataclasses.replace(rec, units_accepted=rec.units_accepted + 1, missed_streak=0)
        _pay(state, sub.job, trainer, job.spec.reward_per_unit)
        for key in signers:
            addr = crypto.address_of(key)
            vrec = state.get_record(addr)
            state.records[addr] = dataclasses.replace(vrec, verdicts_signed=vrec.verdicts_signed + 1)
            _pay(state, sub.job, addr, job.spec.reward_per_verdict)
    if set(verdicts) - used:
        raise InvalidBlock("verdict for a submission the block does not include")


def _complete_steps(
    state: LedgerState, ctx: BlockContext, claimed: tuple[StepOutcome, ...] | None, work: WorkOracle | None
) -> tuple[StepOutcome, ...]:
    """Advance every job whose shards are all accepted; ``claimed=None`` computes the outcomes."""
    due = _due_jobs(state)
    if claimed is not None and (
        len(claimed) != len(due) or any(o.job != j for o, j in zip(claimed, due, strict=False))
    ):
        raise InvalidBlock("the block's step outcomes are not the steps it completes")
    outcomes: list[StepOutcome] = []
    for index, job_id in enumerate(due):
        job = state.jobs[job_id]
        outcome = claimed[index] if claimed is not None else None
        if outcome is not None and outcome.step != job.step:
            raise InvalidBlock("step outcome is for another step")
        if work is not None:
            results = tuple(r for r in job.results if r is not None)
            expected = work.step_outcome(job, results).outcome(job_id, job.step)
            if outcome is not None and expected != outcome:
                raise InvalidBlock(f"step outcome of job {job_id.hex()[:12]} does not match aggregation")
            outcome = expected
        assert outcome is not None
        outcomes.append(outcome)
        job = dataclasses.replace(job, step=job.step + 1, model_root=outcome.model_root, last_outcome=outcome)
        if job.step >= job.spec.steps:
            job = dataclasses.replace(
                job, status=JOB_DONE, finished_height=ctx.height, assignment=(), deadlines=(), accepted=(), results=()
            )
            state.jobs[job_id] = job
            if job.escrow:
                acct = state.get_account(job.submitter)
                state.accounts[job.submitter] = dataclasses.replace(acct, balance=Amount(acct.balance + job.escrow))
                state.jobs[job_id] = dataclasses.replace(job, escrow=Amount(0))
        else:
            state.jobs[job_id] = _start_step(state, job, ctx)
    return tuple(outcomes)


# ---------------------------------------------------------------------------
# Evidence and slashing


def _apply_evidence(
    state: LedgerState,
    ctx: BlockContext,
    ev: WorkFraud | FalseVerdict | FalsePass | Equivocation,
    validators: ValidatorSet,
    work: WorkOracle | None,
) -> None:
    if isinstance(ev, Equivocation):
        a, b = ev.vote_a.vote, ev.vote_b.vote
        if (a.validator, a.kind, a.height, a.round) != (b.validator, b.kind, b.height, b.round):
            raise InvalidBlock("equivocation votes differ in signer, kind, height or round")
        if a.block_hash == b.block_hash:
            raise InvalidBlock("equivocation votes are for the same block")
        if a.height > ctx.height:
            raise InvalidBlock("equivocation from the future")
        for sv in (ev.vote_a, ev.vote_b):
            if not crypto.verify_value(sv.vote.validator, crypto.DOMAIN_VOTE, state.chain_id, sv.vote, sv.signature):
                raise InvalidBlock("bad signature in equivocation evidence", FaultKind.BAD_SIGNATURE)
        _slash(state, crypto.address_of(a.validator), reporter=crypto.address_of(ctx.proposer), ctx=ctx)
        return
    sub = ev.submission.submission
    verdict = ev.verdict.verdict
    job = state.jobs.get(sub.job)
    if job is None or job.status != JOB_ACTIVE or sub.step != job.step:
        raise InvalidBlock("evidence about a unit of no step in progress")
    if not 0 <= sub.shard < job.spec.shards:
        raise InvalidBlock("evidence about a shard the job does not have")
    # A false pass is the validator's fault; its unit's trainer may already be slashed and replaced.
    if not isinstance(ev, FalsePass) and crypto.address_of(sub.trainer) != job.assignment[sub.shard]:
        raise InvalidBlock("evidence about a unit its trainer was not assigned")
    if not crypto.verify_value(sub.trainer, crypto.DOMAIN_WORK, state.chain_id, sub, ev.submission.signature):
        raise InvalidBlock("bad trainer signature in evidence", FaultKind.BAD_SIGNATURE)
    try:
        validate_verdict(state.chain_id, job, sub, ev.verdict, validators)
    except WorkRejected as exc:
        raise InvalidBlock(f"evidence verdict rejected: {exc}") from exc
    if isinstance(ev, FalsePass):
        if verdict.failure:
            raise InvalidBlock("false-pass evidence needs a passing verdict")
        if work is not None and not work.recheck_pass(job, sub, verdict):
            raise InvalidBlock("evidence does not re-check: the passed steps replay correctly")
        signer = crypto.address_of(verdict.validator)
        rec = state.get_record(signer)
        state.records[signer] = dataclasses.replace(rec, false_verdicts=rec.false_verdicts + 1)
        _slash(state, signer, reporter=crypto.address_of(ctx.proposer), ctx=ctx)
        return
    if not verdict.failure:
        raise InvalidBlock("evidence needs a failing verdict")
    if work is not None:
        upheld = work.recheck(job, sub, verdict)
        if upheld != isinstance(ev, WorkFraud):
            raise InvalidBlock("evidence does not re-check")
    trainer = crypto.address_of(sub.trainer)
    if isinstance(ev, WorkFraud):
        rec = state.get_record(trainer)
        state.records[trainer] = dataclasses.replace(rec, units_rejected=rec.units_rejected + 1)
        _slash(state, trainer, reporter=crypto.address_of(verdict.validator), ctx=ctx)
    else:
        signer = crypto.address_of(verdict.validator)
        rec = state.get_record(signer)
        state.records[signer] = dataclasses.replace(rec, false_verdicts=rec.false_verdicts + 1)
        _slash(state, signer, reporter=trainer, ctx=ctx)


def _slash(state: LedgerState, offender: Address, *, reporter: Address, ctx: BlockContext) -> None:
    acct = state.get_account(offender)
    if acct.slashed:
        raise InvalidBlock("evidence against an account already slashed")
    was_trainer = is_trainer(state.params, acct)
    penalty = acct.stake * state.params.slash_fraction_bps // 10_000
    reward = penalty * state.params.reporter_reward_bps // 10_000
    state.accounts[offender] = Account(
        balance=Amount(acct.balance + acct.stake - penalty),
        nonce=acct.nonce,
        stake=Amount(0),
        roles=0,
        public_key=acct.public_key,
        endpoint=acct.endpoint,
        slashed=True,
    )
    rec = state.get_record(offender)
    state.records[offender] = dataclasses.replace(rec, times_slashed=rec.times_slashed + 1)
    if reward and reporter != offender:
        dest = state.get_account(reporter)
        state.accounts[reporter] = dataclasses.replace(dest, balance=Amount(dest.balance + reward))
        rrec = state.get_record(reporter)
        state.records[reporter] = dataclasses.replace(rrec, rewards=Amount(rrec.rewards + reward))
    if was_trainer:
        _reassign_trainer(state, offender, ctx)


def encode_block(block: Block) -> bytes:
    return encode(block)
