"""The protocol's value types: transactions, jobs, work, evidence, blocks, votes, state.

Every type here is a frozen, slotted dataclass registered with the codec, so
its canonical bytes (and therefore its hash) are fixed by its declaration:
fields are encoded in the order written here. Changing a field's order, type
or bound changes the protocol; bump the message version when doing so.

This module must never hold behaviour beyond small derived properties: rules
live in ``transition``, ``work`` and ``tendermint``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, NewType

from consensus.codec import IntRange, MaxLen, message, register_scalar

Hash32 = NewType("Hash32", bytes)
Address = NewType("Address", bytes)
PublicKey = NewType("PublicKey", bytes)
Signature = NewType("Signature", bytes)
Height = NewType("Height", int)
Round = NewType("Round", int)
Amount = NewType("Amount", int)
Decimal = NewType("Decimal", str)
"""A non-negative decimal number written as text, e.g. ``"0.05"`` or ``"1e-8"``."""

register_scalar(Hash32, exact_len=32)
register_scalar(Address, exact_len=20)
register_scalar(PublicKey, exact_len=32)
register_scalar(Signature, exact_len=64)
register_scalar(Height, hi=2**63 - 1)
register_scalar(Round, hi=2**31 - 1)
register_scalar(Amount, hi=2**64 - 1)
register_scalar(Decimal, max_len=32)

ZERO_HASH = Hash32(bytes(32))

ROLE_TRAINER = 1
ROLE_VALIDATOR = 2
ROLES_ALL = ROLE_TRAINER | ROLE_VALIDATOR

MAX_BLOCK_TXS = 4096
MAX_UNITS_PER_BLOCK = 1024
MAX_INNER_STEPS = 256
MAX_SHARDS = 256
MAX_VALIDATORS = 256
MAX_STAGES = 128
MAX_KEY_SHARES = 512
"""A private job's data key is sealed to at most this many members (validators plus trainers)."""
SEALED_KEY_BYTES = 80
"""A 32-byte data key in a libsodium sealed box (32-byte ephemeral key, 16-byte tag)."""

# ---------------------------------------------------------------------------
# Job specification


@message(10)
@dataclass(frozen=True, slots=True)
class IntArg:
    """One named integer argument (model sizes and the like)."""

    name: Annotated[str, MaxLen(32)]
    value: int


@message(11)
@dataclass(frozen=True, slots=True)
class DecimalArg:
    """One named real-valued hyperparameter, kept as exact decimal text."""

    name: Annotated[str, MaxLen(32)]
    value: Decimal


