"""Prometheus metrics of one node, served at ``/metrics`` by the RPC server.

Each node owns its registry, so several nodes in one process (tests) do not
share counters. This module must never change what the node does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from consensus.types import Block, StepOutcome

CONNECTION_COUNTERS = {
    "accepted": "Inbound connections let in",
    "refused_limit": "Inbound connections aborted at once: a connection limit was reached",
    "timed_out": "Inbound connections closed by a deadline (headers, idle, handshake)",
    "over_budget": "Inbound connections closed for sending too much before their handshake",
}


class ConnectionCounts(Protocol):
    """A connection guard's counters (``p2p.guard.GuardStats``), read when metrics are scraped."""

    accepted: int
    refused_limit: int
    timed_out: int
    over_budget: int
    open: int


class _Connections(Collector):
    def __init__(self) -> None:
        self.ports: dict[str, ConnectionCounts] = {}

    def collect(self) -> Iterator[Metric]:
        for name, doc in CONNECTION_COUNTERS.items():
            family = CounterMetricFamily(f"tdml_connections_{name}", doc, labels=["port"])
            for port, stats in self.ports.items():
                family.add_metric([port], getattr(stats, name))
            yield family
        gauge = GaugeMetricFamily("tdml_connections_open", "Inbound connections open now", labels=["port"])
        for port, stats in self.ports.items():
            gauge.add_metric([port], stats.open)
        yield gauge


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.height = Gauge("tdml_height", "Last committed height", registry=r)
        self.blocks = Counter("tdml_blocks_committed", "Blocks committed by this node", registry=r)
        self.commit_seconds = Histogram(
            "tdml_commit_seconds", "Time to write a committed block", registry=r,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5),
        )
        self.transactions = Counter("tdml_transactions_committed", "Transactions in committed blocks", registry=r)
        self.units_committed = Counter("tdml_units_committed", "Work units in committed blocks", registry=r)
        self.steps_completed = Counter("tdml_steps_completed", "Training steps completed", registry=r)
        self.units_trained = Counter("tdml_units_trained", "Work units this node trained", registry=r)
        self.units_checked = Counter("tdml_units_checked", "Work units this node replayed", registry=r)
        self.units_failed = Counter("tdml_units_failed", "Work units that failed this node's replay", registry=r)
        self.peers = Gauge("tdml_peers", "Connected peers", registry=r)
        self.peer_messages_dropped = Counter(
            "tdml_peer_messages_dropped", "Peers' consensus messages dropped because the inbox was full", registry=r
        )
        self.commit_round = Histogram(
            "tdml_commit_round", "Consensus round in which each committed height was decided", registry=r,
            buckets=(0, 1, 2, 3, 5, 8, 13, 21),
        )
        self.rpc_seconds = Histogram(
            "tdml_rpc_seconds", "Time to answer one JSON-RPC call, by method", ["method"], registry=r,
            buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0),
        )
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self._connections = _Connections()
        r.register(self._connections)

    def watch_connections(self, port: str, stats: ConnectionCounts) -> None:
        """Export a connection guard's counters under the label ``port`` (such as "p2p" or "rpc")."""
        self._connections.ports[port] = stats

    def observe_rpc(self, method: str, seconds: float) -> None:
        """Called for known methods only, so the label set stays bounded."""
        self.rpc_seconds.labels(method).observe(seconds)

    def observe_commit(
        self, seconds: float, block: Block, completed: tuple[StepOutcome, ...], round_: int = 0
    ) -> None:
        self.commit_round.observe(round_)
        self.height.set(block.header.height)
        self.blocks.inc()
        self.commit_seconds.observe(seconds)
        self.transactions.inc(len(block.body.transactions))
        self.units_committed.inc(len(block.body.submissions))
        self.steps_completed.inc(len(completed))

    def render(self) -> bytes:
        return generate_latest(self.registry)
