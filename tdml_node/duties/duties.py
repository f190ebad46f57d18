"""The node's work duties: train assigned units, check units it must check, judge others' verdicts.

``Duties`` is the face the node talks to. It owns the three duties
(``training``, ``checking``, ``judging``) and the two paths by which work
enters the pool: ``on_submission`` (our own units and peers' gossip) and
``on_verdict`` (our own verdicts and peers' gossip). Gossip that arrives
before the block that makes it valid waits in the pool and is offered again
after each commit (``retry_early``).

This module must never decide validity itself: the rules are ``consensus.work``'s.
"""

from __future__ import annotations

import logging

from consensus import pipeline
from consensus.crypto import address_of
from consensus.types import (
    JOB_ACTIVE,
    JobState,
    SignedVerdict,
    SignedWorkSubmission,
    WorkSubmission,
)
from consensus.validators import ValidatorSet
from consensus.work import WorkRejected, submission_id
from tdml_node.duties.checking import Checking
from tdml_node.duties.context import DutyContext
from tdml_node.duties.judging import Judging
from tdml_node.duties.training import Training
from tdml_node.runtime.faults import penalise

log = logging.getLogger("tdml.duties")


class Duties:
    def __init__(self, ctx: DutyContext, *, standin_after: float = 3.0) -> None:
        self.ctx = ctx
        self.judging = Judging(ctx)
        self.checking = Checking(
            ctx, deliver=self._own_verdict, on_fraud=self.judging.found_fraud, standin_after=standin_after
        )
        self.training = Training(ctx, submit=self._own_submission)

    # -------------------------------------------------------------- the node's calls

    def schedule(self) -> None:
        """Start whatever training and checking is due now (after a commit, on new work, on a timer)."""
        self.training.schedule()
        self.checking.schedule()

    def pending(self, open_keys: set[tuple[bytes, int, int]]) -> bool:
        """Whether this node is still training or checking a unit of a step in progress."""
        return self.training.is_training(open_keys) or self.checking.is_checking()

    def is_designated(self, job: JobState, sub: WorkSubmission, validators: ValidatorSet) -> bool:
        return self.checking.is_designated(job, sub, validators)

    async def retry_early(self) -> None:
        """Offer held gossip again now that a block has committed."""
        units, verdicts = self.ctx.pool.take_early()
        for signed in units:
            await self.on_submission(signed, origin=None)
        for verdict in verdicts:
            await self.on_verdict(verdict, origin=None)

    def prune(self) -> None:
        """Forget bookkeeping of units no longer in the pool or of steps that are over."""
        self.checking.prune()
        self.judging.prune()

    # -------------------------------------------------------------- work entering the pool

    async def on_submission(self, signed: SignedWorkSubmission, origin: bytes | None) -> None:
        ctx = self.ctx
        state = ctx.chain.state
        try:
            added = ctx.pool.add_submission(ctx.chain_id, signed, state)
        except WorkRejected as exc:
            if self._is_early(signed.submission):
                ctx.pool.hold_unit(signed)
                return
            log.debug("submission rejected: %s", exc)
            penalise(ctx.network, origin, "submission", exc)
            return
        if not added:
            return
        job = state.jobs[signed.submission.job]
        validators = ctx.chain.validators()
        self.checking.note_arrival(submission_id(signed.submission))
        if ctx.me in validators:
            self.checking.prefetch(signed.submission, job, validators)
            self.checking.schedule()  # a designated checker, or a stand-in for an absent one
        await ctx.network.broadcast(signed, exclude=origin)
        ctx.wake()

    async def on_verdict(self, signed: SignedVerdict, origin: bytes | None) -> None:
        ctx = self.ctx
        verdict = signed.verdict
        sid = verdict.submission_id
        entry = ctx.pool.get(sid)
        if entry is None:
            if self.judging.knows_fraud(sid) and not verdict.failure:
                self.judging.judge_pass(signed)
            else:
                ctx.pool.hold_verdict(signed)
            return
        try:
            added = ctx.pool.add_verdict(ctx.chain_id, signed, ctx.chain.state, ctx.chain.validators())
        except WorkRejected as exc:
            log.debug("verdict rejected: %s", exc)
            penalise(ctx.network, origin, "verdict", exc)
            return
        if not added:
            return
        await ctx.network.broadcast(signed, exclude=origin)
        ctx.wake()
        if verdict.failure and verdict.validator != ctx.me:
            self.judging.judge_failure(signed)
        elif not verdict.failure and self.judging.knows_fraud(sid):
            self.judging.judge_pass(signed)

    async def _own_submission(self, signed: SignedWorkSubmission) -> None:
        await self.on_submission(signed, origin=None)

    async def _own_verdict(self, signed: SignedVerdict) -> None:
        await self.on_verdict(signed, origin=None)

    def _is_early(self, sub: WorkSubmission) -> bool:
        """A unit of a job, step or stage this node has not reached yet (its block is still on the way).

        A stage unit starts once the block accepting its inputs commits at its
        trainer, which may be before that block commits here.
        """
        job = self.ctx.chain.state.jobs.get(sub.job)
        if job is None:
            return True
        if job.status != JOB_ACTIVE or not 0 <= sub.shard < len(job.assignment):
            return False
        if sub.step != job.step:
            return sub.step > job.step
        if job.assignment[sub.shard] != address_of(sub.trainer):
            return True
        return job.accepted[sub.shard] is None and pipeline.job_inputs(job, sub.shard) is None