@message(12)
@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A model from the vetted registry: a name and integer arguments, never code."""

    name: Annotated[str, MaxLen(32)]
    args: Annotated[tuple[IntArg, ...], MaxLen(32)]


@message(13)
@dataclass(frozen=True, slots=True)
class OptimizerSpec:
    """An optimizer by name (``sgd`` or ``adamw``) with its hyperparameters."""

    name: Annotated[str, MaxLen(16)]
    params: Annotated[tuple[DecimalArg, ...], MaxLen(16)]


@message(14)
@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """Learning-rate schedule: ``constant``, or ``linear`` warm-up then linear decay."""

    name: Annotated[str, MaxLen(16)]
    warmup_steps: int
    final_fraction: Decimal


@message(15)
@dataclass(frozen=True, slots=True)
class ExecutionProfile:
    """Everything that changes the bits of a result; equal profiles give equal bits."""

    dtype: Annotated[str, MaxLen(16)]
    threads: Annotated[int, IntRange(1, 1024)]
    deterministic: bool
    device: Annotated[str, MaxLen(16)]
    torch_version: Annotated[str, MaxLen(64)]


@message(16)
@dataclass(frozen=True, slots=True)
class VerificationPolicy:
    """How a job's work units are checked.

    ``checked_steps`` of the unit's inner steps are replayed by each of
    ``checkers_per_unit`` validators (0 means f+1 of the validator set, enough
    that at least one checker is honest). ``tolerance`` is ``"0"`` for a
    bit-exact comparison; otherwise the relative distance allowed between a
    trainer's and a validator's result when their profiles differ.
    A shard not submitted within ``unit_timeout_blocks`` heights is reassigned.
    """

    checked_steps: Annotated[int, IntRange(1, MAX_INNER_STEPS)]
    checkers_per_unit: Annotated[int, IntRange(0, MAX_VALIDATORS)]
    tolerance: Decimal
    unit_timeout_blocks: Annotated[int, IntRange(1, 1_000_000)]


MAX_FEATURES = 1 << 16
PREPROCESS_STANDARDIZE = "standardize"


@message(18)
@dataclass(frozen=True, slots=True)
class Preprocessing:
    """What the submitter did to the raw features before building the dataset blob.

    ``standardize``: feature ``j`` became ``(x_j - mean[j]) / scale[j]``,
    computed in float64 and then cast to the dataset's dtype, with the
    statistics fitted on the training split only. ``mean`` and ``scale`` are
    float64 IEEE-754 bit patterns, so the record is exact. Nodes train on the
    blob as it is; the record travels with the job so an exported model can
    apply the same transform to raw input (``docs/decisions.md``, decision 22).
    """

    kind: Annotated[str, MaxLen(16)]
    mean: Annotated[tuple[Annotated[int, IntRange(0, 2**64 - 1)], ...], MaxLen(MAX_FEATURES)]
    scale: Annotated[tuple[Annotated[int, IntRange(0, 2**64 - 1)], ...], MaxLen(MAX_FEATURES)]


@message(19)
@dataclass(frozen=True, slots=True)
class PipelineSpec:
    """How a pipeline job splits its model: contiguous layer ranges, one per stage.

    Stage ``s`` holds layers ``layer_bounds[s]`` up to (not including)
    ``layer_bounds[s + 1]`` of the registry model's layer sequence, so
    ``layer_bounds`` runs from 0 to the model's layer count, strictly
    increasing, and S = ``len(layer_bounds) - 1``. A shard's batch goes
    through every stage in ``micro_batches`` equal micro-batches, whose
    gradients each stage accumulates in micro-batch order
    (``consensus.pipeline``).
    """

    layer_bounds: Annotated[tuple[Annotated[int, IntRange(0, 1 << 16)], ...], MaxLen(MAX_STAGES + 1)]
    micro_batches: Annotated[int, IntRange(1, 1 << 16)]


@message(17, version=4)
@dataclass(frozen=True, slots=True)
class JobSpec:
    """A training job: what to train, on what, how, and how its work is checked and paid.

    With ``inner_steps`` H = 1 a work unit returns the gradient of its shard
    and ``optimizer`` is applied to the shard-ordered mean. With H > 1 a unit
    runs H steps of ``optimizer`` (fresh state each unit) and returns the
    parameter delta; ``outer_optimizer`` is applied to the mean delta.
    ``preprocessing`` records the transform the dataset's features went
    through (None: none), for whoever uses the trained model on raw input.
    Version 2 added it. ``pipeline`` splits the model into stages trained
    by different trainers (None: every unit trains the whole model); version
    3 added it. ``private``: the dataset blob is a sealed envelope whose key
    only the job's key shares open (``SubmitJob.key_shares``); version 4
    added it.
    """

    name: Annotated[str, MaxLen(64)]
    task: Annotated[str, MaxLen(16)]
    model: ModelSpec
    dataset: Hash32
    seq_len: Annotated[int, IntRange(0, 4096)]
    loss: Annotated[str, MaxLen(16)]
    optimizer: OptimizerSpec
    outer_optimizer: OptimizerSpec | None
    schedule: ScheduleSpec
    global_batch: Annotated[int, IntRange(1, 1 << 20)]
    shards: Annotated[int, IntRange(1, MAX_SHARDS)]
    inner_steps: Annotated[int, IntRange(1, MAX_INNER_STEPS)]
    steps: Annotated[int, IntRange(1, 10_000_000)]
    seed: int
    eval_every: Annotated[int, IntRange(0, 10_000_000)]
    profile: ExecutionProfile
    verification: VerificationPolicy
    reward_per_unit: Amount
    reward_per_verdict: Amount
    preprocessing: Preprocessing | None = None
    pipeline: PipelineSpec | None = None
    private: bool = False


# ---------------------------------------------------------------------------
# Transactions


@message(1)
@dataclass(frozen=True, slots=True)
class Transfer:
    to: Address
    amount: Amount


@message(2)
@dataclass(frozen=True, slots=True)
class RegisterNode:
    """Register (or top up) the sender as a node: bond ``stake`` and set its roles."""

    stake: Amount
    roles: Annotated[int, IntRange(0, 3)]
    endpoint: Annotated[str, MaxLen(128)]


@message(72)
@dataclass(frozen=True, slots=True)
class KeyShare:
    """A private job's data key sealed to one member, by its node key."""

    recipient: PublicKey
    sealed_key: Annotated[bytes, MaxLen(SEALED_KEY_BYTES)]


