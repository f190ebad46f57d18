"""What every benchmark shares: settings, timing loops, figures and their summaries.

A figure is a list of values, one per repeat; a row puts the project's figure
beside its baseline's, measured in the same repeat, so the ratio of the two is
taken per repeat before its median is reported (pairs measured together share
the machine's noise). Also here: process CPU time read from ``/proc``, the
machine description the results carry, and an executor and a ``JobState``
builder for driving the executor without a chain.

This module must never assert on a timing, print, or write files: it only
measures and describes.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from consensus.types import (
    Hash32,
    JobSpec,
)
from consensus.work import StepView
from tdml_node.storage import MemoryBlobStore
from tdml_node.work.executor import TorchExecutor


@dataclass(frozen=True, slots=True)
class Settings:
    """How hard to measure: ``quick`` is a smoke run; ``repeats`` overrides every benchmark's count."""

    quick: bool = False
    repeats: int | None = None

    def repeats_for(self, full: int, quick: int) -> int:
        if self.repeats is not None:
            return max(1, self.repeats)
        return quick if self.quick else full

    def pick(self, full: int, quick: int) -> int:
        """A size (iterations, steps) for this kind of run."""
        return quick if self.quick else full


def summarize(values: list[float]) -> dict[str, Any]:
    """Median, min and max of one figure over its repeats, with the raw values."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": list(values),
    }


@dataclass
class Row:
    """One figure of the project (``ours``) and, when it has one, its baseline's; one value per repeat."""

    label: str
    unit: str
    ours: list[float] = field(default_factory=list)
    baseline_label: str | None = None
    baseline: list[float] | None = None
    bytes_per_op: int | None = None
    """For throughputs in operations per second: the bytes one operation handles (gives MB/s)."""
    note: str = ""

    def add(self, ours: float, baseline: float | None = None) -> None:
        """Record one repeat: the project's value and, for a row with a baseline, the baseline's."""
        self.ours.append(ours)
        if self.baseline is not None:
            if baseline is None:
                raise ValueError(f"row {self.label!r} needs a baseline value for every repeat")
            self.baseline.append(baseline)

    def ratios(self) -> list[float] | None:
        if not self.baseline:
            return None
        return [a / b if b else float("nan") for a, b in zip(self.ours, self.baseline, strict=True)]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "unit": self.unit, "ours": summarize(self.ours)}
        ratios = self.ratios()
        if self.baseline is not None and ratios is not None:
            out["baseline_label"] = self.baseline_label
            out["baseline"] = summarize(self.baseline)
            out["ratio_ours_over_baseline"] = summarize(ratios)
        if self.bytes_per_op is not None:
            out["bytes_per_op"] = self.bytes_per_op
            out["mb_per_s"] = {"ours": summarize([v * self.bytes_per_op / 1e6 for v in self.ours])}
            if self.baseline is not None:
                out["mb_per_s"]["baseline"] = summarize([v * self.bytes_per_op / 1e6 for v in self.baseline])
        if self.note:
            out["note"] = self.note
        return out


@dataclass
class BenchResult:
    """What one benchmark module returns: its rows, the non-timing facts, and notes for readers."""

    name: str
    title: str
    repeats: int
    rows: list[Row] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    measured_at: str = ""

    def row(self, label: str, unit: str, *, baseline_label: str | None = None, bytes_per_op: int | None = None, note: str = "") -> Row:
        """A new row, added to this result; fill ``ours`` (and ``baseline``) one repeat at a time."""
        r = Row(label, unit, baseline_label=baseline_label, baseline=[] if baseline_label else None,
                bytes_per_op=bytes_per_op, note=note)
        self.rows.append(r)
        return r

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "repeats": self.repeats,
            "seconds": round(self.seconds, 2),
            "measured_at": self.measured_at,
            "rows": [r.to_json() for r in self.rows],
            "facts": self.facts,
            "notes": self.notes,
        }


# ---------------------------------------------------------------------------
# Timing


def rate(fn: Callable[[], object], min_seconds: float) -> float:
    """Calls of ``fn`` per second, from a batch of calls that lasted at least ``min_seconds``.

    The batch doubles until it is long enough, so the clock's resolution and
    the loop's own cost stay small beside the calls measured.
    """
    n = 1
    while True:
        started = time.perf_counter()
        for _ in range(n):
            fn()
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            return n / elapsed
        n = n * 2 if elapsed <= 0 else max(n * 2, int(n * min_seconds / elapsed * 1.2) + 1)


def each_seconds(fn: Callable[[int], object], n: int) -> list[float]:
    """Wall seconds of each of ``n`` calls ``fn(i)``."""
    out = []
    for i in range(n):
        started = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - started)
    return out


def proc_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` (all its threads), from ``/proc/<pid>/stat``."""
    return proc_cpu_seconds_of(f"/proc/{pid}/stat")


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU time (user plus system) of each live thread of process ``pid``, by thread id."""
    out: dict[int, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            out[int(tid)] = proc_cpu_seconds_of(f"/proc/{pid}/task/{tid}/stat")
        except (OSError, ValueError):
            continue  # the thread ended meanwhile
    return out


def proc_cpu_seconds_of(stat_path: str) -> float:
    """User plus system CPU seconds from a ``stat`` file of proc(5) (a process's or a thread's)."""
    with open(stat_path, encoding="ascii") as f:
        raw = f.read()
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------
# Machine description


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, Any]:
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count() or 0
    return {
        "date": now_iso(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "cpu_model": _cpu_model(),
        "load_average_at_start": list(os.getloadavg()),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_threads_default": torch.get_num_threads(),
        "numpy": _version("numpy"),
        "msgpack": _version("msgpack"),
        "pynacl": _version("pynacl"),
        "plyvel": _version("plyvel"),
        "scikit-learn": _version("scikit-learn"),
    }


# ---------------------------------------------------------------------------
# Driving the executor without a chain


def executor_for(dataset: bytes, *, warm: bool = False) -> TorchExecutor:
    """An executor whose blob store holds ``dataset``; ``warm`` pays torch's lazy imports first, as a node does."""
    blobs = MemoryBlobStore()
    blobs.put(dataset)
    executor = TorchExecutor(blobs)
    if warm:
        executor.warm_up()
    return executor


def job_state(spec: JobSpec, root: Hash32, step: int) -> StepView:
    """Step ``step`` of a job whose model state is ``root``: all the executor reads of a job."""
    return StepView(Hash32(bytes([7]) * 32), spec, step, root)
