"""One work unit: the gradient (H = 1) or local-SGD run (H > 1) of one shard of one step.

Unit ``(t, k)`` of a job with H inner steps reads, at inner step ``i``, the
samples ``consensus.batches.compute_batch_indices(seed, n_train, ..., step=t,
shard=k, inner=i)``. Its loss is the mean cross-entropy of the model's logits
(``[B*L, V]`` against ``[B*L]`` targets for a character LM).

- H = 1: from the committed parameters, one backward pass; the result bundle
  is ``grad/<name>`` for every parameter plus ``meta/loss`` (the float32
  loss). No checkpoints.
- H > 1: from the committed parameters θ0 and a fresh inner optimizer at the
  schedule's learning rate for step ``t``, H optimizer steps; checkpoint
  ``i + 1`` is the state bundle (parameters and inner optimizer state) after
  inner step ``i``; the result is ``delta/<name>`` = θ0 - θH plus
  ``meta/loss`` (the H float32 losses).

Losses are reported as float32 bit patterns (``tensors.f32_bits``).

This module must never read a blob store, a clock or a random generator: a
unit is a pure function of the model state, the dataset and the spec, which
is what lets a validator replay any of its inner steps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import Optimizer

from consensus.batches import compute_batch_indices
from consensus.types import JobSpec
from consensus.work import InvalidWork
from tdml_node.work.datasets import TASK_CHAR_LM, TASK_CLASSIFICATION, Dataset
from tdml_node.work.models import model_args
from tdml_node.work.state import encode_state
from tdml_node.work.tensors import encode_bundle, f32_bits, f32_from_bits

GRAD_PREFIX = "grad/"
DELTA_PREFIX = "delta/"
LOSS_KEY = "meta/loss"


@dataclass(frozen=True, slots=True)
class LocalRun:
    """What an H > 1 unit produced: checkpoint bundles 1..H, the result bundle, the loss bits."""

    checkpoints: tuple[bytes, ...]
    result: bytes
    losses: tuple[int, ...]


def result_prefix(spec: JobSpec) -> str:
    return GRAD_PREFIX if spec.inner_steps == 1 else DELTA_PREFIX


def validate_job_inputs(spec: JobSpec, dataset: Dataset) -> None:
    """Raise ``InvalidWork`` unless the job's model can read the dataset's samples and labels."""
    args = model_args(spec.model)
    if spec.global_batch % spec.shards:
        raise InvalidWork("the global batch must divide evenly into shards")
    if spec.task == TASK_CLASSIFICATION:
        if spec.model.name == "mlp":
            width = args["in_dim"]
        elif spec.model.name == "cnn":
            width = args["side"] ** 2
        else:
            raise InvalidWork(f"model {spec.model.name!r} is not a classifier")
        if width != dataset.features:
            raise InvalidWork(f"the model reads {width} features, the dataset has {dataset.features}")
        if spec.preprocessing is not None and len(spec.preprocessing.mean) != dataset.features:
            raise InvalidWork(f"the preprocessing covers {len(spec.preprocessing.mean)} features, the dataset has {dataset.features}")
        if args["classes"] < dataset.n_labels:
            raise InvalidWork(f"the model has {args['classes']} classes, the dataset {dataset.n_labels}")
    elif spec.task == TASK_CHAR_LM:
        if spec.model.name != "char_transformer":
            raise InvalidWork(f"model {spec.model.name!r} is not a language model")
        if args["vocab"] != dataset.n_labels:
            raise InvalidWork(f"the model's vocabulary is {args['vocab']}, the dataset's {dataset.n_labels}")
        if args["ctx"] < spec.seq_len:
            raise InvalidWork(f"seq_len {spec.seq_len} exceeds the model's context {args['ctx']}")
    else:
        raise InvalidWork(f"unknown task {spec.task!r}")


def unit_batch(spec: JobSpec, dataset: Dataset, step: int, shard: int, inner: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets of inner step ``inner`` of unit ``(step, shard)``."""
    indices = compute_batch_indices(
        seed=spec.seed,
        n=dataset.n_train,
        global_batch=spec.global_batch,
        shards=spec.shards,
        inner_steps=spec.inner_steps,
        step=step,
        shard=shard,
        inner=inner,
    )
    return dataset.batch(indices)


