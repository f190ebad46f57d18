"""Sync speed of a joining node, and its section.

A 4-node devnet (``block_interval_ms = 0``) commits at least the plan's
blocks, among them those of a ``digits-mlp`` job; nodes 3 and 2 stop, so the
chain halts at a fixed height and no block production competes with the
sync; a fresh fifth node (``tdml-node init``, the genesis copied,
``--bootstrap`` node 0) starts and its height is polled until it reaches the
target.

This module must never assert on a timing or leave a node running.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import proc_cpu_seconds
from benchmarks.network.devnet_tools import cli, height, scratch, wait_for
from benchmarks.network.plan import NODES, Plan
from benchmarks.network.table import Fact, Figure
from tdml_node.client import NodeClient
from tdml_node.devnet import Devnet, DevnetError, DevnetNode, free_port, running_devnet, submit_job
from tdml_node.keys import read_key_file
from tdml_node.work.jobs import get_job

POLL_SECONDS = 0.1
"""How often the joining node's height is read."""


@dataclass(frozen=True, slots=True)
class SyncRun:
    target_height: int
    build_seconds: float
    job_steps_done: int
    ready_seconds: float
    """Launch of the fifth node to its RPC answering."""
    height_at_ready: int
    first_block_seconds: float
    """Launch to the first sighting of a height above 0."""
    height_at_first: int
    synced_seconds: float
    """Launch of the fifth node to its height reaching the target."""
    node_cpu_seconds: float
    """The joining node's CPU time from its RPC answering to the target."""
    serving_cpu_seconds: float
    """Node 0's CPU time while the fifth node started and synced (it serves the blocks)."""
    same_hash: bool

    @property
    def blocks_per_second(self) -> float:
        """Blocks applied ÷ seconds, from its RPC answering to the target (connecting included)."""
        return (self.target_height - self.height_at_ready) / max(self.synced_seconds - self.ready_seconds, 1e-9)

    @property
    def steady_blocks_per_second(self) -> float:
        """Blocks applied ÷ seconds, from its first synced block to the target."""
        return (self.target_height - self.height_at_first) / max(self.synced_seconds - self.first_block_seconds, 1e-9)

    @property
    def blocks_synced(self) -> int:
        """Blocks applied from its RPC answering to the target (at least 1, to divide by)."""
        return max(self.target_height - self.height_at_ready, 1)


@dataclass(frozen=True, slots=True)
class _CatchUp:
    """The joining node's progress, in seconds since its launch."""

    ready_seconds: float
    height_at_ready: int
    cpu_at_ready: float
    first_block_seconds: float
    height_at_first: int
    synced_seconds: float
    cpu_at_target: float


def run_sync(plan: Plan) -> SyncRun:
    """Build the plan's blocks on 4 nodes, halt the chain, then time a fresh fifth node's catch-up."""
    with scratch("tdml-bench-sync-") as base:
        devnet = Devnet.create(base / "net", NODES, config_overrides={"block_interval_ms": 0})
        with running_devnet(devnet):
            client = devnet.nodes[0].client()
            build_seconds, steps_done = _build(devnet, client, plan)
            # Two of four validators stop: the chain halts, so the target is fixed and no
            # block production competes with the sync for the CPUs.
            devnet.stop(devnet.nodes[3])
            devnet.stop(devnet.nodes[2])
            time.sleep(0.5)
            target = int(client.call("tdml_blockNumber"))
            late = _late_node(devnet, base / "late")
            late_client = late.client(timeout=5)
            server = devnet.nodes[0].process
            if server is None:
                raise DevnetError("node 0 is not running")
            serving0 = proc_cpu_seconds(server.pid)
            progress = _join(devnet, late, late_client, target, plan.sync_timeout)
            serving = proc_cpu_seconds(server.pid) - serving0
            ours = client.call("tdml_getBlockByNumber", target, False)["hash"]
            theirs = late_client.call("tdml_getBlockByNumber", target, False)["hash"]
        return SyncRun(
            target_height=target,
            build_seconds=build_seconds,
            job_steps_done=steps_done,
            ready_seconds=progress.ready_seconds,
            height_at_ready=progress.height_at_ready,
            first_block_seconds=progress.first_block_seconds,
            height_at_first=progress.height_at_first,
            synced_seconds=progress.synced_seconds,
            node_cpu_seconds=progress.cpu_at_target - progress.cpu_at_ready,
            serving_cpu_seconds=serving,
            same_hash=ours == theirs,
        )


