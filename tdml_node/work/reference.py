"""The single-process reference run: a plain PyTorch training loop of a job's semantics.

It trains the job the way one would without a chain: one model, one
optimizer kept across steps, per-shard gradients (or local-SGD deltas)
averaged in shard order. Its model state after every step must equal, bit
for bit, the state the chain commits by chaining ``TorchExecutor.train_unit``
and ``step_outcome``; the tests hold the two to that.

That comparison is only worth something if the two are written apart: this
module reads the optimizer hyperparameters, the schedule and the evaluation
rule itself, and shares with the executor only the building blocks both must
agree on by definition (model registry, datasets, batch indices, profile,
state bundle naming and its split into stage bundles, tensor encoding).
For a pipeline job it runs the staged semantics of decision 27 on the whole
model: each shard in its micro-batches, gradients divided by K·M, the root
that of the pipeline state (staging itself changes no bit).

This module must never call the executor's ``unit``, ``aggregate``,
``optim`` or ``executor`` code, nor keep any state between runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from consensus.batches import compute_batch_indices
from consensus.types import Hash32, JobSpec, OptimizerSpec
from tdml_node.work.datasets import Dataset
from tdml_node.work.models import build_model
from tdml_node.work.pipeline_state import encode_pipeline_state, encode_stage_states
from tdml_node.work.profile import apply_profile, torch_dtype
from tdml_node.work.state import encode_state
from tdml_node.work.tensors import bundle_digest, f32_bits


@dataclass(frozen=True, slots=True)
class ReferenceStep:
    """One step of the reference run, in the same terms as a ``StepOutcome``."""

    step: int
    model_root: Hash32
    train_loss: int
    eval_loss: int
    eval_correct: int
    eval_total: int


@dataclass(frozen=True, slots=True)
class ReferenceResult:
    final_root: Hash32
    outcomes: tuple[ReferenceStep, ...]


def _hyper(spec: OptimizerSpec) -> dict[str, float]:
    values = {p.name: float(p.value) for p in spec.params}
    if spec.name == "sgd":
        return {"momentum": 0.0, "weight_decay": 0.0, "nesterov": 0.0, **values}
    return {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01, **values}


def _optimizer(spec: OptimizerSpec, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    h = _hyper(spec)
    if spec.name == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=lr,
            momentum=h["momentum"],
            dampening=0.0,
            weight_decay=h["weight_decay"],
            nesterov=h["nesterov"] == 1.0,
            foreach=False,
        )
    return torch.optim.AdamW(
        model.parameters(),
        lr=lr,
        betas=(h["beta1"], h["beta2"]),
        eps=h["eps"],
        weight_decay=h["weight_decay"],
        foreach=False,
        fused=False,
    )


def _scheduled_lr(spec: JobSpec, t: int) -> float:
    lr = float(next(p.value for p in spec.optimizer.params if p.name == "lr"))
    if spec.schedule.name == "constant":
        return lr
    warmup = spec.schedule.warmup_steps
    if t < warmup:
        return lr * (t + 1) / warmup
    final = float(spec.schedule.final_fraction)
    return lr * (1.0 - (1.0 - final) * (t - warmup) / max(1, spec.steps - warmup))


def _shard_loss(spec: JobSpec, model: nn.Module, data: Dataset, t: int, k: int, i: int) -> torch.Tensor:
    """Forward and backward of inner step ``i`` of shard ``k`` at step ``t``; the loss.

    A pipeline job runs the shard in its micro-batches: each micro-batch's
    mean loss is backpropagated in turn (the gradients add up) and the loss
    is their float32 mean.
    """
    indices = compute_batch_indices(
        seed=spec.seed,
        n=data.n_train,
        global_batch=spec.global_batch,
        shards=spec.shards,
        inner_steps=spec.inner_steps,
        step=t,
        shard=k,
        inner=i,
    )
    x, y = data.batch(indices)
    model.zero_grad(set_to_none=True)
    micro = spec.pipeline.micro_batches if spec.pipeline is not None else 1
    total: torch.Tensor | None = None
    for xm, ym in zip(torch.chunk(x, micro), torch.chunk(y, micro), strict=True):
        logits = model(xm)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ym.reshape(-1))
        torch.autograd.backward(loss)
        value = loss.detach().to(torch.float32)
        total = value.clone() if total is None else total.add_(value)
    assert total is not None
    return total if micro == 1 else torch.div(total, micro)


def _evaluate(model: nn.Module, data: Dataset) -> tuple[int, int, int]:
    """(loss bits, correct, total): float64 sum of per-prediction losses over the count, as float32."""
    total_loss = torch.zeros((), dtype=torch.float64, device=data.device)
    correct = total = 0
    model.eval()
    with torch.no_grad():
        for x, y in data.test_batches():
            logits = model(x)
            logits = logits.reshape(-1, logits.shape[-1])
            y = y.reshape(-1)
            total_loss += F.cross_entropy(logits, y, reduction="none").double().sum()
            correct += int((logits.argmax(-1) == y).sum())
            total += y.numel()
    model.train()
    if not total:
        return 0, 0, 0
    return f32_bits(total_loss / total), correct, total


def _root(spec: JobSpec, model: nn.Module, optimizer: torch.optim.Optimizer) -> Hash32:
    """The model root: of the state bundle, or of the pipeline state naming each stage's bundle."""
    if spec.pipeline is None:
        return bundle_digest(encode_state(model, optimizer))
    return encode_pipeline_state([bundle_digest(b) for b in encode_stage_states(model, spec, optimizer)])[0]