def compute_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy; sequence logits [B, L, V] are flattened to [B*L, V]."""
    logits = model(x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def backward_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Clear the gradients, then compute the loss and backpropagate it; the loss."""
    model.train()
    for p in model.parameters():
        p.grad = None
    loss = compute_loss(model, x, y)
    torch.autograd.backward(loss)
    return loss.detach()


def gradient_result(model: nn.Module, dataset: Dataset, spec: JobSpec, step: int, shard: int) -> tuple[bytes, int]:
    """The H = 1 unit from the model's current parameters: its result bundle and loss bits."""
    x, y = unit_batch(spec, dataset, step, shard, 0)
    bits = f32_bits(backward_step(model, x, y))
    tensors: dict[str, torch.Tensor] = {
        # A parameter outside the graph has no gradient; its contribution is zero.
        GRAD_PREFIX + name: p.grad if p.grad is not None else torch.zeros_like(p)
        for name, p in model.named_parameters()
    }
    tensors[LOSS_KEY] = f32_from_bits([bits])
    return encode_bundle(tensors), bits


def inner_step(
    model: nn.Module, optimizer: Optimizer, dataset: Dataset, spec: JobSpec, step: int, shard: int, inner: int
) -> int:
    """Run inner step ``inner`` of unit ``(step, shard)`` in place; its loss bits."""
    x, y = unit_batch(spec, dataset, step, shard, inner)
    bits = f32_bits(backward_step(model, x, y))
    optimizer.step()
    return bits


def delta_result(
    start: Mapping[str, torch.Tensor], end: Mapping[str, torch.Tensor], loss_bits: Sequence[int]
) -> bytes:
    """The H > 1 result bundle: ``start - end`` per parameter and the losses (computed on the CPU)."""
    tensors = {DELTA_PREFIX + name: start[name].cpu() - end[name].detach().cpu() for name in start}
    tensors[LOSS_KEY] = f32_from_bits(loss_bits)
    return encode_bundle(tensors)


def local_run(
    model: nn.Module,
    optimizer: Optimizer,
    start: Mapping[str, torch.Tensor],
    dataset: Dataset,
    spec: JobSpec,
    step: int,
    shard: int,
) -> LocalRun:
    """The H > 1 unit: the model holds θ0 = ``start`` and ``optimizer`` is fresh."""
    checkpoints: list[bytes] = []
    losses: list[int] = []
    for inner in range(spec.inner_steps):
        losses.append(inner_step(model, optimizer, dataset, spec, step, shard, inner))
        checkpoints.append(encode_state(model, optimizer))
    end = dict(model.named_parameters())
    return LocalRun(tuple(checkpoints), delta_result(start, end, losses), tuple(losses))


def parse_result(
    tensors: Mapping[str, torch.Tensor], model: nn.Module, spec: JobSpec
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The per-parameter update and the float32 losses of a decoded result; ``InvalidWork`` on any mismatch."""
    prefix = result_prefix(spec)
    params = dict(model.named_parameters())
    expected = {prefix + name for name in params} | {LOSS_KEY}
    if set(tensors) != expected:
        extra = sorted(set(tensors) - expected)
        missing = sorted(expected - set(tensors))
        raise InvalidWork(f"result bundle has stray tensors {extra} and lacks {missing}")
    update: dict[str, torch.Tensor] = {}
    for name, p in params.items():
        t = tensors[prefix + name]
        if t.shape != p.shape or t.dtype != p.dtype:
            raise InvalidWork(f"result tensor {prefix + name!r} is {tuple(t.shape)} {t.dtype}, needs {tuple(p.shape)} {p.dtype}")
        update[name] = t
    losses = tensors[LOSS_KEY]
    if losses.dtype != torch.float32 or tuple(losses.shape) != (spec.inner_steps,):
        raise InvalidWork(f"{LOSS_KEY} must be float32 of shape ({spec.inner_steps},)")
    return update, losses
