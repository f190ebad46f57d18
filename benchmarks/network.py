"""Network benchmarks: a 4-node devnet against torch.distributed and a plain loop, consensus, sync.

``python -m benchmarks.network [--quick] [--repeats N] [--out DIR]`` writes
``benchmarks/results/network.json`` and ``network.md`` (``--quick`` writes
``network-quick.json`` / ``.md``, so a smoke run never overwrites real
figures) and prints the markdown table. A full run keeps the raw figures of
the full run it replaces (``previous_run``) and adds a table of both runs'
repeats together, so the headline figures come from two full runs.

Every repeat measures, in this order and in one run, on the compute-heavy job
``heavy`` (``benchmarks.heavy_job``; one unit is well over 0.5 s of CPU on one
thread):

- the plain PyTorch loop in one process, the whole global batch per step;
- torch.distributed DDP with the gloo backend on 4 processes (rank ``r``
  takes shard ``r`` of each step, so each rank holds ``global_batch / 4``
  samples), evaluation on rank 0;
- the job on a fresh 4-node devnet (real node processes): submission to the
  last step's outcome, the moment each evaluation is first seen over RPC, the
  CPU time of every node process (``/proc``) and of its threads, and each
  node's record (units trained, verdicts signed);
- the executor in this process: ``train_unit``, ``check_unit`` (as a designated
  checker runs it) and ``step_outcome`` CPU time, the costs the node CPU time is
  compared with;
- consensus time per empty height on fresh 4- and 7-validator devnets that
  propose as soon as they can (``block_interval_ms = 0``);
- sync speed: a 4-node devnet builds a few hundred blocks (empty ones and the
  blocks of a ``digits-mlp`` job), two of its validators are stopped so the
  chain halts at a fixed height, and a fresh fifth node joins through node 0
  and catches up.

Once per run: the single-process reference run of the job (``run_reference``),
to say whether the devnet's final model equals it bit for bit. The machine's
load average is recorded before and after every measurement.

This module must never assert on a timing, leave a process running, or
write outside ``benchmarks/results/`` (or ``--out``) and temporary directories.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.multiprocessing.spawn import spawn as mp_spawn
from torch.nn.parallel import DistributedDataParallel

from benchmarks.common import (
    BenchResult,
    Settings,
    executor_for,
    job_state,
    machine_info,
    now_iso,
    proc_cpu_seconds,
    summarize,
    thread_cpu_seconds,
)
from benchmarks.heavy_job import QUICK_TARGET_ACCURACY, TARGET_ACCURACY, heavy_job
from benchmarks.run_all import cell, section_lines
from consensus.batches import compute_batch_indices
from consensus.crypto import Keypair
from consensus.types import JobSpec, WorkSubmission
from consensus.work import check_unit, sample_for
from tdml_node.client import NodeClient
from tdml_node.devnet import Devnet, DevnetError, DevnetNode, free_port, running_devnet, submit_job
from tdml_node.keys import read_key_file
from tdml_node.work.datasets import Dataset
from tdml_node.work.jobs import get_job
from tdml_node.work.models import build_model
from tdml_node.work.reference import run_reference

RESULTS_DIR = Path(__file__).resolve().parent / "results"
NODES = 4
DDP_WORLD = 4
CHAIN_ID_FOR_SAMPLING = "tdml-bench"
POLL_SECONDS = 0.1
"""How often the joining node's height is read."""
JOB_POLL_SECONDS = 0.25
"""How often the devnet job's history is read (each read costs node 0 about a millisecond of CPU)."""
HISTORY_LIMIT = 4
STALL_MS = 500.0
"""A height that takes longer than this stalled (an empty one normally takes tens of milliseconds)."""
POLL_PROBES = 50

Loads = list[str]


def load_now() -> tuple[float, float, float]:
    return os.getloadavg()


def load_text(before: tuple[float, float, float], after: tuple[float, float, float]) -> str:
    """The 1-minute load average before and after a measurement (the 5-minute one in brackets)."""
    return f"{before[0]:.2f} → {after[0]:.2f} ({before[1]:.2f} → {after[1]:.2f})"


# ---------------------------------------------------------------------------
# What the baselines share: the job's batches, its evaluation, its optimizer


def step_indices(spec: JobSpec, n: int, step: int, shards: range) -> list[int]:
    """The samples of the given shards of ``step``, shard after shard (the job's own batches)."""
    out: list[int] = []
    for k in shards:
        out += compute_batch_indices(
            seed=spec.seed, n=n, global_batch=spec.global_batch, shards=spec.shards,
            inner_steps=1, step=step, shard=k, inner=0,
        )
    return out


def evaluates_at(spec: JobSpec, step: int) -> bool:
    return spec.eval_every > 0 and ((step + 1) % spec.eval_every == 0 or step + 1 == spec.steps)


def test_accuracy(model: nn.Module, data: Dataset) -> float:
    """Share of the test set classified right, in the chunks the node evaluates in."""
    correct = total = 0
    model.eval()
    with torch.no_grad():
        for x, y in data.test_batches():
            correct += int((model(x).argmax(-1) == y).sum())
            total += int(y.numel())
    model.train()
    return correct / total if total else 0.0


def sgd_for(spec: JobSpec, params: Iterator[nn.Parameter]) -> torch.optim.Optimizer:
    """The job's optimizer (SGD with momentum, constant rate), one tensor at a time as the node does."""
    hyper = {p.name: float(p.value) for p in spec.optimizer.params}
    if spec.optimizer.name != "sgd" or spec.schedule.name != "constant":
        raise ValueError("the baselines implement constant-rate SGD only")
    return torch.optim.SGD(params, lr=hyper["lr"], momentum=hyper.get("momentum", 0.0), foreach=False)


@dataclass(frozen=True, slots=True)
class EvalPoint:
    step: int
    accuracy: float
    seconds: float
    """Since the start of training, evaluations included."""
    train_seconds: float
    """Since the start of training, evaluations excluded."""


@dataclass(frozen=True, slots=True)
class LoopRun:
    """A baseline run: wall seconds with and without its evaluations, CPU, evaluations."""

    seconds: float
    eval_seconds: float
    cpu_seconds: float
    evals: tuple[EvalPoint, ...]

    @property
    def train_seconds(self) -> float:
        return self.seconds - self.eval_seconds


def time_to(evals: Sequence[EvalPoint], target: float, *, train_only: bool = False) -> float | None:
    """Seconds to the first evaluation at or above ``target``; None when none reached it."""
    for e in evals:
        if e.accuracy >= target:
            return e.train_seconds if train_only else e.seconds
    return None


# ---------------------------------------------------------------------------
# Baseline (a): the plain loop, one process


