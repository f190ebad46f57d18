"""The three sections one repeat of the job fills: devnet_vs_baselines, cpu_overhead, verification.

A ``JobRepeat`` bundles that repeat's four measurements (the plain loop,
DDP, the devnet, the in-process unit costs) with the reference root; each
section is a list of ``Figure``s over it, in the order of its table, and a
list of per-repeat facts. Ratios are ours ÷ baseline within the repeat.

This module must never measure anything: it only turns figures into rows,
facts and notes.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from benchmarks.network.baselines import DdpRun, EvalPoint, LoopRun, Reference, time_to
from benchmarks.network.devnet_job import JOB_POLL_SECONDS, DevnetRun, NodeFigures
from benchmarks.network.plan import NODES, Plan
from benchmarks.network.table import Fact, Figure
from benchmarks.network.unit_costs import UnitCosts
from consensus.types import JobSpec

PLAIN = "plain PyTorch loop, 1 process"
DDP = "torch.distributed DDP, gloo, 4 processes"


def _nan(x: float | None) -> float:
    return float("nan") if x is None else x


@dataclass(frozen=True, slots=True)
class JobRepeat:
    """One repeat of the job: the two baselines, the devnet, and the in-process costs."""

    plan: Plan
    reference: Reference
    plain: LoopRun
    ddp: DdpRun
    net: DevnetRun
    costs: UnitCosts

    def per_step_ms(self, seconds: float) -> float:
        return seconds / self.plan.spec.steps * 1e3

    def time_to_target(self, evals: Sequence[EvalPoint], *, train_only: bool = False) -> float:
        return _nan(time_to(evals, self.plan.target, train_only=train_only))

    @property
    def train(self) -> float:
        """Median ``train_unit`` CPU seconds."""
        return self.costs.train()

    @property
    def check(self) -> float:
        """Median ``check_unit`` CPU seconds."""
        return self.costs.check()

    @property
    def outcome(self) -> float:
        """Mean ``step_outcome`` CPU seconds per step."""
        return self.costs.outcome_mean(self.plan.spec)

    @property
    def cluster(self) -> float:
        """CPU seconds of all node processes over the job."""
        return sum(nf.cpu_seconds for nf in self.net.nodes)

    @property
    def units(self) -> int:
        return sum(nf.units_trained for nf in self.net.nodes)

    @property
    def replays(self) -> int:
        return sum(nf.replays for nf in self.net.nodes)

    def mean_thread_ms(self, thread: Callable[[NodeFigures], float]) -> float:
        """A thread's CPU per step, mean over the nodes."""
        return statistics.mean(thread(nf) for nf in self.net.nodes) / self.plan.spec.steps * 1e3


def _commit_ms(r: JobRepeat) -> float | None:
    md = r.net.metrics_delta
    if not md.get("tdml_commit_seconds_count"):
        return None
    return md["tdml_commit_seconds_sum"] / md["tdml_commit_seconds_count"] * 1e3


def job_figures(plan: Plan) -> list[Figure[JobRepeat]]:
    step = "time per step (devnet: submission to last outcome)"
    training_only = "baselines: training only, evaluation excluded"
    ttt = f"time to test accuracy ≥ {plan.target}"
    everywhere = "evaluation included everywhere"
    return [
        Figure(step, "ms", lambda r: (r.per_step_ms(r.net.seconds), r.per_step_ms(r.plain.train_seconds)),
               PLAIN, training_only),
        Figure(step, "ms", lambda r: (r.per_step_ms(r.net.seconds), r.per_step_ms(r.ddp.run.train_seconds)),
               DDP, training_only),
        Figure("samples/s", "samples/s",
               lambda r: (r.plan.samples / r.net.seconds, r.plan.samples / r.plain.train_seconds), PLAIN),
        Figure("samples/s", "samples/s",
               lambda r: (r.plan.samples / r.net.seconds, r.plan.samples / r.ddp.run.train_seconds), DDP),
        Figure(ttt, "s", lambda r: (r.time_to_target(r.net.evals), r.time_to_target(r.plain.evals)),
               PLAIN, everywhere),
        Figure(ttt, "s", lambda r: (r.time_to_target(r.net.evals), r.time_to_target(r.ddp.run.evals)),
               DDP, everywhere),
        Figure(ttt, "s", lambda r: (r.time_to_target(r.net.evals), r.time_to_target(r.plain.evals, train_only=True)),
               PLAIN + ", evaluation excluded"),
        Figure(ttt, "s", lambda r: (r.time_to_target(r.net.evals), r.time_to_target(r.ddp.run.evals, train_only=True)),
               DDP + ", evaluation excluded"),
        Figure("(baseline vs baseline) DDP-gloo ×4 time per step", "ms",
               lambda r: (r.per_step_ms(r.ddp.run.train_seconds), r.per_step_ms(r.plain.train_seconds)),
               PLAIN, "training only"),
        Figure("one unit (train_unit, 1 thread, in-process): CPU", "s", lambda r: r.train),
        Figure("one unit (train_unit, 1 thread, in-process): wall", "s",
               lambda r: statistics.median(r.costs.train_wall)),
        Figure("devnet blocks per step", "blocks", lambda r: r.net.blocks / r.plan.spec.steps),
        Figure("devnet blocks decided in a round > 0 (round 0 timed out)", "% of blocks",
               lambda r: 100.0 * r.net.later_round_blocks / max(r.net.blocks, 1)),
        Figure("devnet time in heights decided in a round > 0 (from node 0's log)", "% of the job",
               lambda r: 100.0 * r.net.later_round_time_share),
        Figure("devnet commit_block time per block (mean over nodes, /metrics)", "ms", _commit_ms),
    ]


