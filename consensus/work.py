"""The rules of proof-of-useful-work: who trains, who checks, what is checked.

Assignment: when a step starts, the job's shards are dealt to the eligible
trainers in an order drawn from the step's seed (balanced: trainer ``i`` of
that order gets shards ``i, i + n, ...``). A shard whose trainer is slashed or
misses its deadline moves to the eligible trainer with the fewest shards.

Checking: each unit is checked by ``required_checkers`` validators ranked by
a hash of the step seed and the unit (the trainer itself only when no other
validator exists). Each checker replays the inner steps picked by the hash of
its own signature over the submission id: the trainer cannot predict that
signature and the checker cannot choose it, since Ed25519 signatures are
deterministic.

The model work itself (training, replay, aggregation) is reached only through
the ``WorkOracle`` and ``WorkExecutor`` protocols defined here and
implemented by the node's torch executor. This module must never import
torch or perform I/O; it is pure functions of its arguments.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

from consensus import crypto, pipeline
from consensus.errors import FaultKind, ProtocolError
from consensus.types import (
    FAILURE_MALFORMED,
    FAILURE_NONE,
    FAILURE_PARENT,
    FAILURE_REPLAY,
    FAILURE_RESULT,
    ZERO_HASH,
    ExecutionProfile,
    Hash32,
    JobSpec,
    JobState,
    Signature,
    SignedVerdict,
    SignedWorkSubmission,
    StageLinks,
    StepOutcome,
    Verdict,
    WorkSubmission,
)
from consensus.validators import ValidatorSet


class WorkUnavailable(Exception):
    """The work cannot be done yet (a blob it needs is missing); not a fault of the block.

    ``digest`` names the missing blob when there is one, so the node can fetch it.
    """

    def __init__(self, message: str, digest: bytes | None = None) -> None:
        super().__init__(message)
        self.digest = digest


class InvalidWork(ProtocolError):
    """The work is impossible as specified (unknown model, malformed blob)."""


@dataclass(frozen=True, slots=True)
class TrainedUnit:
    """What training one unit produced; the blobs are already in the executor's store."""

    checkpoint_digests: tuple[Hash32, ...]
    result_digest: Hash32
    losses: tuple[int, ...]
    receipt: ExecutionProfile
    links: StageLinks | None = None


@dataclass(frozen=True, slots=True)
class ReplayOutput:
    """The digest an inner step's replay produced (next checkpoint, or result when H = 1)."""

    digest: Hash32
    loss: int


@dataclass(frozen=True, slots=True)
class ReplayComparison:
    """(Tolerance jobs) an inner step's replay measured against the trainer's claimed output.

    ``digest`` and ``loss`` are what the replay produced; ``distance`` is the
    largest relative difference between claim and replay (a local
    measurement that only decides the verdict, never consensus data).
    """

    digest: Hash32
    loss: int
    distance: float


@dataclass(frozen=True, slots=True)
class CheckResult:
    failure: int
    failed_step: int
    observed_digest: Hash32
    observed_loss: int


PASSED = CheckResult(FAILURE_NONE, -1, ZERO_HASH, 0)


class WorkView(Protocol):
    """What the model work reads of a job: its id, spec, step and committed model root.

    Training, replaying, checking and re-checking a unit, and aggregating a
    step, read nothing else, so anyone holding the chain's blocks and blobs
    can re-check a unit or a piece of evidence from these four values
    (``StepView``). A ``JobState`` is one too.
    """

    @property
    def job_id(self) -> Hash32: ...

    @property
    def spec(self) -> JobSpec: ...

    @property
    def step(self) -> int: ...

    @property
    def model_root(self) -> Hash32: ...


@dataclass(frozen=True, slots=True)
class StepView:
    """A job at one step, built from chain data alone (a ``WorkView`` without the rest of the job)."""

    job_id: Hash32
    spec: JobSpec
    step: int
    model_root: Hash32