def run_plain(spec: JobSpec, dataset: bytes) -> LoopRun:
    """The job's steps in one process: the whole global batch per step, one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = Dataset.decode(dataset, task=spec.task, dtype=torch.float32)
        model = build_model(spec.model, seed=spec.seed, dtype=torch.float32)
        opt = sgd_for(spec, model.parameters())
        evals: list[EvalPoint] = []
        eval_seconds = 0.0
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for t in range(spec.steps):
            x, y = data.batch(step_indices(spec, data.n_train, t, range(spec.shards)))
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()  # type: ignore[no-untyped-call]
            opt.step()
            if evaluates_at(spec, t):
                e0 = time.perf_counter()
                acc = test_accuracy(model, data)
                now = time.perf_counter()
                eval_seconds += now - e0
                evals.append(EvalPoint(t, acc, now - wall0, now - wall0 - eval_seconds))
        return LoopRun(time.perf_counter() - wall0, eval_seconds, time.process_time() - cpu0, tuple(evals))
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------------
# Baseline (b): torch.distributed DDP, gloo, 4 processes


def _ddp_worker(rank: int, world: int, port: int, spec: JobSpec, dataset: bytes, out_dir: str) -> None:
    """One DDP rank: shards ``[rank·K/w, (rank+1)·K/w)`` of each step; rank 0 evaluates."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        data = Dataset.decode(dataset, task=spec.task, dtype=torch.float32)
        model = build_model(spec.model, seed=spec.seed, dtype=torch.float32)
        ddp = DistributedDataParallel(model)
        opt = sgd_for(spec, ddp.parameters())
        per_rank = spec.shards // world
        mine = range(rank * per_rank, (rank + 1) * per_rank)
        evals: list[dict[str, float]] = []
        eval_seconds = 0.0
        dist.barrier()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for t in range(spec.steps):
            x, y = data.batch(step_indices(spec, data.n_train, t, mine))
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(ddp(x), y).backward()  # type: ignore[no-untyped-call]
            opt.step()
            if evaluates_at(spec, t):
                e0 = time.perf_counter()
                acc = test_accuracy(model, data) if rank == 0 else 0.0
                dist.barrier()  # the others wait for rank 0's evaluation, as they would at the next all-reduce
                now = time.perf_counter()
                eval_seconds += now - e0
                evals.append({"step": t, "accuracy": acc, "seconds": now - wall0,
                              "train_seconds": now - wall0 - eval_seconds})
        dist.barrier()
        out = {"seconds": time.perf_counter() - wall0, "eval_seconds": eval_seconds,
               "cpu_seconds": time.process_time() - cpu0, "evals": evals}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(out))
    finally:
        dist.destroy_process_group()


@dataclass(frozen=True, slots=True)
class DdpRun:
    run: LoopRun
    """Rank 0's view: wall times and evaluations."""
    cpu_seconds_all_ranks: float
    start_seconds: float
    """Spawning the ranks and joining the process group, not counted in ``run``."""


def run_ddp(spec: JobSpec, dataset: bytes, world: int = DDP_WORLD) -> DdpRun:
    """Spawn ``world`` processes (torch.multiprocessing, spawn) training the job with DDP over gloo."""
    if spec.shards % world:
        raise ValueError(f"{world} ranks cannot split {spec.shards} shards evenly")
    out_dir = tempfile.mkdtemp(prefix="tdml-bench-ddp-")
    try:
        started = time.perf_counter()
        mp_spawn(_ddp_worker, args=(world, free_port(), spec, dataset, out_dir), nprocs=world, join=True)  # type: ignore[no-untyped-call]
        total = time.perf_counter() - started
        ranks = [json.loads(Path(out_dir, f"rank{r}.json").read_text()) for r in range(world)]
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    r0 = ranks[0]
    evals = tuple(EvalPoint(int(e["step"]), e["accuracy"], e["seconds"], e["train_seconds"]) for e in r0["evals"])
    run = LoopRun(r0["seconds"], r0["eval_seconds"], r0["cpu_seconds"], evals)
    return DdpRun(run, sum(r["cpu_seconds"] for r in ranks), total - r0["seconds"])


# ---------------------------------------------------------------------------
# Ours: the job on a 4-node devnet


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


METRICS = (
    "tdml_units_trained_total",
    "tdml_units_checked_total",
    "tdml_units_failed_total",
    "tdml_blocks_committed_total",
    "tdml_commit_seconds_sum",
    "tdml_commit_seconds_count",
)


def read_metrics(rpc_url: str) -> dict[str, float]:
    """The unlabelled samples of a node's ``/metrics`` page that this module reads; empty if none answered."""
    try:
        with urllib.request.urlopen(rpc_url + "/metrics", timeout=10) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in METRICS:
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


def wait_quiet(pids: Sequence[int], *, window: float = 0.5, busy_below: float = 0.2, timeout: float = 60.0) -> None:
    """Wait until the processes' start-up work is over: little CPU used by any of them over ``window``."""
    deadline = time.monotonic() + timeout
    last = [proc_cpu_seconds(p) for p in pids]
    while time.monotonic() < deadline:
        time.sleep(window)
        now = [proc_cpu_seconds(p) for p in pids]
        if all(b - a < busy_below * window for a, b in zip(last, now, strict=True)):
            return
        last = now


def _pids(devnet: Devnet) -> list[int]:
    pids = []
    for node in devnet.nodes:
        if node.process is None:
            raise DevnetError(f"node {node.index} is not running")
        pids.append(node.process.pid)
    return pids


def _check_alive(devnet: Devnet) -> None:
    for node in devnet.nodes:
        if node.process is not None and node.process.poll() is not None:
            raise DevnetError(f"node {node.index} exited:\n{devnet.log_tail(node)}")


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str, devnet: Devnet | None = None,
              every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if devnet is not None:
            _check_alive(devnet)
        if time.monotonic() > deadline:
            raise DevnetError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def _split_threads(pid: int, before: dict[int, float], after: dict[int, float]) -> tuple[float, float, float]:
    """(main thread, busiest other thread, the rest) CPU seconds between two thread samples."""
    deltas = {tid: t - before.get(tid, 0.0) for tid, t in after.items()}
    main = deltas.pop(pid, 0.0)
    busiest = max(deltas.values(), default=0.0)
    return main, busiest, sum(deltas.values()) - busiest


