"""Checking: replaying the units this validator must check, and signing the verdicts.

A validator checks every unit it is a designated checker of, at the inner
steps its own sample signature picks, through the ``check`` seam on the
work queue. A stand-in (ranked after the designated checkers) steps in once
a unit has waited ``standin_after`` seconds without enough passing
verdicts, or at once when a designated checker is not connected (a stopped
node would otherwise cost every step it is drawn for the whole wait).
Before checking, a validator fetches the unit's result blob (it will
aggregate it) and, as a checker, the checkpoints it replays from.

This module must never decide who checks what: the slots come from
``consensus.work.compute_checker_slots``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from consensus.types import JobState, SignedVerdict, SignedWorkSubmission, WorkFraud, WorkSubmission
from consensus.validators import ValidatorSet
from consensus.work import (
    WorkUnavailable,
    compute_checker_slots,
    make_verdict,
    sample_for,
    submission_id,
)
from tdml_node.duties.context import DutyContext
from tdml_node.duties.standin import standin_due
from tdml_node.metrics import timed
from tdml_node.runtime.workqueue import PRIORITY_CHECK

log = logging.getLogger("tdml.duties")


class Checking:
    def __init__(
        self,
        ctx: DutyContext,
        *,
        deliver: Callable[[SignedVerdict], Awaitable[None]],
        on_fraud: Callable[[bytes], None],
        standin_after: float,
    ) -> None:
        self.ctx = ctx
        self._replay = timed(ctx.metrics.verification_seconds, ctx.seams.check)
        self._deliver = deliver
        self._on_fraud = on_fraud
        self.standin_after = standin_after
        self.running: set[bytes] = set()
        self.first_seen: dict[bytes, float] = {}
        self.started_at: float | None = None

    def is_designated(self, job: JobState, sub: WorkSubmission, validators: ValidatorSet, *, standin: bool = False) -> bool:
        slots = compute_checker_slots(job, sub.shard, sub.trainer, validators)
        return self.ctx.me in (slots.allowed if standin else slots.designated)

    def is_checking(self) -> bool:
        """Whether a check of a unit still in the pool is running and has not yet given our verdict."""
        me = self.ctx.me
        for sid in self.running:
            entry = self.ctx.pool.get(sid)
            if entry is not None and me not in entry.verdicts:
                return True
        return False

    def note_arrival(self, sid: bytes) -> None:
        self.first_seen[sid] = self.ctx.clock()

    def prefetch(self, sub: WorkSubmission, job: JobState, validators: ValidatorSet) -> None:
        """Fetch what this validator will read of the unit: its outputs, and its checkpoints or inputs if it may check it."""
        links = sub.links
        wanted: list[bytes] = [sub.result_digest]
        if links is not None and links.output_gradient is not None:
            wanted.append(links.output_gradient)
        if self.is_designated(job, sub, validators, standin=True):
            wanted += list(sub.checkpoint_digests)
            if links is not None:
                wanted += [links.stage_root, *links.inputs]
        self.ctx.spawn(self._fetch(wanted), "prefetch")

    async def _fetch(self, digests: list[bytes]) -> None:
        for digest in digests:
            await self.ctx.runner.ensure_blob(digest)

    def schedule(self) -> None:
        """Check every unit this validator is designated for, or must stand in for now."""
        ctx = self.ctx
        validators = ctx.chain.validators()
        me = ctx.me
        if me not in validators:
            return
        now = ctx.clock()
        if self.started_at is None:
            self.started_at = now
        reachable = ctx.network.connected_keys() | {me}
        state = ctx.chain.state
        for sid, entry in ctx.pool.entries():
            sub = entry.signed.submission
            job = state.jobs.get(sub.job)
            if job is None or me in entry.verdicts or sid in self.running:
                continue
            slots = compute_checker_slots(job, sub.shard, sub.trainer, validators)
            passing = sum(1 for v in entry.verdicts.values() if not v.verdict.failure)
            waited = now - self.first_seen.get(sid, now)
            if me in slots.designated or (
                me in slots.standins
                and passing < slots.need
                and standin_due(waited, now - self.started_at, self.standin_after, slots.designated, reachable)
            ):
                # Marked running before the task starts, so the node never looks idle in between.
                self.running.add(sid)
                ctx.spawn(self._check(entry.signed, job), f"check-{job.step}-{sub.shard}")

    async def _check(self, signed: SignedWorkSubmission, job: JobState) -> None:
        ctx = self.ctx
        sub = signed.submission
        sid = submission_id(sub)
        try:
            sample_sig, steps = sample_for(ctx.keypair, ctx.chain_id, job, sub)
            try:
                result = await ctx.runner.run(PRIORITY_CHECK, self._replay, ctx.executor, job, sub, steps)
            except WorkUnavailable as exc:
                log.warning("cannot check yet: %s", exc, extra={"unit": sid, "job": sub.job, "step": sub.step})
                return
            verdict = make_verdict(ctx.keypair, ctx.chain_id, sub, result, steps, sample_sig, ctx.executor.receipt(job.spec))
            ctx.metrics.units_checked.inc()
            if result.failure:
                ctx.metrics.units_failed.inc()
                log.warning("unit rejected", extra={
                    "unit": sid, "job": sub.job, "step": sub.step, "shard": sub.shard, "trainer": sub.trainer,
                    "failure": result.failure, "failed_step": result.failed_step,
                })
                ctx.pool.add_evidence(WorkFraud(signed, verdict))
                self._on_fraud(sid)
            else:
                log.info("unit verified", extra={
                    "unit": sid, "job": sub.job, "step": sub.step, "shard": sub.shard, "checked_steps": len(steps),
                })
            await self._deliver(verdict)
        finally:
            self.running.discard(sid)

    def prune(self) -> None:
        for sid in list(self.first_seen):
            if self.ctx.pool.get(sid) is None:
                del self.first_seen[sid]
