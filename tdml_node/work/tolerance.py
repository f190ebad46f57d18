"""Numerical distance between a trainer's claimed output and a validator's replay of it.

A job whose ``VerificationPolicy.tolerance`` is not ``"0"`` accepts units
computed under another execution profile (another thread count, CUDA against
CPU), whose bits differ from the validator's replay by rounding. Such a unit's
replayed inner step is compared by value instead of by digest:

- a tensor's distance is ``||a - b||_2 / (||b||_2 + 1e-30)``, computed in
  float64, with ``a`` the claim and ``b`` the replay; elements that are equal
  (or NaN in both) contribute nothing, and a distance that is not a number is
  infinite;
- a loss's distance is ``|l_claim - l_replay| / max(|l_replay|, 1e-30)``;
- a step's distance is the largest of its tensors' and its loss's.

Every validator replays under the job's profile and computes these in that
profile, so equal profiles compute equal distances and equal verdicts. The
figures that justify a job's tolerance are measured by
``benchmarks/calibrate_tolerance.py`` (see ``docs/verification.md``).

This module must never decide a verdict itself (the comparison with the
tolerance is ``consensus.work``'s), never read a blob store, and never modify
the tensors it is given.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from tdml_node.work.tensors import f32_from_bits

NORM_FLOOR = 1e-30
"""Added to a replayed tensor's norm (and the floor of a replayed loss) so zero never divides."""


def tensor_distance(claim: torch.Tensor, replay: torch.Tensor) -> float:
    """Relative L2 distance of ``claim`` from ``replay`` in float64; infinite for a shape mismatch."""
    if claim.shape != replay.shape:
        return math.inf
    a = claim.detach().to("cpu", torch.float64)
    b = replay.detach().to("cpu", torch.float64)
    same = (a == b) | (a.isnan() & b.isnan())
    diff = torch.where(same, torch.zeros_like(a), a - b)
    num = float(torch.linalg.vector_norm(diff))
    if num == 0.0:
        return 0.0
    den = float(torch.linalg.vector_norm(torch.where(b.isfinite(), b, torch.zeros_like(b))))
    distance = num / (den + NORM_FLOOR)
    return distance if not math.isnan(distance) else math.inf


def bundle_distance(claim: Mapping[str, torch.Tensor], replay: Mapping[str, torch.Tensor]) -> float:
    """The largest tensor distance between two bundles; infinite when their names or dtypes differ."""
    if set(claim) != set(replay):
        return math.inf
    worst = 0.0
    for name, b in replay.items():
        a = claim[name]
        if a.dtype != b.dtype:
            return math.inf
        worst = max(worst, tensor_distance(a, b))
    return worst


def loss_distance(claim_bits: int, replay_bits: int) -> float:
    """Relative difference of two float32 losses given as bit patterns."""
    if claim_bits == replay_bits:
        return 0.0
    claim, replay = (float(v) for v in f32_from_bits([claim_bits, replay_bits]).to(torch.float64))
    if math.isnan(claim) and math.isnan(replay):
        return 0.0
    distance = abs(claim - replay) / max(abs(replay), NORM_FLOOR)
    return distance if not math.isnan(distance) else math.inf
