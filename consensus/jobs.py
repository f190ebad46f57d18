"""The job lifecycle on the ledger: steps start, units are accepted, steps complete, shards move.

- ``start_step``: a step deals the job's shards to the eligible trainers
  (``work.compute_assignment``) with a deadline each; with no trainer the
  job stalls until one registers.
- ``process_units``: each included unit is checked (``work.validate_submission``)
  and accepted with its passing verdicts from the unit's checker slots; the
  trainer and its checkers are paid from the job's escrow.
- ``process_completed_steps``: a job whose shards all have accepted units
  aggregates them (the ``WorkOracle``), moves to the next step, or finishes
  and returns what is left of the escrow.
- ``process_deadlines``: a shard not submitted by its deadline moves to
  another trainer (``work.compute_reassignment``) and its trainer is benched
  for ``unit_timeout_blocks · 2^streak`` blocks; ``reassign_trainer`` moves
  every open shard of a trainer that was slashed.

Every function works on a ``LedgerDraft`` and raises ``InvalidBlock`` for a
broken rule. This module must never perform I/O, read a clock, or apply
anything but what a block carries.
"""

from __future__ import annotations

import dataclasses

from consensus import crypto, pipeline
from consensus.assignment import compute_assignment, compute_reassignment, compute_stage_assignment
from consensus.errors import InvalidBlock
from consensus.state import BlockContext, LedgerDraft, get_trainers
from consensus.types import (
    JOB_ACTIVE,
    JOB_DONE,
    JOB_STALLED,
    Address,
    Amount,
    BlockBody,
    Hash32,
    Height,
    JobState,
    SignedVerdict,
    StepOutcome,
    WorkSubmission,
)
from consensus.validators import ValidatorSet
from consensus.work import (
    WorkOracle,
    WorkRejected,
    compute_checker_slots,
    submission_id,
    validate_submission,
    validate_verdict,
)

MAX_MISSED_STREAK = 10


def start_step(state: LedgerDraft, job: JobState, ctx: BlockContext) -> JobState:
    """The job with its current step dealt out to the eligible trainers (stalled if there are none)."""
    trainers = get_trainers(state, ctx.height)
    spec = job.spec
    units = pipeline.units_per_step(spec)
    if not trainers:
        return dataclasses.replace(
            job, status=JOB_STALLED, assignment=(), deadlines=(), accepted=(), results=(), output_gradients=(),
            step_seed=ctx.parent_hash,
        )
    deadline = Height(ctx.height + spec.verification.unit_timeout_blocks)
    if spec.pipeline is None:
        holders = compute_assignment(ctx.parent_hash, job.job_id, job.step, spec.shards, trainers)
    else:
        holders = compute_stage_assignment(
            ctx.parent_hash, job.job_id, job.step, spec.shards, pipeline.stage_count(spec), trainers
        )
    return dataclasses.replace(
        job,
        status=JOB_ACTIVE,
        step_started_height=ctx.height,
        step_seed=ctx.parent_hash,
        assignment=tuple(Address(a) for a in pipeline.expand_assignment(spec, holders)),
        # A pipeline unit's clock starts when the unit before it is accepted (``_accept``).
        deadlines=tuple(
            deadline if pipeline.opens_at_step_start(spec, u) else Height(pipeline.NO_DEADLINE) for u in range(units)
        ),
        accepted=(None,) * units,
        results=(None,) * units,
        output_gradients=(None,) * units if spec.pipeline is not None else (),
    )


def pay(state: LedgerDraft, job_id: Hash32, to: Address, amount: int) -> None:
    """Pay ``to`` from the job's escrow, as far as it reaches."""
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
# Units and their verdicts


def process_units(state: LedgerDraft, body: BlockBody, validators: ValidatorSet, height: Height) -> None:
    """Accept every unit the block includes, each with enough passing verdicts from its checker slots.

    In body order, on the draft: a pipeline unit whose inputs are the outputs
    of a unit accepted earlier in the same block is valid.
    """
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
            raise InvalidBlock(f"submission rejected: {exc}", exc.kind) from exc
        sid = submission_id(sub)
        slots = compute_checker_slots(job, sub.shard, sub.trainer, validators)
        signers: list[bytes] = []
        for sv in verdicts.get(sid, []):
            try:
                validate_verdict(state.chain_id, job, sub, sv, validators, designated=slots.allowed)
            except WorkRejected as exc:
                raise InvalidBlock(f"verdict rejected: {exc}", exc.kind) from exc
            if sv.verdict.failure:
                raise InvalidBlock("a failing verdict belongs in evidence, not beside an accepted unit")
            if sv.verdict.validator in signers:
                raise InvalidBlock("two verdicts by one validator on one unit")
            signers.append(sv.verdict.validator)
        if len(signers) < slots.need:
            raise InvalidBlock(f"unit has {len(signers)} passing verdicts, needs {slots.need}")
        used.add(sid)
        _accept(state, job, sub, sid, signers, height)
    if set(verdicts) - used:
        raise InvalidBlock("verdict for a submission the block does not include")


