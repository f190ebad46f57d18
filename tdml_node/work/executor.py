"""The torch executor: ``consensus.work.WorkExecutor`` over a blob store.

It connects the protocol to the work semantics of ``unit`` and
``aggregate``: it applies the job's execution profile, fetches and checks the
blobs a call needs (dataset, model state, checkpoints, results), stores the
blobs it produces, and maps faults to the protocol's answers: a missing blob
is ``WorkUnavailable`` (not yet decidable), a blob that does not decode to
the model's tensors is ``InvalidWork`` / ``FAILURE_MALFORMED``.

Decoded datasets, decoded model states and the model objects themselves are
cached, since a node works on the same job step after step. The caches hold
values that are immutable in use (states are copied into the model, never
aliased), so a cache hit computes exactly what a miss would.

This module must never run work under settings other than the profile it
reports, never be called from more than one thread at a time (torch's
determinism settings are process-wide), and never use asyncio.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import torch
from torch import nn

from consensus.types import (
    FAILURE_MALFORMED,
    FAILURE_NONE,
    FAILURE_PARENT,
    FAILURE_REPLAY,
    FAILURE_RESULT,
    ExecutionProfile,
    Hash32,
    JobSpec,
    OptimizerSpec,
    Verdict,
    WorkSubmission,
)
from consensus.work import (
    InvalidWork,
    ReplayComparison,
    ReplayOutput,
    StepResult,
    TrainedUnit,
    WorkUnavailable,
    WorkView,
    check_unit,
    claimed_replay,
    replay_tolerance,
)
from tdml_node.storage import BlobStore
from tdml_node.work import aggregate, unit
from tdml_node.work.datasets import Dataset
from tdml_node.work.models import build_model, build_model_skeleton, validate_model_spec
from tdml_node.work.optim import (
    build_optimizer,
    compute_lr,
    optimizer_args,
    optimizer_lr,
    optimizer_state_keys,
)
from tdml_node.work.partition import check_bounds
from tdml_node.work.profile import (
    TORCH_VERSION,
    apply_profile,
    can_run,
    local_profile,
    receipt_for,
    torch_dtype,
)
from tdml_node.work.sealed import NoDataKey, SealError, open_blob
from tdml_node.work.stage_work import StageWork
from tdml_node.work.state import ModelState, encode_state, load_state, parse_state
from tdml_node.work.tensors import bundle_digest, decode_bundle
from tdml_node.work.tolerance import bundle_distance, loss_distance


class _LRU:
    """A small least-recently-used map."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[Hashable, object] = OrderedDict()

    def get(self, key: Hashable) -> object | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: Hashable, value: object) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._size:
            self._items.popitem(last=False)


@dataclass(frozen=True, slots=True)
class _Context:
    """Everything a call on one job needs, prepared under the profile it runs with."""

    spec: JobSpec
    receipt: ExecutionProfile
    device: torch.device
    dataset: Dataset
    model: nn.Module


def model_state_optimizer(spec: JobSpec) -> OptimizerSpec:
    """The optimizer whose state a job's committed model state holds: the outer one when H > 1."""
    if spec.inner_steps > 1:
        if spec.outer_optimizer is None:
            raise InvalidWork("a job with inner_steps > 1 needs an outer optimizer")
        return spec.outer_optimizer
    return spec.optimizer


def validate_spec(spec: JobSpec) -> None:
    """Raise ``InvalidWork`` for what the executor can tell about a job without its dataset."""
    validate_model_spec(spec.model)
    check_bounds(spec)
    torch_dtype(spec.profile)
    optimizer_args(spec.optimizer)
    model_state_optimizer(spec)
    if spec.outer_optimizer is not None:
        optimizer_args(spec.outer_optimizer)
    compute_lr(spec, 0)


