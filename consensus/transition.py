"""The block state transition: ``apply_block(state, block, work) -> BlockResult``.

A block is checked (header, body hash, the last block's commit) and its
body applied in a fixed order on a ``LedgerDraft`` of the state: each
transaction (``process_transaction``, which hands its payload to one
``process_*`` function), each piece of evidence (``evidence.py``), the work
units with their verdicts, the completed steps and the shard deadlines
(``jobs.py``). Any broken rule raises ``InvalidBlock``; the draft is then
dropped and the input state, which is immutable, is untouched.

``work`` is the oracle that recomputes model roots and re-checks failure
claims. Passing ``None`` trusts the block's claims instead; that is only
sound for a block whose commit certificate the caller has verified.

This module must never perform I/O or read a clock; it is the protocol's
rules as pure functions.
"""

from __future__ import annotations

import dataclasses
import math
import re
import struct
from dataclasses import dataclass

from consensus import crypto
from consensus.codec import EncodeError, encode
from consensus.errors import FaultKind, InvalidBlock, InvalidCommit, InvalidTransaction
from consensus.evidence import process_evidence
from consensus.jobs import process_completed_steps, process_deadlines, process_units, start_step
from consensus.pipeline import pipeline_spec_problem
from consensus.state import BlockContext, LedgerDraft, LedgerState, get_validator_set
from consensus.types import (
    JOB_ACTIVE,
    JOB_DONE,
    MAX_KEY_SHARES,
    PRECOMMIT,
    PREPROCESS_STANDARDIZE,
    ROLE_TRAINER,
    ROLE_VALIDATOR,
    SEALED_KEY_BYTES,
    Account,
    Address,
    Amount,
    Block,
    BlockBody,
    BlockHeader,
    CommitCertificate,
    Genesis,
    Hash32,
    Height,
    JobSpec,
    JobState,
    Preprocessing,
    PublicKey,
    RegisterNode,
    ShareDataKey,
    SignedTransaction,
    StepOutcome,
    SubmitJob,
    Transaction,
    Transfer,
    Vote,
)
from consensus.validators import ValidatorSet
from consensus.work import InvalidWork, WorkOracle

__all__ = [
    "BlockContext",
    "BlockResult",
    "InvalidBlock",
    "InvalidCommit",
    "InvalidTransaction",
    "apply_block",
    "apply_body",
    "apply_transaction",
    "compute_block_hash",
    "compute_body_hash",
    "compute_genesis_hash",
    "compute_job_id",
    "make_genesis_state",
    "validate_commit",
    "validate_header",
    "validate_job_spec",
    "validate_last_commit",
]

SUPPORTED_TASKS = ("classification", "char_lm")
SUPPORTED_OPTIMIZERS = ("sgd", "adamw")
SUPPORTED_SCHEDULES = ("constant", "linear")
_DECIMAL = re.compile(r"^\d{1,12}(\.\d{1,16})?([eE]-?\d{1,3})?$")


@dataclass(frozen=True, slots=True)
class BlockResult:
    """The state after a block and the step outcomes it computed."""

    state: LedgerState
    completed: tuple[StepOutcome, ...]


def compute_block_hash(header: BlockHeader) -> Hash32:
    return crypto.hash_value(header)


def compute_body_hash(body: BlockBody) -> Hash32:
    return crypto.hash_value(body)


def compute_job_id(tx: Transaction) -> Hash32:
    return crypto.hash_value(tx)


def compute_genesis_hash(genesis: Genesis) -> Hash32:
    return crypto.hash_value(genesis)


# ---------------------------------------------------------------------------
# Genesis


def make_genesis_state(genesis: Genesis, work: WorkOracle | None) -> LedgerState:
    """The state at height 0: balances, registered nodes, then the genesis transactions."""
    state = LedgerState(
        chain_id=genesis.chain_id,
        height=Height(0),
        tip_hash=compute_genesis_hash(genesis),
        params=genesis.params,
    ).draft()
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
        process_transaction(state, ctx, tx, work)
    return state.freeze(last_validators=get_validator_set(state).entries)


# ---------------------------------------------------------------------------
# Blocks


def apply_block(state: LedgerState, block: Block, work: WorkOracle | None) -> BlockResult:
    """Validate ``block`` against ``state`` and return the state after it."""
    header = block.header
    validate_header(state, header, get_validator_set(state))
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
    final = dataclasses.replace(result.state, tip_hash=compute_block_hash(header), tip_time_ms=header.time_ms)
    return BlockResult(final, result.completed)


