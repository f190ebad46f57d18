"""Which work blobs a node may delete: those of steps older than the retention window.

Committed blocks name every blob the chain relies on: each accepted unit's
result and checkpoints (and a stage unit's handed-on gradient), and each
step's new model state (a pipeline's with its stage bundles, which the
committing node names). A node remembers them per (job, step) as blocks
commit and, once a job has moved ``keep_steps`` steps past them, hands them
back for deletion. The current model state of every job, stage bundles
included, is never handed back, and datasets never are.
Blobs seen before a restart are not remembered (they stay on disk).

This module must never touch the store itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from consensus.state import LedgerState
from consensus.types import Block, Hash32, JobState


class Retention:
    def __init__(self, keep_steps: int) -> None:
        self.keep_steps = max(1, keep_steps)
        self._by_step: dict[tuple[bytes, int], list[Hash32]] = {}
        self._parts: dict[bytes, tuple[Hash32, ...]] = {}
        """For each model root recorded, the blobs it names (a pipeline's stage roots)."""

    def record_block(self, block: Block, state_parts: Mapping[Hash32, Sequence[Hash32]] | None = None) -> None:
        """Remember the block's blobs; ``state_parts`` gives, per new model root, the blobs it names."""
        for signed in block.body.submissions:
            sub = signed.submission
            handed = (sub.links.output_gradient,) if sub.links is not None and sub.links.output_gradient else ()
            self._by_step.setdefault((sub.job, sub.step), []).extend((sub.result_digest, *sub.checkpoint_digests, *handed))
        for outcome in block.body.outcomes:
            parts = tuple((state_parts or {}).get(outcome.model_root, ()))
            self._parts[outcome.model_root] = parts
            self._by_step.setdefault((outcome.job, outcome.step + 1), []).extend((outcome.model_root, *parts))

    def expired(self, state: LedgerState, parts_of: Callable[[Hash32], Sequence[Hash32]] | None = None) -> list[Hash32]:
        """The blobs to delete now, each once. ``parts_of(root)`` reads the blobs a model root names where the
        commit did not (a node that takes the model work from the commit fetches stage bundles later)."""

        def named_by(root: Hash32, job: JobState | None) -> tuple[Hash32, ...]:
            known = self._parts.get(root, ())
            if known or parts_of is None or job is None or job.spec.pipeline is None:
                return known
            read = tuple(parts_of(root))
            if read:
                self._parts[root] = read  # read once: a root's blob never changes
            return read

        gone_keys: set[tuple[bytes, int]] = set()
        for key in self._by_step:
            job = state.jobs.get(Hash32(key[0]))
            if job is None or key[1] < job.step - self.keep_steps:
                gone_keys.add(key)
        current = {job.model_root for job in state.jobs.values()}
        protected = current | {job.spec.dataset for job in state.jobs.values()}
        protected |= {p for job in state.jobs.values() for p in named_by(job.model_root, job)}
        # A blob named again by a step still kept (a stage bundle that did not change) stays too.
        protected |= {d for key, digests in self._by_step.items() if key not in gone_keys for d in digests}
        out: dict[Hash32, None] = {}  # in the order recorded, each once
        for key in sorted(gone_keys):
            job = state.jobs.get(Hash32(key[0]))
            for digest in self._by_step.pop(key):
                if digest in protected:
                    continue
                out[digest] = None
                if digest in self._parts:
                    out.update((d, None) for d in named_by(digest, job) if d not in protected)
                    del self._parts[digest]
        return list(out)
