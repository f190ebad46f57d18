"""The unit layout of pipeline jobs: which unit is which stage and phase, and what each reads.

A pipeline job (``JobSpec.pipeline``) splits its model's layer sequence into
S contiguous stages. Each step of it has, for each of its K shards, P = 2S - 1
units in chain order (position ``j``):

- ``j < S - 1``: *forward* of stage ``s = j``: reads the output activations of
  stage ``s - 1`` (stage 0 reads the shard's batch), writes its own;
- ``j = S - 1``: *last* stage ``S - 1``: forward, loss and backward; writes the
  stage's parameter gradients with the loss, and (S > 1) the gradient with
  respect to its input;
- ``j > S - 1``: *backward* of stage ``s = 2S - 2 - j``: reads the activations
  stage ``s`` started from (``s > 0``) and the gradient the unit before handed
  on, recomputes its forward, writes its parameter gradients and (``s > 0``)
  the gradient with respect to its input.

Unit index ``u = k * P + j``; it is the ``shard`` field of a pipeline job's
``WorkSubmission`` and indexes the job's per-unit slots. For a job without a
pipeline the unit index is the shard and each unit reads nothing but the
committed state. Unit ``j`` of a shard reads only outputs of units before it
(``j - 1``, and for a backward unit also the forward unit of stage
``s - 1``), so the chain accepts a shard's units in position order, each
when its inputs are the accepted outputs.

This module must never perform I/O, read a clock or import torch: it is the
pure arithmetic every node and independent trainer must agree on.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from consensus import crypto
from consensus.types import MAX_SHARDS, Hash32, JobSpec, JobState, WorkSubmission

NO_DEADLINE = 2**63 - 1
"""The deadline of a unit whose inputs are not accepted yet: it cannot be late before it can start."""

PHASE_FORWARD = 0
PHASE_LAST = 1
PHASE_BACKWARD = 2
PHASE_NAMES = {PHASE_FORWARD: "forward", PHASE_LAST: "last", PHASE_BACKWARD: "backward"}


@dataclass(frozen=True, slots=True)
class UnitPlace:
    """Where a unit sits: its shard, stage, phase and position in the shard's chain."""

    shard: int
    stage: int
    phase: int
    position: int


def is_pipeline(spec: JobSpec) -> bool:
    return spec.pipeline is not None


def stage_count(spec: JobSpec) -> int:
    """S: the number of stages (1 for a job without a pipeline)."""
    return len(spec.pipeline.layer_bounds) - 1 if spec.pipeline is not None else 1


def units_per_shard(spec: JobSpec) -> int:
    """P = 2S - 1 for a pipeline job, else 1."""
    return 2 * stage_count(spec) - 1 if spec.pipeline is not None else 1


def units_per_step(spec: JobSpec) -> int:
    """How many units one step has: the length of a job's per-unit slots."""
    return spec.shards * units_per_shard(spec)


def place_of(spec: JobSpec, unit: int) -> UnitPlace:
    """The shard, stage, phase and position of unit index ``unit``."""
    if not 0 <= unit < units_per_step(spec):
        raise ValueError(f"unit {unit} out of range")
    if spec.pipeline is None:
        return UnitPlace(unit, 0, PHASE_LAST, 0)
    s_count = stage_count(spec)
    shard, j = divmod(unit, units_per_shard(spec))
    if j < s_count - 1:
        return UnitPlace(shard, j, PHASE_FORWARD, j)
    if j == s_count - 1:
        return UnitPlace(shard, j, PHASE_LAST, j)
    return UnitPlace(shard, 2 * s_count - 2 - j, PHASE_BACKWARD, j)


def unit_index(spec: JobSpec, shard: int, position: int) -> int:
    return shard * units_per_shard(spec) + position


def has_loss(spec: JobSpec, unit: int) -> bool:
    """Whether the unit reports a loss: every unit of a plain job, the last-stage unit of a pipeline."""
    return place_of(spec, unit).phase == PHASE_LAST


def emits_gradient(spec: JobSpec, unit: int) -> bool:
    """Whether the unit hands a gradient on to the stage before it."""
    place = place_of(spec, unit)
    return spec.pipeline is not None and place.phase != PHASE_FORWARD and place.stage > 0


def emits_parameter_gradients(spec: JobSpec, unit: int) -> bool:
    """Whether the unit's result is its stage's parameter gradients (what aggregation reads)."""
    return place_of(spec, unit).phase != PHASE_FORWARD


def stage_result_units(spec: JobSpec) -> tuple[tuple[int, ...], ...]:
    """For each stage, the units whose results are its parameter gradients, in shard order."""
    s_count = stage_count(spec)
    if spec.pipeline is None:
        return (tuple(range(spec.shards)),)
    out = []
    for stage in range(s_count):
        position = s_count - 1 if stage == s_count - 1 else 2 * s_count - 2 - stage
        out.append(tuple(unit_index(spec, k, position) for k in range(spec.shards)))
    return tuple(out)


def loss_units(spec: JobSpec) -> tuple[int, ...]:
    """The units that report the step's losses, in shard order."""
    return stage_result_units(spec)[-1]


