"""A pipeline job's stages as the devnet screen shows them: layer ranges, memory estimates, who holds each.

``stage_plan`` is fixed by the job spec and the devnet's keys, worked out
once when the job is loaded (it builds the model on the meta device for the
memory estimate); ``stage_rows`` fills in the trainers from a ``tdml_getJob``
answer at each poll. This module must never talk to a node or read a clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from consensus import pipeline
from consensus.types import JobSpec
from tdml_node.devnet_live.status import StageStatus

MIB = 1 << 20


@dataclass(frozen=True, slots=True)
class StagePlan:
    stages: tuple[StageStatus, ...]
    """Every stage with its layers and estimate; ``trainers`` empty."""
    holder_units: tuple[tuple[int, ...], ...]
    """For each stage, the index of its forward (or last) unit in every shard: the one the stage's holder is dealt."""
    nodes: Mapping[str, int]
    """Node address (``0x…``, as RPC writes it) to devnet node index."""
    whole_model_mb: float
    """The same estimate for the whole model: what each trainer would hold without stages."""


def stage_plan(spec: JobSpec, addresses: Sequence[bytes]) -> StagePlan | None:
    """The stages of a pipeline job; None for a job that trains the whole model in every unit."""
    if spec.pipeline is None:
        return None
    from tdml_node.work.partition import estimate_layers  # torch: only for a pipeline job

    bounds = spec.pipeline.layer_bounds
    micro = max(1, spec.global_batch // spec.shards // spec.pipeline.micro_batches)
    costs = [e.total for e in estimate_layers(spec, micro)]
    stages = tuple(
        StageStatus(s, bounds[s], bounds[s + 1] - 1, (), sum(costs[bounds[s] : bounds[s + 1]]) / MIB)
        for s in range(len(bounds) - 1)
    )
    holders = tuple(
        tuple(pipeline.unit_index(spec, k, s) for k in range(spec.shards)) for s in range(len(stages))
    )
    nodes = {"0x" + bytes(a).hex(): i for i, a in enumerate(addresses)}
    return StagePlan(stages, holders, nodes, sum(costs) / MIB)


def stage_rows(plan: StagePlan, assignment: Sequence[str]) -> tuple[StageStatus, ...]:
    """The stages with the devnet nodes that hold them under ``assignment`` (``tdml_getJob``'s)."""
    rows = []
    for stage, units in zip(plan.stages, plan.holder_units, strict=True):
        found = [plan.nodes[assignment[u]] for u in units if u < len(assignment) and assignment[u] in plan.nodes]
        rows.append(replace(stage, trainers=tuple(dict.fromkeys(sorted(found)))))
    return tuple(rows)


def with_earlier_trainers(earlier: Sequence[StageStatus], now: Sequence[StageStatus]) -> tuple[StageStatus, ...]:
    """``now``'s stages, each naming every node that held it in ``earlier`` too: who trained it over the job.

    A finished job deals no units, so its own answer names no trainers.
    """
    if not earlier:
        return tuple(now)
    return tuple(
        replace(st, trainers=tuple(sorted(set(st.trainers) | set(old.trainers))))
        for st, old in zip(now, earlier, strict=True)
    )