def validate_header(state: LedgerState, header: BlockHeader, validators: ValidatorSet) -> None:
    if header.chain_id != state.chain_id:
        raise InvalidBlock(f"chain id {header.chain_id!r} is not {state.chain_id!r}")
    if header.height != state.height + 1:
        raise InvalidBlock(f"height {header.height} does not follow {state.height}", FaultKind.STALE)
    if header.parent_hash != state.tip_hash:
        raise InvalidBlock("parent hash is not the hash of the last block")
    # Only monotonicity is a rule of the chain; whether the time is close to
    # now is each validator's own, clock-dependent, judgement (decision 26).
    if header.time_ms <= state.tip_time_ms:
        raise InvalidBlock(f"block time {header.time_ms} does not follow the parent's {state.tip_time_ms}")
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


def apply_body(
    state: LedgerState, ctx: BlockContext, body: BlockBody, work: WorkOracle | None, *, propose: bool = False
) -> BlockResult:
    """Execute a block body on a draft of ``state``; used to validate and to build blocks.

    With ``propose`` the body's outcomes are ignored and computed instead
    (``BlockResult.completed``), which is how a proposer fills them in.
    """
    if propose and work is None:
        raise ValueError("a proposer needs the work oracle to compute outcomes")
    validators = get_validator_set(state)
    draft = state.draft()
    for tx in body.transactions:
        process_transaction(draft, ctx, tx, work)
    for ev in body.evidence:
        process_evidence(draft, ctx, ev, validators, work)
    process_units(draft, body, validators, ctx.height)
    completed = process_completed_steps(draft, ctx, None if propose else body.outcomes, work)
    process_deadlines(draft, ctx)
    return BlockResult(draft.freeze(height=ctx.height, last_validators=validators.entries), completed)


# ---------------------------------------------------------------------------
# Transactions


def apply_transaction(state: LedgerState, ctx: BlockContext, tx: SignedTransaction, work: WorkOracle | None) -> LedgerState:
    """The state after one transaction (the mempool's admission check); ``state`` is untouched."""
    draft = state.draft()
    process_transaction(draft, ctx, tx, work)
    return draft.freeze()


def process_transaction(state: LedgerDraft, ctx: BlockContext, signed: SignedTransaction, work: WorkOracle | None) -> None:
    """Check the signature, nonce and fee, then hand the payload to its ``process_*`` function."""
    tx = signed.tx
    if not crypto.verify_value(tx.sender, crypto.DOMAIN_TX, state.chain_id, tx, signed.signature):
        raise InvalidTransaction("bad transaction signature", FaultKind.BAD_SIGNATURE)
    sender = crypto.address_of(tx.sender)
    acct = state.get_account(sender)
    if tx.nonce != acct.nonce:
        raise InvalidTransaction(f"nonce {tx.nonce} is not the account's next nonce {acct.nonce}", FaultKind.STALE)
    if acct.balance < tx.fee:
        raise InvalidTransaction("balance does not cover the fee")
    acct = dataclasses.replace(acct, balance=Amount(acct.balance - tx.fee), nonce=acct.nonce + 1, public_key=tx.sender)
    payload = tx.payload
    match payload:
        case Transfer():
            process_transfer(state, sender, acct, payload)
        case RegisterNode():
            process_register_node(state, sender, acct, payload)
        case SubmitJob():
            process_submit_job(state, ctx, tx, sender, acct, payload, work)
        case ShareDataKey():
            state.accounts[sender] = acct
            process_share_data_key(state, tx.sender, payload)
        case _:  # pragma: no cover - the codec admits no other payload
            raise InvalidTransaction(f"unknown payload {type(payload).__name__}")
    if tx.fee:
        proposer = crypto.address_of(ctx.proposer)
        dest = state.get_account(proposer)
        state.accounts[proposer] = dataclasses.replace(dest, balance=Amount(dest.balance + tx.fee))


def process_transfer(state: LedgerDraft, sender: Address, acct: Account, payload: Transfer) -> None:
    if payload.amount > acct.balance:
        raise InvalidTransaction("balance does not cover the transfer")
    state.accounts[sender] = dataclasses.replace(acct, balance=Amount(acct.balance - payload.amount))
    dest = state.get_account(payload.to)
    state.accounts[payload.to] = dataclasses.replace(dest, balance=Amount(dest.balance + payload.amount))


def process_register_node(state: LedgerDraft, sender: Address, acct: Account, payload: RegisterNode) -> None:
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