def _build(devnet: Devnet, client: NodeClient, plan: Plan) -> tuple[float, int]:
    """Run a ``digits-mlp`` job until it is done and the chain holds the plan's blocks: (seconds, steps done)."""
    spec, dataset = get_job("digits-mlp", steps=plan.sync_job_steps)
    for node in devnet.nodes[1:]:
        node.client().put_blob(dataset)
    b0 = time.perf_counter()
    job_id = submit_job(client, devnet.client_key, devnet.genesis.chain_id, spec, dataset)

    def built() -> bool:
        view = client.call("tdml_getJob", job_id)
        done = view is not None and view["status"] == "done"
        return done and int(client.call("tdml_blockNumber")) >= plan.sync_blocks

    wait_for(built, plan.sync_timeout, f"{plan.sync_blocks} blocks and the job", devnet, every=0.25)
    build_seconds = time.perf_counter() - b0
    return build_seconds, int(client.call("tdml_getJob", job_id)["step"])


def _late_node(devnet: Devnet, home: Path) -> DevnetNode:
    """A fifth node initialised in ``home`` with the devnet's genesis, added to ``devnet`` but not started."""
    rpc_port, p2p_port = free_port(), free_port()
    cli("init", "--home", str(home), "--insecure-dev-key", "--rpc-port", str(rpc_port), "--p2p-port", str(p2p_port))
    shutil.copyfile(devnet.nodes[0].home / "genesis.bin", home / "genesis.bin")
    late = DevnetNode(NODES, home, read_key_file(home / "node_key.json", None, allow_insecure=True),
                      rpc_port, p2p_port)
    devnet.nodes.append(late)
    return late


def _join(devnet: Devnet, late: DevnetNode, client: NodeClient, target: int, timeout: float) -> _CatchUp:
    """Start ``late`` through node 0 and poll its height (``client``) until it reaches ``target``."""
    launched = time.perf_counter()
    devnet.start(late, ["--bootstrap", f"127.0.0.1:{devnet.nodes[0].p2p_port}", "--dev"])
    if late.process is None:
        raise DevnetError("the joining node did not start")
    ready: tuple[float, int, float] | None = None  # (seconds, height, CPU seconds)
    first: tuple[float, int] | None = None
    while True:
        if late.process.poll() is not None:
            raise DevnetError(f"the joining node exited:\n{devnet.log_tail(late)}")
        h = height(client)
        now = time.perf_counter() - launched
        if h is not None and ready is None:
            ready = (now, h, proc_cpu_seconds(late.process.pid))
        if h is not None and h > 0 and first is None:
            first = (now, h)
        if h is not None and h >= target:
            break
        if now > timeout:
            raise DevnetError(f"the joining node did not reach {target} in {timeout:.0f}s (at {h})")
        time.sleep(POLL_SECONDS)
    cpu_at_target = proc_cpu_seconds(late.process.pid)
    if ready is None or first is None:
        raise DevnetError("the joining node never answered")
    return _CatchUp(ready[0], ready[1], ready[2], first[0], first[1], now, cpu_at_target)


# ---------------------------------------------------------------------------
# The sync section


SYNC_FIGURES: tuple[Figure[SyncRun], ...] = (
    Figure("joining node sync speed, RPC answering to target height (connecting included)", "blocks/s",
           lambda s: s.blocks_per_second),
    Figure("joining node sync speed, first synced block to target height", "blocks/s",
           lambda s: s.steady_blocks_per_second),
    Figure("joining node: launch to target height", "s", lambda s: s.synced_seconds),
    Figure("joining node: launch to RPC answering", "s", lambda s: s.ready_seconds),
    Figure("joining node: launch to its first synced block", "s", lambda s: s.first_block_seconds),
    Figure("joining node CPU per block synced (from RPC answering)", "ms",
           lambda s: s.node_cpu_seconds * 1e3 / s.blocks_synced),
    Figure("node 0 (serving) CPU per block served", "ms", lambda s: s.serving_cpu_seconds * 1e3 / s.blocks_synced),
)

SYNC_FACTS: tuple[Fact[SyncRun], ...] = (
    ("target_height", lambda s: s.target_height),
    ("build_seconds", lambda s: s.build_seconds),
    ("digits_mlp_steps_in_chain", lambda s: s.job_steps_done),
    ("height_at_rpc_ready", lambda s: s.height_at_ready),
    ("height_at_first_sighting", lambda s: s.height_at_first),
    ("block_hash_at_target_matches", lambda s: s.same_hash),
)


def sync_leading_facts(plan: Plan) -> dict[str, Any]:
    return {"blocks_requested": plan.sync_blocks, "digits_mlp_job_steps": plan.sync_job_steps}


def sync_notes(plan: Plan) -> list[str]:
    return [
        f"A 4-node devnet (`block_interval_ms = 0`) commits at least {plan.sync_blocks} blocks, among them the blocks "
        f"of a {plan.sync_job_steps}-step `digits-mlp` job (units, verdicts, outcomes); then nodes 3 and 2 stop, so the "
        "chain halts at a fixed height; a fresh node (`tdml-node init`, the genesis copied, `--bootstrap` node 0) "
        f"starts and its height is polled every {POLL_SECONDS * 1e3:.0f} ms. Blocks/s counts the blocks it applied "
        "from its RPC's first answer to the target height.",
    ]