@dataclass(frozen=True, slots=True)
class StepResult:
    """What aggregating a step gives: the new model root and the step's metrics.

    Losses are float32 bit patterns; the evaluation is counted in integers
    (``eval_total`` is 0 when the step was not evaluated).
    """

    model_root: Hash32
    train_loss: int
    eval_loss: int
    eval_correct: int
    eval_total: int

    def outcome(self, job_id: Hash32, step: int) -> StepOutcome:
        """The step's on-chain record."""
        return StepOutcome(job_id, step, self.model_root, self.train_loss, self.eval_loss, self.eval_correct, self.eval_total)


class WorkOracle(Protocol):
    """What the state transition needs of the model work. Deterministic for a profile."""

    def initial_model_root(self, spec: JobSpec) -> Hash32:
        """Root of the initialised model and empty optimizer state."""
        ...

    def step_outcome(self, job: WorkView, results: tuple[Hash32, ...]) -> StepResult:
        """Aggregate the shard results of the job's current step in shard order.

        Raises ``WorkUnavailable`` when a result blob is missing.
        """
        ...

    def recheck(self, job: WorkView, submission: WorkSubmission, verdict: Verdict) -> bool:
        """Re-run the one check a failing verdict names; True when the failure is real."""
        ...

    def recheck_pass(self, job: WorkView, submission: WorkSubmission, verdict: Verdict) -> bool:
        """Re-run the checks a passing verdict claims; True when one of them fails (the pass was false)."""
        ...


class WorkExecutor(WorkOracle, Protocol):
    """The trainer's and checker's side of the model work."""

    def train_unit(self, job: WorkView, shard: int) -> TrainedUnit:
        """Run the unit (job.step, shard) from the committed model state."""
        ...

    def train_stage(self, job: WorkView, unit: int, inputs: tuple[Hash32, ...]) -> TrainedUnit:
        """(Pipeline jobs) run unit ``unit`` from its stage's committed state and the accepted outputs ``inputs``."""
        ...

    def replay_step(self, job: WorkView, submission: WorkSubmission, inner: int) -> ReplayOutput:
        """Replay one inner step from the submission's checkpoint before it."""
        ...

    def compare_step(self, job: WorkView, submission: WorkSubmission, inner: int) -> ReplayComparison:
        """(Tolerance jobs) replay one inner step and measure it against the claimed output.

        The claim is the result bundle when H = 1, else checkpoint ``inner + 1``;
        ``InvalidWork`` when a blob it reads is malformed.
        """
        ...

    def check_result(self, job: WorkView, submission: WorkSubmission) -> int:
        """Check the result blob against the final checkpoint; a ``FAILURE_*`` code."""
        ...


# ---------------------------------------------------------------------------
# Identities and randomness


@lru_cache(maxsize=4096)
def submission_id(submission: WorkSubmission) -> Hash32:
    # Asked for many times per unit (pool, proposal, validation, RPC); the
    # value is frozen, so its hash is remembered.
    return crypto.hash_value(submission)


def compute_unit_seed(step_seed: Hash32, job_id: Hash32, step: int, shard: int) -> bytes:
    return hashlib.sha256(
        b"TDML/unit/" + step_seed + job_id + step.to_bytes(8, "big") + shard.to_bytes(2, "big")
    ).digest()


def compute_sampled_steps(sample_signature: bytes, inner_steps: int, checked: int) -> tuple[int, ...]:
    """The inner steps a checker replays: ``checked`` distinct ones, ascending.

    A partial Fisher-Yates shuffle of ``range(H)`` driven by
    SHAKE-256(b"TDML/sample/v1" || signature), 8 bytes per draw.
    """
    if checked >= inner_steps:
        return tuple(range(inner_steps))
    stream = hashlib.shake_256(b"TDML/sample/v1" + sample_signature).digest(8 * checked)
    order = list(range(inner_steps))
    for i in range(checked):
        j = i + int.from_bytes(stream[8 * i : 8 * i + 8], "big") % (inner_steps - i)
        order[i], order[j] = order[j], order[i]
    return tuple(sorted(order[:checked]))