class TorchExecutor:
    """Trains, replays, checks and aggregates work units with torch.

    ``profile`` replaces the job's execution profile for every call; it is
    for jobs that tolerate other profiles and for tests, and it is what the
    receipts then report.
    """

    def __init__(
        self,
        blobs: BlobStore,
        *,
        profile: ExecutionProfile | None = None,
        train_threads: int = 0,
        state_cache: int = 8,
        dataset_cache: int = 4,
        data_key: Callable[[JobSpec], bytes | None] | None = None,
    ) -> None:
        self.blobs = blobs
        # A private job's dataset key, when this node holds a share of it (the node's key ring).
        self._data_key = data_key or (lambda spec: None)
        self._stages = StageWork(blobs, self._blob)
        self._profile = profile
        # Training of tolerance jobs may use this node's own thread count (its
        # receipt says so); checks and aggregation always run the job's profile.
        self._train_threads = train_threads
        self._states = _LRU(state_cache)
        self._datasets = _LRU(dataset_cache)
        self._models: dict[tuple[Hashable, ...], nn.Module] = {}
        self._checked_inputs: set[tuple[Hashable, ...]] = set()
        self._valid_specs: set[JobSpec] = set()

    # ------------------------------------------------------------------
    # What the node asks before it takes on work

    @property
    def torch_version(self) -> str:
        return TORCH_VERSION

    def warm_up(self) -> None:
        """Load torch's lazily imported machinery by applying a local profile once."""
        apply_profile(self._profile or local_profile())

    def can_run(self, spec: JobSpec) -> bool:
        """Whether this process can compute the job's units under the profile they need."""
        return can_run(self._profile or spec.profile)

    def receipt(self, spec: JobSpec) -> ExecutionProfile:
        """The profile a call on this job runs under, as receipts report it."""
        profile = self._profile or spec.profile
        device = torch.device("cuda" if profile.device == "cuda" and torch.cuda.is_available() else "cpu")
        return receipt_for(profile, device)

    # ------------------------------------------------------------------
    # WorkOracle

    def initial_model_root(self, spec: JobSpec) -> Hash32:
        """Root of the freshly initialised model with empty optimizer state; the state is stored.

        Initialisation draws from torch's CPU generator, whose stream does not
        depend on the thread count or device, so no profile is applied here.
        """
        validate_spec(spec)
        model = build_model(spec.model, seed=spec.seed, dtype=torch_dtype(spec.profile))
        if spec.pipeline is not None:
            return self._stages.initial_model_root(model, spec)
        data = encode_state(model)
        root = self.blobs.put(data)
        self._states.put(root, decode_bundle(data))
        return root

    def step_outcome(self, job: WorkView, results: tuple[Hash32, ...]) -> StepResult:
        spec = job.spec
        if spec.pipeline is not None:
            ctx = self._enter(spec)
            return self._stages.step_outcome(ctx.model, ctx.dataset, job, results)
        if len(results) != spec.shards:
            raise InvalidWork(f"a step of this job aggregates {spec.shards} results, got {len(results)}")
        ctx = self._enter(spec)
        opt_spec = model_state_optimizer(spec)
        state = self._model_state(job.model_root, ctx.model, opt_spec)
        updates: list[dict[str, torch.Tensor]] = []
        losses: list[torch.Tensor] = []
        for digest in results:
            update, shard_losses = unit.parse_result(decode_bundle(self._blob(digest)), ctx.model, spec)
            updates.append(update)
            losses.append(shard_losses)
        lr = compute_lr(spec, job.step) if spec.inner_steps == 1 else optimizer_lr(opt_spec)
        optimizer = build_optimizer(opt_spec, ctx.model.parameters(), lr=lr)
        load_state(ctx.model, state, optimizer)
        aggregate.apply_updates(ctx.model, optimizer, updates)
        data = encode_state(ctx.model, optimizer)
        root = self.blobs.put(data)
        self._states.put(root, decode_bundle(data))
        train_loss = aggregate.mean_last_loss(losses)
        ev = aggregate.NOT_EVALUATED
        if aggregate.should_evaluate(spec, job.step):
            ev = aggregate.evaluate(ctx.model, ctx.dataset)
        return StepResult(root, train_loss, ev.loss, ev.correct, ev.total)

    def recheck(self, job: WorkView, submission: WorkSubmission, verdict: Verdict) -> bool:
        """Whether the failure the verdict claims is real, by re-running that one check.

        A replay verdict is upheld when step ``failed_step`` does not reproduce
        the trainer's claim, including when the checkpoint it starts from is
        unreadable (the trainer's claim cannot be reproduced either way); in a
        tolerance job, "does not reproduce" means its distance from the claim
        exceeds the tolerance (``compare_step``). A result verdict is upheld
        when the result is not the final checkpoint's delta (or is
        unreadable), in every job; a malformed verdict when a blob the checks
        read does not decode to the model's tensors.
        """
        spec = job.spec
        h = spec.inner_steps
        if verdict.failure == FAILURE_PARENT:
            return submission.parent_model_root != job.model_root
        if verdict.failure == FAILURE_REPLAY:
            step = verdict.failed_step
            if not 0 <= step < h:
                return False
            if spec.pipeline is None:
                if len(submission.losses) != h:
                    return False
                if h > 1 and len(submission.checkpoint_digests) != h:
                    return True
            claimed, claimed_loss = claimed_replay(spec, submission, step)
            if claimed_loss is None:
                return False
            # A job that cannot run at all is nobody's fraud: that InvalidWork propagates.
            self._enter(spec)
            tolerance = replay_tolerance(spec)
            try:
                if tolerance is not None:
                    return not self.compare_step(job, submission, step).distance <= tolerance
                out = self.replay_step(job, submission, step)
            except InvalidWork:
                return True
            return out.digest != claimed or out.loss != claimed_loss
        if verdict.failure == FAILURE_RESULT:
            return h > 1 and self.check_result(job, submission) != FAILURE_NONE
        if verdict.failure == FAILURE_MALFORMED:
            return self._is_malformed(job, submission, verdict.checked_steps)
        return False

    def recheck_pass(self, job: WorkView, submission: WorkSubmission, verdict: Verdict) -> bool:
        """Whether a passing verdict is false: the checks it claims (parent, its steps, the result) fail."""
        return check_unit(self, job, submission, verdict.checked_steps).failure != FAILURE_NONE

    # ------------------------------------------------------------------
    # WorkExecutor

    def train_unit(self, job: WorkView, shard: int) -> TrainedUnit:
        spec = job.spec
        if spec.pipeline is not None:
            raise ValueError("a pipeline job is trained unit by unit with train_stage")
        if not 0 <= shard < spec.shards:
            raise ValueError(f"shard {shard} out of range")
        ctx = self._enter(spec, training=True)
        state = self._model_state(job.model_root, ctx.model, model_state_optimizer(spec))
        params_only = ModelState(state.params, {})
        load_state(ctx.model, params_only)
        if spec.inner_steps == 1:
            result, bits = unit.gradient_result(ctx.model, ctx.dataset, spec, job.step, shard)
            return TrainedUnit((), self.blobs.put(result), (bits,), ctx.receipt)
        inner = build_optimizer(spec.optimizer, ctx.model.parameters(), lr=compute_lr(spec, job.step))
        run = unit.local_run(ctx.model, inner, state.params, ctx.dataset, spec, job.step, shard)
        digests = tuple(self.blobs.put(ck) for ck in run.checkpoints)
        return TrainedUnit(digests, self.blobs.put(run.result), run.losses, ctx.receipt)

    def train_stage(self, job: WorkView, unit_index: int, inputs: tuple[Hash32, ...]) -> TrainedUnit:
        """Pipeline unit ``unit_index`` from the accepted outputs it reads (``pipeline.expected_inputs``)."""
        ctx = self._enter(job.spec, training=True, stage=True)
        return self._stages.train(ctx.model, ctx.dataset, ctx.receipt, job, unit_index, inputs)

    def replay_step(self, job: WorkView, submission: WorkSubmission, inner: int) -> ReplayOutput:
        if not 0 <= inner < job.spec.inner_steps:
            raise ValueError(f"inner step {inner} out of range")
        if job.spec.pipeline is not None:
            ctx = self._enter(job.spec, stage=True)
            return self._stages.replay(ctx.model, ctx.dataset, job, submission)
        produced, bits = self._replay(self._enter(job.spec), job, submission, inner)
        digest = bundle_digest(produced)
        if job.spec.inner_steps == 1 and digest == submission.result_digest:
            # The replay reproduced the trainer's result byte for byte, so this node can
            # hold and serve it: a trainer withholding its result cannot stall aggregation.
            self.blobs.put(produced)
        return ReplayOutput(digest, bits)

    def compare_step(self, job: WorkView, submission: WorkSubmission, inner: int) -> ReplayComparison:
        """(Tolerance jobs) replay inner step ``inner`` and measure it against what the trainer claims.

        The claim is the result bundle (gradients and loss) when H = 1, else
        checkpoint ``inner + 1`` (parameters and inner optimizer state), plus
        the submission's loss of that step. The distance is the largest of
        ``tolerance.bundle_distance`` and ``tolerance.loss_distance``. A claim
        that is no valid result or checkpoint of the model is ``InvalidWork``
        (what ``_is_malformed`` also finds); a missing blob is
        ``WorkUnavailable``.
        """
        spec = job.spec
        h = spec.inner_steps
        if not 0 <= inner < h:
            raise ValueError(f"inner step {inner} out of range")
        if spec.pipeline is not None:
            ctx = self._enter(spec, stage=True)
            return self._stages.compare(ctx.model, ctx.dataset, job, submission)
        if len(submission.losses) != h:
            raise InvalidWork(f"the submission claims {len(submission.losses)} losses, the job has {h} inner steps")
        ctx = self._enter(spec)
        produced, bits = self._replay(ctx, job, submission, inner)
        if h == 1:
            claimed = decode_bundle(self._blob(submission.result_digest))
            unit.parse_result(claimed, ctx.model, spec)
        else:
            claimed = self._checkpoint(ctx, submission, inner + 1)[0]
        distance = max(
            bundle_distance(claimed, decode_bundle(produced)),
            loss_distance(submission.losses[inner], bits),
        )
        return ReplayComparison(bundle_digest(produced), bits, distance)

    def check_result(self, job: WorkView, submission: WorkSubmission) -> int:
        """(H > 1) whether the result is the final checkpoint's delta from θ0 with the claimed losses.

        With H = 1 the replay itself recomputes the result, so there is
        nothing further to check and the answer is ``FAILURE_NONE``.
        """
        spec = job.spec
        h = spec.inner_steps
        if h == 1:
            return FAILURE_NONE
        if len(submission.checkpoint_digests) != h or len(submission.losses) != h:
            return FAILURE_MALFORMED
        if not self.blobs.has(submission.result_digest):
            raise WorkUnavailable(
                f"result blob {submission.result_digest.hex()} is missing", submission.result_digest
            )
        ctx = self._enter(spec)
        start = self._model_state(job.model_root, ctx.model, model_state_optimizer(spec))
        try:
            final = self._checkpoint_before(ctx, job, submission, h)
            expected = unit.delta_result(start.params, final.params, submission.losses)
        except InvalidWork:
            return FAILURE_MALFORMED
        if bundle_digest(expected) == submission.result_digest:
            return FAILURE_NONE
        try:
            unit.parse_result(decode_bundle(self._blob(submission.result_digest)), ctx.model, spec)
        except InvalidWork:
            return FAILURE_MALFORMED
        return FAILURE_RESULT

    # ------------------------------------------------------------------
    # Internals

    def _enter(self, spec: JobSpec, *, training: bool = False, stage: bool = False) -> _Context:
        """Apply the profile, then fetch (or reuse) the dataset and the model for the job.

        ``stage``: the call computes one pipeline unit, so the model is a
        skeleton whose stage gets storage only while the unit runs; the whole
        model is built only for what needs it (aggregation, evaluation).
        """
        profile = self._profile or spec.profile
        if training and self._train_threads and spec.verification.tolerance != "0":
            profile = dataclasses.replace(profile, threads=self._train_threads)
        device = apply_profile(profile)
        dtype = torch_dtype(profile)
        if spec not in self._valid_specs:
            validate_spec(spec)
            self._valid_specs.add(spec)
        dataset = self._dataset(spec, dtype, device)
        model_key = (spec.model, dtype, "meta" if stage else device.type)
        model = self._models.get(model_key)
        if model is None:
            # The seed is irrelevant: every use loads a state into the model first.
            model = build_model_skeleton(spec.model, dtype=dtype) if stage else build_model(spec.model, seed=0, dtype=dtype).to(device)
            self._models[model_key] = model
        inputs_key = (spec.dataset, spec.task, spec.seq_len, spec.model, spec.global_batch, spec.shards)
        if inputs_key not in self._checked_inputs:
            unit.validate_job_inputs(spec, dataset)
            self._checked_inputs.add(inputs_key)
        return _Context(spec, receipt_for(profile, device), device, dataset, model)

    def _blob(self, digest: Hash32) -> bytes:
        data = self.blobs.get(digest)
        if data is None:
            raise WorkUnavailable(f"blob {digest.hex()} is missing", digest)
        return data

    def _dataset(self, spec: JobSpec, dtype: torch.dtype, device: torch.device) -> Dataset:
        key = (spec.dataset, spec.task, spec.seq_len, dtype, device.type)
        cached = self._datasets.get(key)
        if isinstance(cached, Dataset):
            return cached
        raw = self._blob(spec.dataset)
        if spec.private:
            raw = self._open_private(spec, raw)
        dataset = Dataset.decode(raw, task=spec.task, seq_len=spec.seq_len, dtype=dtype, device=device)
        self._datasets.put(key, dataset)
        return dataset

    def _open_private(self, spec: JobSpec, envelope: bytes) -> bytes:
        """A private job's plaintext dataset; ``NoDataKey`` when this node cannot read it."""
        key = self._data_key(spec)
        if key is None:
            raise NoDataKey(f"this node holds no key share of private dataset {spec.dataset.hex()[:16]}")
        try:
            return open_blob(envelope, key)
        except SealError as exc:
            raise NoDataKey(f"private dataset {spec.dataset.hex()[:16]} does not open: {exc}") from exc

    def _model_state(self, root: Hash32, model: nn.Module, opt_spec: OptimizerSpec) -> ModelState:
        tensors = self._states.get(root)
        if not isinstance(tensors, dict):
            tensors = decode_bundle(self._blob(root))
            self._states.put(root, tensors)
        return parse_state(tensors, model, opt_spec)

    def _replay(self, ctx: _Context, job: WorkView, submission: WorkSubmission, inner: int) -> tuple[bytes, int]:
        """Inner step ``inner`` from the state before it: the bundle it produces and its loss bits."""
        spec = ctx.spec
        if spec.inner_steps == 1:
            state = self._model_state(job.model_root, ctx.model, model_state_optimizer(spec))
            load_state(ctx.model, ModelState(state.params, {}))
            return unit.gradient_result(ctx.model, ctx.dataset, spec, job.step, submission.shard)
        optimizer = build_optimizer(spec.optimizer, ctx.model.parameters(), lr=compute_lr(spec, job.step))
        load_state(ctx.model, self._checkpoint_before(ctx, job, submission, inner), optimizer)
        bits = unit.inner_step(ctx.model, optimizer, ctx.dataset, spec, job.step, submission.shard, inner)
        return encode_state(ctx.model, optimizer), bits

    def _checkpoint_before(self, ctx: _Context, job: WorkView, submission: WorkSubmission, inner: int) -> ModelState:
        """The state inner step ``inner`` starts from: θ0 with a fresh optimizer, or checkpoint ``inner``."""
        spec = ctx.spec
        if inner == 0:
            state = self._model_state(job.model_root, ctx.model, model_state_optimizer(spec))
            return ModelState(state.params, {})
        return self._checkpoint(ctx, submission, inner)[1]

    def _checkpoint(
        self, ctx: _Context, submission: WorkSubmission, index: int
    ) -> tuple[dict[str, torch.Tensor], ModelState]:
        """Checkpoint ``index`` (1..H) of the submission: its decoded tensors and the checked state."""
        spec = ctx.spec
        if len(submission.checkpoint_digests) < index:
            raise InvalidWork(f"the submission names no checkpoint {index}")
        tensors = decode_bundle(self._blob(submission.checkpoint_digests[index - 1]))
        state = parse_state(tensors, ctx.model, spec.optimizer)
        if optimizer_state_keys(spec.optimizer) and not state.opt:
            raise InvalidWork(f"checkpoint {index} lacks the optimizer state of {index} steps")
        return tensors, state

    def _is_malformed(self, job: WorkView, submission: WorkSubmission, checked: tuple[int, ...]) -> bool:
        """Whether a blob that checking ``checked`` reads fails to decode to the model's tensors.

        A tolerance job's check of step ``i`` also reads checkpoint ``i + 1``
        (the claim it compares with, where an exact job compares digests).
        """
        spec = job.spec
        h = spec.inner_steps
        if spec.pipeline is not None:
            ctx = self._enter(spec, stage=True)
            return self._stages.is_malformed(ctx.model, ctx.dataset, job, submission)
        ctx = self._enter(spec)
        try:
            if h == 1:
                unit.parse_result(decode_bundle(self._blob(submission.result_digest)), ctx.model, spec)
                return False
            if len(submission.checkpoint_digests) != h or len(submission.losses) != h:
                return True
            read = {i for i in checked if 0 < i <= h} | {h}
            if replay_tolerance(spec) is not None:
                read |= {i + 1 for i in checked if 0 <= i < h}
            for inner in sorted(read):
                self._checkpoint_before(ctx, job, submission, inner)
            unit.parse_result(decode_bundle(self._blob(submission.result_digest)), ctx.model, spec)
        except InvalidWork:
            return True
        return False
