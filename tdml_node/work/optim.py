"""Optimizers and learning-rate schedules as a job spec names them.

``OptimizerSpec`` carries decimal text; it is read with ``float(text)`` into
the arguments of ``torch.optim.SGD`` or ``torch.optim.AdamW`` in their
single-tensor (``foreach=False``, unfused) form, whose per-parameter loop is
the easiest to reproduce bit for bit. The state a stepped optimizer holds per
parameter is listed by ``optimizer_state_keys``; it is what a model state or
checkpoint bundle stores under ``opt/<param>/<key>``.

This module must never accept a hyperparameter it does not know (a typo must
not silently become a default) nor read anything but the spec.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim import SGD, AdamW, Optimizer

from consensus.types import JobSpec, OptimizerSpec
from consensus.work import InvalidWork

_DEFAULTS: dict[str, dict[str, str]] = {
    "sgd": {"momentum": "0", "nesterov": "0", "weight_decay": "0"},
    "adamw": {"beta1": "0.9", "beta2": "0.999", "eps": "1e-8", "weight_decay": "0.01"},
}


def optimizer_args(spec: OptimizerSpec) -> dict[str, float]:
    """The spec's hyperparameters as floats, defaults filled in; ``InvalidWork`` on unknown ones."""
    defaults = _DEFAULTS.get(spec.name)
    if defaults is None:
        raise InvalidWork(f"unknown optimizer {spec.name!r}; known: {sorted(_DEFAULTS)}")
    given = {p.name: p.value for p in spec.params}
    if len(given) != len(spec.params):
        raise InvalidWork(f"optimizer {spec.name!r} has a repeated hyperparameter")
    allowed = {"lr", *defaults}
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise InvalidWork(f"optimizer {spec.name!r} takes {sorted(allowed)}, not {unknown}")
    if "lr" not in given:
        raise InvalidWork(f"optimizer {spec.name!r} needs lr")
    try:
        args = {name: float(text) for name, text in {**defaults, **given}.items()}
    except ValueError as exc:
        raise InvalidWork(f"optimizer {spec.name!r}: {exc}") from exc
    if spec.name == "sgd" and args["nesterov"] not in (0.0, 1.0):
        raise InvalidWork("sgd nesterov must be 0 or 1")
    return args


def optimizer_lr(spec: OptimizerSpec) -> float:
    return optimizer_args(spec)["lr"]


def build_optimizer(spec: OptimizerSpec, params: Iterable[torch.nn.Parameter], *, lr: float) -> Optimizer:
    """A fresh optimizer over ``params`` with learning rate ``lr`` (the schedule's, or the spec's)."""
    a = optimizer_args(spec)
    if spec.name == "sgd":
        nesterov = a["nesterov"] == 1.0
        if nesterov and a["momentum"] <= 0.0:
            raise InvalidWork("sgd nesterov needs a positive momentum")
        return SGD(
            params,
            lr=lr,
            momentum=a["momentum"],
            dampening=0.0,
            weight_decay=a["weight_decay"],
            nesterov=nesterov,
            foreach=False,
        )
    return AdamW(
        params,
        lr=lr,
        betas=(a["beta1"], a["beta2"]),
        eps=a["eps"],
        weight_decay=a["weight_decay"],
        foreach=False,
        fused=False,
    )


def optimizer_state_keys(spec: OptimizerSpec) -> tuple[str, ...]:
    """The tensors a stepped optimizer holds for every parameter (none for momentum-free SGD)."""
    if spec.name == "sgd":
        return ("momentum_buffer",) if optimizer_args(spec)["momentum"] != 0.0 else ()
    optimizer_args(spec)
    return ("exp_avg", "exp_avg_sq", "step")


def compute_lr(spec: JobSpec, step: int) -> float:
    """The (inner) optimizer's learning rate at outer step ``step`` under the job's schedule.

    ``linear``: ``lr * (t + 1) / warmup`` while ``t < warmup``, then a linear
    decay reaching ``lr * final_fraction`` at ``t = steps``, in Python floats.
    """
    lr = optimizer_lr(spec.optimizer)
    schedule = spec.schedule
    if schedule.name == "constant":
        return lr
    if schedule.name != "linear":
        raise InvalidWork(f"unknown schedule {schedule.name!r}")
    warmup = schedule.warmup_steps
    if step < warmup:
        return lr * (step + 1) / warmup
    final = float(schedule.final_fraction)
    return lr * (1.0 - (1.0 - final) * (step - warmup) / max(1, spec.steps - warmup))
