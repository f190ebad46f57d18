"""Training: every unit the chain assigns to this node, computed from the committed model state.

A unit runs on the work queue through the ``train`` seam, is checked to be
still wanted (the step may have moved on while it ran), passes the
``amend`` seam, is signed, and goes to the duties' submission path, which
admits it to the pool and gossips it.

This module must never decide validity: the chain's assignment says what to
train, ``consensus.work`` whether a unit is acceptable.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Awaitable, Callable

from consensus import pipeline
from consensus.types import JOB_ACTIVE, Hash32, JobState, SignedWorkSubmission, WorkSubmission
from consensus.work import WorkUnavailable, sign_submission, submission_id
from tdml_node.duties.context import DutyContext
from tdml_node.metrics import timed
from tdml_node.runtime.workqueue import PRIORITY_TRAIN

log = logging.getLogger("tdml.duties")

UnitKey = tuple[Hash32, int, int]
"""(job, step, shard)"""


class Training:
    def __init__(self, ctx: DutyContext, submit: Callable[[SignedWorkSubmission], Awaitable[None]]) -> None:
        self.ctx = ctx
        self._compute = timed(ctx.metrics.training_seconds, ctx.seams.train)
        self._submit = submit
        self.running: set[UnitKey] = set()

    def schedule(self) -> None:
        """Start every unit assigned to this node that is neither trained nor training yet."""
        ctx = self.ctx
        for job in ctx.chain.state.jobs.values():
            if job.status != JOB_ACTIVE or not ctx.executor.can_run(job.spec):
                continue
            for shard in range(pipeline.units_per_step(job.spec)):
                key = (job.job_id, job.step, shard)
                if job.assignment[shard] != ctx.address or job.accepted[shard] is not None:
                    continue
                if pipeline.job_inputs(job, shard) is None:
                    continue  # a stage unit starts once the outputs it reads are accepted
                if key in self.running or ctx.pool.unit_for(*key, ctx.address) is not None:
                    continue
                self.running.add(key)
                ctx.spawn(self._train(job, shard), f"train-{job.step}-{shard}")

    def is_training(self, open_keys: set[tuple[bytes, int, int]]) -> bool:
        return bool(open_keys & self.running)

    async def _train(self, job: JobState, shard: int) -> None:
        ctx = self.ctx
        key = (job.job_id, job.step, shard)
        try:
            try:
                unit = await ctx.runner.run(PRIORITY_TRAIN, self._compute, ctx.executor, job, shard)
            except WorkUnavailable as exc:
                log.warning("cannot train yet: %s", exc, extra={"job": job.job_id, "step": job.step, "shard": shard})
                return
            current = ctx.chain.state.jobs.get(job.job_id)
            if current is None or current.step != job.step or current.assignment[shard] != ctx.address:
                return
            sub = WorkSubmission(
                job=job.job_id,
                step=job.step,
                shard=shard,
                trainer=ctx.keypair.public_key,
                parent_model_root=job.model_root,
                checkpoint_digests=unit.checkpoint_digests,
                result_digest=unit.result_digest,
                losses=unit.losses,
                receipt=unit.receipt,
                links=unit.links,
            )
            sub = ctx.seams.amend(job, sub, ctx.pool.units_of_step(job.job_id, job.step))
            ctx.metrics.units_trained.inc()
            # Submitted before the key is dropped: the unit's check is scheduled
            # meanwhile, so the node never looks idle between training and checking.
            await self._submit(sign_submission(ctx.keypair, ctx.chain_id, sub))
            log.info("unit trained", extra={
                "job": job.job_id, "step": job.step, "shard": shard, "unit": submission_id(sub),
                "loss": round(struct.unpack("<f", struct.pack("<I", sub.losses[-1]))[0], 5) if sub.losses else None,
            })
        finally:
            self.running.discard(key)
