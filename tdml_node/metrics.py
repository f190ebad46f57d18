"""Prometheus metrics of one node, served at ``/metrics`` by the RPC server.

Each node owns its registry, so several nodes in one process (tests) do not
share counters. Event counts (blocks, units trained, replay times) are
observed as they happen; what the chain records (jobs' progress, loss and
accuracy, trainers' units) and the sync lag are read when ``/metrics`` is
scraped, from the committed state the node already holds, so they survive a
restart and never go stale. This module must never change what the node does.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ParamSpec, Protocol, TypeVar

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

from consensus.state import LedgerState
from consensus.types import JOB_ACTIVE, ROLE_TRAINER, Block, Hash32, JobState, StepOutcome
from tdml_node.jsonview import f32, hex0x

P = ParamSpec("P")
R = TypeVar("R")

WATCHED_JOBS = 16
"""Jobs exported per scrape: the active ones first, then the most recently finished.

Each job adds a handful of series; a chain that has run thousands of jobs
must not make every scrape carry them all."""

WORK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
"""Seconds for one unit's training or replay: milliseconds for the tiny models, minutes for large ones."""

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


@dataclass(frozen=True, slots=True)
class ChainReads:
    """What the chain collector reads at each scrape; every read is of state the node already holds."""

    state: Callable[[], LedgerState]
    """The committed ledger state."""
    last_eval: Callable[[JobState], StepOutcome | None]
    """A job's latest step outcome that carries an evaluation (what ``tdml_getJob`` calls lastEval)."""
    best_peer_height: Callable[[], int]
    """The highest height a connected peer reports, 0 with no peers."""
    syncing: Callable[[], bool]
    """Whether the syncer is fetching blocks now."""


def get_watched_jobs(jobs: Iterator[JobState], limit: int = WATCHED_JOBS) -> list[JobState]:
    """At most ``limit`` jobs: active ones first, then by the height they last changed, newest first."""

    def rank(job: JobState) -> tuple[bool, int, bytes]:
        return job.status == JOB_ACTIVE, max(job.created_height, job.finished_height), job.job_id

    return heapq.nlargest(limit, jobs, key=rank)


def compute_loss(bits: int) -> float:
    """A float32 loss from its bit pattern, as the RPC views decode it; NaN stays NaN (Prometheus carries it)."""
    value = f32(bits)
    return math.nan if value is None else value