def process_submit_job(
    state: LedgerDraft,
    ctx: BlockContext,
    tx: Transaction,
    sender: Address,
    acct: Account,
    payload: SubmitJob,
    work: WorkOracle | None,
) -> None:
    try:
        validate_job_spec(payload.spec)
    except ValueError as exc:
        raise InvalidTransaction(f"invalid job: {exc}") from exc
    active = sum(1 for j in state.jobs.values() if j.status != JOB_DONE)
    if active >= state.params.max_jobs_active:
        raise InvalidTransaction("too many unfinished jobs")
    if payload.budget > acct.balance:
        raise InvalidTransaction("balance does not cover the job's budget")
    problem = key_shares_problem(payload)
    if problem is not None:
        raise InvalidTransaction(f"invalid job: {problem}")
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
        key_shares=payload.key_shares,
    )
    state.jobs[job_id] = start_step(state, job, ctx)


def key_shares_problem(payload: SubmitJob) -> str | None:
    """Why the job's key shares cannot stand (None when they can): a private job names each recipient once."""
    shares = payload.key_shares
    if not payload.spec.private:
        return "a public job carries no key shares" if shares else None
    if not shares:
        return "a private job seals its data key to at least one member"
    if len({s.recipient for s in shares}) != len(shares):
        return "a private job seals its data key to each member once"
    if any(len(s.sealed_key) != SEALED_KEY_BYTES for s in shares):
        return f"a key share is a {SEALED_KEY_BYTES}-byte sealed box"
    return None


def process_share_data_key(state: LedgerDraft, sender: PublicKey, payload: ShareDataKey) -> None:
    """A member adds shares of a private job's key for registered nodes that hold none (the job's later members)."""
    job = state.jobs.get(payload.job)
    if job is None or not job.spec.private:
        raise InvalidTransaction("no private job with that id")
    if job.status == JOB_DONE:
        raise InvalidTransaction("the job is done; its key needs no new members")
    members = {s.recipient for s in job.key_shares}
    if sender not in members:
        raise InvalidTransaction("only a member of the job may share its key")
    new = [s.recipient for s in payload.shares]
    if not new or len(set(new)) != len(new):
        raise InvalidTransaction("a key share names each new member once")
    if members & set(new):
        raise InvalidTransaction("a recipient already holds a share of the job's key")
    for share in payload.shares:
        acct = state.get_account(crypto.address_of(share.recipient))
        if acct.public_key != share.recipient or not acct.roles:
            raise InvalidTransaction("a key share goes to a registered node only")
        if len(share.sealed_key) != SEALED_KEY_BYTES:
            raise InvalidTransaction(f"a key share is a {SEALED_KEY_BYTES}-byte sealed box")
    if len(members) + len(new) > MAX_KEY_SHARES:
        raise InvalidTransaction("the job's key is shared with as many members as it may be")
    state.jobs[job.job_id] = dataclasses.replace(job, key_shares=(*job.key_shares, *payload.shares))


def validate_job_spec(spec: JobSpec) -> None:
    """Structural rules of a job; the executor checks the model and dataset."""
    if spec.task not in SUPPORTED_TASKS:
        raise ValueError(f"task must be one of {SUPPORTED_TASKS}")
    if spec.loss != "cross_entropy":
        raise ValueError("loss must be cross_entropy")
    if spec.global_batch % spec.shards:
        raise ValueError("global_batch must be a multiple of shards")
    problem = pipeline_spec_problem(spec)
    if problem is not None:
        raise ValueError(problem)
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
    if spec.preprocessing is not None:
        _validate_preprocessing(spec.preprocessing, spec.task)


def _validate_preprocessing(pre: Preprocessing, task: str) -> None:
    if pre.kind != PREPROCESS_STANDARDIZE:
        raise ValueError(f"preprocessing must be {PREPROCESS_STANDARDIZE!r}")
    if task != "classification":
        raise ValueError("only a classification job's features can be standardised")
    if not pre.mean or len(pre.mean) != len(pre.scale):
        raise ValueError("standardisation needs one mean and one scale per feature")
    means = struct.unpack(f"<{len(pre.mean)}d", struct.pack(f"<{len(pre.mean)}Q", *pre.mean))
    scales = struct.unpack(f"<{len(pre.scale)}d", struct.pack(f"<{len(pre.scale)}Q", *pre.scale))
    if not all(math.isfinite(m) for m in means) or not all(math.isfinite(s) and s > 0 for s in scales):
        raise ValueError("standardisation means must be finite and scales finite and positive")


def _validate_args(pairs: list[tuple[str, str]], *, decimal: bool) -> None:
    names = [n for n, _ in pairs]
    if names != sorted(set(names)):
        raise ValueError("arguments must be sorted by name and unique")
    if decimal:
        for name, value in pairs:
            if not _DECIMAL.match(value):
                raise ValueError(f"{name}={value!r} is not a decimal")


def encode_block(block: Block) -> bytes:
    return encode(block)
