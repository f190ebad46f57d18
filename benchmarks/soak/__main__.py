"""The hostile-client soak: ``python -m benchmarks.soak [--minutes 10] [--out DIR]`` (``make soak``).

A 4-node devnet trains job after job of the chosen preset while every attack
of ``attacks`` runs against all nodes' RPC and p2p ports from strangers'
addresses. It shows, and writes to ``soak.json`` and ``soak.md`` in
``--out``:

- every job finishes, with a model root equal to the single-process reference;
- each node's memory stays under ``MEMORY_BOUND_MB``, its log grows by less than
  ``LOG_BOUND_MB``, and its open descriptors, once the attacks stop and the
  node has had ``SETTLE_SECONDS`` to time out what is left, are back within
  ``FD_SLACK`` of what it had before the attacks;
- ``/health`` answers throughout, and the nodes keep their peers.

It exits 1 when a check fails. This module must never send traffic outside
127.0.0.0/8, or leave a node or an attacker running.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import machine_info, now_iso
from benchmarks.network.devnet_tools import check_alive, pids, scratch
from benchmarks.soak.attacks import ATTACKS, AttackStats, Target
from benchmarks.soak.report import render_markdown
from benchmarks.soak.watch import HealthProbe, Sample, sample
from tdml_node.devnet import Devnet, DevnetError, running_devnet, submit_job

RESULTS_DIR = Path(__file__).resolve().parent.parent / "results"
MEMORY_BOUND_MB = 1024.0
LOG_BOUND_MB = 16.0
FD_SLACK = 16
SETTLE_SECONDS = 45.0
JOB_TIMEOUT = 900.0
SAMPLE_EVERY = 5.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the attacks run (default 10)")
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--job", default="digits-mlp", help="the preset each job is made of")
    parser.add_argument("--steps", type=int, default=100, help="steps per job (default 100)")
    parser.add_argument("--seed", type=int, default=None, help="the attacks' random seed (printed)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    return parser.parse_args(argv)


class Attackers:
    """Every attack in one event loop on a thread of its own, started and stopped from the soak's main thread."""

    def __init__(self, targets: list[Target], seed: int) -> None:
        self.targets = targets
        self.seed = seed
        self.stats = {name: AttackStats(name) for name in ATTACKS}
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="attackers", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 150.0) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    def _run(self) -> None:
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        tasks = [
            asyncio.create_task(attack(self.targets, self._stop, self.stats[name], random.Random(f"{self.seed}:{name}")))
            for name, attack in ATTACKS.items()
        ]
        await self._stop.wait()
        _, pending = await asyncio.wait(tasks, timeout=130)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def run_soak(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    from tdml_node.work.jobs import get_job
    from tdml_node.work.reference import run_reference

    spec, dataset = get_job(args.job, steps=args.steps)
    print(f"soak: seed {seed}; reference of {spec.name} ({spec.steps} steps)…", flush=True)
    reference_root = "0x" + run_reference(spec, dataset).final_root.hex()
    samples: dict[int, list[Sample]] = {}
    jobs: list[dict[str, Any]] = []
    peers_min = None
    with scratch("tdml-soak-") as base:
        devnet = Devnet.create(base, args.nodes)
        with running_devnet(devnet):
            for node in devnet.nodes:
                node.client().put_blob(dataset)
            procs = pids(devnet)
            t0 = time.monotonic()
            baseline = {i: sample(pid, devnet.nodes[i].log_path, 0.0) for i, pid in enumerate(procs)}
            targets = [Target(n.rpc_port, n.p2p_port) for n in devnet.nodes]
            attackers = Attackers(targets, seed)
            health = HealthProbe([n.rpc_url for n in devnet.nodes])
            attackers.start()
            print(f"soak: {len(ATTACKS)} attacks on {args.nodes} nodes for {args.minutes:g} min", flush=True)
            next_sample = 0.0
            client = devnet.nodes[0].client()
            attack_end = args.minutes * 60
            try:
                while time.monotonic() - t0 < attack_end:
                    started = time.monotonic()
                    job_id = submit_job(client, devnet.client_key, devnet.genesis.chain_id, spec, dataset)
                    view: dict[str, Any] | None = None
                    while time.monotonic() - started < JOB_TIMEOUT:
                        check_alive(devnet)
                        now = time.monotonic() - t0
                        health.probe(now)
                        if now >= next_sample:
                            next_sample = now + SAMPLE_EVERY
                            for i, pid in enumerate(procs):
                                s = sample(pid, devnet.nodes[i].log_path, now)
                                if s is not None:
                                    samples.setdefault(i, []).append(s)
                            peers = min(len(n.client().call("tdml_peers")) for n in devnet.nodes)
                            peers_min = peers if peers_min is None else min(peers_min, peers)
                        view = client.call("tdml_getJob", job_id)
                        if view is not None and view["status"] == "done":
                            break
                        time.sleep(1.0)
                    else:
                        raise DevnetError(f"job {job_id} did not finish within {JOB_TIMEOUT:.0f}s")
                    assert view is not None
                    jobs.append({"job": job_id, "seconds": round(time.monotonic() - started, 1),
                                 "model_root": view["modelRoot"], "matches_reference": view["modelRoot"] == reference_root})
                    print(f"soak: job {len(jobs)} done in {jobs[-1]['seconds']} s, "
                          f"reference {'matches' if jobs[-1]['matches_reference'] else 'DIFFERS'}", flush=True)
            finally:
                attackers.stop()
            attacks_seconds = time.monotonic() - t0
            print(f"soak: attacks stopped after {attacks_seconds:.0f} s; settling {SETTLE_SECONDS:.0f} s", flush=True)
            time.sleep(SETTLE_SECONDS)
            check_alive(devnet)
            settled = {i: sample(pid, devnet.nodes[i].log_path, time.monotonic() - t0) for i, pid in enumerate(procs)}
    return summarize(args, seed, reference_root, jobs, baseline, samples, settled, health, attackers, peers_min,
                     attacks_seconds)


def summarize(args: argparse.Namespace, seed: int, reference_root: str, jobs: list[dict[str, Any]],
              baseline: dict[int, Sample | None], samples: dict[int, list[Sample]], settled: dict[int, Sample | None],
              health: HealthProbe, attackers: Attackers, peers_min: int | None, attacks_seconds: float) -> dict[str, Any]:
    nodes = []
    for i, first in baseline.items():
        last = settled[i]
        if first is None or last is None:
            raise DevnetError(f"node {i} exited during the soak")
        rss_max = max((s.rss_mb for s in samples.get(i, [])), default=first.rss_mb)
        nodes.append({
            "node": i, "rss_start_mb": round(first.rss_mb, 1), "rss_max_mb": round(rss_max, 1),
            "rss_end_mb": round(last.rss_mb, 1), "fds_start": first.fds,
            "fds_max": max((s.fds for s in samples.get(i, [])), default=first.fds), "fds_end": last.fds,
            "log_growth_mb": round((last.log_bytes - first.log_bytes) / 2**20, 3),
        })
    checks = {
        "every job matches the reference": bool(jobs) and all(j["matches_reference"] for j in jobs),
        f"memory under {MEMORY_BOUND_MB:.0f} MB": all(n["rss_max_mb"] < MEMORY_BOUND_MB for n in nodes),
        f"log growth under {LOG_BOUND_MB:.0f} MB": all(n["log_growth_mb"] < LOG_BOUND_MB for n in nodes),
        f"descriptors back within {FD_SLACK}": all(n["fds_end"] <= n["fds_start"] + FD_SLACK for n in nodes),
        "/health answered throughout (no gap over 10 s)": health.longest_gap <= 10.0,
        "nodes kept their peers": peers_min is not None and peers_min >= args.nodes - 1,
    }
    return {
        "when": now_iso(), "machine": machine_info(), "seed": seed, "minutes": args.minutes,
        "attacks_seconds": round(attacks_seconds, 1), "job": args.job, "steps": args.steps,
        "reference_root": reference_root, "jobs": jobs, "nodes": nodes,
        "health": {"answered": health.answered, "missed": health.missed, "longest_gap_s": round(health.longest_gap, 1)},
        "peers_min": peers_min,
        "attacks": {name: {"attempts": s.attempts, "refused": s.refused, "held_seconds_max": round(s.held_seconds_max, 1),
                           "answers": s.answers} for name, s in attackers.stats.items()},
        "bounds": {"memory_mb": MEMORY_BOUND_MB, "log_growth_mb": LOG_BOUND_MB, "fd_slack": FD_SLACK,
                   "settle_seconds": SETTLE_SECONDS},
        "checks": checks,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    try:
        result = run_soak(args, seed)
    except DevnetError as exc:
        print(f"soak failed (seed {seed}): {exc}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "soak" if args.minutes >= 10 else "soak-short"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    markdown = render_markdown(result)
    (args.out / f"{stem}.md").write_text(markdown)
    print(markdown)
    failed = [name for name, ok in result["checks"].items() if not ok]
    if failed:
        print(f"soak: FAILED (seed {seed}): {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