@message(3, version=2)
@dataclass(frozen=True, slots=True)
class SubmitJob:
    """Post a job; ``budget`` is escrowed from the sender's balance and pays rewards.

    ``initial_model_root`` is the submitter's claim of the root of the
    initialised model; validators recompute it, so a node that trusts
    certified blocks can follow the chain without running the model.
    ``key_shares`` (a private job only) seal the dataset's key to each
    member the submitter chose; version 2 added them.
    """

    spec: JobSpec
    budget: Amount
    initial_model_root: Hash32
    key_shares: Annotated[tuple[KeyShare, ...], MaxLen(MAX_KEY_SHARES)] = ()


@message(73)
@dataclass(frozen=True, slots=True)
class ShareDataKey:
    """A member of a private job seals its data key to nodes that joined after it was submitted.

    The sender must already hold a share of the job's key; each recipient
    must be a registered node without one. The chain cannot tell whether a
    share opens, only who vouched for it: the sender.
    """

    job: Hash32
    shares: Annotated[tuple[KeyShare, ...], MaxLen(MAX_KEY_SHARES)]


@message(4)
@dataclass(frozen=True, slots=True)
class Transaction:
    sender: PublicKey
    nonce: int
    fee: Amount
    payload: Transfer | RegisterNode | SubmitJob | ShareDataKey


@message(5)
@dataclass(frozen=True, slots=True)
class SignedTransaction:
    tx: Transaction
    signature: Signature


# ---------------------------------------------------------------------------
# Work and its verification


@message(25)
@dataclass(frozen=True, slots=True)
class StageLinks:
    """What a pipeline unit ran from and what it hands on, by digest (``consensus.pipeline``).

    ``stage_root`` is the stage's parameter state in the job's committed
    ``PipelineState``; ``inputs`` are the blobs the unit read, in the order
    ``pipeline.expected_inputs`` gives (the chain accepts the unit only when
    they are the accepted outputs of the units before it); ``output_gradient``
    is the gradient with respect to the stage's input that it hands to the
    stage before it (None for units that hand none).
    """

    stage_root: Hash32
    inputs: Annotated[tuple[Hash32, ...], MaxLen(2)]
    output_gradient: Hash32 | None


@message(20, version=2)
@dataclass(frozen=True, slots=True)
class WorkSubmission:
    """A trainer's claim to have computed one work unit (job, step, shard).

    In a pipeline job ``shard`` is the unit index of ``consensus.pipeline``
    (shard, stage and phase in one number) and ``links`` names the unit's
    stage state, inputs and handed-on gradient; version 2 added ``links``.

    ``checkpoint_digests[i]`` is the digest of the state after inner step
    i + 1 (empty when H = 1); ``losses[i]`` is the float32 loss of inner step
    i as its IEEE-754 bit pattern; ``receipt`` is the profile it ran under.
    """

    job: Hash32
    step: int
    shard: Annotated[int, IntRange(0, MAX_SHARDS - 1)]
    trainer: PublicKey
    parent_model_root: Hash32
    checkpoint_digests: Annotated[tuple[Hash32, ...], MaxLen(MAX_INNER_STEPS)]
    result_digest: Hash32
    losses: Annotated[tuple[Annotated[int, IntRange(0, 2**32 - 1)], ...], MaxLen(MAX_INNER_STEPS)]
    receipt: ExecutionProfile
    links: StageLinks | None = None


