"""Evidence and slashing: one ``process_*`` function per kind of evidence a block carries.

- ``process_equivocation``: two different signed votes of one validator for
  one height, round and kind;
- ``process_work_fraud``: a failing verdict on a unit, upheld on re-check:
  the trainer cheated;
- ``process_false_verdict``: a failing verdict that re-checking refutes: the
  validator accused an honest trainer;
- ``process_false_pass``: a passing verdict on a unit whose checked steps
  fail on re-check: the validator did not check.

Each verifies the signatures and the verdict, re-checks the claim with the
work oracle (when it has one) and slashes the offender (``slash``), whose
open shards then move. This module must never perform I/O or accept
evidence it cannot re-check from the block's own contents and the oracle.
"""

from __future__ import annotations

import dataclasses

from consensus import crypto, pipeline
from consensus.errors import FaultKind, InvalidBlock
from consensus.jobs import reassign_trainer
from consensus.state import BlockContext, LedgerDraft, is_trainer
from consensus.types import (
    JOB_ACTIVE,
    Account,
    Address,
    Amount,
    Equivocation,
    FalsePass,
    FalseVerdict,
    JobState,
    WorkFraud,
)
from consensus.validators import ValidatorSet
from consensus.work import WorkOracle, WorkRejected, validate_verdict

Evidence = WorkFraud | FalseVerdict | FalsePass | Equivocation


def process_evidence(
    state: LedgerDraft, ctx: BlockContext, ev: Evidence, validators: ValidatorSet, work: WorkOracle | None
) -> None:
    match ev:
        case Equivocation():
            process_equivocation(state, ctx, ev)
        case WorkFraud():
            process_work_fraud(state, ctx, ev, validators, work)
        case FalseVerdict():
            process_false_verdict(state, ctx, ev, validators, work)
        case FalsePass():
            process_false_pass(state, ctx, ev, validators, work)
        case _:  # pragma: no cover - the codec admits no other evidence
            raise InvalidBlock(f"unknown evidence {type(ev).__name__}")


def process_equivocation(state: LedgerDraft, ctx: BlockContext, ev: Equivocation) -> None:
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
    slash(state, crypto.address_of(a.validator), reporter=crypto.address_of(ctx.proposer), ctx=ctx)


def process_work_fraud(
    state: LedgerDraft, ctx: BlockContext, ev: WorkFraud, validators: ValidatorSet, work: WorkOracle | None
) -> None:
    job = _validate_unit_evidence(state, ev, validators, of_assigned_trainer=True)
    if not ev.verdict.verdict.failure:
        raise InvalidBlock("evidence needs a failing verdict")
    if work is not None and not work.recheck(job, ev.submission.submission, ev.verdict.verdict):
        raise InvalidBlock("evidence does not re-check")
    trainer = crypto.address_of(ev.submission.submission.trainer)
    rec = state.get_record(trainer)
    state.records[trainer] = dataclasses.replace(rec, units_rejected=rec.units_rejected + 1)
    slash(state, trainer, reporter=crypto.address_of(ev.verdict.verdict.validator), ctx=ctx)


def process_false_verdict(
    state: LedgerDraft, ctx: BlockContext, ev: FalseVerdict, validators: ValidatorSet, work: WorkOracle | None
) -> None:
    job = _validate_unit_evidence(state, ev, validators, of_assigned_trainer=True)
    if not ev.verdict.verdict.failure:
        raise InvalidBlock("evidence needs a failing verdict")
    if work is not None and work.recheck(job, ev.submission.submission, ev.verdict.verdict):
        raise InvalidBlock("evidence does not re-check")
    _punish_validator(state, ev, reporter=crypto.address_of(ev.submission.submission.trainer), ctx=ctx)


def process_false_pass(
    state: LedgerDraft, ctx: BlockContext, ev: FalsePass, validators: ValidatorSet, work: WorkOracle | None
) -> None:
    # A false pass is the validator's fault; its unit's trainer may already be slashed and replaced.
    job = _validate_unit_evidence(state, ev, validators, of_assigned_trainer=False)
    verdict = ev.verdict.verdict
    if verdict.failure:
        raise InvalidBlock("false-pass evidence needs a passing verdict")
    if work is not None and not work.recheck_pass(job, ev.submission.submission, verdict):
        raise InvalidBlock("evidence does not re-check: the passed steps replay correctly")
    _punish_validator(state, ev, reporter=crypto.address_of(ctx.proposer), ctx=ctx)


def _validate_unit_evidence(
    state: LedgerDraft, ev: WorkFraud | FalseVerdict | FalsePass, validators: ValidatorSet, *, of_assigned_trainer: bool
) -> JobState:
    """The job a piece of unit evidence is about, once its unit and verdict are shown well formed."""
    sub = ev.submission.submission
    job = state.jobs.get(sub.job)
    if job is None or job.status != JOB_ACTIVE or sub.step != job.step:
        raise InvalidBlock("evidence about a unit of no step in progress")
    if not 0 <= sub.shard < pipeline.units_per_step(job.spec):
        raise InvalidBlock("evidence about a shard the job does not have")
    if of_assigned_trainer and crypto.address_of(sub.trainer) != job.assignment[sub.shard]:
        raise InvalidBlock("evidence about a unit its trainer was not assigned")
    if not crypto.verify_value(sub.trainer, crypto.DOMAIN_WORK, state.chain_id, sub, ev.submission.signature):
        raise InvalidBlock("bad trainer signature in evidence", FaultKind.BAD_SIGNATURE)
    try:
        validate_verdict(state.chain_id, job, sub, ev.verdict, validators)
    except WorkRejected as exc:
        raise InvalidBlock(f"evidence verdict rejected: {exc}", exc.kind) from exc
    return job


def _punish_validator(state: LedgerDraft, ev: FalseVerdict | FalsePass, *, reporter: Address, ctx: BlockContext) -> None:
    signer = crypto.address_of(ev.verdict.verdict.validator)
    rec = state.get_record(signer)
    state.records[signer] = dataclasses.replace(rec, false_verdicts=rec.false_verdicts + 1)
    slash(state, signer, reporter=reporter, ctx=ctx)


def slash(state: LedgerDraft, offender: Address, *, reporter: Address, ctx: BlockContext) -> None:
    """Take ``slash_fraction_bps`` of the offender's stake (part to the reporter), its roles for good."""
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
        reassign_trainer(state, offender, ctx)
