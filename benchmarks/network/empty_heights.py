"""Consensus time per empty height, on fresh 4- and 7-validator devnets with no job, and its section.

Each devnet proposes as soon as a height starts (``block_interval_ms = 0``);
once its first heights are committed and start-up is over, it is watched
for the plan's window: heights committed, the cluster's CPU time, node 0's
commit-to-commit intervals from its log, heights decided in a later round.
The ``consensus`` section puts 7 validators beside 4.

This module must never assert on a timing or leave a node running.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks.common import proc_cpu_seconds
from benchmarks.network.devnet_tools import (
    COMMIT_LOG_CONFIG,
    blocks,
    check_alive,
    commit_intervals,
    is_later_round,
    pids,
    scratch,
    wait_for,
)
from benchmarks.network.plan import Plan
from benchmarks.network.table import Fact, Figure
from tdml_node.devnet import Devnet, running_devnet

STALL_MS = 500.0
"""A height that takes longer than this stalled (an empty one normally takes tens of milliseconds)."""


@dataclass(frozen=True, slots=True)
class ConsensusRun:
    heights: int
    seconds: float
    cluster_cpu_seconds: float
    later_round_heights: int
    """Heights of the measured span decided in a round above 0 (a round timed out)."""
    intervals_ms: list[float]
    """Node 0's time from committing each height to committing the next, from its log."""

    @property
    def mean_ms(self) -> float:
        return self.seconds * 1e3 / self.heights if self.heights else float("inf")

    @property
    def median_ms(self) -> float:
        return statistics.median(self.intervals_ms) if self.intervals_ms else float("nan")

    def quantile_ms(self, q: float) -> float:
        if not self.intervals_ms:
            return float("nan")
        ordered = sorted(self.intervals_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def cpu_ms_per_height(self) -> float:
        return self.cluster_cpu_seconds * 1e3 / max(self.heights, 1)

    def stalls(self, over_ms: float = STALL_MS) -> tuple[int, float]:
        """How many heights took longer than ``over_ms``, and their share of the span."""
        slow = [x for x in self.intervals_ms if x > over_ms]
        return len(slow), sum(slow) / max(sum(self.intervals_ms), 1e-9)

    def stalls_text(self) -> str:
        count, _ = self.stalls()
        return f"{count}" + (f" (longest {max(self.intervals_ms):.0f} ms)" if self.intervals_ms else "")


def run_consensus(plan: Plan, count: int) -> ConsensusRun:
    """A fresh devnet of ``count`` validators with no job, proposing empty blocks as soon as it can."""
    seconds = plan.consensus_seconds
    with scratch("tdml-bench-cons-") as base:
        devnet = Devnet.create(base / "net", count, config_overrides={"block_interval_ms": 0, **COMMIT_LOG_CONFIG})
        with running_devnet(devnet):
            node_pids = pids(devnet)
            client = devnet.nodes[0].client()
            clients = [n.client() for n in devnet.nodes]
            wait_for(lambda: all(int(c.call("tdml_blockNumber")) >= 3 for c in clients), 90, "the first heights", devnet)
            time.sleep(2.0)  # the last nodes' start-up (torch warm-up) ends
            cpu0 = sum(proc_cpu_seconds(p) for p in node_pids)
            t0 = time.perf_counter()
            h0 = int(client.call("tdml_blockNumber"))
            while time.perf_counter() - t0 < seconds:
                time.sleep(min(1.0, max(0.0, seconds - (time.perf_counter() - t0))))
                check_alive(devnet)
            h1 = int(client.call("tdml_blockNumber"))
            span = time.perf_counter() - t0
            cpu = sum(proc_cpu_seconds(p) for p in node_pids) - cpu0
            later = sum(is_later_round(b) for b in blocks(client, h0 + 1, h1))
            intervals = [d * 1e3 for d, _ in commit_intervals(devnet.nodes[0].log_path, h0, h1)]
        return ConsensusRun(h1 - h0, span, cpu, later, intervals)


# ---------------------------------------------------------------------------
# The consensus section


@dataclass(frozen=True, slots=True)
class ConsensusPair:
    """One repeat: the 4-validator devnet, then the 7-validator one."""

    four: ConsensusRun
    seven: ConsensusRun


def _both(label: str, unit: str, value: Callable[[ConsensusRun], float], *, against_four: bool,
          note: str = "") -> list[Figure[ConsensusPair]]:
    """The figure (``{n}`` in ``label``) for 4 validators, then for 7, with 4 as 7's baseline if ``against_four``."""
    seven: Callable[[ConsensusPair], float | tuple[float, float]] = (
        (lambda p: (value(p.seven), value(p.four))) if against_four else (lambda p: value(p.seven)))
    return [
        Figure(label.format(n=4), unit, lambda p: value(p.four), note=note),
        Figure(label.format(n=7), unit, seven, "4 validators" if against_four else None, note),
    ]


def consensus_figures() -> list[Figure[ConsensusPair]]:
    label = "consensus time per empty height, {n} validators: "
    commits = "node 0's commit-to-commit intervals"
    return [
        *_both(label + "median height", "ms", lambda c: c.median_ms, against_four=True, note=commits),
        *_both(label + "mean, stalls included", "ms", lambda c: c.mean_ms, against_four=True,
               note="measured span ÷ heights"),
        *_both(label + "90th percentile height", "ms", lambda c: c.quantile_ms(0.9), against_four=False),
        *_both(f"share of the span spent in heights over {STALL_MS:.0f} ms, {{n}} validators", "%",
               lambda c: 100.0 * c.stalls()[1], against_four=False),
        *_both("cluster CPU per empty height, {n} validators", "ms", lambda c: c.cpu_ms_per_height,
               against_four=True),
    ]


CONSENSUS_FACTS: tuple[Fact[ConsensusPair], ...] = (
    ("heights_4", lambda p: f"{p.four.heights} in {p.four.seconds:.1f}s"),
    ("heights_7", lambda p: f"{p.seven.heights} in {p.seven.seconds:.1f}s"),
    ("later_round_heights_4", lambda p: p.four.later_round_heights),
    ("later_round_heights_7", lambda p: p.seven.later_round_heights),
    ("stalled_heights_4", lambda p: p.four.stalls_text()),
    ("stalled_heights_7", lambda p: p.seven.stalls_text()),
)


def consensus_leading_facts() -> dict[str, Any]:
    return {"block_interval_ms": 0}


def consensus_notes(plan: Plan) -> list[str]:
    return [
        "A fresh devnet of n validators with no job and `block_interval_ms = 0` (a proposer proposes an empty "
        f"block as soon as the height starts), measured for {plan.consensus_seconds:.0f} s once the first heights are "
        "committed. The median height is the median of node 0's intervals between committing consecutive heights "
        "(the timestamps of its DEBUG `committed` log lines, in JSON): the consensus cost of an empty height when nothing "
        "goes wrong. The mean is the span ÷ the heights committed in it, stalls included. A height decided in a "
        "round above 0 cost at least one timeout (`timeout_propose_ms` 3000, the other timeouts at their "
        "defaults). All n processes share the machine's 2 cores.",
    ]