class _Chain(Collector):
    """Jobs and trainers as the committed state records them, and how far this node is behind its peers."""

    def __init__(self, reads: ChainReads) -> None:
        self.reads = reads
        self._evals: dict[Hash32, tuple[int, StepOutcome | None]] = {}
        """Each watched job's last evaluation, by the step it was read at: a read walks back up to
        ``eval_every`` stored outcomes, so it is done once per step, not once per scrape."""

    def collect(self) -> Iterator[Metric]:
        state = self.reads.state()
        yield from self._jobs(state)
        yield from self._trainers(state)
        lag = GaugeMetricFamily("tdml_sync_lag_blocks", "Best peer height minus own height (0 when in step)")
        lag.add_metric([], max(0, self.reads.best_peer_height() - state.height))
        yield lag
        syncing = GaugeMetricFamily("tdml_syncing", "1 while the node fetches blocks it is behind by, else 0")
        syncing.add_metric([], 1 if self.reads.syncing() else 0)
        yield syncing

    def _jobs(self, state: LedgerState) -> Iterator[Metric]:
        # Not "job": Prometheus sets that label on every series it scrapes (the scrape job's name).
        labels = ["job_id", "name"]
        step = GaugeMetricFamily("tdml_job_step", "Steps the job has completed on the chain", labels=labels)
        planned = GaugeMetricFamily("tdml_job_steps_planned", "Steps the job's spec asks for", labels=labels)
        active = GaugeMetricFamily("tdml_job_active", "1 while the job runs, 0 once done or stalled", labels=labels)
        train = GaugeMetricFamily("tdml_job_train_loss", "Training loss of the job's last completed step", labels=labels)
        test_loss = GaugeMetricFamily("tdml_job_test_loss", "Test loss of the job's last evaluation", labels=labels)
        accuracy = GaugeMetricFamily(
            "tdml_job_test_accuracy", "Test accuracy (correct / total) of the job's last evaluation", labels=labels
        )
        evals: dict[Hash32, tuple[int, StepOutcome | None]] = {}
        for job in get_watched_jobs(iter(state.jobs.values())):
            key = [hex0x(job.job_id), job.spec.name]
            step.add_metric(key, job.step)
            planned.add_metric(key, job.spec.steps)
            active.add_metric(key, 1 if job.status == JOB_ACTIVE else 0)
            if job.last_outcome is not None:
                train.add_metric(key, compute_loss(job.last_outcome.train_loss))
            evaluation = self._last_eval(job, evals)
            if evaluation is not None and evaluation.eval_total:
                test_loss.add_metric(key, compute_loss(evaluation.eval_loss))
                accuracy.add_metric(key, evaluation.eval_correct / evaluation.eval_total)
        self._evals = evals
        yield from (step, planned, active, train, test_loss, accuracy)

    def _last_eval(self, job: JobState, evals: dict[Hash32, tuple[int, StepOutcome | None]]) -> StepOutcome | None:
        cached = self._evals.get(job.job_id)
        evaluation = cached[1] if cached is not None and cached[0] == job.step else self.reads.last_eval(job)
        evals[job.job_id] = (job.step, evaluation)
        return evaluation

    def _trainers(self, state: LedgerState) -> Iterator[Metric]:
        families = {
            "units_accepted": CounterMetricFamily(
                "tdml_trainer_units_committed", "The trainer's units verified and committed", labels=["trainer"]
            ),
            "units_rejected": CounterMetricFamily(
                "tdml_trainer_units_rejected", "The trainer's units rejected as fraud", labels=["trainer"]
            ),
            "units_reassigned": CounterMetricFamily(
                "tdml_trainer_units_reassigned", "The trainer's units reassigned after their deadline", labels=["trainer"]
            ),
            "times_slashed": CounterMetricFamily(
                "tdml_trainer_slashed", "Times the trainer's stake was slashed", labels=["trainer"]
            ),
        }
        # Records exist only for accounts that did work; the label set is the
        # registered trainers (a role bought with stake) and the slashed ones.
        for address, record in state.records.items():
            account = state.get_account(address)
            if not (account.roles & ROLE_TRAINER or account.slashed):
                continue
            for field, family in families.items():
                family.add_metric([hex0x(address)], getattr(record, field))
        yield from families.values()


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
        self.training_seconds = Histogram(
            "tdml_training_seconds", "Time this node took to train one work unit", registry=r, buckets=WORK_BUCKETS
        )
        self.verification_seconds = Histogram(
            "tdml_verification_seconds", "Time this node took to replay the sampled steps of one work unit",
            registry=r, buckets=WORK_BUCKETS,
        )
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

    def watch_chain(self, reads: ChainReads) -> None:
        """Export jobs, trainers and the sync lag, read from the node's state at each scrape (once per node)."""
        self.registry.register(_Chain(reads))

    def observe_rpc(self, method: str, seconds: float) -> None:
        """Called for known methods only, so the label set stays bounded."""
        self.rpc_seconds.labels(method).observe(seconds)

    def observe_commit(
        self, seconds: float, block: Block, completed: tuple[StepOutcome, ...], round_: int = 0
    ) -> None:
        """``round_`` is the commit certificate's: the round in which more than two thirds precommitted the block."""
        self.commit_round.observe(round_)
        self.height.set(block.header.height)
        self.blocks.inc()
        self.commit_seconds.observe(seconds)
        self.transactions.inc(len(block.body.transactions))
        self.units_committed.inc(len(block.body.submissions))
        self.steps_completed.inc(len(completed))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def timed(histogram: Histogram, fn: Callable[P, R]) -> Callable[P, R]:
    """``fn``, observing into ``histogram`` the seconds of each call that returns (a raise is not a measurement)."""

    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        started = time.perf_counter()
        result = fn(*args, **kwargs)
        histogram.observe(time.perf_counter() - started)
        return result

    return call
