"""Which work blobs a node may delete: those of steps older than the retention window.

Committed blocks name every blob the chain relies on: each accepted unit's
result and checkpoints, and each step's new model state. A node remembers
them per (job, step) as blocks commit and, once a job has moved
``keep_steps`` steps past them, hands them back for deletion. The current
model state of every job is never handed back, and datasets never are.
Blobs seen before a restart are not remembered (they stay on disk).

This module must never touch the store itself.
"""

from __future__ import annotations

from consensus.state import LedgerState
from consensus.types import Block, Hash32


class Retention:
    def __init__(self, keep_steps: int) -> None:
        self.keep_steps = max(1, keep_steps)
        self._by_step: dict[tuple[bytes, int], list[Hash32]] = {}

    def record_block(self, block: Block) -> None:
        for signed in block.body.submissions:
            sub = signed.submission
            handed = (sub.links.output_gradient,) if sub.links is not None and sub.links.output_gradient else ()
            self._by_step.setdefault((sub.job, sub.step), []).extend((sub.result_digest, *sub.checkpoint_digests, *handed))
        for outcome in block.body.outcomes:
            self._by_step.setdefault((outcome.job, outcome.step + 1), []).append(outcome.model_root)

    def expired(self, state: LedgerState) -> list[Hash32]:
        protected = {job.model_root for job in state.jobs.values()} | {job.spec.dataset for job in state.jobs.values()}
        out: list[Hash32] = []
        for key in list(self._by_step):
            job_id, step = key
            job = state.jobs.get(Hash32(job_id))
            if job is None or step < job.step - self.keep_steps:
                out.extend(d for d in self._by_step.pop(key) if d not in protected)
        return out
