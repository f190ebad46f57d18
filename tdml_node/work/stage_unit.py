"""One pipeline unit from its decoded inputs: what a stage trainer computes and a checker replays.

A unit (``consensus.pipeline.place_of``) reads its stage's committed state
bundle (only the parameters, ``param/<name>``, are used: the optimizer state
matters only to aggregation), the shard's batch from the dataset where the
stage needs it (stage 0's inputs, the last stage's targets), and the decoded
outputs of the units its links name, in ``consensus.pipeline.input_units``
order: the activations it starts from, then the gradient handed to it.

The model may be a skeleton (``models.build_model_skeleton``): the unit
gives storage to its own stage's parameters only, for as long as it runs,
so a stage trainer's model memory is its range's and not the whole
model's (issue 8's memory must-have).

This module must never read a blob store or the chain: it is handed decoded
bundles, so the trainer's path and the checker's are one function.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from consensus import pipeline
from consensus.pipeline import PHASE_BACKWARD, PHASE_FORWARD
from consensus.types import JobSpec
from consensus.work import InvalidWork
from tdml_node.work import stage, unit
from tdml_node.work.datasets import Dataset
from tdml_node.work.state import PARAM_PREFIX


@dataclass(frozen=True, slots=True)
class StageOutput:
    """A unit's outputs: its result bundle, the gradient bundle it hands on (or None), its loss bits (0 if none)."""

    result: bytes
    gradient: bytes | None
    loss_bits: int


@contextmanager
def stage_parameters(
    model: nn.Module, spec: JobSpec, stage_index: int, tensors: Mapping[str, torch.Tensor], device: torch.device
) -> Iterator[dict[str, nn.Parameter]]:
    """The stage's parameters, fresh on ``device`` with the bundle's values, in the model for the body's length.

    Each is swapped in for the model's own (a skeleton's are on the meta
    device, with no memory behind them) and swapped back after, so a stage
    unit allocates its range's parameters and nothing of the other stages'.
    ``InvalidWork`` unless the bundle holds exactly the stage's parameters.
    """
    names = stage.stage_parameter_names(model, spec, stage_index)
    found = {n[len(PARAM_PREFIX):] for n in tensors if n.startswith(PARAM_PREFIX)}
    if found != set(names):
        raise InvalidWork(f"stage {stage_index}'s state names {sorted(found ^ set(names))[:3]} wrongly")
    owned = dict(model.named_parameters())
    swapped: list[tuple[nn.Module, str, nn.Parameter]] = []
    fresh: dict[str, nn.Parameter] = {}
    try:
        for n in names:
            t, p = tensors[PARAM_PREFIX + n], owned[n]
            if t.shape != p.shape or t.dtype != p.dtype:
                raise InvalidWork(f"stage parameter {n!r} is {tuple(t.shape)} {t.dtype}, needs {tuple(p.shape)} {p.dtype}")
            path, _, leaf = n.rpartition(".")
            module = model.get_submodule(path)
            fresh[n] = nn.Parameter(t.to(device=device, copy=True))
            swapped.append((module, leaf, p))
            module.register_parameter(leaf, fresh[n])
        yield fresh
    finally:
        for module, leaf, p in reversed(swapped):
            module.register_parameter(leaf, p)


def compute_stage_unit(
    model: nn.Module,
    spec: JobSpec,
    dataset: Dataset,
    step: int,
    unit_index: int,
    stage_state: Mapping[str, torch.Tensor],
    inputs: Sequence[Mapping[str, torch.Tensor]],
) -> StageOutput:
    """Unit ``unit_index`` of step ``step``, from its stage's state and its decoded inputs.

    Inputs that do not decode to the micro-batches the stage reads, or whose
    shapes the stage cannot take, are ``InvalidWork``.
    """
    assert spec.pipeline is not None
    place = pipeline.place_of(spec, unit_index)
    reads = pipeline.input_units(spec, unit_index)
    if len(inputs) != len(reads):
        raise InvalidWork(f"unit {unit_index} reads {len(reads)} inputs, got {len(inputs)}")
    micro = spec.pipeline.micro_batches
    s = place.stage
    # The stage computes where the dataset is (the profile's device); decoded bundles are on the CPU.
    device = dataset.device
    with stage_parameters(model, spec, s, stage_state, device) as params:
        layers = stage.stage_layers(model, spec, s)
        model.train()
        x, y = (t.to(device) for t in unit.unit_batch(spec, dataset, step, place.shard, 0))
        if s == 0:
            acts = stage.split_micro_batches(x, micro)
        else:
            acts = [a.to(device) for a in stage.read_micro_batches(inputs[0], stage.ACT_PREFIX, micro)]
        hands_on = pipeline.emits_gradient(spec, unit_index)
        try:
            if place.phase == PHASE_FORWARD:
                return StageOutput(stage.forward_unit(layers, acts), None, 0)
            if place.phase == PHASE_BACKWARD:
                handed = [g.to(device) for g in stage.read_micro_batches(inputs[-1], stage.ACT_GRAD_PREFIX, micro)]
                result, gradient = stage.backward_unit(layers, params, acts, handed, hands_on=hands_on)
                return StageOutput(result, gradient, 0)
            targets = stage.split_micro_batches(y, micro)
            result, bits, gradient = stage.last_unit(layers, params, acts, targets, hands_on=hands_on)
            return StageOutput(result, gradient, bits)
        except RuntimeError as exc:
            # A shape or dtype torch refuses: the inputs are no activations of this stage.
            raise InvalidWork(f"unit {unit_index}'s inputs do not fit stage {s}: {str(exc)[:200]}") from exc
