"""The executor's side of pipeline jobs that spans stages: the initial state and a step's aggregation.

Aggregation follows decision 27: for each stage, the parameter gradients of
its units (``consensus.pipeline.stage_result_units``) are summed in shard
order, divided by K·M (``torch.div`` by the integer), and one step of the
job's optimizer at the schedule's rate is taken with that stage's optimizer
state; each stage gets a new bundle and the new ``PipelineState`` is the new
model root. The train loss is the float32 mean of the last-stage units'
losses in shard order; evaluation runs the whole model assembled from every
stage. Because the optimizers are per parameter (``foreach`` and ``fused``
off), stepping stage by stage is stepping the whole model.

This module must never read a blob store itself: it is handed the decoded
bundles and returns the blobs to store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from consensus import pipeline
from consensus.types import Hash32, JobSpec
from consensus.work import InvalidWork
from tdml_node.work import aggregate
from tdml_node.work.datasets import Dataset
from tdml_node.work.optim import build_optimizer, compute_lr
from tdml_node.work.pipeline_state import encode_pipeline_state, encode_stage_states, join_states
from tdml_node.work.stage import GRAD_PREFIX, LOSS_KEY, stage_parameter_names
from tdml_node.work.state import load_state, parse_state
from tdml_node.work.tensors import bundle_digest


@dataclass(frozen=True, slots=True)
class PipelineStep:
    """A step's aggregation: the new model root, every blob of the new state, and the metrics."""

    model_root: Hash32
    blobs: tuple[bytes, ...]
    train_loss: int
    evaluation: aggregate.Evaluation


def initial_state_blobs(model: nn.Module, spec: JobSpec) -> tuple[Hash32, tuple[bytes, ...]]:
    """The model root of a freshly built model and its blobs (the stage bundles, then the pipeline state)."""
    stages = encode_stage_states(model, spec)
    root, data = encode_pipeline_state([bundle_digest(b) for b in stages])
    return root, (*stages, data)


def parse_gradients(tensors: dict[str, torch.Tensor], model: nn.Module, spec: JobSpec, stage: int) -> dict[str, torch.Tensor]:
    """A stage unit's parameter gradients; ``InvalidWork`` unless exactly the stage's, shaped as they are."""
    params = dict(model.named_parameters())
    names = stage_parameter_names(model, spec, stage)
    expected = {GRAD_PREFIX + n for n in names}
    found = {n for n in tensors if n != LOSS_KEY}
    if found != expected:
        raise InvalidWork(f"stage {stage} gradients name {sorted(found ^ expected)[:3]} wrongly")
    out = {}
    for n in names:
        t = tensors[GRAD_PREFIX + n]
        if t.shape != params[n].shape or t.dtype != params[n].dtype:
            raise InvalidWork(f"gradient {n!r} is {tuple(t.shape)} {t.dtype}, needs {tuple(params[n].shape)} {params[n].dtype}")
        out[n] = t
    return out


def aggregate_step(
    model: nn.Module,
    spec: JobSpec,
    step: int,
    stage_states: Sequence[dict[str, torch.Tensor]],
    results: Sequence[dict[str, torch.Tensor]],
    dataset: Dataset,
) -> PipelineStep:
    """The step's outcome from the committed stage states and every unit's decoded result, in unit order."""
    assert spec.pipeline is not None
    if len(results) != pipeline.units_per_step(spec):
        raise InvalidWork(f"a step of this job has {pipeline.units_per_step(spec)} units, got {len(results)}")
    divisor = spec.shards * spec.pipeline.micro_batches
    state = parse_state(join_states(stage_states), model, spec.optimizer)
    optimizer = build_optimizer(spec.optimizer, model.parameters(), lr=compute_lr(spec, step))
    load_state(model, state, optimizer)
    params = dict(model.named_parameters())
    for s, units in enumerate(pipeline.stage_result_units(spec)):
        grads = [parse_gradients(results[u], model, spec, s) for u in units]
        for name in stage_parameter_names(model, spec, s):
            g = grads[0][name].to(params[name].device, copy=True)
            for shard_grads in grads[1:]:
                g += shard_grads[name].to(params[name].device)
            params[name].grad = torch.div(g, divisor)
    optimizer.step()
    losses = []
    for u in pipeline.loss_units(spec):
        loss = results[u].get(LOSS_KEY)
        if loss is None or loss.dtype != torch.float32 or tuple(loss.shape) != (1,):
            raise InvalidWork(f"unit {u} reports no float32 loss of shape (1,)")
        losses.append(loss)
    stages = encode_stage_states(model, spec, optimizer)
    root, data = encode_pipeline_state([bundle_digest(b) for b in stages])
    evaluation = aggregate.evaluate(model, dataset) if aggregate.should_evaluate(spec, step) else aggregate.NOT_EVALUATED
    return PipelineStep(root, (*stages, data), aggregate.mean_last_loss(losses), evaluation)
