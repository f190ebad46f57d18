"""Splitting a registry model into pipeline stages: per-layer memory estimates and layer bounds.

A job's partition is consensus data (``PipelineSpec.layer_bounds``); this
module computes it before the job is submitted, either from a stage count
(the split whose largest stage needs the least memory) or from a memory
budget per trainer (the fewest stages, each within the budget), as the TDML
paper sizes its model partitions.

A layer's estimate, for training one micro-batch of ``micro_batch`` samples:
its parameters, their gradients and the optimizer's state (SGD with momentum
one tensor per parameter, AdamW two), plus the activation it outputs. The
activation shapes come from a forward pass on torch's meta device, which
allocates nothing.

This module must never allocate a real model or read anything but the spec.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from consensus import pipeline
from consensus.types import JobSpec, ModelSpec, OptimizerSpec, PipelineSpec
from consensus.work import InvalidWork
from tdml_node.work.models import build_model_on_meta, layer_sequence
from tdml_node.work.optim import optimizer_state_keys
from tdml_node.work.profile import torch_dtype


@dataclass(frozen=True, slots=True)
class LayerEstimate:
    """Bytes one layer needs to train one micro-batch."""

    parameters: int
    optimizer: int
    activation: int

    @property
    def total(self) -> int:
        return 2 * self.parameters + self.optimizer + self.activation  # parameters + their gradients


def optimizer_copies(opt: OptimizerSpec) -> int:
    """Parameter-sized tensors the optimizer keeps per parameter (AdamW's scalar step count aside)."""
    return sum(1 for key in optimizer_state_keys(opt) if key != "step")


def sample_input(spec: ModelSpec, batch: int, seq_len: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A meta-device input of ``batch`` samples for the model, its features in ``dtype``."""
    args = {a.name: a.value for a in spec.args}
    if spec.name == "char_transformer":
        return torch.zeros(batch, max(1, seq_len), dtype=torch.long, device="meta")
    width = args["in_dim"] if spec.name == "mlp" else args["side"] ** 2
    return torch.zeros(batch, width, dtype=dtype, device="meta")


def estimate_layers(spec: JobSpec, micro_batch: int) -> tuple[LayerEstimate, ...]:
    """The memory estimate of each layer of the job's model for one micro-batch."""
    # In the profile's dtype: a float64 job needs twice a float32 one's bytes.
    dtype = torch_dtype(spec.profile)
    model = build_model_on_meta(spec.model).to(dtype)
    copies = optimizer_copies(spec.optimizer)
    h = sample_input(spec.model, micro_batch, spec.seq_len, dtype)
    out: list[LayerEstimate] = []
    with torch.no_grad():
        for layer in layer_sequence(model):
            h = layer(h)
            params = sum(p.numel() * p.element_size() for p in layer.parameters())
            out.append(LayerEstimate(params, copies * params, h.numel() * h.element_size()))
    return tuple(out)


def balanced_bounds(costs: tuple[int, ...], stages: int) -> tuple[int, ...]:
    """Contiguous split of ``costs`` into ``stages`` non-empty ranges minimising the largest sum.

    Ties go to the split whose stages end earliest (dynamic programming over
    prefixes, deterministic).
    """
    n = len(costs)
    if not 1 <= stages <= n:
        raise InvalidWork(f"cannot split {n} layers into {stages} stages")
    prefix = [0]
    for c in costs:
        prefix.append(prefix[-1] + c)
    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(stages + 1)]
    cut = [[0] * (n + 1) for _ in range(stages + 1)]
    best[0][0] = 0
    for s in range(1, stages + 1):
        for end in range(s, n + 1):
            for start in range(s - 1, end):
                value = max(best[s - 1][start], prefix[end] - prefix[start])
                if value < best[s][end]:
                    best[s][end], cut[s][end] = value, start
    bounds = [n]
    for s in range(stages, 0, -1):
        bounds.append(cut[s][bounds[-1]])
    return tuple(reversed(bounds))


def budget_bounds(costs: tuple[int, ...], budget: int) -> tuple[int, ...]:
    """The fewest contiguous stages whose estimates each fit ``budget`` bytes, balanced among themselves."""
    too_big = [i for i, c in enumerate(costs) if c > budget]
    if too_big:
        raise InvalidWork(f"layer {too_big[0]} alone needs {costs[too_big[0]]} bytes, over the budget of {budget}")
    for stages in range(1, len(costs) + 1):
        bounds = balanced_bounds(costs, stages)
        if all(sum(costs[a:b]) <= budget for a, b in itertools.pairwise(bounds)):
            return bounds
    raise AssertionError("one layer per stage always fits")  # unreachable: every layer fits alone


def make_pipeline(
    spec: JobSpec,
    *,
    micro_batches: int,
    stages: int | None = None,
    memory_budget: int | None = None,
    layer_bounds: tuple[int, ...] | None = None,
) -> PipelineSpec:
    """The job's partition from exactly one of: explicit bounds, a stage count, a per-trainer budget in bytes."""
    if sum(x is not None for x in (stages, memory_budget, layer_bounds)) != 1:
        raise InvalidWork("give exactly one of layer_bounds, stages or memory_budget")
    if layer_bounds is not None:
        return PipelineSpec(tuple(layer_bounds), micro_batches)
    micro = max(1, spec.global_batch // spec.shards // micro_batches)
    costs = tuple(e.total for e in estimate_layers(spec, micro))
    if stages is not None:
        return PipelineSpec(balanced_bounds(costs, stages), micro_batches)
    assert memory_budget is not None
    return PipelineSpec(budget_bounds(costs, memory_budget), micro_batches)


def check_bounds(spec: JobSpec) -> None:
    """Raise ``InvalidWork`` unless the job's layer bounds end at its model's layer count."""
    if spec.pipeline is None:
        return
    count = len(layer_sequence(build_model_on_meta(spec.model)))
    if spec.pipeline.layer_bounds[-1] != count:
        raise InvalidWork(f"layer_bounds end at {spec.pipeline.layer_bounds[-1]}, the model has {count} layers")


@dataclass(frozen=True, slots=True)
class StageLayout:
    """One stage of a pipeline job as a person reads it: its layers, its estimate, the units that deal it."""

    first_layer: int
    last_layer: int
    """Inclusive."""
    estimated_bytes: int
    """The sum of its layers' estimates for one micro-batch (``LayerEstimate.total``)."""
    units: tuple[int, ...]
    """Its forward (or last) unit in each shard, in shard order: the unit its holder for that shard is dealt."""


def stage_layout(spec: JobSpec) -> tuple[StageLayout, ...]:
    """Every stage of a pipeline job; empty for a job that trains the whole model in each unit."""
    if spec.pipeline is None:
        return ()
    bounds = spec.pipeline.layer_bounds
    micro = max(1, spec.global_batch // spec.shards // spec.pipeline.micro_batches)
    costs = [e.total for e in estimate_layers(spec, micro)]
    return tuple(
        StageLayout(
            bounds[s], bounds[s + 1] - 1, sum(costs[bounds[s] : bounds[s + 1]]),
            tuple(pipeline.unit_index(spec, k, s) for k in range(spec.shards)),
        )
        for s in range(len(bounds) - 1)
    )