@message(21)
@dataclass(frozen=True, slots=True)
class SignedWorkSubmission:
    submission: WorkSubmission
    signature: Signature


FAILURE_NONE = 0
FAILURE_PARENT = 1
"""The unit claims a parent model state other than the job's committed one."""
FAILURE_REPLAY = 2
"""Replaying an inner step gave another digest or loss than the trainer claimed."""
FAILURE_RESULT = 3
"""(H > 1) the result is not the difference of the start and final checkpoints."""
FAILURE_MALFORMED = 4
"""A blob the submission names does not decode to tensors of the model's shapes."""


@message(22)
@dataclass(frozen=True, slots=True)
class Verdict:
    """A validator's signed result of replaying sampled inner steps of a submission.

    ``sample_signature`` is the validator's signature over the submission id;
    its hash picks ``checked_steps``, so neither the trainer (who cannot
    predict it) nor the validator (whose signature is deterministic) chooses
    them. ``failure`` is one of the ``FAILURE_*`` codes (0 when it passed);
    for a replay failure ``failed_step`` names the first inner step whose
    replay differed and ``observed_digest``/``observed_loss`` what replay
    produced.
    """

    submission_id: Hash32
    validator: PublicKey
    sample_signature: Signature
    checked_steps: Annotated[tuple[int, ...], MaxLen(MAX_INNER_STEPS)]
    failure: Annotated[int, IntRange(0, 4)]
    failed_step: Annotated[int, IntRange(-1, MAX_INNER_STEPS)]
    observed_digest: Hash32
    observed_loss: Annotated[int, IntRange(0, 2**32 - 1)]
    receipt: ExecutionProfile


@message(23)
@dataclass(frozen=True, slots=True)
class SignedVerdict:
    verdict: Verdict
    signature: Signature


@message(24)
@dataclass(frozen=True, slots=True)
class StepOutcome:
    """The result of aggregating one step: the new model state root and its metrics.

    Losses are float32 bit patterns; the evaluation is counted in integers
    (``eval_total`` is 0 when the step was not evaluated).
    """

    job: Hash32
    step: int
    model_root: Hash32
    train_loss: Annotated[int, IntRange(0, 2**32 - 1)]
    eval_loss: Annotated[int, IntRange(0, 2**32 - 1)]
    eval_correct: int
    eval_total: int


# ---------------------------------------------------------------------------
# Evidence


@message(30)
@dataclass(frozen=True, slots=True)
class WorkFraud:
    """A failing verdict that every validator re-checked and upheld: the trainer cheated."""

    submission: SignedWorkSubmission
    verdict: SignedVerdict


@message(31)
@dataclass(frozen=True, slots=True)
class FalseVerdict:
    """A failing verdict that re-checking refutes: the validator accused an honest trainer."""

    submission: SignedWorkSubmission
    verdict: SignedVerdict


@message(33)
@dataclass(frozen=True, slots=True)
class FalsePass:
    """A passing verdict on a unit whose checked steps fail on re-check: the validator did not check it."""

    submission: SignedWorkSubmission
    verdict: SignedVerdict


# ---------------------------------------------------------------------------
# Consensus messages

PREVOTE = 1
PRECOMMIT = 2


@message(50)
@dataclass(frozen=True, slots=True)
class Vote:
    kind: Annotated[int, IntRange(PREVOTE, PRECOMMIT)]
    height: Height
    round: Round
    block_hash: Hash32 | None
    validator: PublicKey


@message(51)
@dataclass(frozen=True, slots=True)
class SignedVote:
    vote: Vote
    signature: Signature


@message(32)
@dataclass(frozen=True, slots=True)
class Equivocation:
    """Two different signed votes by one validator for the same height, round and kind."""

    vote_a: SignedVote
    vote_b: SignedVote


Evidence = WorkFraud | FalseVerdict | FalsePass | Equivocation


@message(43)
@dataclass(frozen=True, slots=True)
class CommitSig:
    validator: PublicKey
    signature: Signature


