"""Model states as bundles: how parameters and optimizer state are named, checked and loaded.

A model state (and every inner-step checkpoint) is the bundle of
``param/<name>`` for each model parameter and ``opt/<name>/<key>`` for each
tensor the optimizer holds for that parameter (SGD ``momentum_buffer``;
AdamW ``step``, ``exp_avg``, ``exp_avg_sq``). Its digest is the model root.
Optimizer state is all or nothing: a fresh optimizer holds none, a stepped
one holds every key for every parameter.

This module must never load a bundle that does not match the model exactly
(every name, shape and dtype), and never let a loaded model or optimizer
share memory with the decoded tensors it was loaded from, since those may
sit in a cache.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim import Optimizer

from consensus.types import OptimizerSpec
from consensus.work import InvalidWork
from tdml_node.work.optim import optimizer_state_keys
from tdml_node.work.tensors import encode_bundle

PARAM_PREFIX = "param/"
OPT_PREFIX = "opt/"
# AdamW keeps its step count as a float32 scalar on the CPU
# (torch.optim's scalar dtype while the default dtype is float32).
_SCALAR_KEYS: dict[str, torch.dtype] = {"step": torch.float32}


@dataclass(frozen=True, slots=True)
class ModelState:
    """A decoded, checked state: parameters by name, optimizer tensors by parameter name and key."""

    params: Mapping[str, torch.Tensor]
    opt: Mapping[str, Mapping[str, torch.Tensor]]


def state_tensors(model: nn.Module, optimizer: Optimizer | None = None) -> dict[str, torch.Tensor]:
    """The bundle tensors of a model and (optionally) its optimizer's state."""
    out = {PARAM_PREFIX + name: p.detach() for name, p in model.named_parameters()}
    if optimizer is not None:
        for name, p in model.named_parameters():
            for key, value in optimizer.state.get(p, {}).items():
                if value is None:
                    continue
                if not isinstance(value, torch.Tensor):
                    raise TypeError(f"optimizer state {name}/{key} is not a tensor")
                out[f"{OPT_PREFIX}{name}/{key}"] = value.detach()
    return out


def encode_state(model: nn.Module, optimizer: Optimizer | None = None) -> bytes:
    """The canonical bytes of a model state; its digest is the model root."""
    return encode_bundle(state_tensors(model, optimizer))


def parse_state(
    tensors: Mapping[str, torch.Tensor], model: nn.Module, opt_spec: OptimizerSpec | None
) -> ModelState:
    """Check a decoded state bundle against the model and optimizer; ``InvalidWork`` on any mismatch."""
    shapes = {name: (tuple(p.shape), p.dtype) for name, p in model.named_parameters()}
    keys = optimizer_state_keys(opt_spec) if opt_spec is not None else ()
    params: dict[str, torch.Tensor] = {}
    opt: dict[str, dict[str, torch.Tensor]] = {}
    for full, tensor in tensors.items():
        if full.startswith(PARAM_PREFIX):
            name, key = full[len(PARAM_PREFIX) :], None
        elif full.startswith(OPT_PREFIX) and "/" in full[len(OPT_PREFIX) :]:
            name, key = full[len(OPT_PREFIX) :].rsplit("/", 1)
        else:
            raise InvalidWork(f"state bundle has a stray tensor {full!r}")
        if name not in shapes:
            raise InvalidWork(f"state bundle names {full!r}, which is no parameter of the model")
        shape, dtype = shapes[name]
        if key is not None:
            if key not in keys:
                raise InvalidWork(f"state bundle has optimizer state {key!r}, which the optimizer does not hold")
            shape, dtype = ((), _SCALAR_KEYS[key]) if key in _SCALAR_KEYS else (shape, dtype)
        if tuple(tensor.shape) != shape or tensor.dtype != dtype:
            raise InvalidWork(
                f"state tensor {full!r} is {tuple(tensor.shape)} {tensor.dtype}, the model needs {shape} {dtype}"
            )
        if key is None:
            params[name] = tensor
        else:
            opt.setdefault(name, {})[key] = tensor
    missing = sorted(set(shapes) - set(params))
    if missing:
        raise InvalidWork(f"state bundle lacks parameters {missing}")
    if opt and (set(opt) != set(shapes) or any(set(v) != set(keys) for v in opt.values())):
        raise InvalidWork("optimizer state must cover every key of every parameter, or be empty")
    return ModelState(params=params, opt=opt)


def load_state(model: nn.Module, state: ModelState, optimizer: Optimizer | None = None) -> None:
    """Copy a checked state into the model's parameters and the (fresh) optimizer; clears gradients."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(state.params[name])
            p.grad = None
    if optimizer is None:
        return
    for name, p in model.named_parameters():
        for key, value in state.opt.get(name, {}).items():
            # torch.optim keeps scalar state (AdamW's step) on the CPU, the rest beside the parameter.
            device = torch.device("cpu") if key in _SCALAR_KEYS else p.device
            optimizer.state[p][key] = value.to(device, copy=True)
