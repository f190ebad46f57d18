"""Aggregation of one step: combine the shards' results in shard order, step, evaluate.

For every parameter the K shard updates (gradients when H = 1, deltas when
H > 1) are summed in shard order, ``g = r_0.clone(); g += r_1; ...``, then
divided by the integer K (``torch.div``); that mean is set as the
parameter's gradient and one step of the optimizer is taken (the job's
optimizer at the schedule's rate when H = 1, the outer optimizer at its own
fixed rate when H > 1). The train loss is the float32 mean over shards of
each shard's last inner loss, summed in shard order.

Evaluation (every ``eval_every`` steps and at the last step) runs the test
set in chunks of ``datasets.EVAL_CHUNK``: ``eval_correct`` counts arg-max
hits, ``eval_total`` the predictions, and the eval loss is the float64 sum of
per-prediction cross-entropies divided by the count, then rounded to float32.

This module must never depend on the order results arrived in or on anything
but the results, the model state and the dataset: every full node repeats
this computation and must get the same bits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import Optimizer

from consensus.types import JobSpec
from tdml_node.work.datasets import Dataset
from tdml_node.work.tensors import f32_bits


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Test-set metrics: the float32 loss bits and integer counts (all zero when not evaluated)."""

    loss: int
    correct: int
    total: int


NOT_EVALUATED = Evaluation(0, 0, 0)


def apply_updates(model: nn.Module, optimizer: Optimizer, updates: Sequence[Mapping[str, torch.Tensor]]) -> None:
    """Set each parameter's gradient to the shard-ordered mean of the updates and step the optimizer."""
    k = len(updates)
    if k == 0:
        raise ValueError("a step needs at least one shard result")
    for name, p in model.named_parameters():
        g = updates[0][name].to(p.device, copy=True)
        for update in updates[1:]:
            g += update[name].to(p.device)
        p.grad = torch.div(g, k)
    optimizer.step()


def mean_last_loss(losses: Sequence[torch.Tensor]) -> int:
    """Bits of the float32 mean of each shard's last inner loss, summed in shard order."""
    acc = losses[0][-1].to(torch.float32, copy=True)
    for shard_losses in losses[1:]:
        acc += shard_losses[-1]
    return f32_bits(torch.div(acc, len(losses)))


def should_evaluate(spec: JobSpec, step: int) -> bool:
    return spec.eval_every > 0 and ((step + 1) % spec.eval_every == 0 or step + 1 == spec.steps)


def evaluate(model: nn.Module, dataset: Dataset) -> Evaluation:
    """Metrics of the model on the dataset's test set."""
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=dataset.device)
    correct = 0
    total = 0
    with torch.no_grad():
        for x, y in dataset.test_batches():
            logits = model(x)
            flat = logits.reshape(-1, logits.shape[-1])  # [N, V] (N = B*L for sequences)
            target = y.reshape(-1)  # [N]
            loss_sum += F.cross_entropy(flat, target, reduction="none").to(torch.float64).sum()
            correct += int((flat.argmax(dim=-1) == target).sum())
            total += int(target.numel())
    model.train()
    if total == 0:
        return NOT_EVALUATED
    return Evaluation(loss=f32_bits(loss_sum / total), correct=correct, total=total)