@message(44)
@dataclass(frozen=True, slots=True)
class CommitCertificate:
    """Precommit signatures of more than two thirds of the power for one block."""

    height: Height
    round: Round
    block_hash: Hash32
    signatures: Annotated[tuple[CommitSig, ...], MaxLen(MAX_VALIDATORS)]


@message(40)
@dataclass(frozen=True, slots=True)
class BlockHeader:
    """The hashed summary of a block. ``state_root`` is the ledger state after it.

    ``time_ms`` is the proposer's wall clock when it built the block
    (proposer-based timestamps, decision 26): the transition only checks that
    it increases, validators check it is timely before prevoting a fresh
    proposal. It never enters the ledger state nor any rule of training, which
    count in heights.
    """

    chain_id: Annotated[str, MaxLen(64)]
    height: Height
    round: Round
    parent_hash: Hash32
    proposer: PublicKey
    body_hash: Hash32
    state_root: Hash32
    time_ms: Annotated[int, IntRange(0, 2**64 - 1)]


@message(41)
@dataclass(frozen=True, slots=True)
class BlockBody:
    transactions: Annotated[tuple[SignedTransaction, ...], MaxLen(MAX_BLOCK_TXS)]
    submissions: Annotated[tuple[SignedWorkSubmission, ...], MaxLen(MAX_UNITS_PER_BLOCK)]
    verdicts: Annotated[tuple[SignedVerdict, ...], MaxLen(MAX_UNITS_PER_BLOCK * 8)]
    evidence: Annotated[tuple[Evidence, ...], MaxLen(MAX_UNITS_PER_BLOCK)]
    outcomes: Annotated[tuple[StepOutcome, ...], MaxLen(256)]
    last_commit: CommitCertificate | None


@message(42)
@dataclass(frozen=True, slots=True)
class Block:
    header: BlockHeader
    body: BlockBody


@message(52)
@dataclass(frozen=True, slots=True)
class Proposal:
    height: Height
    round: Round
    block: Block
    valid_round: Annotated[int, IntRange(-1, 2**31 - 1)]
    proposer: PublicKey


@message(53)
@dataclass(frozen=True, slots=True)
class SignedProposal:
    proposal: Proposal
    signature: Signature


# ---------------------------------------------------------------------------
# Ledger state

JOB_ACTIVE = 0
JOB_DONE = 1
JOB_STALLED = 2


@message(60)
@dataclass(frozen=True, slots=True)
class Account:
    """An account: spendable balance, bonded stake and node roles.

    ``public_key`` is known once the account has signed a transaction or was
    registered at genesis; a slashed account keeps its balance but loses its
    stake and roles for good.
    """

    balance: Amount
    nonce: int
    stake: Amount
    roles: Annotated[int, IntRange(0, 3)]
    public_key: PublicKey | None
    endpoint: Annotated[str, MaxLen(128)]
    slashed: bool


@message(61)
@dataclass(frozen=True, slots=True)
class WorkRecord:
    """What a node has done for the chain's jobs, as trainer and as validator.

    A trainer whose unit timed out sits out new assignments until
    ``benched_until``; each consecutive timeout (``missed_streak``) doubles
    the wait, and an accepted unit resets the streak.
    """

    units_accepted: int
    units_rejected: int
    units_reassigned: int
    verdicts_signed: int
    false_verdicts: int
    times_slashed: int
    rewards: Amount
    missed_streak: int
    benched_until: Height


@message(62)
@dataclass(frozen=True, slots=True)
class AccountEntry:
    address: Address
    account: Account
    record: WorkRecord


@message(26)
@dataclass(frozen=True, slots=True)
class PipelineState:
    """A pipeline job's model state: one state bundle per stage, by digest; its hash is the model root."""

    stage_roots: Annotated[tuple[Hash32, ...], MaxLen(MAX_STAGES)]