def required_checkers(spec: JobSpec, validators: ValidatorSet, trainer_key: bytes | None = None) -> int:
    """How many pass verdicts a unit needs: the policy's count, or f + 1.

    Capped by the number of validators who may check the unit (all but its
    trainer, unless the trainer is the only validator), so a shrinking
    validator set never leaves a unit unable to collect its verdicts.
    """
    wanted = spec.verification.checkers_per_unit or validators.max_faulty + 1
    eligible = len(validators)
    if trainer_key is not None and trainer_key in validators and eligible > 1:
        eligible -= 1
    return max(1, min(wanted, eligible))


def compute_checkers(
    job: JobState, shard: int, trainer_key: bytes, validators: ValidatorSet
) -> tuple[bytes, ...]:
    """The validators designated to check the unit (job.step, shard), in rank order.

    The list holds every validator but the trainer ranked by hash, so the
    first ``required_checkers`` are the designated checkers and the rest are
    the stand-ins that may replace a silent one.
    """
    seed = compute_unit_seed(job.step_seed, job.job_id, job.step, shard)
    pool = [k for k in validators.keys if k != trainer_key] or list(validators.keys)
    return tuple(sorted(pool, key=lambda k: hashlib.sha256(seed + k).digest()))


@dataclass(frozen=True, slots=True)
class CheckerSlots:
    """Who may sign a unit's verdicts: its designated checkers, then the stand-ins for silent ones.

    A unit is accepted with ``need`` passing verdicts from ``allowed``; a
    stand-in steps in only when a designated checker stays silent.
    """

    designated: tuple[bytes, ...]
    standins: tuple[bytes, ...]

    @property
    def need(self) -> int:
        return len(self.designated)

    @property
    def allowed(self) -> tuple[bytes, ...]:
        return self.designated + self.standins


def compute_checker_slots(job: JobState, shard: int, trainer_key: bytes, validators: ValidatorSet) -> CheckerSlots:
    """The checker slots of the unit (job.step, shard): the one rule every caller uses.

    The first ``required_checkers`` validators of ``compute_checkers``' ranking
    are designated; the next f are stand-ins, so even with f designated
    checkers faulty or silent a unit can gather its verdicts from honest ones.
    """
    need = required_checkers(job.spec, validators, trainer_key)
    ranked = compute_checkers(job, shard, trainer_key, validators)
    return CheckerSlots(ranked[:need], ranked[need : need + validators.max_faulty])


# ---------------------------------------------------------------------------
# Validation of submissions and verdicts


class WorkRejected(ProtocolError):
    """A submission or verdict breaks a rule; the message says which, the kind how bad it is."""


def validate_submission(
    chain_id: str, job: JobState, signed: SignedWorkSubmission, *, check_signature: bool = True
) -> None:
    """Raise ``WorkRejected`` unless ``signed`` is a well-formed unit for the job's current step."""
    sub = signed.submission
    spec = job.spec
    if sub.job != job.job_id:
        raise WorkRejected("submission is for another job", FaultKind.STALE)
    if sub.step != job.step:
        raise WorkRejected(f"submission is for step {sub.step}, the job is at step {job.step}", FaultKind.STALE)
    if not 0 <= sub.shard < pipeline.units_per_step(spec):
        raise WorkRejected(f"shard {sub.shard} out of range", FaultKind.MALFORMED)
    if crypto.address_of(sub.trainer) != job.assignment[sub.shard]:
        raise WorkRejected(f"trainer is not assigned shard {sub.shard}", FaultKind.STALE)
    if job.accepted[sub.shard] is not None:
        raise WorkRejected(f"shard {sub.shard} already has an accepted unit", FaultKind.STALE)
    if sub.parent_model_root != job.model_root:
        raise WorkRejected("submission is not built on the committed model state")
    expected_checkpoints = spec.inner_steps if spec.inner_steps > 1 else 0
    if len(sub.checkpoint_digests) != expected_checkpoints:
        raise WorkRejected(f"expected {expected_checkpoints} checkpoint digests, got {len(sub.checkpoint_digests)}")
    if spec.pipeline is not None:
        _validate_links(job, sub)
    else:
        if sub.links is not None:
            raise WorkRejected("only a pipeline unit names stage links")
        if len(sub.losses) != spec.inner_steps:
            raise WorkRejected(f"expected {spec.inner_steps} losses, got {len(sub.losses)}")
    if spec.verification.tolerance == "0" and sub.receipt != spec.profile:
        raise WorkRejected("an exact-replay job needs units computed under the job's profile")
    if check_signature and not crypto.verify_value(sub.trainer, crypto.DOMAIN_WORK, chain_id, sub, signed.signature):
        raise WorkRejected("bad trainer signature", FaultKind.BAD_SIGNATURE)


