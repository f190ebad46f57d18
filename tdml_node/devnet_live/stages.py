"""A pipeline job's stages as the devnet screen shows them: layer ranges, memory estimates, who holds each.

``stage_plan`` is fixed by the job's stage layout (``work.partition``, worked
out once when the job is loaded) and the devnet's keys; ``stage_rows`` fills
in the trainers from a ``tdml_getJob`` answer at each poll. This module must never talk to a node or read a clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from tdml_node.devnet_live.status import StageStatus

if TYPE_CHECKING:  # the layout comes from work.partition, which imports torch: the devnet loads it later
    from tdml_node.work.partition import StageLayout

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


def stage_plan(layout: Sequence[StageLayout], addresses: Sequence[bytes]) -> StagePlan | None:
    """A pipeline job's stages (``work.partition.stage_layout``); None for a job without stages."""
    if not layout:
        return None
    stages = tuple(
        StageStatus(s, st.first_layer, st.last_layer, (), st.estimated_bytes / MIB) for s, st in enumerate(layout)
    )
    nodes = {"0x" + bytes(a).hex(): i for i, a in enumerate(addresses)}
    return StagePlan(stages, tuple(st.units for st in layout), nodes, sum(st.estimated_bytes for st in layout) / MIB)


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