def input_units(spec: JobSpec, unit: int) -> tuple[tuple[int, bool], ...]:
    """The units whose outputs this one reads, each with whether it reads its handed-on gradient.

    In order: the activations it starts from (the result of the forward unit
    of the stage before, when there is one), then (backward units) the
    gradient handed on by the unit before it.
    """
    if spec.pipeline is None:
        return ()
    place = place_of(spec, unit)
    base = unit - place.position
    reads: list[tuple[int, bool]] = []
    if place.stage > 0:
        reads.append((base + place.stage - 1, False))
    if place.phase == PHASE_BACKWARD:
        reads.append((unit - 1, True))
    return tuple(reads)


def expected_inputs(
    spec: JobSpec, unit: int, results: Sequence[Hash32 | None], output_gradients: Sequence[Hash32 | None]
) -> tuple[Hash32, ...] | None:
    """The digests ``StageLinks.inputs`` must name, from the accepted outputs; None while one is missing."""
    out: list[Hash32] = []
    for source, gradient in input_units(spec, unit):
        digest = (output_gradients[source] if source < len(output_gradients) else None) if gradient else results[source]
        if digest is None:
            return None
        out.append(digest)
    return tuple(out)


def job_inputs(job: JobState, unit: int) -> tuple[Hash32, ...] | None:
    """``expected_inputs`` from the job's accepted outputs: what unit ``unit`` reads now; None while it cannot start."""
    return expected_inputs(job.spec, unit, job.results, job.output_gradients)


def successor(spec: JobSpec, unit: int) -> int | None:
    """The unit after this one in its shard's chain (None for the last)."""
    if spec.pipeline is None:
        return None
    place = place_of(spec, unit)
    return unit + 1 if place.position + 1 < units_per_shard(spec) else None


def claimed_output(submission: WorkSubmission) -> Hash32:
    """The one digest a replay of the unit must reproduce: the result, bound to the handed-on gradient.

    A unit without a handed-on gradient claims its result digest; one with
    claims ``SHA-256("TDML/stage-output/v1" || result || gradient)``, so a
    verdict's single observed digest covers both outputs.
    """
    links = submission.links
    if links is None or links.output_gradient is None:
        return submission.result_digest
    return combined_output(submission.result_digest, links.output_gradient)


def expand_assignment(spec: JobSpec, holders: Sequence[bytes]) -> tuple[bytes, ...]:
    """Every unit's trainer from the (shard, stage) holders: a stage's units of a shard stay with one trainer.

    So a trainer fetches only its stage's state, and reuses it from the
    forward unit to the backward one.
    """
    if spec.pipeline is None:
        return tuple(holders)
    s = stage_count(spec)
    out = []
    for u in range(units_per_step(spec)):
        place = place_of(spec, u)
        out.append(holders[place.shard * s + place.stage])
    return tuple(out)


def partner(spec: JobSpec, unit: int) -> int | None:
    """The other unit of the same (shard, stage) pair: a forward unit's backward and back; None for the last stage."""
    if spec.pipeline is None:
        return None
    place = place_of(spec, unit)
    if place.phase == PHASE_LAST:
        return None
    return unit_index(spec, place.shard, 2 * stage_count(spec) - 2 - place.position)


def opens_at_step_start(spec: JobSpec, unit: int) -> bool:
    """Whether the unit can be trained as soon as its step starts (it reads no other unit's output)."""
    return spec.pipeline is None or place_of(spec, unit).position == 0


def claimed_loss(spec: JobSpec, submission: WorkSubmission) -> int | None:
    """The loss bits a replay of the unit must reproduce: its one loss on the last stage, else 0.

    None when the submission reports a loss count its place does not have.
    """
    expected = 1 if has_loss(spec, submission.shard) else 0
    if len(submission.losses) != expected:
        return None
    return submission.losses[0] if expected else 0


def combined_output(result: Hash32, gradient: Hash32) -> Hash32:
    return crypto.sha256(b"TDML/stage-output/v1" + result + gradient)


def pipeline_spec_problem(spec: JobSpec) -> str | None:
    """What is wrong with a job's pipeline as the chain can tell without the model; None if nothing.

    That the bounds end at the model's layer count is the executor's check.
    """
    p = spec.pipeline
    if p is None:
        return None
    bounds = p.layer_bounds
    if len(bounds) < 2 or bounds[0] != 0:
        return "layer_bounds must start at 0 and name at least one stage"
    if any(b <= a for a, b in itertools.pairwise(bounds)):
        return "layer_bounds must be strictly increasing"
    if spec.inner_steps != 1:
        return "a pipeline job trains with inner_steps = 1 (see docs/protocol.md)"
    per_shard = spec.global_batch // spec.shards
    if spec.global_batch % spec.shards or per_shard % p.micro_batches:
        return "the shard batch must divide evenly into micro_batches"
    if units_per_step(spec) > MAX_SHARDS:
        return f"shards x (2 x stages - 1) = {units_per_step(spec)} units per step exceeds {MAX_SHARDS}"
    return None
