"""The blobs of a step's new model state, as a commit writes them and retention later expires them.

A plain job's state is one bundle, named by the model root. A pipeline job's
model root names a ``PipelineState`` whose stage roots name one bundle per
stage: all of them are written with the block that commits the step, and all
of them expire together once the job has moved past the retention window.

This module must never write to the store: it reads the blobs the
executor produced, and the caller commits them.
"""

from __future__ import annotations

from dataclasses import dataclass

from consensus.codec import DecodeError, decode_as
from consensus.state import LedgerState
from consensus.types import Hash32, PipelineState, StepOutcome
from tdml_node.storage.chainstore import ChainStore


@dataclass(frozen=True, slots=True)
class StepState:
    root: Hash32
    blobs: tuple[bytes, ...]
    """The root's blob, then (a pipeline) each stage bundle this node holds."""
    parts: tuple[Hash32, ...]
    """The digests the root names besides itself: a pipeline's stage roots; empty for a plain job."""


def step_state(store: ChainStore, state: LedgerState, outcome: StepOutcome) -> StepState:
    data = store.get(outcome.model_root)
    if data is None:
        return StepState(outcome.model_root, (), ())
    job = state.jobs.get(outcome.job)
    if job is None or job.spec.pipeline is None:
        return StepState(outcome.model_root, (data,), ())
    roots = decode_as(data, PipelineState).stage_roots
    stages = (store.get(root) for root in roots)
    return StepState(outcome.model_root, (data, *(b for b in stages if b is not None)), tuple(roots))


def stage_roots(store: ChainStore, root: Hash32) -> tuple[Hash32, ...]:
    """The stage bundles a pipeline job's model root names, if this node holds the root's blob (else none)."""
    data = store.get(root)
    if data is None:
        return ()
    try:
        return tuple(decode_as(data, PipelineState).stage_roots)
    except DecodeError:
        return ()