def _acc_text(evals: Sequence[EvalPoint]) -> str:
    return " ".join(f"{e.step + 1}:{e.accuracy:.3f}@{e.seconds:.1f}s" for e in evals)


def _per_node(value: Callable[[NodeFigures], object]) -> Callable[[JobRepeat], str]:
    return lambda r: "/".join(str(value(nf)) for nf in r.net.nodes)


JOB_FACTS: tuple[Fact[JobRepeat], ...] = (
    ("devnet_final_root_equals_reference", lambda r: r.net.final_root == r.reference.final_root),
    ("devnet_final_test_accuracy", lambda r: r.net.final_accuracy),
    ("plain_final_test_accuracy", lambda r: r.plain.evals[-1].accuracy if r.plain.evals else None),
    ("ddp_final_test_accuracy", lambda r: r.ddp.run.evals[-1].accuracy if r.ddp.run.evals else None),
    ("devnet_accuracy_by_step", lambda r: _acc_text(r.net.evals)),
    ("plain_accuracy_by_step", lambda r: _acc_text(r.plain.evals)),
    ("ddp_accuracy_by_step", lambda r: _acc_text(r.ddp.run.evals)),
    ("units_trained_per_node", _per_node(lambda nf: nf.units_trained)),
    ("verdicts_signed_per_node", _per_node(lambda nf: nf.verdicts_signed)),
    ("replays_per_node", _per_node(lambda nf: nf.units_checked)),
    ("units_rejected", lambda r: r.net.units_rejected),
    ("devnet_blocks_later_round_and_split", lambda r: (
        f"{r.net.blocks} blocks, {r.net.later_round_blocks} in round > 0, "
        f"{r.net.unit_blocks_without_outcome} with units but no step outcome")),
    ("ddp_spawn_and_init_seconds", lambda r: r.ddp.start_seconds),
    ("devnet_start_seconds", lambda r: r.net.ready_seconds),
    ("share_of_node0_cpu_spent_answering_our_polls",
     lambda r: r.net.polls * r.net.poll_cpu_seconds / max(r.net.nodes[0].cpu_seconds, 1e-9)),
    ("check_unit_wall_seconds", lambda r: statistics.median(r.costs.check_wall)),
    ("step_outcome_cpu_seconds_no_eval_eval", lambda r: f"{r.costs.outcome_cpu:.3f} / {r.costs.outcome_eval_cpu:.3f}"),
)

CPU_FACT_KEYS = ("units_trained_per_node", "verdicts_signed_per_node", "replays_per_node")
"""The job facts the cpu_overhead section repeats."""


def describe(spec: JobSpec, dataset: bytes) -> str:
    args = ", ".join(f"{a.name} {a.value}" for a in spec.model.args)
    opt = ", ".join(f"{p.name} {p.value}" for p in spec.optimizer.params)
    return (f"{spec.model.name} ({args}), {spec.optimizer.name} ({opt}), global batch {spec.global_batch} = "
            f"{spec.shards} shards × {spec.global_batch // spec.shards}, H = {spec.inner_steps}, {spec.steps} steps, "
            f"eval every {spec.eval_every}; dataset {len(dataset) / 1e6:.1f} MB")


def job_leading_facts(plan: Plan, reference: Reference) -> dict[str, Any]:
    return {
        "job": describe(plan.spec, plan.dataset),
        "target_test_accuracy": plan.target,
        "reference_final_root": reference.final_root,
        "reference_run_seconds": reference.seconds,
        "checkers_per_unit": plan.checkers,
    }