def _accept(
    state: LedgerDraft, job: JobState, sub: WorkSubmission, sid: Hash32, signers: list[bytes], height: Height
) -> None:
    unit = sub.shard
    accepted, results = list(job.accepted), list(job.results)
    accepted[unit], results[unit] = sid, sub.result_digest
    job = dataclasses.replace(job, accepted=tuple(accepted), results=tuple(results))
    if job.spec.pipeline is not None:
        gradients, deadlines = list(job.output_gradients), list(job.deadlines)
        gradients[unit] = sub.links.output_gradient if sub.links is not None else None
        after = pipeline.successor(job.spec, unit)
        if after is not None:
            deadlines[after] = Height(height + job.spec.verification.unit_timeout_blocks)
        job = dataclasses.replace(job, output_gradients=tuple(gradients), deadlines=tuple(deadlines))
    state.jobs[job.job_id] = job
    trainer = crypto.address_of(sub.trainer)
    rec = state.get_record(trainer)
    state.records[trainer] = dataclasses.replace(rec, units_accepted=rec.units_accepted + 1, missed_streak=0)
    pay(state, job.job_id, trainer, job.spec.reward_per_unit)
    for key in signers:
        addr = crypto.address_of(key)
        vrec = state.get_record(addr)
        state.records[addr] = dataclasses.replace(vrec, verdicts_signed=vrec.verdicts_signed + 1)
        pay(state, job.job_id, addr, job.spec.reward_per_verdict)


# ---------------------------------------------------------------------------
# Completed steps


def get_due_jobs(state: LedgerDraft) -> list[Hash32]:
    """Active jobs whose every shard of the step in progress has an accepted unit, in id order."""
    return [
        j for j in sorted(state.jobs)
        if state.jobs[j].status == JOB_ACTIVE and state.jobs[j].accepted and all(state.jobs[j].accepted)
    ]


def process_completed_steps(
    state: LedgerDraft, ctx: BlockContext, claimed: tuple[StepOutcome, ...] | None, work: WorkOracle | None
) -> tuple[StepOutcome, ...]:
    """Advance every job whose shards are all accepted; ``claimed=None`` computes the outcomes.

    With ``work`` the outcomes are recomputed and must equal the claimed
    ones; without it the claims are trusted (a certified block).
    """
    due = get_due_jobs(state)
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
        if outcome is None:
            raise InvalidBlock("a block built without the work oracle must carry its step outcomes")
        outcomes.append(outcome)
        _complete_step(state, job, outcome, ctx)
    return tuple(outcomes)


def _complete_step(state: LedgerDraft, job: JobState, outcome: StepOutcome, ctx: BlockContext) -> None:
    job = dataclasses.replace(job, step=job.step + 1, model_root=outcome.model_root, last_outcome=outcome)
    if job.step < job.spec.steps:
        state.jobs[job.job_id] = start_step(state, job, ctx)
        return
    refund = job.escrow
    state.jobs[job.job_id] = dataclasses.replace(
        job,
        status=JOB_DONE,
        finished_height=ctx.height,
        assignment=(),
        deadlines=(),
        accepted=(),
        results=(),
        output_gradients=(),
        escrow=Amount(0),
    )
    if refund:
        acct = state.get_account(job.submitter)
        state.accounts[job.submitter] = dataclasses.replace(acct, balance=Amount(acct.balance + refund))


# ---------------------------------------------------------------------------
# Deadlines and reassignment


def _reassign(state: LedgerDraft, job: JobState, shard: int, ctx: BlockContext, *, timed_out: bool) -> JobState:
    old = job.assignment[shard]
    rec = state.get_record(old)
    if timed_out:
        streak = min(rec.missed_streak + 1, MAX_MISSED_STREAK)
        bench = job.spec.verification.unit_timeout_blocks * (1 << streak)
        rec = dataclasses.replace(rec, missed_streak=streak, benched_until=Height(ctx.height + bench))
    state.records[old] = dataclasses.replace(rec, units_reassigned=rec.units_reassigned + 1)
    new_holder = compute_reassignment(job.assignment, shard, get_trainers(state, ctx.height), job.step_seed)
    if new_holder is None:
        return dataclasses.replace(job, status=JOB_STALLED)
    assignment = list(job.assignment)
    deadlines = list(job.deadlines)
    # A (shard, stage) pair stays with one trainer: the other phase, if still the old holder's, moves too.
    pair = pipeline.partner(job.spec, shard)
    moving = [shard] + ([pair] if pair is not None and job.accepted[pair] is None and assignment[pair] == old else [])
    for unit in moving:
        assignment[unit] = new_holder
        if deadlines[unit] != pipeline.NO_DEADLINE:  # a unit that cannot start yet keeps waiting for its inputs
            deadlines[unit] = Height(ctx.height + job.spec.verification.unit_timeout_blocks)
    return dataclasses.replace(job, assignment=tuple(assignment), deadlines=tuple(deadlines))


def process_deadlines(state: LedgerDraft, ctx: BlockContext) -> None:
    """Move the shards whose deadline passed; restart stalled jobs once a trainer is there."""
    for job_id in sorted(state.jobs):
        job = state.jobs[job_id]
        if job.status == JOB_STALLED:
            if get_trainers(state, ctx.height):
                state.jobs[job_id] = start_step(state, job, ctx)
            continue
        if job.status != JOB_ACTIVE:
            continue
        for shard in range(pipeline.units_per_step(job.spec)):
            if job.accepted[shard] is None and job.deadlines[shard] <= ctx.height:
                job = _reassign(state, job, shard, ctx, timed_out=True)
                if job.status == JOB_STALLED:
                    break
        state.jobs[job_id] = job


def reassign_trainer(state: LedgerDraft, trainer: Address, ctx: BlockContext) -> None:
    """Move every unfinished shard of a trainer that is no longer eligible (it was slashed)."""
    for job_id in sorted(state.jobs):
        job = state.jobs[job_id]
        if job.status != JOB_ACTIVE:
            continue
        for shard in range(pipeline.units_per_step(job.spec)):
            if job.assignment[shard] == trainer and job.accepted[shard] is None:
                job = _reassign(state, job, shard, ctx, timed_out=False)
                if job.status == JOB_STALLED:
                    break
        state.jobs[job_id] = job
