"""Crash and fault injection on real node processes, and what it must never break.

A campaign runs a 4-node devnet training a job while a seeded injector, one
fault at a time, kills a random node with SIGKILL at a random moment and
restarts it on the same datadir, pauses one (SIGSTOP, then SIGCONT), cuts one
off from the others (a partition of a minority, healed later), or restarts
one cleanly. Throughout, every node's blocks are watched: a height must never
show two different hashes, and a block once seen must never change. At the
end the job must be done, the final model must equal the single-process
reference, no vote may have been signed twice (no equivocation evidence, no
validator slashed), and every node must agree on the tip.

Run the full campaigns with ``python -m tests.adversarial.faults``; the CI runs
a short one (``test_faults.py``). A failure names its seed (replay with
``--seed``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tdml_node.client import RpcCallError
from tdml_node.devnet import Devnet, DevnetNode, running_devnet, submit_job
from tdml_node.work.jobs import get_job
from tdml_node.work.reference import run_reference

RESULTS = Path(__file__).parent / "results"


@dataclass
class FaultResult:
    seed: int
    kills: int = 0
    pauses: int = 0
    partitions: int = 0
    clean_restarts: int = 0
    heights_watched: int = 0
    conflicts: list[str] = field(default_factory=list)
    changed_blocks: list[str] = field(default_factory=list)
    evidence_committed: int = 0
    validators_slashed: int = 0
    job_done: bool = False
    equals_reference: bool = False
    tips_agree: bool = False
    final_height: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            not self.conflicts
            and not self.changed_blocks
            and self.evidence_committed == 0
            and self.validators_slashed == 0
            and self.job_done
            and self.equals_reference
            and self.tips_agree
        )


class Watcher:
    """Remembers the hash of every block any node has shown, and flags disagreements."""

    def __init__(self, result: FaultResult) -> None:
        self.seen: dict[int, str] = {}
        self.result = result

    def poll(self, node: DevnetNode, limit: int = 400) -> None:
        client = node.client(timeout=3)
        try:
            height = client.call("tdml_blockNumber")
            start = max(1, height - limit)
            for h in range(start, height + 1):
                digest = client.call("tdml_getBlockByNumber", h, False)["hash"]
                prior = self.seen.setdefault(h, digest)
                if prior != digest:
                    self.result.conflicts.append(f"height {h}: node {node.index} has {digest[:18]}, seen {prior[:18]}")
        except (OSError, RpcCallError, TypeError):
            return

    def recheck_all(self, node: DevnetNode) -> None:
        """After a restart: every block seen before must be there, unchanged."""
        client = node.client(timeout=10)
        height = client.call("tdml_blockNumber")
        for h, digest in list(self.seen.items()):
            if h > height:
                continue
            got = client.call("tdml_getBlockByNumber", h, False)["hash"]
            if got != digest:
                self.result.changed_blocks.append(f"height {h} on node {node.index} after restart")


def _alive(devnet: Devnet, node: DevnetNode) -> bool:
    return node.process is not None and node.process.poll() is None


def _partition(devnet: Devnet, victim: DevnetNode, cut: bool) -> None:
    others = [n for n in devnet.nodes if n is not victim]
    ids = ["0x" + n.keypair.public_key.hex() for n in others]
    with contextlib.suppress(OSError, RpcCallError):
        victim.client(timeout=5).call("tdml_devPartition", ids if cut else [])
    for n in others:
        with contextlib.suppress(OSError, RpcCallError):
            n.client(timeout=5).call("tdml_devPartition", ["0x" + victim.keypair.public_key.hex()] if cut else [])


def run_campaign(base: Path, *, seed: int, kills: int, steps: int, pauses: int = 2, partitions: int = 2) -> FaultResult:
    rng = random.Random(seed)
    result = FaultResult(seed=seed)
    watcher = Watcher(result)
    spec, dataset = get_job("digits-mlp", steps=steps)
    started = time.monotonic()
    devnet = Devnet.create(base, 4)
    plan = ["kill"] * kills + ["pause"] * pauses + ["partition"] * partitions + ["restart"]
    rng.shuffle(plan)
    with running_devnet(devnet):
        client0 = devnet.nodes[0].client()
        for node in devnet.nodes[1:]:
            node.client().put_blob(dataset)
        job_id = submit_job(client0, devnet.client_key, devnet.genesis.chain_id, spec, dataset)
        for action in plan:
            time.sleep(rng.uniform(0.2, 1.5))
            victim = rng.choice(devnet.nodes)
            for node in devnet.nodes:
                if node is not victim and _alive(devnet, node):
                    watcher.poll(node, limit=50)
            if action == "kill":
                devnet.stop(victim, kill=True)
                time.sleep(rng.uniform(0.0, 1.0))
                devnet.start(victim)
                devnet.wait_ready()
                watcher.recheck_all(victim)
                result.kills += 1
            elif action == "pause":
                assert victim.process is not None
                os.kill(victim.process.pid, signal.SIGSTOP)
                time.sleep(rng.uniform(1.0, 4.0))
                os.kill(victim.process.pid, signal.SIGCONT)
                result.pauses += 1
            elif action == "partition":
                _partition(devnet, victim, cut=True)
                time.sleep(rng.uniform(2.0, 6.0))
                _partition(devnet, victim, cut=False)
                result.partitions += 1
            else:
                devnet.stop(victim)
                devnet.start(victim)
                devnet.wait_ready()
                watcher.recheck_all(victim)
                result.clean_restarts += 1
        deadline = time.monotonic() + 900
        view: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            view = client0.call("tdml_getJob", job_id)
            if view is not None and view["status"] == "done":
                break
            time.sleep(0.5)
        result.job_done = bool(view and view["status"] == "done")
        tip = client0.call("tdml_blockNumber")
        agree_deadline = time.monotonic() + 120
        while time.monotonic() < agree_deadline:
            heights = [n.client().call("tdml_blockNumber") for n in devnet.nodes]
            if min(heights) >= tip:
                break
            time.sleep(0.5)
        hashes = {n.client().call("tdml_getBlockByNumber", tip, False)["hash"] for n in devnet.nodes}
        result.tips_agree = len(hashes) == 1
        for node in devnet.nodes:
            watcher.poll(node, limit=tip)
        result.final_height = tip
        result.heights_watched = len(watcher.seen)
        for h in range(1, tip + 1):
            result.evidence_committed += len(client0.call("tdml_getBlockByNumber", h, True)["body"]["evidence"])
        result.validators_slashed = sum(
            1 for n in devnet.nodes if client0.call("tdml_getTrainer", "0x" + n.keypair.address.hex())["timesSlashed"]
        )
        result.equals_reference = bool(
            view and view["modelRoot"] == "0x" + run_reference(spec, dataset).final_root.hex()
        )
    result.seconds = round(time.monotonic() - started, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--campaigns", type=int, default=3)
    parser.add_argument("--kills", type=int, default=35, help="SIGKILLs per campaign")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seed", type=int, help="run one campaign with this seed")
    args = parser.parse_args()
    seeds = [args.seed] if args.seed is not None else [random.randrange(1 << 30) for _ in range(args.campaigns)]
    results = []
    with tempfile.TemporaryDirectory(prefix="tdml-faults-") as tmp:
        for i, seed in enumerate(seeds):
            print(f"campaign {i + 1}/{len(seeds)} seed {seed} …", flush=True)
            r = run_campaign(Path(tmp) / f"c{i}", seed=seed, kills=args.kills, steps=args.steps)
            print(f"    ok={r.ok} {asdict(r)}", flush=True)
            results.append(r)
    RESULTS.mkdir(exist_ok=True)
    summary = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "kills": sum(r.kills for r in results),
        "pauses": sum(r.pauses for r in results),
        "partitions": sum(r.partitions for r in results),
        "clean_restarts": sum(r.clean_restarts for r in results),
        "all_ok": all(r.ok for r in results),
        "campaigns": [asdict(r) | {"ok": r.ok} for r in results],
    }
    (RESULTS / "faults.json").write_text(json.dumps(summary, indent=2))
    lines = [
        "| seed | kills | pauses | partitions | clean restarts | final height | conflicts | changed blocks "
        "| evidence | slashed | job done | = reference | tips agree | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.seed} | {r.kills} | {r.pauses} | {r.partitions} | {r.clean_restarts} | {r.final_height} "
            f"| {len(r.conflicts)} | {len(r.changed_blocks)} | {r.evidence_committed} | {r.validators_slashed} "
            f"| {r.job_done} | {r.equals_reference} | {r.tips_agree} | {r.seconds} |"
        )
    (RESULTS / "faults.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if not all(r.ok for r in results):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
