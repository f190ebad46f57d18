"""``run(settings)``: every measurement of the network benchmarks, in order, into five result sections.

The reference run once; then per repeat the plain loop, DDP, the devnet job
and the in-process unit costs (which fill devnet_vs_baselines, cpu_overhead
and verification), consensus on 4 and then 7 validators, and sync. The load
average is recorded around each measurement and becomes a fact of the
sections it belongs to.

This module must never measure anything itself or write a file: the
measurements live in their modules, the files in ``__main__``.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.common import BenchResult, Settings
from benchmarks.network.baselines import measure_reference, run_ddp, run_plain
from benchmarks.network.devnet_job import run_devnet_job
from benchmarks.network.empty_heights import (
    CONSENSUS_FACTS,
    ConsensusPair,
    consensus_figures,
    consensus_leading_facts,
    consensus_notes,
    run_consensus,
)
from benchmarks.network.job_sections import (
    CPU_FACT_KEYS,
    JOB_FACTS,
    JobRepeat,
    cpu_figures,
    cpu_notes,
    job_figures,
    job_leading_facts,
    job_notes,
    verification_figures,
    verification_leading_facts,
    verification_notes,
)
from benchmarks.network.plan import LoadLog, Plan
from benchmarks.network.sync import (
    SYNC_FACTS,
    SYNC_FIGURES,
    SyncRun,
    run_sync,
    sync_leading_facts,
    sync_notes,
)
from benchmarks.network.table import Table
from benchmarks.network.unit_costs import measure_units


@dataclass(frozen=True, slots=True)
class Sections:
    """The result sections of one run, filled one repeat at a time."""

    job: Table[JobRepeat]
    cpu: Table[JobRepeat]
    verification: Table[JobRepeat]
    consensus: Table[ConsensusPair]
    sync: Table[SyncRun]

    @classmethod
    def create(cls, plan: Plan) -> Sections:
        n = plan.repeats
        return cls(
            job=Table(BenchResult("devnet_vs_baselines",
                                  f"Job `{plan.spec.name}`: 4-node devnet vs plain loop and DDP-gloo ×4", n),
                      job_figures(plan), JOB_FACTS),
            cpu=Table(BenchResult("cpu_overhead",
                                  "Per-node CPU: node process CPU ÷ training CPU of the units it trained", n),
                      cpu_figures()),
            verification=Table(BenchResult("verification", "Verification compute ÷ training compute", n),
                               verification_figures(plan)),
            consensus=Table(BenchResult("consensus", "Consensus time per empty height", n),
                            consensus_figures(), CONSENSUS_FACTS),
            sync=Table(BenchResult("sync", "Sync speed of a joining node", n), SYNC_FIGURES, SYNC_FACTS),
        )

    def add_job(self, repeat: JobRepeat) -> None:
        for table in (self.job, self.cpu, self.verification):
            table.add(repeat)


def run(settings: Settings) -> list[BenchResult]:
    """Measure everything the package docstring lists; the five sections, facts and notes included."""
    plan = Plan.of(settings)
    s = Sections.create(plan)
    log = LoadLog()
    reference = log.measure("reference run (once)", measure_reference, plan)
    for rep in range(plan.repeats):
        tag = f" #{rep + 1}"
        s.add_job(JobRepeat(
            plan, reference,
            plain=log.measure("plain loop" + tag, run_plain, plan),
            ddp=log.measure("DDP gloo ×4" + tag, run_ddp, plan),
            net=log.measure("4-node devnet job" + tag, run_devnet_job, plan),
            costs=log.measure("in-process unit costs" + tag, measure_units, plan),
        ))
        s.consensus.add(ConsensusPair(
            four=log.measure("consensus, 4 validators" + tag, run_consensus, plan, 4),
            seven=log.measure("consensus, 7 validators" + tag, run_consensus, plan, 7),
        ))
        s.sync.add(log.measure("sync" + tag, run_sync, plan))
    cpu_facts = {key: s.job.facts[key] for key in CPU_FACT_KEYS}
    return [
        s.job.finish(job_leading_facts(plan, reference), job_notes(plan), log.lines_for),
        s.cpu.finish(cpu_facts, cpu_notes(), log.lines_for),
        s.verification.finish(verification_leading_facts(plan), verification_notes(plan), log.lines_for),
        s.consensus.finish(consensus_leading_facts(), consensus_notes(plan), log.lines_for),
        s.sync.finish(sync_leading_facts(plan), sync_notes(plan), log.lines_for),
    ]
