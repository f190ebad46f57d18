"""Ours: the job on a fresh 4-node devnet of real node processes, watched over RPC and ``/proc``.

The nodes get the dataset, find their peers and go quiet; then the job is
submitted and its history polled until the last step's outcome is seen. The
CPU time of every node process and thread, and the ``/metrics`` counters, are
read just before the submission and just after that sighting (CPU first, so
it is nearest the timed span). Then the span's blocks, node 0's commit log,
each node's record, and what one poll costs node 0.

This module must never assert on a timing or leave a node running
(``running_devnet`` stops them, ``scratch`` removes their homes).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from benchmarks.common import proc_cpu_seconds, thread_cpu_seconds
from benchmarks.network.baselines import EvalPoint
from benchmarks.network.devnet_tools import (
    COMMIT_LOG_CONFIG,
    METRICS,
    blocks,
    check_alive,
    commit_intervals,
    is_later_round,
    pids,
    read_metrics,
    scratch,
    split_threads,
    wait_for,
    wait_quiet,
)
from benchmarks.network.plan import NODES, Plan
from tdml_node.client import NodeClient
from tdml_node.devnet import Devnet, DevnetError, running_devnet, submit_job

JOB_POLL_SECONDS = 0.25
"""How often the devnet job's history is read (each read costs node 0 about a millisecond of CPU)."""
HISTORY_LIMIT = 4
POLL_PROBES = 50


@dataclass(frozen=True, slots=True)
class NodeFigures:
    cpu_seconds: float
    main_thread_cpu: float
    busiest_other_thread_cpu: float
    remaining_threads_cpu: float
    units_trained: int
    """Its units the chain accepted (``unitsVerified``)."""
    verdicts_signed: int
    units_checked: int | None
    """Units it replayed (``tdml_units_checked`` of ``/metrics``), whether or not its verdict was included."""

    @property
    def replays(self) -> int:
        """Units it replayed; its signed verdicts where its ``/metrics`` did not answer."""
        return self.verdicts_signed if self.units_checked is None else self.units_checked


@dataclass(frozen=True, slots=True)
class DevnetRun:
    seconds: float
    """Submission to the first sighting of the last step's outcome."""
    evals: tuple[EvalPoint, ...]
    final_root: str
    final_accuracy: float | None
    blocks: int
    nodes: tuple[NodeFigures, ...]
    units_rejected: int
    polls: int
    poll_cpu_seconds: float
    ready_seconds: float
    later_round_blocks: int
    """Blocks of the job decided in a round above 0 (round 0's proposal timed out or was refused)."""
    later_round_time_share: float
    """Share of node 0's time between the job's commits spent in heights decided in a round above 0."""
    unit_blocks_without_outcome: int
    """Blocks that carried units but completed no step (a step's units split over several blocks)."""
    metrics_delta: dict[str, float]
    """Sums over the nodes of the /metrics counters that moved during the job."""


@dataclass(frozen=True, slots=True)
class _Sample:
    """Every node's counters at one moment: ``/metrics``, thread CPU, process CPU."""

    metrics: list[dict[str, float]]
    threads: list[dict[int, float]]
    cpu: list[float]


@dataclass(frozen=True, slots=True)
class _Chain:
    """What the job's span of the chain looked like."""

    height0: int
    height1: int
    later_round_blocks: int
    unit_blocks_without_outcome: int
    later_round_time_share: float


