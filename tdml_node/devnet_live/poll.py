"""Reading the devnet's nodes into ``status`` values, and a thread that keeps the latest snapshot.

Everything comes from what a user could read too: ``tdml_nodeInfo``,
``tdml_syncing``, ``tdml_getTrainer``, ``tdml_getJob``, ``/metrics`` and the
node process's ``/proc/<pid>/status`` (its peak memory). This
module must never change a node or the chain; a node that does not answer
only shows as such.
"""

from __future__ import annotations

import contextlib
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tdml_node.client import NodeClient, RpcCallError
from tdml_node.devnet import Devnet, DevnetNode
from tdml_node.devnet_live.stages import StagePlan, stage_rows, with_earlier_trainers
from tdml_node.devnet_live.status import JobStatus, NodeStatus, Snapshot, role_of

POLL_TIMEOUT = 2.0
"""Seconds one RPC read may take: a stuck node slows its row, never the driver."""


def read_counters(url: str, timeout: float = POLL_TIMEOUT) -> dict[str, float]:
    """The node's Prometheus samples by name, counters under their family name (``_total`` dropped)."""
    with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=timeout) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in (family.name, family.name + "_total"):
                out[family.name] = sample.value
    return out


def read_node(node: DevnetNode, last: NodeStatus) -> NodeStatus:
    """This node's row now; ``last`` is its previous row (for the role, and to tell starting from unreachable)."""
    proc = node.process
    if proc is None:
        return replace(last, state="stopped" if last.pid is not None else last.state)
    if proc.poll() is not None:
        return replace(last, pid=proc.pid, state=f"exited {proc.returncode}")
    client = NodeClient(node.rpc_url, timeout=POLL_TIMEOUT)
    try:
        info = client.call("tdml_nodeInfo")
        syncing = client.call("tdml_syncing")
        record = client.call("tdml_getTrainer", info["address"])
        counters = read_counters(node.rpc_url)
    except (OSError, ValueError, RpcCallError, KeyError):
        up = last.state not in ("starting",)
        return replace(last, pid=proc.pid, state="unreachable" if up else "starting")
    return NodeStatus(
        index=node.index,
        role=role_of(info["roles"], info["validator"]),
        state="syncing" if syncing else "running",
        rpc_url=node.rpc_url,
        pid=proc.pid,
        height=info["height"],
        peers=info["peers"],
        units_trained=int(counters.get("tdml_units_trained", 0)),
        units_verified=record["unitsVerified"],
        units_rejected=record["unitsRejected"],
        peak_rss_mb=peak_rss_mb(proc.pid),
    )


def job_status(view: dict[str, Any], plan: StagePlan | None = None) -> JobStatus:
    """A ``tdml_getJob`` answer as the figures the screen shows (with ``plan``, a pipeline job's stages)."""
    last = view.get("lastOutcome") or {}
    last_eval = view.get("lastEval") or {}
    accepted = view.get("accepted") or []
    return JobStatus(
        name=view["name"],
        step=view["step"],
        steps=view["steps"],
        status=view["status"],
        train_loss=last.get("trainLossFloat"),
        test_accuracy=last_eval.get("testAccuracy"),
        units_accepted=sum(1 for a in accepted if a is not None),
        units=len(accepted),
        stages=stage_rows(plan, view.get("assignment") or []) if plan is not None else (),
    )


def peak_rss_mb(pid: int) -> float | None:
    """A process's peak resident memory (Linux ``VmHWM``) in MiB; None where /proc does not say."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class Watcher:
    """Polls every node and the job on a thread of its own; ``snapshot()`` is the latest view at this instant.

    The main thread only sets the phase and the job; reads and writes of the
    fields are single reference swaps, so no lock is needed.
    """

    def __init__(
        self,
        devnet: Devnet,
        clock: Callable[[], float],
        *,
        logs: Path | None,
        interval: float = 0.5,
        on_poll: Callable[[Snapshot], None] | None = None,
    ) -> None:
        self.devnet = devnet
        self.clock = clock
        self.logs = logs
        self.interval = interval
        self.on_poll = on_poll
        self.phase = "starting"
        self.job_id: str | None = None
        self.job_started: float | None = None
        self.job: JobStatus | None = None
        self.plan: StagePlan | None = None
        """A pipeline job's stages, set with the job: the rows show who holds each."""
        self.final: Snapshot | None = None
        """Once set, the snapshot the view keeps showing: the job's end, with the report's clock."""
        self.nodes = tuple(NodeStatus(n.index, "-", "starting", n.rpc_url) for n in devnet.nodes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="devnet-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self, *, wait: bool = True) -> None:
        self._stop.set()
        if wait and self._thread.is_alive():
            self._thread.join(timeout=4 * POLL_TIMEOUT + self.interval)

    def snapshot(self) -> Snapshot:
        if self.final is not None:
            return self.final
        return Snapshot(
            elapsed=self.clock(),
            phase=self.phase,
            nodes=self.nodes,
            job=self.job,
            job_started=self.job_started,
            logs=self.logs,
        )

    def refresh(self) -> None:
        """Read every node (and the job, once there is one) now."""
        self.nodes = tuple(read_node(n, s) for n, s in zip(self.devnet.nodes, self.nodes, strict=True))
        if self.job_id is not None:
            for node in self.devnet.nodes:
                if node.process is None or node.process.poll() is not None:
                    continue
                with contextlib.suppress(OSError, ValueError, RpcCallError):
                    view = NodeClient(node.rpc_url, timeout=POLL_TIMEOUT).call("tdml_getJob", self.job_id)
                    if view is not None:
                        job = job_status(view, self.plan)
                        self.job = replace(job, stages=with_earlier_trainers(self.job.stages if self.job else (), job.stages))
                    break

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.refresh()
            if self.on_poll is not None and not self._stop.is_set():
                self.on_poll(self.snapshot())
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))