def _validate_links(job: JobState, sub: WorkSubmission) -> None:
    """A pipeline unit reads exactly the accepted outputs before it and hands on a gradient where its place does."""
    spec, unit, links = job.spec, sub.shard, sub.links
    if links is None:
        raise WorkRejected("a pipeline unit must name its stage links")
    expected_losses = 1 if pipeline.has_loss(spec, unit) else 0
    if len(sub.losses) != expected_losses:
        raise WorkRejected(f"expected {expected_losses} losses, got {len(sub.losses)}")
    if (links.output_gradient is not None) != pipeline.emits_gradient(spec, unit):
        raise WorkRejected(f"unit {unit} {'must' if pipeline.emits_gradient(spec, unit) else 'cannot'} hand on a gradient")
    inputs = pipeline.job_inputs(job, unit)
    if inputs is None:
        raise WorkRejected(f"unit {unit}'s inputs are not accepted yet", FaultKind.STALE)
    if links.inputs != inputs:
        raise WorkRejected(f"unit {unit} does not read the accepted outputs of the units before it")


def validate_verdict(
    chain_id: str,
    job: JobState,
    submission: WorkSubmission,
    signed: SignedVerdict,
    validators: ValidatorSet,
    *,
    designated: Sequence[bytes] | None = None,
) -> None:
    """Raise ``WorkRejected`` unless ``signed`` is a well-formed verdict on ``submission``.

    With ``designated`` given, the signer must be one of them.
    """
    v = signed.verdict
    if v.submission_id != submission_id(submission):
        raise WorkRejected("verdict is about another submission")
    if v.validator not in validators:
        raise WorkRejected("verdict signer is not a validator", FaultKind.STALE)
    if designated is not None and v.validator not in designated:
        raise WorkRejected("verdict signer is not a designated checker of this unit")
    if not crypto.verify(v.validator, crypto.DOMAIN_SAMPLE, chain_id, v.submission_id, v.sample_signature):
        raise WorkRejected("bad sample signature", FaultKind.BAD_SIGNATURE)
    expected = compute_sampled_steps(
        v.sample_signature, job.spec.inner_steps, job.spec.verification.checked_steps
    )
    if v.checked_steps != expected:
        raise WorkRejected("checked steps are not the ones the sample signature picks", FaultKind.MALFORMED)
    if v.failure == FAILURE_NONE:
        if v.failed_step != -1:
            raise WorkRejected("a passing verdict names no failed step")
    elif v.failure == FAILURE_REPLAY:
        if v.failed_step not in v.checked_steps:
            raise WorkRejected("a replay failure must be at one of the checked steps")
    elif v.failed_step != -1:
        raise WorkRejected("only a replay failure names a step")
    if not crypto.verify_value(v.validator, crypto.DOMAIN_VERDICT, chain_id, v, signed.signature):
        raise WorkRejected("bad verdict signature", FaultKind.BAD_SIGNATURE)


def replay_tolerance(spec: JobSpec) -> float | None:
    """The relative distance a replayed step may differ by; None for a bit-exact job (``"0"``).

    The same test as ``validate_submission``'s: only an exact job requires
    the job's profile, so only it can compare digests.
    """
    tolerance = spec.verification.tolerance
    return None if tolerance == "0" else float(tolerance)


