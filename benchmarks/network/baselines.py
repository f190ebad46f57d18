"""The runs the devnet is compared with: the reference run, the plain loop, DDP-gloo ×4.

The plain loop and DDP train the job's own batches (the protocol's batch
schedule), from the same initial weights, with the job's SGD; one training
loop serves both, DDP adding its barriers. ``measure_reference`` is the
single-process reference run the devnet's final model must equal bit for bit.

This module must never assert on a timing or leave a process running; DDP's
ranks write their figures only into a temporary directory.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.multiprocessing.spawn import spawn as mp_spawn
from torch.nn.parallel import DistributedDataParallel

from benchmarks.network.devnet_tools import scratch
from benchmarks.network.plan import Plan
from consensus.batches import compute_batch_indices
from consensus.types import JobSpec
from tdml_node.devnet import free_port
from tdml_node.work.datasets import Dataset
from tdml_node.work.models import build_model
from tdml_node.work.reference import run_reference

DDP_WORLD = 4


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

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> LoopRun:
        evals = tuple(EvalPoint(int(e["step"]), e["accuracy"], e["seconds"], e["train_seconds"]) for e in raw["evals"])
        return cls(raw["seconds"], raw["eval_seconds"], raw["cpu_seconds"], evals)


def time_to(evals: Sequence[EvalPoint], target: float, *, train_only: bool = False) -> float | None:
    """Seconds to the first evaluation at or above ``target``; None when none reached it."""
    for e in evals:
        if e.accuracy >= target:
            return e.train_seconds if train_only else e.seconds
    return None


def _no_sync() -> None:
    pass


def train_loop(
    spec: JobSpec, data: Dataset, forward: nn.Module, opt: torch.optim.Optimizer, shards: range,
    evaluate: Callable[[], float], sync: Callable[[], None] = _no_sync,
) -> LoopRun:
    """The job's steps on ``shards`` of each batch, timed from the first step; ``sync`` runs before and after."""
    evals: list[EvalPoint] = []
    eval_seconds = 0.0
    sync()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for t in range(spec.steps):
        x, y = data.batch(step_indices(spec, data.n_train, t, shards))
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(forward(x), y).backward()  # type: ignore[no-untyped-call]
        opt.step()
        if evaluates_at(spec, t):
            e0 = time.perf_counter()
            acc = evaluate()
            now = time.perf_counter()
            eval_seconds += now - e0
            evals.append(EvalPoint(t, acc, now - wall0, now - wall0 - eval_seconds))
    sync()
    return LoopRun(time.perf_counter() - wall0, eval_seconds, time.process_time() - cpu0, tuple(evals))


# ---------------------------------------------------------------------------
# The reference run, once per run


@dataclass(frozen=True, slots=True)
class Reference:
    final_root: str
    """``0x``-prefixed hex, as the node's RPC writes a model root."""
    seconds: float


def measure_reference(plan: Plan) -> Reference:
    """The single-process reference run of the job (``tdml_node.work.reference.run_reference``)."""
    started = time.perf_counter()
    reference = run_reference(plan.spec, plan.dataset)
    seconds = time.perf_counter() - started
    return Reference("0x" + reference.final_root.hex(), seconds)


# ---------------------------------------------------------------------------
# Baseline (a): the plain loop, one process


def run_plain(plan: Plan) -> LoopRun:
    """The job's steps in one process: the whole global batch per step, one thread."""
    spec = plan.spec
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = Dataset.decode(plan.dataset, task=spec.task, dtype=torch.float32)
        model = build_model(spec.model, seed=spec.seed, dtype=torch.float32)
        opt = sgd_for(spec, model.parameters())
        return train_loop(spec, data, model, opt, range(spec.shards), lambda: test_accuracy(model, data))
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

        def evaluate() -> float:
            acc = test_accuracy(model, data) if rank == 0 else 0.0
            dist.barrier()  # the others wait for rank 0's evaluation, as they would at the next all-reduce
            return acc

        run = train_loop(spec, data, ddp, opt, range(rank * per_rank, (rank + 1) * per_rank), evaluate, dist.barrier)
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(dataclasses.asdict(run)))
    finally:
        dist.destroy_process_group()


@dataclass(frozen=True, slots=True)
class DdpRun:
    run: LoopRun
    """Rank 0's view: wall times and evaluations."""
    cpu_seconds_all_ranks: float
    start_seconds: float
    """Spawning the ranks and joining the process group, not counted in ``run``."""


def run_ddp(plan: Plan, world: int = DDP_WORLD) -> DdpRun:
    """Spawn ``world`` processes (torch.multiprocessing, spawn) training the job with DDP over gloo."""
    spec = plan.spec
    if spec.shards % world:
        raise ValueError(f"{world} ranks cannot split {spec.shards} shards evenly")
    with scratch("tdml-bench-ddp-") as out_dir:
        started = time.perf_counter()
        mp_spawn(_ddp_worker, args=(world, free_port(), spec, plan.dataset, str(out_dir)), nprocs=world, join=True)  # type: ignore[no-untyped-call]
        total = time.perf_counter() - started
        ranks = [LoopRun.from_json(json.loads(Path(out_dir, f"rank{r}.json").read_text())) for r in range(world)]
    return DdpRun(ranks[0], sum(r.cpu_seconds for r in ranks), total - ranks[0].seconds)
