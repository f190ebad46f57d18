"""Which trainer holds which unit of a step: the dealing at step start, and who takes a unit over.

Both are functions of the step seed (the parent block's hash), the job and
the eligible trainers, so every node computes the same answer. For a
pipeline job the dealing is per (shard, stage) holder and
``consensus.pipeline.expand_assignment`` gives every unit its holder.

This module must never read state or a clock: it is handed what it ranks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from consensus.types import Address, Hash32


def _dealing_order(step_seed: Hash32, job_id: Hash32, step: int, trainers: Sequence[Address]) -> list[Address]:
    def rank(addr: Address) -> bytes:
        return hashlib.sha256(b"TDML/assign/" + step_seed + job_id + step.to_bytes(8, "big") + addr).digest()

    return sorted(trainers, key=rank)


def compute_assignment(
    step_seed: Hash32, job_id: Hash32, step: int, shards: int, trainers: Sequence[Address]
) -> tuple[Address, ...]:
    """Deal ``shards`` to ``trainers`` in an order drawn from the step seed."""
    if not trainers:
        return ()
    order = _dealing_order(step_seed, job_id, step, trainers)
    return tuple(order[k % len(order)] for k in range(shards))


def compute_stage_assignment(
    step_seed: Hash32, job_id: Hash32, step: int, shards: int, stages: int, trainers: Sequence[Address]
) -> tuple[Address, ...]:
    """Deal a pipeline step's (shard, stage) holders, slot ``shard * stages + stage``, by stage first.

    Trainer i of the drawn order takes stage ``i % stages`` and the stage's
    shards are dealt among the trainers of that stage: with at least as many
    trainers as stages, each holds one stage (data parallel within it) and so
    fetches and keeps one range; with fewer, trainer ``s % T`` holds stage s.
    """
    if not trainers:
        return ()
    order = _dealing_order(step_seed, job_id, step, trainers)
    if len(order) < stages:
        return tuple(order[s % len(order)] for _ in range(shards) for s in range(stages))
    groups = [order[s::stages] for s in range(stages)]
    return tuple(groups[s][k % len(groups[s])] for k in range(shards) for s in range(stages))


def compute_reassignment(
    assignment: tuple[Address, ...], shard: int, eligible: Sequence[Address], step_seed: Hash32
) -> Address | None:
    """The trainer that takes over ``shard``: fewest shards first, then by hash.

    Prefers anyone but the current holder; falls back to it when it is the
    only eligible trainer. None when nobody is eligible.
    """
    if not eligible:
        return None
    current = assignment[shard]
    others = [a for a in eligible if a != current] or list(eligible)
    load = {a: 0 for a in others}
    for holder in assignment:
        if holder in load:
            load[holder] += 1

    def key(addr: Address) -> tuple[int, bytes]:
        return load[addr], hashlib.sha256(b"TDML/reassign/" + step_seed + shard.to_bytes(2, "big") + addr).digest()

    return min(others, key=key)
