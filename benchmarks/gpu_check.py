"""Check CUDA work units on a GPU machine: ``python -m benchmarks.gpu_check [--steps N] [--out DIR]``.

1. **Repeatability.** Every unit of step 0 of each whole-model job
   (``digits-mlp-xprofile``, ``digits-cnn``) and of ``digits-mlp-pipeline``
   (all 28 stage units, each linked to the outputs before it) is trained twice
   on CUDA by two fresh executors; the claims (result, checkpoints, handed-on
   gradient, loss bits) must be equal bit for bit.
2. **CUDA trainer against CPU validator.** Along ``--steps`` steps of each job
   (aggregated by the CPU validator, as the chain would), every unit trained on
   CUDA is computed again on CPU under the job's profile (a stage unit from the
   CUDA unit's own inputs) and measured: max absolute difference of the result
   tensors, that over the largest magnitude, and the distance the code compares
   with a tolerance (``TorchExecutor.compare_step``). The tolerance is the job's
   own, else the CPU calibration's (``results/tolerance.json``); a unit is within
   it when ``check_unit`` passes it. ``calibrate_tolerance.choose_tolerance`` of
   the largest distance is what this sample alone would call for.

Figures go to ``benchmarks/results/gpu_check.json`` and ``gpu_check.md``. A
job that raises is recorded with its error and the others still run; the exit
status is 1 when a repeat differs or a job raised. The determinism settings
(deterministic algorithms, no TF32, cuDNN, ``CUBLAS_WORKSPACE_CONFIG``) are
the profile's, applied by the executor (``profile.apply_profile``): this
script sets none of them.

This module must never run or write anything without CUDA (it says so and
exits 0; only tests call its functions with ``"cpu"``), never report a figure
it did not measure, and never write outside its output directory.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from benchmarks.calibrate_tolerance import (
    RESULTS_DIR,
    TRAINER_KEY,
    choose_tolerance,
    g,
    with_tolerance,
)
from benchmarks.common import executor_for, job_state, machine_info
from consensus import pipeline
from consensus.types import FAILURE_NONE, Hash32, JobSpec, WorkSubmission
from consensus.work import TrainedUnit, WorkView, check_unit
from tdml_node.storage import BlobStore
from tdml_node.work.executor import TorchExecutor
from tdml_node.work.jobs import get_job
from tdml_node.work.profile import local_profile
from tdml_node.work.tensors import decode_bundle

WHOLE_JOBS = ("digits-mlp-xprofile", "digits-cnn")
PIPELINE_JOB = "digits-mlp-pipeline"


def train_step(ex: TorchExecutor, job: WorkView) -> list[TrainedUnit]:
    """Every unit of the step: each shard's, or each stage unit in order, linked to the outputs before it."""
    spec = job.spec
    if spec.pipeline is None:
        return [ex.train_unit(job, shard) for shard in range(spec.shards)]
    count = pipeline.units_per_step(spec)
    results: list[Hash32 | None] = [None] * count
    gradients: list[Hash32 | None] = [None] * count
    units = []
    for u in range(count):
        inputs = pipeline.expected_inputs(spec, u, results, gradients)
        assert inputs is not None, u  # unit order puts every input before its reader
        trained = ex.train_stage(job, u, inputs)
        results[u] = trained.result_digest
        gradients[u] = trained.links.output_gradient if trained.links is not None else None
        units.append(trained)
    return units


def claim(trained: TrainedUnit) -> tuple[object, ...]:
    """Everything of a unit whose bits a checker compares (digests are of the blobs' bytes)."""
    gradient = trained.links.output_gradient if trained.links is not None else None
    return trained.result_digest, trained.checkpoint_digests, gradient, trained.losses


