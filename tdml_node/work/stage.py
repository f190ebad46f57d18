"""One pipeline unit's computation: a stage's forward, last-stage or backward pass over micro-batches.

The semantics are those of ``consensus.pipeline`` and docs/decisions.md
(decision 27): micro-batch ``m`` of a shard is rows ``[m*b/M, (m+1)*b/M)`` of
its batch; a forward unit writes ``act/<m>``; the last stage writes
``grad/<name>`` (the gradients of the micro-batch losses accumulated in
micro-batch order), ``meta/loss`` (their float32 mean) and, when a stage
comes before it, ``act_grad/<m>`` (the gradient with respect to its input);
a backward unit recomputes its forward from its input activations, then does
the same with the gradient handed to it.

This module must never read a blob store, a clock or a random generator:
a stage unit is a pure function of the stage's parameters and its inputs,
which is what lets a checker replay it alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from consensus.types import JobSpec
from consensus.work import InvalidWork
from tdml_node.work.models import layer_parameter_names, layer_sequence
from tdml_node.work.tensors import encode_bundle, f32_bits, f32_from_bits

ACT_PREFIX = "act/"
ACT_GRAD_PREFIX = "act_grad/"
GRAD_PREFIX = "grad/"
LOSS_KEY = "meta/loss"


def split_micro_batches(x: torch.Tensor, micro_batches: int) -> list[torch.Tensor]:
    """The rows of ``x`` in ``micro_batches`` equal consecutive pieces."""
    if x.shape[0] % micro_batches:
        raise InvalidWork(f"a batch of {x.shape[0]} does not split into {micro_batches} micro-batches")
    return list(torch.chunk(x, micro_batches, dim=0))


def stage_layers(model: nn.Module, spec: JobSpec, stage: int) -> tuple[nn.Module, ...]:
    assert spec.pipeline is not None
    bounds = spec.pipeline.layer_bounds
    return layer_sequence(model)[bounds[stage] : bounds[stage + 1]]


def stage_parameter_names(model: nn.Module, spec: JobSpec, stage: int) -> tuple[str, ...]:
    """The model names of the parameters stage ``stage`` holds, in model order."""
    assert spec.pipeline is not None
    bounds = spec.pipeline.layer_bounds
    return tuple(n for names in layer_parameter_names(model)[bounds[stage] : bounds[stage + 1]] for n in names)


def _run(layers: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    for layer in layers:
        x = layer(x)
    return x


def _leaf(x: torch.Tensor, hands_on: bool) -> torch.Tensor:
    """The stage's input as a leaf: detached, with a gradient only where the unit hands one on.

    Stage 0 reads the batch: the gradient of its input would be computed and
    thrown away (the weight gradients are the same either way).
    """
    return x.detach().requires_grad_(hands_on and x.is_floating_point())


def forward_unit(layers: Sequence[nn.Module], inputs: Sequence[torch.Tensor]) -> bytes:
    """A forward unit's result bundle: the stage's output on each micro-batch."""
    with torch.no_grad():
        outs = {f"{ACT_PREFIX}{m}": _run(layers, x) for m, x in enumerate(inputs)}
    return encode_bundle(outs)


def _gradient_bundle(params: Mapping[str, nn.Parameter], extra: Mapping[str, torch.Tensor]) -> bytes:
    tensors = {GRAD_PREFIX + n: p.grad if p.grad is not None else torch.zeros_like(p) for n, p in params.items()}
    tensors.update(extra)
    return encode_bundle(tensors)


def _backward_over(
    layers: Sequence[nn.Module],
    params: Mapping[str, nn.Parameter],
    inputs: Sequence[torch.Tensor],
    seconds: Sequence[torch.Tensor],
    backprop: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor | None],
    *,
    hands_on: bool,
) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """Clear the stage's gradients, then per micro-batch: forward from a leaf input, ``backprop``, keep its gradient.

    ``backprop(m, output, second)`` backpropagates micro-batch ``m`` (against
    its targets or the gradient handed to it) and returns its loss, if any.
    Returns the handed-on gradients and the losses, in micro-batch order.
    """
    for p in params.values():
        p.grad = None
    handed: dict[str, torch.Tensor] = {}
    losses: list[torch.Tensor] = []
    for m, (x, second) in enumerate(zip(inputs, seconds, strict=True)):
        leaf = _leaf(x, hands_on)
        loss = backprop(m, _run(layers, leaf), second)
        if loss is not None:
            losses.append(loss)
        if hands_on:
            handed[f"{ACT_GRAD_PREFIX}{m}"] = _grad_of(leaf)
    return handed, losses


def _loss_backward(m: int, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    torch.autograd.backward(loss)
    return loss.detach().to(torch.float32)


def _gradient_backward(m: int, out: torch.Tensor, g: torch.Tensor) -> None:
    if out.shape != g.shape or out.dtype != g.dtype:
        raise InvalidWork(f"handed gradient {m} is {tuple(g.shape)} {g.dtype}, the stage outputs {tuple(out.shape)} {out.dtype}")
    torch.autograd.backward(out, g)


def last_unit(
    layers: Sequence[nn.Module],
    params: Mapping[str, nn.Parameter],
    inputs: Sequence[torch.Tensor],
    targets: Sequence[torch.Tensor],
    *,
    hands_on: bool,
) -> tuple[bytes, int, bytes | None]:
    """The last stage: (result bundle with the loss, loss bits, handed-on gradient bundle or None)."""
    handed, losses = _backward_over(layers, params, inputs, targets, _loss_backward, hands_on=hands_on)
    total = losses[0].clone()
    for loss in losses[1:]:
        total.add_(loss)
    bits = f32_bits(torch.div(total, len(losses)))
    result = _gradient_bundle(params, {LOSS_KEY: f32_from_bits([bits])})
    return result, bits, encode_bundle(handed) if hands_on else None


def backward_unit(
    layers: Sequence[nn.Module],
    params: Mapping[str, nn.Parameter],
    inputs: Sequence[torch.Tensor],
    gradients: Sequence[torch.Tensor],
    *,
    hands_on: bool,
) -> tuple[bytes, bytes | None]:
    """A backward unit: recompute each micro-batch's forward, backpropagate the handed gradient."""
    handed, _ = _backward_over(layers, params, inputs, gradients, _gradient_backward, hands_on=hands_on)
    return _gradient_bundle(params, {}), encode_bundle(handed) if hands_on else None


def _grad_of(leaf: torch.Tensor) -> torch.Tensor:
    grad = leaf.grad
    return grad.detach().clone() if grad is not None else torch.zeros_like(leaf)


def read_micro_batches(tensors: Mapping[str, torch.Tensor], prefix: str, micro_batches: int) -> list[torch.Tensor]:
    """``prefix<m>`` for m in order from a decoded bundle; ``InvalidWork`` unless exactly those are there."""
    expected = {f"{prefix}{m}" for m in range(micro_batches)}
    if set(tensors) != expected:
        raise InvalidWork(f"bundle holds {sorted(tensors)[:4]}..., a stage reads {micro_batches} tensors {prefix}<m>")
    return [tensors[f"{prefix}{m}"] for m in range(micro_batches)]