def run_devnet_job(plan: Plan) -> DevnetRun:
    """A fresh 4-node devnet trains the job; figures from RPC and ``/proc``."""
    spec, dataset = plan.spec, plan.dataset
    with scratch("tdml-bench-net-") as base:
        devnet = Devnet.create(base / "net", NODES, config_overrides=COMMIT_LOG_CONFIG)
        launched = time.perf_counter()
        with running_devnet(devnet):
            ready = time.perf_counter() - launched
            node_pids = pids(devnet)
            client = _settle(devnet, node_pids, dataset)
            height0 = int(client.call("tdml_blockNumber"))
            metrics0 = [read_metrics(n.rpc_url) for n in devnet.nodes]
            threads0 = [thread_cpu_seconds(p) for p in node_pids]
            start = _Sample(metrics0, threads0, [proc_cpu_seconds(p) for p in node_pids])
            started = time.perf_counter()
            job_id = submit_job(client, devnet.client_key, devnet.genesis.chain_id, spec, dataset)
            seen, polls = _follow(devnet, client, job_id, plan, started)
            cpu1 = [proc_cpu_seconds(p) for p in node_pids]
            threads1 = [thread_cpu_seconds(p) for p in node_pids]
            end = _Sample([read_metrics(n.rpc_url) for n in devnet.nodes], threads1, cpu1)
            view = client.call("tdml_getJob", job_id)
            chain = _chain(devnet, client, height0, int(client.call("tdml_blockNumber")))
            records = [client.call("tdml_getTrainer", "0x" + n.keypair.address.hex()) for n in devnet.nodes]
            poll_cpu = _poll_cost(client, node_pids[0], job_id)
        return DevnetRun(
            seconds=seen[spec.steps - 1][0],
            evals=tuple(EvalPoint(step, acc, at, at) for step, (at, acc) in sorted(seen.items()) if acc is not None),
            final_root=str(view["modelRoot"]),
            final_accuracy=((view or {}).get("lastEval") or {}).get("testAccuracy"),
            blocks=chain.height1 - chain.height0,
            nodes=_node_figures(node_pids, start, end, records),
            units_rejected=sum(int(r["unitsRejected"]) for r in records),
            polls=polls,
            poll_cpu_seconds=poll_cpu,
            ready_seconds=ready,
            later_round_blocks=chain.later_round_blocks,
            later_round_time_share=chain.later_round_time_share,
            unit_blocks_without_outcome=chain.unit_blocks_without_outcome,
            metrics_delta={
                name: sum(m1.get(name, 0.0) - m0.get(name, 0.0) for m0, m1 in zip(start.metrics, end.metrics, strict=True))
                for name in METRICS
            },
        )


def _settle(devnet: Devnet, node_pids: list[int], dataset: bytes) -> NodeClient:
    """Every node holds the dataset and sees its peers, and start-up work is over; node 0's client."""
    clients = [n.client(timeout=60) for n in devnet.nodes]
    for c in clients:
        c.put_blob(dataset)
    wait_for(lambda: all(len(c.call("tdml_peers")) == NODES - 1 for c in clients), 60, "the peers", devnet)
    wait_quiet(node_pids)
    return clients[0]


def _follow(devnet: Devnet, client: NodeClient, job_id: str, plan: Plan,
            started: float) -> tuple[dict[int, tuple[float, float | None]], int]:
    """Poll the job's history until the last step shows: (step → (first seen, test accuracy)), polls."""
    last, timeout = plan.spec.steps - 1, plan.job_timeout
    seen: dict[int, tuple[float, float | None]] = {}
    polls = 0
    while last not in seen:
        check_alive(devnet)
        history = client.call("tdml_getJobHistory", job_id, HISTORY_LIMIT) or []
        polls += 1
        now = time.perf_counter() - started
        for o in history:
            seen.setdefault(int(o["step"]), (now, o.get("testAccuracy")))
        if now > timeout:
            raise DevnetError(f"the job did not finish within {timeout:.0f}s (steps seen: {len(seen)})")
        if last not in seen:
            time.sleep(JOB_POLL_SECONDS)
    return seen, polls


def _chain(devnet: Devnet, client: NodeClient, height0: int, height1: int) -> _Chain:
    """The blocks of ``(height0, height1]`` over RPC, and node 0's time in them from its log."""
    later_round = partial = 0
    for block in blocks(client, height0 + 1, height1):
        later_round += is_later_round(block)
        partial += bool(block["submissions"]) and not block["outcomes"]
    spans = commit_intervals(devnet.nodes[0].log_path, height0, height1)
    later_share = sum(d for d, r in spans if r > 0) / max(sum(d for d, _ in spans), 1e-9)
    return _Chain(height0, height1, later_round, partial, later_share)


def _poll_cost(client: NodeClient, pid: int, job_id: str) -> float:
    """What one of our polls costs node 0, so its share of the node's CPU time is known."""
    c0 = proc_cpu_seconds(pid)
    for _ in range(POLL_PROBES):
        client.call("tdml_getJobHistory", job_id, HISTORY_LIMIT)
    return (proc_cpu_seconds(pid) - c0) / POLL_PROBES


def _node_figures(node_pids: list[int], start: _Sample, end: _Sample,
                  records: list[dict[str, Any]]) -> tuple[NodeFigures, ...]:
    nodes = []
    for i, pid in enumerate(node_pids):
        main, busiest, rest = split_threads(pid, start.threads[i], end.threads[i])
        checked = end.metrics[i].get("tdml_units_checked_total")
        nodes.append(NodeFigures(
            end.cpu[i] - start.cpu[i], main, busiest, rest, int(records[i]["unitsVerified"]),
            int(records[i]["verdictsSigned"]),
            None if checked is None else int(checked - start.metrics[i].get("tdml_units_checked_total", 0.0)),
        ))
    return tuple(nodes)
