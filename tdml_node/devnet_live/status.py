"""What the devnet screen shows, as plain frozen values: one snapshot of the nodes and the job.

The figures derived from a snapshot (steps/s, ETA) are pure functions of it,
so the live view, the plain lines and the report cannot disagree. This module
must never do I/O or read a clock: the elapsed time is a field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class NodeStatus:
    index: int
    role: str
    """``validator+trainer``, ``validator``, ``trainer`` or ``observer``."""
    state: str
    """``starting``, ``syncing``, ``running``, ``stopped``, ``unreachable`` or ``exited N``."""
    rpc_url: str
    pid: int | None = None
    height: int | None = None
    peers: int | None = None
    units_trained: int | None = None
    """Work units this node trained (its ``tdml_units_trained`` counter)."""
    units_verified: int | None = None
    """Of this node's units, how many the chain accepted (``tdml_getTrainer``)."""
    units_rejected: int | None = None
    peak_rss_mb: float | None = None
    """The node process's peak resident memory so far (``VmHWM``), in MiB."""


@dataclass(frozen=True, slots=True)
class StageStatus:
    """One stage of a pipeline job: its layer range and the nodes that hold it in the step in progress."""

    index: int
    first_layer: int
    last_layer: int
    """Inclusive: the stage holds layers ``first_layer`` to ``last_layer`` of the model's layer sequence."""
    trainers: tuple[int, ...]
    """Node indices, one per shard whose unit of this stage a devnet node holds, in node order without repeats."""
    estimated_mb: float
    """Parameters, their gradients, optimizer state and one micro-batch's activations (``work.partition``)."""


@dataclass(frozen=True, slots=True)
class JobStatus:
    name: str
    step: int
    steps: int
    status: str
    train_loss: float | None = None
    test_accuracy: float | None = None
    units_accepted: int = 0
    """Units of the step in progress the chain has accepted, of ``units`` (K, or K·(2S−1) in a pipeline)."""
    units: int = 0
    stages: tuple[StageStatus, ...] = ()
    """Empty for a job that trains the whole model in each unit."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    elapsed: float
    """Seconds since the devnet command started: the one clock every figure uses."""
    phase: str
    """What the driver is doing: ``starting 4 nodes``, ``training``, ``stopping 4 nodes``…"""
    nodes: tuple[NodeStatus, ...]
    job: JobStatus | None = None
    job_started: float | None = None
    """The elapsed time at which the job was submitted; None before."""
    logs: Path | None = None


def compute_rate(snap: Snapshot) -> float | None:
    """Steps per second since the job was submitted; None before there is a step to count."""
    if snap.job is None or snap.job_started is None or snap.job.step == 0:
        return None
    seconds = snap.elapsed - snap.job_started
    return snap.job.step / seconds if seconds > 0 else None


def compute_eta(snap: Snapshot) -> float | None:
    """Seconds until the last step at the rate so far; None while there is no rate."""
    rate = compute_rate(snap)
    if snap.job is None or rate is None:
        return None
    return max(0.0, (snap.job.steps - snap.job.step) / rate)


def role_of(roles: list[str], validator: bool) -> str:
    """A node's role in one word, from ``tdml_nodeInfo``'s ``roles`` and ``validator``."""
    parts = (["validator"] if validator else []) + (["trainer"] if "trainer" in roles else [])
    return "+".join(parts) or "observer"


@dataclass(frozen=True, slots=True)
class DevnetReport:
    job_id: str
    final: Snapshot
    """The snapshot at the moment the job was seen done: the report's clock is the view's."""
    total: float
    """Elapsed on the same clock when the report was made: after stopping the nodes and the reference run."""
    blocks: int
    model_root: str
    reference_root: str | None
    model_path: Path | None
    homes: Path | None
    """Where the node homes were kept; None when they were removed."""
    sealed_to: int | None = None
    """A private job's: how many nodes its data key was sealed to; None for a public job."""

    @property
    def matches_reference(self) -> bool | None:
        return None if self.reference_root is None else self.reference_root == self.model_root