@message(63, version=3)
@dataclass(frozen=True, slots=True)
class JobState:
    """A job's progress. Slots are indexed by unit (the shard, or ``consensus.pipeline``'s unit index).

    ``output_gradients`` holds, for a pipeline job, the gradient each
    accepted unit handed on (``StageLinks.output_gradient``); it is empty for
    other jobs. Version 2 added it. ``key_shares`` are a private job's
    (``SubmitJob.key_shares``); version 3 added them.
    """

    job_id: Hash32
    spec: JobSpec
    submitter: Address
    status: Annotated[int, IntRange(JOB_ACTIVE, JOB_STALLED)]
    step: int
    model_root: Hash32
    created_height: Height
    step_started_height: Height
    step_seed: Hash32
    assignment: Annotated[tuple[Address, ...], MaxLen(MAX_SHARDS)]
    deadlines: Annotated[tuple[Height, ...], MaxLen(MAX_SHARDS)]
    accepted: Annotated[tuple[Hash32 | None, ...], MaxLen(MAX_SHARDS)]
    results: Annotated[tuple[Hash32 | None, ...], MaxLen(MAX_SHARDS)]
    escrow: Amount
    last_outcome: StepOutcome | None
    finished_height: Height
    output_gradients: Annotated[tuple[Hash32 | None, ...], MaxLen(MAX_SHARDS)] = ()
    key_shares: Annotated[tuple[KeyShare, ...], MaxLen(MAX_KEY_SHARES)] = ()


@message(64)
@dataclass(frozen=True, slots=True)
class ChainParams:
    """Chain-wide rules fixed at genesis."""

    min_validator_stake: Amount
    min_trainer_stake: Amount
    slash_fraction_bps: Annotated[int, IntRange(0, 10_000)]
    reporter_reward_bps: Annotated[int, IntRange(0, 10_000)]
    max_jobs_active: Annotated[int, IntRange(1, 1024)]


@message(69)
@dataclass(frozen=True, slots=True)
class ValidatorEntry:
    public_key: PublicKey
    power: Amount


@message(65)
@dataclass(frozen=True, slots=True)
class StateSnapshot:
    """The whole ledger state in canonical order; its hash is the state root.

    ``last_validators`` is the set that voted on the last block, kept so the
    next block's ``last_commit`` can be checked against it.
    """

    chain_id: Annotated[str, MaxLen(64)]
    height: Height
    params: ChainParams
    accounts: Annotated[tuple[AccountEntry, ...], MaxLen(1 << 20)]
    jobs: Annotated[tuple[JobState, ...], MaxLen(1 << 16)]
    last_validators: Annotated[tuple[ValidatorEntry, ...], MaxLen(MAX_VALIDATORS)]


@message(66)
@dataclass(frozen=True, slots=True)
class GenesisNode:
    public_key: PublicKey
    stake: Amount
    roles: Annotated[int, IntRange(0, 3)]
    endpoint: Annotated[str, MaxLen(128)]


@message(67)
@dataclass(frozen=True, slots=True)
class GenesisBalance:
    address: Address
    balance: Amount


@message(68)
@dataclass(frozen=True, slots=True)
class Genesis:
    """The chain's birth certificate; its hash is the genesis hash peers compare."""

    chain_id: Annotated[str, MaxLen(64)]
    params: ChainParams
    balances: Annotated[tuple[GenesisBalance, ...], MaxLen(1 << 16)]
    nodes: Annotated[tuple[GenesisNode, ...], MaxLen(MAX_VALIDATORS)]
    transactions: Annotated[tuple[SignedTransaction, ...], MaxLen(MAX_BLOCK_TXS)]


# ---------------------------------------------------------------------------
# Tensor bundles: the canonical byte form of model states, checkpoints, results
# and datasets. A bundle's digest is the SHA-256 of its canonical bytes.

MAX_TENSOR_BYTES = 1 << 30


@message(70)
@dataclass(frozen=True, slots=True)
class TensorRecord:
    """One tensor: its name, dtype name (e.g. ``float32``), shape and little-endian C-order bytes."""

    name: Annotated[str, MaxLen(256)]
    dtype: Annotated[str, MaxLen(16)]
    shape: Annotated[tuple[int, ...], MaxLen(8)]
    data: Annotated[bytes, MaxLen(MAX_TENSOR_BYTES)]


@message(71)
@dataclass(frozen=True, slots=True)
class TensorBundle:
    """Named tensors sorted by name, names unique."""

    tensors: Annotated[tuple[TensorRecord, ...], MaxLen(65536)]