def job_notes(plan: Plan) -> list[str]:
    spec = plan.spec
    return [
        f"Job `{spec.name}` ({describe(spec, plan.dataset)}). All three runners train the same samples per step "
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


# ---------------------------------------------------------------------------
# cpu_overhead


def _node_cpu(i: int, baseline: Callable[[JobRepeat, NodeFigures], float], r: JobRepeat) -> tuple[float, float]:
    nf = r.net.nodes[i]
    return nf.cpu_seconds, baseline(r, nf)


def _trained(r: JobRepeat, nf: NodeFigures) -> float:
    return nf.units_trained * r.train


def _modelled(r: JobRepeat, nf: NodeFigures) -> float:
    return nf.units_trained * r.train + nf.replays * r.check + r.plan.spec.steps * r.outcome


def cpu_figures() -> list[Figure[JobRepeat]]:
    cluster = "all 4 node processes' CPU for the job"
    per_step = "CPU per step, mean over nodes"
    return [
        *(Figure(f"node {i} process CPU for the job", "s", partial(_node_cpu, i, _trained),
                 "training CPU of the units it trained (units × in-process train_unit CPU)") for i in range(NODES)),
        Figure(cluster, "s", lambda r: (r.cluster, r.units * r.train),
               "training CPU of all units (units × train_unit CPU)"),
        Figure(cluster, "s", lambda r: (r.cluster, r.plain.cpu_seconds), "plain loop CPU (whole job)"),
        Figure(cluster, "s", lambda r: (r.cluster, r.ddp.cpu_seconds_all_ranks), "DDP-gloo CPU, 4 ranks summed"),
        *(Figure(f"node {i} process CPU for the job", "s", partial(_node_cpu, i, _modelled),
                 "modelled: units × train_unit + replays × check_unit + steps × step_outcome") for i in range(NODES)),
        Figure(f"main thread (event loop: consensus, p2p, RPC) {per_step}", "ms",
               lambda r: r.mean_thread_ms(lambda nf: nf.main_thread_cpu)),
        Figure(f"busiest other thread (work queue: train, check, aggregate) {per_step}", "ms",
               lambda r: r.mean_thread_ms(lambda nf: nf.busiest_other_thread_cpu)),
        Figure(f"remaining threads {per_step}", "ms", lambda r: r.mean_thread_ms(lambda nf: nf.remaining_threads_cpu)),
        Figure("cluster CPU utilisation during the job (CPU s ÷ wall s)", "cores", lambda r: r.cluster / r.net.seconds),
    ]


def cpu_notes() -> list[str]:
    return [
        "A node's CPU time is read from /proc/<pid>/stat when the job is submitted and when its last outcome is "
        "seen; its units are `unitsVerified` of `tdml_getTrainer`; the training CPU of a unit is the median "
        "`train_unit` CPU time measured in this process in the same repeat (`time.process_time`).",
        "Modelled: what the node had to compute, priced at the in-process costs — its units, its replays "
        "(`tdml_units_checked` of its /metrics × `check_unit`) and one `step_outcome` (aggregation, evaluation) per step, which every "
        "node runs; the ratio is the share of the node's CPU these explain.",
    ]


# ---------------------------------------------------------------------------
# verification


def verification_figures(plan: Plan) -> list[Figure[JobRepeat]]:
    n, spec = plan.checkers, plan.spec
    per_unit = "train_unit CPU per unit"
    job_training = "training CPU of the job: units × train_unit"
    return [
        Figure("check_unit CPU per unit (one checker, H = 1, c = 1)", "s", lambda r: (r.check, r.train), per_unit),
        Figure(f"verification CPU per unit, model: {n} checkers × check_unit", "s",
               lambda r: (n * r.check, r.train), per_unit),
        Figure(f"step_outcome CPU per step (aggregate; evaluation every {spec.eval_every} steps, averaged)", "s",
               lambda r: (r.outcome, spec.shards * r.train), "train_unit CPU × K per step"),
        Figure(f"verification + aggregation CPU per step, model: {n} × K × check_unit + {NODES} nodes × step_outcome",
               "s", lambda r: (n * spec.shards * r.check + NODES * r.outcome, spec.shards * r.train),
               "training CPU per step: K × train_unit"),
        Figure("verification + aggregation CPU of the job, from the nodes' counts: Σ replays × check_unit + nodes × "
               "Σ step_outcome", "s",
               lambda r: (r.replays * r.check + NODES * spec.steps * r.outcome, r.units * r.train), job_training),
        Figure("all node CPU except training (measured total − units × train_unit)", "s",
               lambda r: (r.cluster - r.units * r.train, r.units * r.train), job_training),
    ]


def verification_leading_facts(plan: Plan) -> dict[str, Any]:
    return {"checkers_per_unit": plan.checkers, "inner_steps": plan.spec.inner_steps,
            "checked_steps": plan.spec.verification.checked_steps}


def verification_notes(plan: Plan) -> list[str]:
    return [
        f"Each unit needs {plan.checkers} passing verdicts (f + 1 with f = 1 for 4 validators); with H = 1 and c = 1 a "
        "check recomputes the whole unit. Every node aggregates every step (`step_outcome`), trainers included.",
    ]
