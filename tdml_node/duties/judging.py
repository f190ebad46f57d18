"""Judging: another validator's claims about a unit, re-checked, become evidence either way.

- A failing verdict is re-run (the one check it names): upheld, it is
  ``WorkFraud`` against the trainer; refuted, ``FalseVerdict`` against the
  validator.
- Once a unit is known to fail, every passing verdict on it (now or later)
  is re-run; a pass whose own checked steps fail is ``FalsePass``.

The evidence goes to the pool for the next proposer. This module must never
decide a verdict itself: the executor re-runs the check and
``consensus.transition`` re-checks the evidence in the block.
"""

from __future__ import annotations

import logging

from consensus.errors import ProtocolError
from consensus.types import (
    FalsePass,
    FalseVerdict,
    JobState,
    SignedVerdict,
    SignedWorkSubmission,
    WorkFraud,
)
from consensus.work import WorkUnavailable
from tdml_node.duties.context import DutyContext
from tdml_node.pools import Evidence
from tdml_node.runtime.workqueue import PRIORITY_CHECK

log = logging.getLogger("tdml.duties")

MAX_FRAUDS_KEPT = 256


class Judging:
    def __init__(self, ctx: DutyContext) -> None:
        self.ctx = ctx
        # Kept apart from the pool, which forgets a unit once its trainer is slashed.
        self.frauds: dict[bytes, tuple[SignedWorkSubmission, JobState]] = {}

    def knows_fraud(self, sid: bytes) -> bool:
        return sid in self.frauds

    def judge_failure(self, signed: SignedVerdict) -> None:
        self.ctx.spawn(self._judge(signed), "judge")

    def judge_pass(self, signed: SignedVerdict) -> None:
        self.ctx.spawn(self._judge_pass(signed), "judge-pass")

    def found_fraud(self, sid: bytes) -> None:
        """A unit is known to fail: every passing verdict on it, now or later, is suspect."""
        entry = self.ctx.pool.get(sid)
        if entry is None:
            return
        job = self.ctx.chain.state.jobs.get(entry.signed.submission.job)
        if job is None:
            return
        self.frauds[sid] = (entry.signed, job)
        while len(self.frauds) > MAX_FRAUDS_KEPT:
            self.frauds.pop(next(iter(self.frauds)))
        for verdict in list(entry.verdicts.values()):
            if not verdict.verdict.failure:
                self.judge_pass(verdict)

    def prune(self) -> None:
        state = self.ctx.chain.state
        for sid, (_, job) in list(self.frauds.items()):
            current = state.jobs.get(job.job_id)
            if current is None or current.step != job.step:
                del self.frauds[sid]

    async def _judge(self, signed: SignedVerdict) -> None:
        ctx = self.ctx
        entry = ctx.pool.get(signed.verdict.submission_id)
        if entry is None:
            return
        job = ctx.chain.state.jobs.get(entry.signed.submission.job)
        if job is None:
            return
        try:
            upheld = await ctx.runner.run(
                PRIORITY_CHECK, ctx.executor.recheck, job, entry.signed.submission, signed.verdict
            )
        except (WorkUnavailable, ProtocolError) as exc:
            log.warning("cannot judge a failing verdict: %s", exc)
            return
        ev: Evidence = WorkFraud(entry.signed, signed) if upheld else FalseVerdict(entry.signed, signed)
        if upheld:
            self.found_fraud(signed.verdict.submission_id)
        else:
            log.warning("validator %s accused an honest unit", signed.verdict.validator.hex()[:16])
        if ctx.pool.add_evidence(ev):
            ctx.wake()

    async def _judge_pass(self, signed: SignedVerdict) -> None:
        ctx = self.ctx
        known = self.frauds.get(signed.verdict.submission_id)
        if known is None:
            return
        unit, job = known
        try:
            false = await ctx.runner.run(PRIORITY_CHECK, ctx.executor.recheck_pass, job, unit.submission, signed.verdict)
        except (WorkUnavailable, ProtocolError) as exc:
            log.warning("cannot judge a passing verdict: %s", exc)
            return
        if false:
            log.warning("validator %s passed a unit that fails its own checked steps", signed.verdict.validator.hex()[:16])
            if ctx.pool.add_evidence(FalsePass(unit, signed)):
                ctx.wake()
