"""What one network-benchmark run measures, and the machine's load around each measurement.

``Plan.of(settings)`` fixes every size of a run (steps, windows, timeouts, the
job and its data) before anything is measured; every measurement takes the
plan. ``LoadLog`` records the 1- and 5-minute load averages before and after
each measurement, by name, and reports progress on stderr.

This module must never start a process or time anything but the load log's
own progress lines: it only describes the run.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

from benchmarks.common import Settings
from benchmarks.heavy_job import QUICK_TARGET_ACCURACY, TARGET_ACCURACY, heavy_job
from consensus.types import JobSpec

NODES = 4
"""Validators of the job's and the sync's devnets."""

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Plan:
    """The sizes of one run, fixed from its settings."""

    quick: bool
    repeats: int
    spec: JobSpec
    """The ``heavy`` job every runner trains."""
    dataset: bytes
    target: float
    """The test accuracy whose time-to is reported."""
    job_timeout: float
    """Longest the devnet may take over the job, in seconds."""
    consensus_seconds: float
    """How long each consensus devnet is watched."""
    sync_blocks: int
    """Blocks the sync devnet commits at least before the chain is halted."""
    sync_job_steps: int
    """Steps of the ``digits-mlp`` job among those blocks."""
    sync_timeout: float

    @classmethod
    def of(cls, settings: Settings) -> Plan:
        spec, dataset = heavy_job(steps=settings.pick(20, 4))
        return cls(
            quick=settings.quick,
            repeats=settings.repeats_for(2, 1),
            spec=spec,
            dataset=dataset,
            target=QUICK_TARGET_ACCURACY if settings.quick else TARGET_ACCURACY,
            job_timeout=settings.pick(900, 300),
            consensus_seconds=float(settings.pick(15, 6)),
            sync_blocks=settings.pick(300, 80),
            sync_job_steps=settings.pick(100, 20),
            sync_timeout=settings.pick(600, 240),
        )

    @property
    def samples(self) -> int:
        """Samples trained over the whole job."""
        return self.spec.steps * self.spec.global_batch

    @property
    def checkers(self) -> int:
        """Passing verdicts each unit needs (f + 1)."""
        return self.spec.verification.checkers_per_unit or (NODES - 1) // 3 + 1


# ---------------------------------------------------------------------------
# The machine's load around each measurement


def load_now() -> tuple[float, float, float]:
    return os.getloadavg()


def load_text(before: tuple[float, float, float], after: tuple[float, float, float]) -> str:
    """The 1-minute load average before and after a measurement (the 5-minute one in brackets)."""
    return f"{before[0]:.2f} → {after[0]:.2f} ({before[1]:.2f} → {after[1]:.2f})"


def belongs(section: str, what: str) -> bool:
    """Whether the load around measurement ``what`` is a fact of result section ``section``."""
    if section == "consensus":
        return what.startswith("consensus")
    if section == "sync":
        return what.startswith("sync")
    return not what.startswith(("consensus", "sync"))


@dataclass
class LoadLog:
    """The load before → after every measurement, by name (a name repeated collects one text per run)."""

    loads: dict[str, list[str]] = field(default_factory=dict)

    @contextlib.contextmanager
    def during(self, what: str) -> Iterator[None]:
        before = load_now()
        print(f"[network] {what} (load {before[0]:.2f}) …", file=sys.stderr, flush=True)
        started = time.perf_counter()
        yield
        after = load_now()
        self.loads.setdefault(what, []).append(load_text(before, after))
        print(f"[network] {what} done in {time.perf_counter() - started:.1f}s (load {after[0]:.2f})",
              file=sys.stderr, flush=True)

    def measure(self, what: str, measurement: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``measurement(*args, **kwargs)``, with the load recorded around it."""
        with self.during(what):
            return measurement(*args, **kwargs)

    def lines_for(self, section: str) -> list[str]:
        """The fact ``load_average_before_to_after`` of result section ``section``."""
        return [f"{what}: {'; '.join(texts)}" for what, texts in self.loads.items() if belongs(section, what)]
