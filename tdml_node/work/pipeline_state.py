"""A pipeline job's model state: one state bundle per stage, named by a ``PipelineState``.

Stage ``s``'s bundle holds ``param/<name>`` and ``opt/<name>/<key>`` (the
naming of ``state``) of exactly the parameters of its layers, so a stage
trainer fetches only its range, and the union of the stage bundles is the
whole model's state bundle. The model root is the hash of the
``PipelineState`` listing the stage bundles' digests; its blob is that
message's canonical encoding.

This module must never read a blob store: it splits, names and joins
states; the executor fetches them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.optim import Optimizer

from consensus import codec, crypto
from consensus.types import Hash32, JobSpec, PipelineState
from consensus.work import InvalidWork
from tdml_node.work.stage import stage_parameter_names
from tdml_node.work.state import OPT_PREFIX, PARAM_PREFIX, state_tensors
from tdml_node.work.tensors import encode_bundle


def _owner(name: str) -> str:
    """The parameter a state tensor belongs to."""
    if name.startswith(PARAM_PREFIX):
        return name[len(PARAM_PREFIX) :]
    return name[len(OPT_PREFIX) :].rsplit("/", 1)[0]


def split_state(
    tensors: Mapping[str, torch.Tensor], model: nn.Module, spec: JobSpec
) -> list[dict[str, torch.Tensor]]:
    """The whole-model state tensors divided into each stage's, in stage order."""
    assert spec.pipeline is not None
    stages = len(spec.pipeline.layer_bounds) - 1
    stage_of = {n: s for s in range(stages) for n in stage_parameter_names(model, spec, s)}
    out: list[dict[str, torch.Tensor]] = [{} for _ in range(stages)]
    for name, tensor in tensors.items():
        out[stage_of[_owner(name)]][name] = tensor
    return out


def encode_stage_states(model: nn.Module, spec: JobSpec, optimizer: Optimizer | None = None) -> list[bytes]:
    """Each stage's state bundle bytes from the model (and optimizer), in stage order."""
    return [encode_bundle(part) for part in split_state(state_tensors(model, optimizer), model, spec)]


def encode_pipeline_state(stage_roots: Sequence[Hash32]) -> tuple[Hash32, bytes]:
    """The model root and blob of a pipeline state naming ``stage_roots``."""
    data = codec.encode(PipelineState(tuple(stage_roots)))
    return crypto.sha256(data), data


def decode_pipeline_state(data: bytes, spec: JobSpec) -> PipelineState:
    """The stage roots of a pipeline state blob; ``InvalidWork`` unless it decodes and has one root per stage."""
    assert spec.pipeline is not None
    try:
        state = codec.decode_as(data, PipelineState)
    except codec.DecodeError as exc:
        raise InvalidWork(f"not a pipeline state: {exc}") from exc
    if len(state.stage_roots) != len(spec.pipeline.layer_bounds) - 1:
        raise InvalidWork(f"the pipeline state names {len(state.stage_roots)} stages, the job has {len(spec.pipeline.layer_bounds) - 1}")
    return state


def join_states(parts: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The whole-model state tensors from the stages' (no name may appear twice)."""
    out: dict[str, torch.Tensor] = {}
    for part in parts:
        for name, tensor in part.items():
            if name in out:
                raise InvalidWork(f"state tensor {name!r} is in two stages")
            out[name] = tensor
    return out
