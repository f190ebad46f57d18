"""The executor's pipeline-job side: stage units trained, replayed and compared, and steps aggregated, over blobs.

``TorchExecutor`` hands a pipeline job's calls here with the context it
prepared (profile applied, dataset and model at hand). A unit's inputs are
the blobs its ``StageLinks`` name; its stage state is the entry of the
committed ``PipelineState`` (the job's model root), so a stage trainer
fetches its own range's bundle and nothing of the other stages'. A replay
reproduces the unit's result and handed-on gradient together and reports
``consensus.pipeline.combined_output`` of them where a gradient is handed on:
the digest a submission claims (``claimed_output``).

This module must never apply a profile or decide a verdict: the executor
does the first and ``consensus.work.check_unit`` the second.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from consensus import pipeline
from consensus.types import ExecutionProfile, Hash32, JobSpec, StageLinks, WorkSubmission
from consensus.work import (
    InvalidWork,
    ReplayComparison,
    ReplayOutput,
    StepResult,
    TrainedUnit,
    WorkView,
)
from tdml_node.storage import BlobStore
from tdml_node.work.datasets import Dataset
from tdml_node.work.pipeline_exec import aggregate_step, initial_state_blobs, parse_gradients
from tdml_node.work.pipeline_state import decode_pipeline_state
from tdml_node.work.stage import ACT_GRAD_PREFIX, ACT_PREFIX, LOSS_KEY, read_micro_batches
from tdml_node.work.stage_unit import StageOutput, compute_stage_unit
from tdml_node.work.tensors import bundle_digest, decode_bundle
from tdml_node.work.tolerance import bundle_distance, loss_distance


def output_digest(out: StageOutput) -> Hash32:
    """The one digest a replay of the unit reports: the result's, bound to the handed-on gradient's."""
    result = bundle_digest(out.result)
    return result if out.gradient is None else pipeline.combined_output(result, bundle_digest(out.gradient))


class StageWork:
    """Pipeline units over a blob store; ``blob`` reads one (``WorkUnavailable`` when missing)."""

    def __init__(self, blobs: BlobStore, blob: Callable[[Hash32], bytes]) -> None:
        self.blobs = blobs
        self._blob = blob

    def initial_model_root(self, model: nn.Module, spec: JobSpec) -> Hash32:
        root, blobs = initial_state_blobs(model, spec)
        for data in blobs:
            self.blobs.put(data)
        return root

    def stage_root(self, job: WorkView, stage_index: int) -> Hash32:
        """Stage ``stage_index``'s state bundle digest in the job's committed model state."""
        return decode_pipeline_state(self._blob(job.model_root), job.spec).stage_roots[stage_index]

    def step_outcome(self, model: nn.Module, dataset: Dataset, job: WorkView, results: tuple[Hash32, ...]) -> StepResult:
        spec = job.spec
        state = decode_pipeline_state(self._blob(job.model_root), spec)
        stage_states = [decode_bundle(self._blob(r)) for r in state.stage_roots]
        decoded = [decode_bundle(self._blob(r)) for r in results]
        out = aggregate_step(model, spec, job.step, stage_states, decoded, dataset)
        for data in out.blobs:
            self.blobs.put(data)
        ev = out.evaluation
        return StepResult(out.model_root, out.train_loss, ev.loss, ev.correct, ev.total)

    def train(
        self, model: nn.Module, dataset: Dataset, receipt: ExecutionProfile, job: WorkView, unit_index: int,
        inputs: tuple[Hash32, ...],
    ) -> TrainedUnit:
        """Unit ``unit_index`` from the inputs the chain links it to; its blobs are stored."""
        spec = job.spec
        if not 0 <= unit_index < pipeline.units_per_step(spec):
            raise ValueError(f"unit {unit_index} out of range")
        place = pipeline.place_of(spec, unit_index)
        stage_root = self.stage_root(job, place.stage)
        out = self._compute(model, dataset, job, unit_index, stage_root, inputs)
        gradient = self.blobs.put(out.gradient) if out.gradient is not None else None
        losses = (out.loss_bits,) if pipeline.has_loss(spec, unit_index) else ()
        links = StageLinks(stage_root, inputs, gradient)
        return TrainedUnit((), self.blobs.put(out.result), losses, receipt, links)

    def replay(self, model: nn.Module, dataset: Dataset, job: WorkView, submission: WorkSubmission) -> ReplayOutput:
        out = self._replay(model, dataset, job, submission)
        digest = output_digest(out)
        if digest == pipeline.claimed_output(submission):
            # Reproduced byte for byte: this node can hold and serve the unit's outputs,
            # so a trainer withholding them stalls neither its successor nor aggregation.
            self.blobs.put(out.result)
            if out.gradient is not None:
                self.blobs.put(out.gradient)
        return ReplayOutput(digest, out.loss_bits)

    def compare(self, model: nn.Module, dataset: Dataset, job: WorkView, submission: WorkSubmission) -> ReplayComparison:
        """(Tolerance jobs) the replay against the claimed result and handed-on gradient, by the largest distance."""
        out = self._replay(model, dataset, job, submission)
        self.check_outputs(model, job.spec, submission)
        distance = bundle_distance(decode_bundle(self._blob(submission.result_digest)), decode_bundle(out.result))
        links = submission.links
        if out.gradient is not None and links is not None and links.output_gradient is not None:
            claimed = decode_bundle(self._blob(links.output_gradient))
            distance = max(distance, bundle_distance(claimed, decode_bundle(out.gradient)))
        claimed_loss = submission.losses[0] if submission.losses else 0
        distance = max(distance, loss_distance(claimed_loss, out.loss_bits))
        return ReplayComparison(output_digest(out), out.loss_bits, distance)

    def check_outputs(self, model: nn.Module, spec: JobSpec, submission: WorkSubmission) -> None:
        """``InvalidWork`` unless the unit's claimed outputs decode to what its phase produces."""
        u = submission.shard
        place = pipeline.place_of(spec, u)
        assert spec.pipeline is not None
        micro = spec.pipeline.micro_batches
        tensors = decode_bundle(self._blob(submission.result_digest))
        if place.phase == pipeline.PHASE_FORWARD:
            read_micro_batches(tensors, ACT_PREFIX, micro)
        else:
            loss = tensors.pop(LOSS_KEY, None)
            if pipeline.has_loss(spec, u) and (loss is None or loss.dtype != torch.float32 or tuple(loss.shape) != (1,)):
                raise InvalidWork(f"unit {u} reports no float32 loss of shape (1,)")
            if loss is not None and not pipeline.has_loss(spec, u):
                raise InvalidWork(f"unit {u} reports a loss its stage does not compute")
            parse_gradients(tensors, model, spec, place.stage)
        links = submission.links
        if links is not None and links.output_gradient is not None:
            read_micro_batches(decode_bundle(self._blob(links.output_gradient)), ACT_GRAD_PREFIX, micro)

    def _replay(self, model: nn.Module, dataset: Dataset, job: WorkView, submission: WorkSubmission) -> StageOutput:
        links = submission.links
        if links is None:
            raise InvalidWork("a pipeline unit names no stage links")
        committed = self.stage_root(job, pipeline.place_of(job.spec, submission.shard).stage)
        if links.stage_root != committed:
            raise InvalidWork(f"the unit names stage state {links.stage_root.hex()[:16]}, not the committed one")
        return self._compute(model, dataset, job, submission.shard, committed, links.inputs)

    def is_malformed(self, model: nn.Module, dataset: Dataset, job: WorkView, submission: WorkSubmission) -> bool:
        """Whether the unit's claim cannot be checked: no links, a wrong stage state, undecodable inputs or outputs."""
        try:
            self.check_outputs(model, job.spec, submission)
            self._replay(model, dataset, job, submission)
        except InvalidWork:
            return True
        return False

    def _compute(
        self, model: nn.Module, dataset: Dataset, job: WorkView, unit_index: int, stage_root: Hash32,
        inputs: tuple[Hash32, ...],
    ) -> StageOutput:
        decoded = [decode_bundle(self._blob(d)) for d in inputs]
        return compute_stage_unit(model, job.spec, dataset, job.step, unit_index, decode_bundle(self._blob(stage_root)), decoded)
