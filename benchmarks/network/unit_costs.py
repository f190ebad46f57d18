"""The executor in this process: what training, checking and aggregating one step of the job cost.

These are the prices the node processes' CPU time is compared with: the CPU
time of ``train_unit``, of ``check_unit`` as a designated checker runs it,
and of ``step_outcome`` with and without an evaluation.

This module must never assert on a timing or start a process; it drives the
executor without a chain (``benchmarks.common.executor_for``).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from benchmarks.common import executor_for, job_state
from benchmarks.network.baselines import evaluates_at
from benchmarks.network.plan import Plan
from consensus.crypto import Keypair
from consensus.types import JobSpec, WorkSubmission
from consensus.work import check_unit, sample_for

CHAIN_ID_FOR_SAMPLING = "tdml-bench"


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


def measure_units(plan: Plan) -> UnitCosts:
    """Step 0 warms up (untimed but for its aggregation), step 1 is timed: K units, K checks, one aggregation."""
    spec = plan.spec
    threads = torch.get_num_threads()
    executor = executor_for(plan.dataset, warm=True)
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
            job = job_state(spec, root, t)
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
            root = executor.step_outcome(job, tuple(results)).model_root
            outcome.append(time.process_time() - c0)
    finally:
        torch.set_num_threads(threads)
    if evaluates_at(spec, 0) or not evaluates_at(spec, 1):
        raise ValueError("the unit costs need a job that evaluates at step 1 but not at step 0 (eval_every 2)")
    return UnitCosts(train_cpu, train_wall, check_cpu, check_wall, outcome[0], outcome[1])