def run_devnet_job(spec: JobSpec, dataset: bytes, *, timeout: float) -> DevnetRun:
    """A fresh 4-node devnet trains the job; figures from RPC and ``/proc``."""
    base = Path(tempfile.mkdtemp(prefix="tdml-bench-net-"))
    try:
        devnet = Devnet.create(base / "net", NODES)
        launched = time.perf_counter()
        with running_devnet(devnet):
            ready = time.perf_counter() - launched
            pids = _pids(devnet)
            clients = [n.client(timeout=60) for n in devnet.nodes]
            for c in clients:
                c.put_blob(dataset)
            _wait_for(lambda: all(len(c.call("tdml_peers")) == NODES - 1 for c in clients), 60, "the peers", devnet)
            wait_quiet(pids)
            client = clients[0]
            height0 = int(client.call("tdml_blockNumber"))
            metrics0 = [read_metrics(n.rpc_url) for n in devnet.nodes]
            threads0 = [thread_cpu_seconds(p) for p in pids]
            cpu0 = [proc_cpu_seconds(p) for p in pids]
            started = time.perf_counter()
            job_id = submit_job(client, devnet.client_key, devnet.genesis.chain_id, spec, dataset)
            seen: dict[int, tuple[float, float | None]] = {}
            polls = 0
            while spec.steps - 1 not in seen:
                _check_alive(devnet)
                history = client.call("tdml_getJobHistory", job_id, HISTORY_LIMIT) or []
                polls += 1
                now = time.perf_counter() - started
                for o in history:
                    seen.setdefault(int(o["step"]), (now, o.get("testAccuracy")))
                if now > timeout:
                    raise DevnetError(f"the job did not finish within {timeout:.0f}s (steps seen: {len(seen)})")
                if spec.steps - 1 not in seen:
                    time.sleep(JOB_POLL_SECONDS)
            seconds = seen[spec.steps - 1][0]
            cpu1 = [proc_cpu_seconds(p) for p in pids]
            threads1 = [thread_cpu_seconds(p) for p in pids]
            metrics1 = [read_metrics(n.rpc_url) for n in devnet.nodes]
            view = client.call("tdml_getJob", job_id)
            height1 = int(client.call("tdml_blockNumber"))
            later_round = partial = 0
            for h in range(height0 + 1, height1 + 1):
                block = client.call("tdml_getBlockByNumber", h, False)
                later_round += int(block["header"]["round"]) > 0
                partial += bool(block["submissions"]) and not block["outcomes"]
            log = commit_log(devnet.nodes[0].log_path, height0, height1)
            spans = [(log[h][0] - log[h - 1][0], log[h][1]) for h in range(height0 + 1, height1 + 1)
                     if h in log and h - 1 in log]
            later_share = sum(d for d, r in spans if r > 0) / max(sum(d for d, _ in spans), 1e-9)
            records = [client.call("tdml_getTrainer", "0x" + n.keypair.address.hex()) for n in devnet.nodes]
            # What one of our polls costs node 0, so its share of the node's CPU time is known.
            c0 = proc_cpu_seconds(pids[0])
            for _ in range(POLL_PROBES):
                client.call("tdml_getJobHistory", job_id, HISTORY_LIMIT)
            poll_cpu = (proc_cpu_seconds(pids[0]) - c0) / POLL_PROBES
        nodes = []
        for i, pid in enumerate(pids):
            main, busiest, rest = _split_threads(pid, threads0[i], threads1[i])
            checked = metrics1[i].get("tdml_units_checked_total")
            nodes.append(NodeFigures(
                cpu1[i] - cpu0[i], main, busiest, rest, int(records[i]["unitsVerified"]),
                int(records[i]["verdictsSigned"]),
                None if checked is None else int(checked - metrics0[i].get("tdml_units_checked_total", 0.0)),
            ))
        evals = tuple(EvalPoint(step, acc, at, at) for step, (at, acc) in sorted(seen.items()) if acc is not None)
        last_eval = (view or {}).get("lastEval") or {}
        return DevnetRun(
            seconds=seconds,
            evals=evals,
            final_root=str(view["modelRoot"]),
            final_accuracy=last_eval.get("testAccuracy"),
            blocks=height1 - height0,
            nodes=tuple(nodes),
            units_rejected=sum(int(r["unitsRejected"]) for r in records),
            polls=polls,
            poll_cpu_seconds=poll_cpu,
            ready_seconds=ready,
            later_round_blocks=later_round,
            later_round_time_share=later_share,
            unit_blocks_without_outcome=partial,
            metrics_delta={
                name: sum(m1.get(name, 0.0) - m0.get(name, 0.0) for m0, m1 in zip(metrics0, metrics1, strict=True))
                for name in METRICS
            },
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------------------
# The executor in this process: what training, checking and aggregating cost


@dataclass(frozen=True, slots=True)
class UnitCosts:
    train_cpu: list[float]
    train_wall: list[float]
    check_cpu: list[float]
    check_wall: list[float]
    outcome_cpu: float
    """``step_outcome`` of a step without evaluation."""
    outcome_eval_cpu: float
    """``step_outcome`` of a step with evaluation."""

    def train(self) -> float:
        return statistics.median(self.train_cpu)

    def check(self) -> float:
        return statistics.median(self.check_cpu)

    def outcome_mean(self, spec: JobSpec) -> float:
        """Mean ``step_outcome`` CPU per step over the job (evaluated steps and the others)."""
        evaluated = sum(evaluates_at(spec, t) for t in range(spec.steps))
        return (self.outcome_eval_cpu * evaluated + self.outcome_cpu * (spec.steps - evaluated)) / spec.steps


def measure_units(spec: JobSpec, dataset: bytes) -> UnitCosts:
    """Step 0 warms up (untimed but for its aggregation), step 1 is timed: K units, K checks, one aggregation."""
    threads = torch.get_num_threads()
    executor = executor_for(dataset, warm=True)
    trainer = Keypair.from_seed(bytes(range(32)))
    checker = Keypair.from_seed(bytes(range(1, 33)))
    root = executor.initial_model_root(spec)
    train_cpu: list[float] = []
    train_wall: list[float] = []
    check_cpu: list[float] = []
    check_wall: list[float] = []
    outcome: list[float] = []
    try:
        for t in range(2):
            job = job_state(spec, root, t, trainer.address)
            results = []
            for k in range(spec.shards):
                w0, c0 = time.perf_counter(), time.process_time()
                unit = executor.train_unit(job, k)
                c1, w1 = time.process_time(), time.perf_counter()
                results.append(unit.result_digest)
                sub = WorkSubmission(
                    job=job.job_id, step=t, shard=k, trainer=trainer.public_key, parent_model_root=root,
                    checkpoint_digests=unit.checkpoint_digests, result_digest=unit.result_digest,
                    losses=unit.losses, receipt=unit.receipt,
                )
                _, steps = sample_for(checker, CHAIN_ID_FOR_SAMPLING, job, sub)
                w2, c2 = time.perf_counter(), time.process_time()
                result = check_unit(executor, job, sub, steps)
                c3, w3 = time.process_time(), time.perf_counter()
                if result.failure:
                    raise RuntimeError(f"an honest unit failed its check: {result}")
                if t == 1:
                    train_cpu.append(c1 - c0)
                    train_wall.append(w1 - w0)
                    check_cpu.append(c3 - c2)
                    check_wall.append(w3 - w2)
            c0 = time.process_time()
            root = executor.step_outcome(job, tuple(results))[0]
            outcome.append(time.process_time() - c0)
    finally:
        torch.set_num_threads(threads)
    if evaluates_at(spec, 0) or not evaluates_at(spec, 1):
        raise ValueError("the unit costs need a job that evaluates at step 1 but not at step 0 (eval_every 2)")
    return UnitCosts(train_cpu, train_wall, check_cpu, check_wall, outcome[0], outcome[1])


# ---------------------------------------------------------------------------
# Consensus time per empty height


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

    def stalls(self, over_ms: float = STALL_MS) -> tuple[int, float]:
        """How many heights took longer than ``over_ms``, and their share of the span."""
        slow = [x for x in self.intervals_ms if x > over_ms]
        return len(slow), sum(slow) / max(sum(self.intervals_ms), 1e-9)


def commit_log(log: Path, first: int, last: int) -> dict[int, tuple[float, int]]:
    """(seconds of the day, round) at which the node logged committing each height in ``[first, last]``."""
    out: dict[int, tuple[float, int]] = {}
    for line in log.read_text(errors="replace").splitlines():
        if "msg=committed height=" not in line:
            continue
        try:
            fields = dict(f.split("=", 1) for f in line.split("msg=committed ", 1)[1].split() if "=" in f)
            height, round_ = int(fields["height"]), int(fields["round"])
            stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
        except (IndexError, KeyError, ValueError):
            continue
        if first <= height <= last:
            out[height] = (stamp.timestamp(), round_)
    return out


def run_consensus(count: int, *, seconds: float) -> ConsensusRun:
    """A fresh devnet of ``count`` validators with no job, proposing empty blocks as soon as it can."""
    base = Path(tempfile.mkdtemp(prefix="tdml-bench-cons-"))
    try:
        devnet = Devnet.create(base / "net", count, config_overrides={"block_interval_ms": 0})
        with running_devnet(devnet):
            pids = _pids(devnet)
            client = devnet.nodes[0].client()
            clients = [n.client() for n in devnet.nodes]
            _wait_for(lambda: all(int(c.call("tdml_blockNumber")) >= 3 for c in clients), 90, "the first heights", devnet)
            time.sleep(2.0)  # the last nodes' start-up (torch warm-up) ends
            cpu0 = sum(proc_cpu_seconds(p) for p in pids)
            t0 = time.perf_counter()
            h0 = int(client.call("tdml_blockNumber"))
            while time.perf_counter() - t0 < seconds:
                time.sleep(min(1.0, max(0.0, seconds - (time.perf_counter() - t0))))
                _check_alive(devnet)
            h1 = int(client.call("tdml_blockNumber"))
            span = time.perf_counter() - t0
            cpu = sum(proc_cpu_seconds(p) for p in pids) - cpu0
            later = sum(int(client.call("tdml_getBlockByNumber", x, False)["header"]["round"]) > 0
                        for x in range(h0 + 1, h1 + 1))
            times = commit_log(devnet.nodes[0].log_path, h0, h1)
        intervals = [(times[h + 1][0] - times[h][0]) * 1e3 for h in range(h0, h1) if h in times and h + 1 in times]
        return ConsensusRun(h1 - h0, span, cpu, later, intervals)
    finally:
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------------------
# Sync speed of a joining node


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


def _cli(*args: str) -> None:
    out = subprocess.run([sys.executable, "-m", "tdml_node", *args], capture_output=True, text=True,
                         timeout=120, check=False)
    if out.returncode != 0:
        raise DevnetError(f"tdml-node {' '.join(args)} failed: {out.stderr}")


def _height(client: NodeClient) -> int | None:
    try:
        return int(client.call("tdml_blockNumber"))
    except (OSError, ValueError):
        return None


def run_sync(*, blocks: int, job_steps: int, timeout: float) -> SyncRun:
    """Build ``blocks`` blocks on 4 nodes, halt the chain, then time a fresh fifth node's catch-up."""
    base = Path(tempfile.mkdtemp(prefix="tdml-bench-sync-"))
    try:
        devnet = Devnet.create(base / "net", NODES, config_overrides={"block_interval_ms": 0})
        with running_devnet(devnet):
            spec, dataset = get_job("digits-mlp", steps=job_steps)
            clients = [n.client() for n in devnet.nodes]
            for c in clients[1:]:
                c.put_blob(dataset)
            client = clients[0]
            b0 = time.perf_counter()
            job_id = submit_job(client, devnet.client_key, devnet.genesis.chain_id, spec, dataset)

            def built() -> bool:
                view = client.call("tdml_getJob", job_id)
                done = view is not None and view["status"] == "done"
                return done and int(client.call("tdml_blockNumber")) >= blocks

            _wait_for(built, timeout, f"{blocks} blocks and the job", devnet, every=0.25)
            build_seconds = time.perf_counter() - b0
            steps_done = int(client.call("tdml_getJob", job_id)["step"])
            # Two of four validators stop: the chain halts, so the target is fixed and no
            # block production competes with the sync for the CPUs.
            devnet.stop(devnet.nodes[3])
            devnet.stop(devnet.nodes[2])
            time.sleep(0.5)
            target = int(client.call("tdml_blockNumber"))

            home = base / "late"
            rpc_port, p2p_port = free_port(), free_port()
            _cli("init", "--home", str(home), "--insecure-dev-key", "--rpc-port", str(rpc_port),
                 "--p2p-port", str(p2p_port))
            shutil.copyfile(devnet.nodes[0].home / "genesis.bin", home / "genesis.bin")
            late = DevnetNode(NODES, home, read_key_file(home / "node_key.json", None, allow_insecure=True),
                              rpc_port, p2p_port)
            devnet.nodes.append(late)
            late_client = late.client(timeout=5)
            server = devnet.nodes[0].process
            if server is None:
                raise DevnetError("node 0 is not running")
            serving0 = proc_cpu_seconds(server.pid)
            launched = time.perf_counter()
            devnet.start(late, ["--bootstrap", f"127.0.0.1:{devnet.nodes[0].p2p_port}", "--dev"])
            if late.process is None:
                raise DevnetError("the joining node did not start")
            ready: tuple[float, int, float] | None = None  # (seconds, height, CPU seconds)
            first: tuple[float, int] | None = None
            while True:
                if late.process.poll() is not None:
                    raise DevnetError(f"the joining node exited:\n{devnet.log_tail(late)}")
                h = _height(late_client)
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
            node_cpu = proc_cpu_seconds(late.process.pid)
            serving = proc_cpu_seconds(server.pid) - serving0
            ours = client.call("tdml_getBlockByNumber", target, False)["hash"]
            theirs = late_client.call("tdml_getBlockByNumber", target, False)["hash"]
        if ready is None or first is None:
            raise DevnetError("the joining node never answered")
        return SyncRun(
            target_height=target,
            build_seconds=build_seconds,
            job_steps_done=steps_done,
            ready_seconds=ready[0],
            height_at_ready=ready[1],
            first_block_seconds=first[0],
            height_at_first=first[1],
            synced_seconds=now,
            node_cpu_seconds=node_cpu - ready[2],
            serving_cpu_seconds=serving,
            same_hash=ours == theirs,
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------------------
# The benchmark


@dataclass
class Sections:
    """The result sections of one run, filled one repeat at a time."""

    job: BenchResult
    cpu: BenchResult
    verification: BenchResult
    consensus: BenchResult
    sync: BenchResult
    loads: dict[str, Loads] = field(default_factory=dict)

    def all(self) -> list[BenchResult]:
        return [self.job, self.cpu, self.verification, self.consensus, self.sync]


@contextlib.contextmanager
def recorded_load(loads: dict[str, Loads], what: str) -> Iterator[None]:
    before = load_now()
    print(f"[network] {what} (load {before[0]:.2f}) …", file=sys.stderr, flush=True)
    started = time.perf_counter()
    yield
    after = load_now()
    loads.setdefault(what, []).append(load_text(before, after))
    print(f"[network] {what} done in {time.perf_counter() - started:.1f}s (load {after[0]:.2f})",
          file=sys.stderr, flush=True)


def _nan(x: float | None) -> float:
    return float("nan") if x is None else x


def run(settings: Settings) -> list[BenchResult]:
    repeats = settings.repeats_for(2, 1)
    steps = settings.pick(20, 4)
    target = QUICK_TARGET_ACCURACY if settings.quick else TARGET_ACCURACY
    cons_seconds = float(settings.pick(15, 6))
    sync_blocks = settings.pick(300, 80)
    sync_job_steps = settings.pick(100, 20)
    spec, dataset = heavy_job(steps=steps)
    samples = spec.steps * spec.global_batch
    n_checkers = spec.verification.checkers_per_unit or (NODES - 1) // 3 + 1

    s = Sections(
        job=BenchResult("devnet_vs_baselines", f"Job `{spec.name}`: 4-node devnet vs plain loop and DDP-gloo ×4", repeats),
        cpu=BenchResult("cpu_overhead", "Per-node CPU: node process CPU ÷ training CPU of the units it trained", repeats),
        verification=BenchResult("verification", "Verification compute ÷ training compute", repeats),
        consensus=BenchResult("consensus", "Consensus time per empty height", repeats),
        sync=BenchResult("sync", "Sync speed of a joining node", repeats),
    )
    plain_label = "plain PyTorch loop, 1 process"
    ddp_label = "torch.distributed DDP, gloo, 4 processes"
    j = s.job
    step_plain = j.row("time per step (devnet: submission to last outcome)", "ms", baseline_label=plain_label,
                       note="baselines: training only, evaluation excluded")
    step_ddp = j.row("time per step (devnet: submission to last outcome)", "ms", baseline_label=ddp_label,
                     note="baselines: training only, evaluation excluded")
    sps_plain = j.row("samples/s", "samples/s", baseline_label=plain_label)
    sps_ddp = j.row("samples/s", "samples/s", baseline_label=ddp_label)
    ttt_plain = j.row(f"time to test accuracy ≥ {target}", "s", baseline_label=plain_label,
                      note="evaluation included everywhere")
    ttt_ddp = j.row(f"time to test accuracy ≥ {target}", "s", baseline_label=ddp_label,
                    note="evaluation included everywhere")
    ttt_plain_train = j.row(f"time to test accuracy ≥ {target}", "s", baseline_label=plain_label + ", evaluation excluded")
    ttt_ddp_train = j.row(f"time to test accuracy ≥ {target}", "s", baseline_label=ddp_label + ", evaluation excluded")
    ddp_vs_plain = j.row("(baseline vs baseline) DDP-gloo ×4 time per step", "ms", baseline_label=plain_label,
                         note="training only")
    unit_cpu = j.row("one unit (train_unit, 1 thread, in-process): CPU", "s")
    unit_wall = j.row("one unit (train_unit, 1 thread, in-process): wall", "s")
    blocks_step = j.row("devnet blocks per step", "blocks")
    later_round = j.row("devnet blocks decided in a round > 0 (round 0 timed out)", "% of blocks")
    later_time = j.row("devnet time in heights decided in a round > 0 (from node 0's log)", "% of the job")
    commit_ms = j.row("devnet commit_block time per block (mean over nodes, /metrics)", "ms")

    c = s.cpu
    node_rows = [
        c.row(f"node {i} process CPU for the job", "s",
              baseline_label="training CPU of the units it trained (units × in-process train_unit CPU)")
        for i in range(NODES)
    ]
    cluster_row = c.row("all 4 node processes' CPU for the job", "s",
                        baseline_label="training CPU of all units (units × train_unit CPU)")
    cluster_vs_plain = c.row("all 4 node processes' CPU for the job", "s", baseline_label="plain loop CPU (whole job)")
    cluster_vs_ddp = c.row("all 4 node processes' CPU for the job", "s", baseline_label="DDP-gloo CPU, 4 ranks summed")
    model_rows = [
        c.row(f"node {i} process CPU for the job", "s",
              baseline_label="modelled: units × train_unit + replays × check_unit + steps × step_outcome")
        for i in range(NODES)
    ]
    main_row = c.row("main thread (event loop: consensus, p2p, RPC) CPU per step, mean over nodes", "ms")
    worker_row = c.row("busiest other thread (work queue: train, check, aggregate) CPU per step, mean over nodes", "ms")
    rest_row = c.row("remaining threads CPU per step, mean over nodes", "ms")
    util_row = c.row("cluster CPU utilisation during the job (CPU s ÷ wall s)", "cores")

    v = s.verification
    check_row = v.row("check_unit CPU per unit (one checker, H = 1, c = 1)", "s", baseline_label="train_unit CPU per unit")
    per_unit_row = v.row(f"verification CPU per unit, model: {n_checkers} checkers × check_unit", "s",
                         baseline_label="train_unit CPU per unit")
    agg_row = v.row("step_outcome CPU per step (aggregate; evaluation every "
                    f"{spec.eval_every} steps, averaged)", "s", baseline_label="train_unit CPU × K per step")
    model_row = v.row(f"verification + aggregation CPU per step, model: {n_checkers} × K × check_unit + "
                      f"{NODES} nodes × step_outcome", "s", baseline_label="training CPU per step: K × train_unit")
    actual_model_row = v.row("verification + aggregation CPU of the job, from the nodes' counts: Σ replays × "
                             "check_unit + nodes × Σ step_outcome", "s",
                             baseline_label="training CPU of the job: units × train_unit")
    actual_row = v.row("all node CPU except training (measured total − units × train_unit)", "s",
                       baseline_label="training CPU of the job: units × train_unit")

    k = s.consensus
    cons4 = k.row("consensus time per empty height, 4 validators: median height", "ms",
                  note="node 0's commit-to-commit intervals")
    cons7 = k.row("consensus time per empty height, 7 validators: median height", "ms", baseline_label="4 validators",
                  note="node 0's commit-to-commit intervals")
    mean4 = k.row("consensus time per empty height, 4 validators: mean, stalls included", "ms",
                  note="measured span ÷ heights")
    mean7 = k.row("consensus time per empty height, 7 validators: mean, stalls included", "ms",
                  baseline_label="4 validators", note="measured span ÷ heights")
    p90_4 = k.row("consensus time per empty height, 4 validators: 90th percentile height", "ms")
    p90_7 = k.row("consensus time per empty height, 7 validators: 90th percentile height", "ms")
    stall4 = k.row(f"share of the span spent in heights over {STALL_MS:.0f} ms, 4 validators", "%")
    stall7 = k.row(f"share of the span spent in heights over {STALL_MS:.0f} ms, 7 validators", "%")
    cpu4 = k.row("cluster CPU per empty height, 4 validators", "ms")
    cpu7 = k.row("cluster CPU per empty height, 7 validators", "ms", baseline_label="4 validators")

    y = s.sync
    sync_bps = y.row("joining node sync speed, RPC answering to target height (connecting included)", "blocks/s")
    sync_steady = y.row("joining node sync speed, first synced block to target height", "blocks/s")
    sync_total = y.row("joining node: launch to target height", "s")
    sync_ready = y.row("joining node: launch to RPC answering", "s")
    sync_first = y.row("joining node: launch to its first synced block", "s")
    sync_cpu = y.row("joining node CPU per block synced (from RPC answering)", "ms")
    sync_serving = y.row("node 0 (serving) CPU per block served", "ms")

    facts_job: dict[str, list[Any]] = {k_: [] for k_ in (
        "devnet_final_root_equals_reference", "devnet_final_test_accuracy", "plain_final_test_accuracy",
        "ddp_final_test_accuracy", "devnet_accuracy_by_step", "plain_accuracy_by_step", "ddp_accuracy_by_step",
        "units_trained_per_node", "verdicts_signed_per_node", "replays_per_node", "units_rejected",
        "devnet_blocks_later_round_and_split", "ddp_spawn_and_init_seconds",
        "devnet_start_seconds", "share_of_node0_cpu_spent_answering_our_polls", "check_unit_wall_seconds",
        "step_outcome_cpu_seconds_no_eval_eval")}
    facts_sync: dict[str, list[Any]] = {k_: [] for k_ in (
        "target_height", "build_seconds", "digits_mlp_steps_in_chain", "height_at_rpc_ready", "height_at_first_sighting",
        "block_hash_at_target_matches")}
    facts_cons: dict[str, list[Any]] = {k_: [] for k_ in (
        "heights_4", "heights_7", "later_round_heights_4", "later_round_heights_7", "stalled_heights_4",
        "stalled_heights_7")}

    with recorded_load(s.loads, "reference run (once)"):
        r0 = time.perf_counter()
        reference = run_reference(spec, dataset)
        reference_seconds = time.perf_counter() - r0
    reference_root = "0x" + reference.final_root.hex()

    for rep in range(repeats):
        tag = f" #{rep + 1}"
        with recorded_load(s.loads, "plain loop" + tag):
            plain = run_plain(spec, dataset)
        with recorded_load(s.loads, "DDP gloo ×4" + tag):
            ddp = run_ddp(spec, dataset)
        with recorded_load(s.loads, "4-node devnet job" + tag):
            net = run_devnet_job(spec, dataset, timeout=settings.pick(900, 300))
        with recorded_load(s.loads, "in-process unit costs" + tag):
            costs = measure_units(spec, dataset)

        per_step = net.seconds / spec.steps * 1e3
        plain_step = plain.train_seconds / spec.steps * 1e3
        ddp_step = ddp.run.train_seconds / spec.steps * 1e3
        step_plain.add(per_step, plain_step)
        step_ddp.add(per_step, ddp_step)
        sps_plain.add(samples / net.seconds, samples / plain.train_seconds)
        sps_ddp.add(samples / net.seconds, samples / ddp.run.train_seconds)
        ours_ttt = _nan(time_to(net.evals, target))
        ttt_plain.add(ours_ttt, _nan(time_to(plain.evals, target)))
        ttt_ddp.add(ours_ttt, _nan(time_to(ddp.run.evals, target)))
        ttt_plain_train.add(ours_ttt, _nan(time_to(plain.evals, target, train_only=True)))
        ttt_ddp_train.add(ours_ttt, _nan(time_to(ddp.run.evals, target, train_only=True)))
        ddp_vs_plain.add(ddp_step, plain_step)
        unit_cpu.add(costs.train())
        unit_wall.add(statistics.median(costs.train_wall))
        blocks_step.add(net.blocks / spec.steps)
        later_round.add(100.0 * net.later_round_blocks / max(net.blocks, 1))
        later_time.add(100.0 * net.later_round_time_share)
        md = net.metrics_delta
        if md.get("tdml_commit_seconds_count"):
            commit_ms.add(md["tdml_commit_seconds_sum"] / md["tdml_commit_seconds_count"] * 1e3)

        train = costs.train()
        check = costs.check()
        outcome = costs.outcome_mean(spec)
        for i, nf in enumerate(net.nodes):
            replays = nf.verdicts_signed if nf.units_checked is None else nf.units_checked
            node_rows[i].add(nf.cpu_seconds, nf.units_trained * train)
            model_rows[i].add(nf.cpu_seconds, nf.units_trained * train + replays * check + spec.steps * outcome)
        cluster = sum(nf.cpu_seconds for nf in net.nodes)
        units = sum(nf.units_trained for nf in net.nodes)
        verdicts = sum(nf.verdicts_signed if nf.units_checked is None else nf.units_checked for nf in net.nodes)
        cluster_row.add(cluster, units * train)
        cluster_vs_plain.add(cluster, plain.cpu_seconds)
        cluster_vs_ddp.add(cluster, ddp.cpu_seconds_all_ranks)
        main_row.add(statistics.mean(nf.main_thread_cpu for nf in net.nodes) / spec.steps * 1e3)
        worker_row.add(statistics.mean(nf.busiest_other_thread_cpu for nf in net.nodes) / spec.steps * 1e3)
        rest_row.add(statistics.mean(nf.remaining_threads_cpu for nf in net.nodes) / spec.steps * 1e3)
        util_row.add(cluster / net.seconds)

        check_row.add(check, train)
        per_unit_row.add(n_checkers * check, train)
        agg_row.add(outcome, spec.shards * train)
        model_row.add(n_checkers * spec.shards * check + NODES * outcome, spec.shards * train)
        actual_model_row.add(verdicts * check + NODES * spec.steps * outcome, units * train)
        actual_row.add(cluster - units * train, units * train)

        facts_job["devnet_final_root_equals_reference"].append(net.final_root == reference_root)
        facts_job["devnet_final_test_accuracy"].append(net.final_accuracy)
        facts_job["plain_final_test_accuracy"].append(plain.evals[-1].accuracy if plain.evals else None)
        facts_job["ddp_final_test_accuracy"].append(ddp.run.evals[-1].accuracy if ddp.run.evals else None)
        facts_job["devnet_accuracy_by_step"].append(_acc_text(net.evals))
        facts_job["plain_accuracy_by_step"].append(_acc_text(plain.evals))
        facts_job["ddp_accuracy_by_step"].append(_acc_text(ddp.run.evals))
        facts_job["units_trained_per_node"].append("/".join(str(nf.units_trained) for nf in net.nodes))
        facts_job["verdicts_signed_per_node"].append("/".join(str(nf.verdicts_signed) for nf in net.nodes))
        facts_job["units_rejected"].append(net.units_rejected)
        facts_job["replays_per_node"].append("/".join(str(nf.units_checked) for nf in net.nodes))
        facts_job["devnet_blocks_later_round_and_split"].append(
            f"{net.blocks} blocks, {net.later_round_blocks} in round > 0, "
            f"{net.unit_blocks_without_outcome} with units but no step outcome")
        facts_job["ddp_spawn_and_init_seconds"].append(ddp.start_seconds)
        facts_job["devnet_start_seconds"].append(net.ready_seconds)
        facts_job["share_of_node0_cpu_spent_answering_our_polls"].append(
            net.polls * net.poll_cpu_seconds / max(net.nodes[0].cpu_seconds, 1e-9))
        facts_job["check_unit_wall_seconds"].append(statistics.median(costs.check_wall))
        facts_job["step_outcome_cpu_seconds_no_eval_eval"].append(
            f"{costs.outcome_cpu:.3f} / {costs.outcome_eval_cpu:.3f}")

        with recorded_load(s.loads, "consensus, 4 validators" + tag):
            c4 = run_consensus(4, seconds=cons_seconds)
        with recorded_load(s.loads, "consensus, 7 validators" + tag):
            c7 = run_consensus(7, seconds=cons_seconds)
        med4, med7 = _median(c4.intervals_ms), _median(c7.intervals_ms)
        cons4.add(med4)
        cons7.add(med7, med4)
        mean4.add(c4.mean_ms)
        mean7.add(c7.mean_ms, c4.mean_ms)
        p90_4.add(_quantile(c4.intervals_ms, 0.9))
        p90_7.add(_quantile(c7.intervals_ms, 0.9))
        stall4.add(100.0 * c4.stalls()[1])
        stall7.add(100.0 * c7.stalls()[1])
        per4 = c4.cluster_cpu_seconds * 1e3 / max(c4.heights, 1)
        per7 = c7.cluster_cpu_seconds * 1e3 / max(c7.heights, 1)
        cpu4.add(per4)
        cpu7.add(per7, per4)
        facts_cons["heights_4"].append(f"{c4.heights} in {c4.seconds:.1f}s")
        facts_cons["heights_7"].append(f"{c7.heights} in {c7.seconds:.1f}s")
        for n_, c_ in (("4", c4), ("7", c7)):
            count_, _ = c_.stalls()
            facts_cons[f"later_round_heights_{n_}"].append(c_.later_round_heights)
            facts_cons[f"stalled_heights_{n_}"].append(
                f"{count_}" + (f" (longest {max(c_.intervals_ms):.0f} ms)" if c_.intervals_ms else ""))

        with recorded_load(s.loads, "sync" + tag):
            sy = run_sync(blocks=sync_blocks, job_steps=sync_job_steps, timeout=settings.pick(600, 240))
        synced_blocks = max(sy.target_height - sy.height_at_ready, 1)
        sync_bps.add(sy.blocks_per_second)
        sync_steady.add(sy.steady_blocks_per_second)
        sync_total.add(sy.synced_seconds)
        sync_ready.add(sy.ready_seconds)
        sync_first.add(sy.first_block_seconds)
        sync_cpu.add(sy.node_cpu_seconds * 1e3 / synced_blocks)
        sync_serving.add(sy.serving_cpu_seconds * 1e3 / synced_blocks)
        facts_sync["target_height"].append(sy.target_height)
        facts_sync["build_seconds"].append(sy.build_seconds)
        facts_sync["digits_mlp_steps_in_chain"].append(sy.job_steps_done)
        facts_sync["height_at_rpc_ready"].append(sy.height_at_ready)
        facts_sync["height_at_first_sighting"].append(sy.height_at_first)
        facts_sync["block_hash_at_target_matches"].append(sy.same_hash)

    for section in s.all():
        section.rows = [r for r in section.rows if r.ours]

    job_facts: dict[str, Any] = {
        "job": describe(spec, dataset),
        "target_test_accuracy": target,
        "reference_final_root": reference_root,
        "reference_run_seconds": reference_seconds,
        "checkers_per_unit": n_checkers,
        **facts_job,
    }
    s.job.facts = job_facts
    s.cpu.facts = {"units_trained_per_node": facts_job["units_trained_per_node"],
                   "verdicts_signed_per_node": facts_job["verdicts_signed_per_node"],
                   "replays_per_node": facts_job["replays_per_node"]}
    s.verification.facts = {"checkers_per_unit": n_checkers, "inner_steps": spec.inner_steps,
                            "checked_steps": spec.verification.checked_steps}
    s.consensus.facts = {"block_interval_ms": 0, **facts_cons}
    s.sync.facts = {"blocks_requested": sync_blocks, "digits_mlp_job_steps": sync_job_steps, **facts_sync}
    load_facts = {k_: v_ for k_, v_ in s.loads.items()}
    for section in s.all():
        section.facts["load_average_before_to_after"] = [f"{k_}: {'; '.join(v_)}" for k_, v_ in load_facts.items()
                                                         if _belongs(section.name, k_)]
    s.job.notes = [
        f"Job `{spec.name}` ({describe(spec, dataset)}). All three runners train the same samples per step "
        "(the protocol's SHAKE-256 batch schedule, `consensus.batches.compute_batch_indices`), from the same "
        "initial weights, with the same SGD; only the devnet is bit-identical to `run_reference` (the plain loop "
        "takes the mean over the whole batch at once, DDP all-reduces in its own order).",
        "Baselines: times from the first step to the last (start-up excluded), evaluation on the test set at the "
        f"job's evaluation steps (every {spec.eval_every}); 'time per step' and 'samples/s' exclude the baselines' "
        "evaluation time, 'time to target' includes it unless said otherwise. The devnet always includes its "
        "evaluation: every node evaluates in `step_outcome`.",
        f"Devnet: a fresh 4-node devnet per repeat; the job is submitted once the nodes are idle; the clock runs "
        f"from submission to the first sighting of the last step's outcome over RPC (`tdml_getJobHistory` polled "
        f"every {JOB_POLL_SECONDS * 1e3:.0f} ms on node 0); time to target is the first sighting of an evaluation at or "
        "above the target.",
        "The machine has 2 cores shared with other work (see the load averages): the 4 node processes (and the 4 "
        "DDP ranks) share those 2 cores; the plain loop uses one.",
    ]
    s.cpu.notes = [
        "A node's CPU time is read from /proc/<pid>/stat when the job is submitted and when its last outcome is "
        "seen; its units are `unitsVerified` of `tdml_getTrainer`; the training CPU of a unit is the median "
        "`train_unit` CPU time measured in this process in the same repeat (`time.process_time`).",
        "Modelled: what the node had to compute, priced at the in-process costs — its units, its replays "
        "(`tdml_units_checked` of its /metrics × `check_unit`) and one `step_outcome` (aggregation, evaluation) per step, which every "
        "node runs; the ratio is the share of the node's CPU these explain.",
    ]
    s.verification.notes = [
        f"Each unit needs {n_checkers} passing verdicts (f + 1 with f = 1 for 4 validators); with H = 1 and c = 1 a "
        "check recomputes the whole unit. Every node aggregates every step (`step_outcome`), trainers included.",
    ]
    s.consensus.notes = [
        "A fresh devnet of n validators with no job and `block_interval_ms = 0` (a proposer proposes an empty "
        f"block as soon as the height starts), measured for {cons_seconds:.0f} s once the first heights are "
        "committed. The median height is the median of node 0's intervals between committing consecutive heights "
        "(the timestamps of its `committed height=` log lines): the consensus cost of an empty height when nothing "
        "goes wrong. The mean is the span ÷ the heights committed in it, stalls included. A height decided in a "
        "round above 0 cost at least one timeout (`timeout_propose_ms` 3000, the other timeouts at their "
        "defaults). All n processes share the machine's 2 cores.",
    ]
    s.sync.notes = [
        f"A 4-node devnet (`block_interval_ms = 0`) commits at least {sync_blocks} blocks, among them the blocks of a "
        f"{sync_job_steps}-step `digits-mlp` job (units, verdicts, outcomes); then nodes 3 and 2 stop, so the chain "
        "halts at a fixed height; a fresh node (`tdml-node init`, the genesis copied, `--bootstrap` node 0) starts "
        f"and its height is polled every {POLL_SECONDS * 1e3:.0f} ms. Blocks/s counts the blocks it applied from its "
        "RPC's first answer to the target height.",
    ]
    return s.all()


def _belongs(section: str, what: str) -> bool:
    if section == "consensus":
        return what.startswith("consensus")
    if section == "sync":
        return what.startswith("sync")
    return not what.startswith(("consensus", "sync"))


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _acc_text(evals: Sequence[EvalPoint]) -> str:
    return " ".join(f"{e.step + 1}:{e.accuracy:.3f}@{e.seconds:.1f}s" for e in evals)


def describe(spec: JobSpec, dataset: bytes) -> str:
    args = ", ".join(f"{a.name} {a.value}" for a in spec.model.args)
    opt = ", ".join(f"{p.name} {p.value}" for p in spec.optimizer.params)
    return (f"{spec.model.name} ({args}), {spec.optimizer.name} ({opt}), global batch {spec.global_batch} = "
            f"{spec.shards} shards × {spec.global_batch // spec.shards}, H = {spec.inner_steps}, {spec.steps} steps, "
            f"eval every {spec.eval_every}; dataset {len(dataset) / 1e6:.1f} MB")


# ---------------------------------------------------------------------------
# Command line and files


def render_markdown(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    lines = [
        "# Network benchmarks",
        "",
        f"Machine: {m['cpu_count']} CPUs ({m['cpus_usable']} usable, {m['cpu_model']}), {m['platform']}; "
        f"Python {m['python']}, torch {m['torch']}; load average at start "
        f"{', '.join(f'{v:.2f}' for v in m['load_average_at_start'])}, at the end "
        f"{', '.join(f'{v:.2f}' for v in doc['load_average_at_end'])}. Run {m['date']}, {doc['seconds']:.0f} s"
        f"{' (quick smoke run)' if doc.get('quick') else ''}.",
        "",
        "Each figure is the median of its repeats with (min – max); a ratio is ours ÷ baseline, taken per repeat "
        "(both measured in the same repeat), then its median (min – max). The machine is shared and noisy "
        "(other test suites ran beside this one: see the load averages of each measurement).",
    ]
    previous = doc.get("previous_run")
    for name, section in doc["benchmarks"].items():
        lines += section_lines(name, section)
    if previous:
        lines += _combined_lines(doc, previous)
    return "\n".join(lines) + "\n"


def _previous_run(path: Path) -> dict[str, Any] | None:
    """The raw figures of the full run whose results are about to be replaced, to combine with the new ones."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if old.get("quick") or "benchmarks" not in old:
        return None
    rows: dict[str, list[dict[str, Any]]] = {}
    for name, section in old["benchmarks"].items():
        rows[name] = [
            {"label": r["label"], "baseline_label": r.get("baseline_label"), "ours": r["ours"]["runs"],
             **({"baseline": r["baseline"]["runs"], "ratio": r["ratio_ours_over_baseline"]["runs"]}
                if "ratio_ours_over_baseline" in r else {})}
            for r in section.get("rows", [])
        ]
    return {"date": old.get("machine", {}).get("date", "?"), "seconds": old.get("seconds"), "rows": rows}


def _combined_lines(doc: dict[str, Any], previous: dict[str, Any]) -> list[str]:
    """A table of every row over the repeats of this run and of the previous full run together."""
    lines = [
        "", f"## Both full runs together (this one and {previous['date']})", "",
        "Median (min – max) over the repeats of both runs; ratios are still taken within each repeat.", "",
        "| section | figure | unit | ours | baseline | baseline figure | ours ÷ baseline |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, section in doc["benchmarks"].items():
        earlier = {(r["label"], r.get("baseline_label")): r for r in previous["rows"].get(name, [])}
        for row in section["rows"]:
            old = earlier.get((row["label"], row.get("baseline_label")))
            if old is None:
                continue
            ours = summarize(old["ours"] + row["ours"]["runs"])
            base = ratio = None
            if "ratio" in old and "ratio_ours_over_baseline" in row:
                base = summarize(old["baseline"] + row["baseline"]["runs"])
                ratio = summarize(old["ratio"] + row["ratio_ours_over_baseline"]["runs"])
            lines.append(f"| {name} | {row['label']} | {row['unit']} | {cell(ours)} | "
                         f"{row.get('baseline_label') or ''} | {cell(base)} | {cell(ratio, '×')} |")
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.network", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run (a few steps, short windows, one repeat)")
    parser.add_argument("--repeats", type=int, default=None, metavar="N", help="repeats (default 2, quick 1)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for the result files")
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings(quick=args.quick, repeats=args.repeats)
    stem = "network-quick" if args.quick else "network"
    out_dir: Path = args.out
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    started = time.perf_counter()
    measured_at = now_iso()
    doc: dict[str, Any] = {"machine": machine_info(), "quick": args.quick}
    sections = run(settings)
    for section in sections:
        section.measured_at = measured_at
    doc["benchmarks"] = {section.name: section.to_json() for section in sections}
    doc["command"] = "python -m benchmarks.network " + " ".join(sys.argv[1:] if argv is None else argv)
    doc["seconds"] = round(time.perf_counter() - started, 1)
    doc["load_average_at_end"] = list(os.getloadavg())
    if not args.quick:
        doc["previous_run"] = _previous_run(json_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(doc, indent=2) + "\n")
    markdown = render_markdown(doc)
    md_path.write_text(markdown)
    print(markdown)
    print(f"[network] wrote {json_path} and {md_path} in {doc['seconds']:.0f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