def claimed_replay(spec: JobSpec, submission: WorkSubmission, inner: int) -> tuple[Hash32, int | None]:
    """What a replay of inner step ``inner`` must reproduce: a digest and loss bits (None: no loss to compare).

    The result when H = 1 (for a pipeline unit, bound to the gradient it hands
    on: ``pipeline.claimed_output``), else checkpoint ``inner``.
    """
    if pipeline.is_pipeline(spec):
        return pipeline.claimed_output(submission), pipeline.claimed_loss(spec, submission)
    if spec.inner_steps == 1:
        digest = submission.result_digest
    else:
        digest = submission.checkpoint_digests[inner] if inner < len(submission.checkpoint_digests) else ZERO_HASH
    return digest, submission.losses[inner] if inner < len(submission.losses) else None


def check_unit(executor: WorkExecutor, job: WorkView, submission: WorkSubmission, steps: Sequence[int]) -> CheckResult:
    """The checker's procedure: parent state, then each sampled step, then the result.

    Stops at the first failure. The same procedure, restricted to the one
    failing check, is what ``WorkOracle.recheck`` runs for evidence. In a
    tolerance job a replayed step passes when its distance from the claim is
    within the tolerance (``WorkExecutor.compare_step``) instead of when the
    digests are equal; the H > 1 result check stays exact.
    """
    if submission.parent_model_root != job.model_root:
        return CheckResult(FAILURE_PARENT, -1, job.model_root, 0)
    h = job.spec.inner_steps
    tolerance = replay_tolerance(job.spec)
    for inner in steps:
        try:
            if tolerance is not None:
                near = executor.compare_step(job, submission, inner)
                if not near.distance <= tolerance:  # a NaN distance fails too
                    return CheckResult(FAILURE_REPLAY, inner, near.digest, near.loss)
                continue
            out = executor.replay_step(job, submission, inner)
        except InvalidWork:
            return CheckResult(FAILURE_MALFORMED, -1, ZERO_HASH, 0)
        claimed, claimed_loss = claimed_replay(job.spec, submission, inner)
        if claimed_loss is None:
            return CheckResult(FAILURE_MALFORMED, -1, ZERO_HASH, 0)
        if out.digest != claimed or out.loss != claimed_loss:
            return CheckResult(FAILURE_REPLAY, inner, out.digest, out.loss)
    if h > 1:
        code = executor.check_result(job, submission)
        if code != FAILURE_NONE:
            return CheckResult(code, -1, ZERO_HASH, 0)
    return PASSED


def make_verdict(
    keypair: crypto.Keypair,
    chain_id: str,
    submission: WorkSubmission,
    result: CheckResult,
    steps: tuple[int, ...],
    sample_signature: bytes,
    receipt: ExecutionProfile,
) -> SignedVerdict:
    verdict = Verdict(
        submission_id=submission_id(submission),
        validator=keypair.public_key,
        sample_signature=Signature(sample_signature),
        checked_steps=steps,
        failure=result.failure,
        failed_step=result.failed_step,
        observed_digest=result.observed_digest,
        observed_loss=result.observed_loss,
        receipt=receipt,
    )
    return SignedVerdict(verdict, keypair.sign_value(crypto.DOMAIN_VERDICT, chain_id, verdict))


def sample_for(keypair: crypto.Keypair, chain_id: str, job: WorkView, submission: WorkSubmission) -> tuple[bytes, tuple[int, ...]]:
    """The checker's sample signature over the submission id and the steps it picks."""
    sig = keypair.sign(crypto.DOMAIN_SAMPLE, chain_id, submission_id(submission))
    steps = compute_sampled_steps(sig, job.spec.inner_steps, job.spec.verification.checked_steps)
    return sig, steps


def sign_submission(keypair: crypto.Keypair, chain_id: str, submission: WorkSubmission) -> SignedWorkSubmission:
    return SignedWorkSubmission(submission, keypair.sign_value(crypto.DOMAIN_WORK, chain_id, submission))


def failure_kinds() -> dict[int, str]:
    return {
        FAILURE_NONE: "none",
        FAILURE_PARENT: "wrong parent state",
        FAILURE_REPLAY: "replay mismatch",
        FAILURE_RESULT: "result inconsistent with final checkpoint",
        FAILURE_MALFORMED: "malformed blob",
    }