def check_repeat(device: str, name: str) -> dict[str, Any]:
    """Step 0 of job ``name`` trained twice on ``device`` by fresh executors: how many units agree bit for bit."""
    spec, data = get_job(name)
    runs = []
    for _ in range(2):  # a fresh executor each time, as two nodes would be: no cache shared
        ex = TorchExecutor(executor_for(data).blobs, profile=local_profile(device=device))
        runs.append([claim(u) for u in train_step(ex, job_state(spec, ex.initial_model_root(spec), 0))])
    same = sum(a == b for a, b in zip(*runs, strict=True))
    return {"units": len(runs[0]), "bit_identical": same, "equal": same == len(runs[0])}


def calibrated_tolerance(spec: JobSpec, calibration: Path) -> str | None:
    """The job's own tolerance, else the CPU calibration's for its preset, else None (none calibrated)."""
    if spec.verification.tolerance != "0":
        return str(spec.verification.tolerance)
    try:
        tolerance = json.loads(calibration.read_text(encoding="utf-8"))["jobs"][spec.name]["tolerance"]
    except (OSError, ValueError, KeyError):
        return None
    return str(tolerance)


def tensor_diff(blobs: BlobStore, claimed: Hash32 | None, computed: Hash32 | None) -> tuple[float, float]:
    """Max |a - b| over two bundles' tensors, and that over the largest |b| of its tensor (0 when equal)."""
    if claimed is None or computed is None or claimed == computed:
        return 0.0, 0.0
    a, b = decode_bundle(blobs.get(claimed) or b""), decode_bundle(blobs.get(computed) or b"")
    worst_abs = worst_rel = 0.0
    for name, tb in b.items():
        diff = float((a[name].to(torch.float64) - tb.to(torch.float64)).abs().max())
        scale = float(tb.to(torch.float64).abs().max())
        worst_abs, worst_rel = max(worst_abs, diff), max(worst_rel, diff / scale if scale else float("inf"))
    return worst_abs, worst_rel


def compare_devices(trainer_device: str, name: str, steps: int, calibration: Path) -> dict[str, Any]:
    """``steps`` steps of job ``name`` trained on ``trainer_device`` and measured by a CPU validator."""
    spec, data = get_job(name)
    tolerance = calibrated_tolerance(spec, calibration)
    if tolerance is not None:
        spec = with_tolerance(spec, tolerance)
    validator = executor_for(data)  # no profile given: the job's (CPU, one thread), as every checker runs
    trainer = TorchExecutor(validator.blobs, profile=local_profile(device=trainer_device))
    root = validator.initial_model_root(spec)
    inner = tuple(range(spec.inner_steps))
    units: list[dict[str, Any]] = []
    for t in range(steps):
        job = job_state(spec, root, t)
        trained = train_step(trainer, job)
        for u, tu in enumerate(trained):
            sub = WorkSubmission(job=job.job_id, step=t, shard=u, trainer=TRAINER_KEY.public_key,
                                 parent_model_root=root, checkpoint_digests=tu.checkpoint_digests,
                                 result_digest=tu.result_digest, losses=tu.losses, receipt=tu.receipt, links=tu.links)
            # The same unit on CPU, from the same inputs (a stage unit reads the CUDA units' outputs).
            cpu = validator.train_unit(job, u) if tu.links is None else validator.train_stage(job, u, tu.links.inputs)
            grads = [x.links.output_gradient if x.links is not None else None for x in (tu, cpu)]
            diffs = [tensor_diff(validator.blobs, tu.result_digest, cpu.result_digest), tensor_diff(validator.blobs, *grads)]
            passed = None if tolerance is None else check_unit(validator, job, sub, inner).failure == FAILURE_NONE
            units.append({"step": t, "unit": u, "bit_identical": claim(tu) == claim(cpu),
                          "max_abs": max(d[0] for d in diffs), "max_rel": max(d[1] for d in diffs),
                          "distance": max(validator.compare_step(job, sub, i).distance for i in inner),
                          "within_tolerance": passed})
        root = validator.step_outcome(job, tuple(x.result_digest for x in trained)).model_root
    worst = max(x["distance"] for x in units)
    return {"units": len(units), "steps": steps, "tolerance": tolerance, "suggested_tolerance": choose_tolerance(worst),
            "bit_identical": sum(x["bit_identical"] for x in units), "max_abs": max(x["max_abs"] for x in units),
            "max_rel": max(x["max_rel"] for x in units), "max_distance": worst,
            "within": None if tolerance is None else sum(bool(x["within_tolerance"]) for x in units), "per_unit": units}