def run_reference(
    spec: JobSpec,
    dataset_bytes: bytes,
    *,
    steps: int | None = None,
    on_step: Callable[[ReferenceStep], None] | None = None,
) -> ReferenceResult:
    """Train ``spec`` (its first ``steps`` steps, default all) in one process; the root after each step."""
    device = apply_profile(spec.profile)
    dtype = torch_dtype(spec.profile)
    data = Dataset.decode(dataset_bytes, task=spec.task, seq_len=spec.seq_len, dtype=dtype, device=device)
    model = build_model(spec.model, seed=spec.seed, dtype=dtype).to(device)
    n_shards, n_inner = spec.shards, spec.inner_steps
    local = n_inner > 1
    if local:
        assert spec.outer_optimizer is not None
        outer_lr = float(next(p.value for p in spec.outer_optimizer.params if p.name == "lr"))
        optimizer = _optimizer(spec.outer_optimizer, model, outer_lr)
        worker = build_model(spec.model, seed=spec.seed, dtype=dtype).to(device)
    else:
        optimizer = _optimizer(spec.optimizer, model, _scheduled_lr(spec, 0))
    outcomes: list[ReferenceStep] = []
    for t in range(spec.steps if steps is None else steps):
        lr = _scheduled_lr(spec, t)
        total: dict[str, torch.Tensor] = {}
        last_losses: list[torch.Tensor] = []
        for k in range(n_shards):
            if local:
                # Local SGD: the worker starts from the global parameters with a fresh optimizer.
                worker.load_state_dict(model.state_dict())
                inner = _optimizer(spec.optimizer, worker, lr)
                for i in range(n_inner):
                    loss = _shard_loss(spec, worker, data, t, k, i)
                    inner.step()
                global_params = dict(model.named_parameters())
                shard_update = {n: global_params[n].detach() - p.detach() for n, p in worker.named_parameters()}
            else:
                loss = _shard_loss(spec, model, data, t, k, 0)
                shard_update = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
            last_losses.append(loss)
            for name, value in shard_update.items():
                if name in total:
                    total[name] += value
                else:
                    total[name] = value.clone()
        if not local:
            for group in optimizer.param_groups:
                group["lr"] = lr
        divisor = n_shards * (spec.pipeline.micro_batches if spec.pipeline is not None else 1)
        for name, p in model.named_parameters():
            p.grad = torch.div(total[name], divisor)
        optimizer.step()
        mean_loss = last_losses[0].clone()
        for loss in last_losses[1:]:
            mean_loss += loss
        evaluate = spec.eval_every > 0 and ((t + 1) % spec.eval_every == 0 or t + 1 == spec.steps)
        eval_loss, correct, count = _evaluate(model, data) if evaluate else (0, 0, 0)
        root = _root(spec, model, optimizer)
        outcome = ReferenceStep(t, root, f32_bits(mean_loss / n_shards), eval_loss, correct, count)
        outcomes.append(outcome)
        if on_step is not None:
            on_step(outcome)
    final = outcomes[-1].model_root if outcomes else _root(spec, model, optimizer)
    return ReferenceResult(final, tuple(outcomes))