def guarded(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The measurement, or the error it raised (a CUDA op without a deterministic kernel raises): the others still run."""
    try:
        return fn()
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"[:500].replace("|", "/")}


def measure(device: str, steps: int, calibration: Path = RESULTS_DIR / "tolerance.json") -> dict[str, Any]:
    """Both checks of every job, trained on ``device``: ``repeat`` (step 0 twice) and ``cross`` (against the CPU)."""
    jobs = (*WHOLE_JOBS, PIPELINE_JOB)
    return {"repeat": {n: guarded(partial(check_repeat, device, n)) for n in jobs},
            "cross": {n: guarded(partial(compare_devices, device, n, steps, calibration)) for n in jobs}}


def render_markdown(doc: dict[str, Any]) -> str:
    m, gpu = doc["machine"], doc["gpu"]
    lines = [
        "# CUDA work units: repeatability and CUDA trainer against CPU validator", "",
        f"GPU: {gpu['name']} (CUDA {gpu['cuda']}, cuDNN {gpu['cudnn']}); {m['cpus_usable']} CPUs ({m['cpu_model']}); "
        f"torch {m['torch']}. Run {m['date']}, {doc['seconds']} s. Produced by `python -m benchmarks.gpu_check`.", "",
        "## Step 0 trained twice on CUDA", "", "| job | units | bit-identical |", "|---|---|---|",
        *[f"| {n} | {r['units']} | {r['bit_identical']} / {r['units']} |" if "error" not in r else f"| {n} | {r['error']} | – |"
          for n, r in doc["repeat"].items()], "",
        "## CUDA trainer, CPU validator (the job's profile)", "",
        "max abs: largest |cuda − cpu| over the result (and handed-on gradient) tensors; max rel: that over the "
        "largest magnitude of its tensor; distance: what `check_unit` compares with the tolerance.", "",
        "| job | units | bit-identical | max abs | max rel | max distance | tolerance | within | suggested |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n, c in doc["cross"].items():
        if "error" in c:
            lines.append(f"| {n} | {c['error']} | – | – | – | – | – | – | – |")
            continue
        tol, within = ("–", "not calibrated") if c["tolerance"] is None else (f"`{c['tolerance']}`", f"{c['within']} / {c['units']}")
        lines.append(f"| {n} | {c['units']} | {c['bit_identical']} | {g(c['max_abs'])} | {g(c['max_rel'])} | "
                     f"{g(c['max_distance'])} | {tol} | {within} | `{c['suggested_tolerance']}` |")
    return "\n".join([*lines, ""])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="steps of each job measured against the CPU (default 3)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for gpu_check.json / .md")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device (torch.cuda.is_available() is False); nothing measured, nothing written. "
              "Run it on a machine with a GPU and a CUDA build of torch.", file=sys.stderr)
        return 0
    started = time.perf_counter()
    doc: dict[str, Any] = {
        "machine": machine_info(),
        "gpu": {"name": torch.cuda.get_device_name(), "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()},  # type: ignore[no-untyped-call]
        **measure("cuda", args.steps),
    }
    doc["seconds"] = round(time.perf_counter() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    markdown = render_markdown(doc)
    (args.out / "gpu_check.md").write_text(markdown, encoding="utf-8")
    print(markdown)
    failed = [n for part in ("repeat", "cross") for n, r in doc[part].items() if "error" in r or not r.get("equal", True)]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
