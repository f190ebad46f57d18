"""Calibrate cross-profile verification: ``python -m benchmarks.calibrate_tolerance [--units N]``.

A job whose ``verification.tolerance`` is not ``"0"`` accepts units computed
under another execution profile than the job's; a checker replays each
sampled inner step under the job's profile and passes it when its relative
distance from the trainer's claim (``tdml_node.work.tolerance``) is within
the tolerance. This script measures what that tolerance must be and what it
still catches, for the presets ``digits-mlp`` (H = 1), ``digits-mlp-local``
(H = 4), ``digits-cnn`` and ``chars-transformer`` (on a generated text):

1. **Honest distances.** Each job runs its own trajectory: at every step the
   trainer (another profile: ``--trainer-threads`` CPU threads, default 2,
   or ``--trainer-device cuda``) trains every shard, the validator (the
   job's profile: CPU, 1 thread) measures every inner step of every unit
   with ``compare_step`` and runs the exact result check (H > 1), then
   aggregates the trainer's results as the chain would. ``--units`` honest
   units per job (default 1200, i.e. the presets' 300 steps × 4 shards).
2. **Tolerance.** Per job: ``SAFETY_FACTOR`` (100) × the largest honest
   distance, rounded up to a power of ten.
3. **False accusations.** Every honest unit is checked again with
   ``check_unit`` over all its inner steps, in a job carrying that tolerance;
   any failure is a false accusation. A few units are also retrained with
   other CPU thread counts (``--extra-threads``) and checked the same way.
4. **Attacks.** On a few honest units spread over the trajectory, each
   forgery is checked with ``check_unit`` at the tolerance; for the
   perturbations with a size (scaled by 1 + ε, shifted by ε·RMS, Gaussian
   noise of σ = ε·RMS, one element scaled, a lying loss) the smallest ε still
   caught is found by bisection on a log scale.

Results go to ``benchmarks/results/tolerance.json`` and ``tolerance.md``
(``tolerance-cuda.*`` with ``--trainer-device cuda``, so GPU figures never
overwrite the CPU ones). CUDA-against-CPU differences must be measured on a
machine with a GPU with this same script; without one ``--trainer-device
cuda`` stops with an error rather than report anything.

This module must never report a figure it did not measure, and never write
outside its output directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from benchmarks.bench_replay_cost import generated_text
from benchmarks.common import job_state, machine_info
from consensus.crypto import Keypair
from consensus.types import (
    FAILURE_NONE,
    FAILURE_REPLAY,
    Decimal,
    ExecutionProfile,
    Hash32,
    JobSpec,
    WorkSubmission,
)
from consensus.work import CheckResult, StepView, TrainedUnit, check_unit, replay_tolerance
from tdml_node.storage import MemoryBlobStore
from tdml_node.work import unit
from tdml_node.work.datasets import Dataset
from tdml_node.work.executor import TorchExecutor, model_state_optimizer
from tdml_node.work.jobs import get_job
from tdml_node.work.models import build_model
from tdml_node.work.optim import build_optimizer, compute_lr
from tdml_node.work.profile import apply_profile, local_profile, torch_dtype
from tdml_node.work.state import ModelState, encode_state, load_state, parse_state
from tdml_node.work.tensors import decode_bundle, encode_bundle, f32_bits, f32_from_bits

JOBS = ("digits-mlp", "digits-mlp-local", "digits-cnn", "chars-transformer")
SAFETY_FACTOR = 100
"""Tolerance = this × the largest honest distance measured, rounded up to a power of ten."""
PROBE_TOLERANCE = "1"
"""Any non-zero tolerance puts a job in tolerance mode; distances do not depend on its value."""
TEXT_CHARS = 40_000
ATTACK_UNITS = 4
"""Honest units (spread over the trajectory) every attack is tried on."""
EPS_LOW, EPS_HIGH = 1e-12, 10.0
BISECT_ITERATIONS = 16
"""Halvings of the log-interval [EPS_LOW, EPS_HIGH]: a bracket narrower than 0.05 %."""

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TRAINER_KEY = Keypair.from_seed(bytes(range(32)))

Tensors = dict[str, torch.Tensor]
Perturb = Callable[[str, torch.Tensor, float], torch.Tensor]


# ---------------------------------------------------------------------------
# Honest units


@dataclass(frozen=True, slots=True)
class Honest:
    """One honest unit: the job state it was trained at, its shard, what it produced, its submission."""

    job: StepView
    shard: int
    unit: TrainedUnit
    sub: WorkSubmission


@dataclass
class Run:
    """One job's honest trajectory and what the validator measured of it."""

    spec: JobSpec
    blobs: MemoryBlobStore
    trainer: TorchExecutor
    validator: TorchExecutor
    roots: list[Hash32] = field(default_factory=list)
    units: list[Honest] = field(default_factory=list)
    distances: list[float] = field(default_factory=list)
    """One per inner step of every honest unit."""
    unit_max: list[float] = field(default_factory=list)
    """The largest distance of each unit (what decides its verdict when every step is checked)."""
    bit_identical_steps: int = 0
    result_check_failures: int = 0
    seconds: float = 0.0


def with_tolerance(spec: JobSpec, tolerance: str) -> JobSpec:
    return dataclasses.replace(spec, verification=dataclasses.replace(spec.verification, tolerance=Decimal(tolerance)))


def submission(job: StepView, shard: int, trained: TrainedUnit, **changes: Any) -> WorkSubmission:
    """The submission of a unit, with fields replaced for a forgery."""
    sub = WorkSubmission(
        job=job.job_id,
        step=job.step,
        shard=shard,
        trainer=TRAINER_KEY.public_key,
        parent_model_root=job.model_root,
        checkpoint_digests=trained.checkpoint_digests,
        result_digest=trained.result_digest,
        losses=trained.losses,
        receipt=trained.receipt,
    )
    return dataclasses.replace(sub, **changes)


def honest_run(spec: JobSpec, dataset: bytes, units: int, trainer_profile: ExecutionProfile) -> Run:
    """Train ``units`` honest units along the job's own trajectory and measure every inner step."""
    blobs = MemoryBlobStore()
    blobs.put(dataset)
    run = Run(spec, blobs, TorchExecutor(blobs, profile=trainer_profile), TorchExecutor(blobs))
    started = time.perf_counter()
    run.roots.append(run.validator.initial_model_root(spec))
    k = spec.shards
    for t in range(math.ceil(units / k)):
        job = job_state(spec, run.roots[-1], t)
        trained = [run.trainer.train_unit(job, shard) for shard in range(k)]
        for shard, u in enumerate(trained):
            if len(run.units) == units:
                break
            sub = submission(job, shard, u)
            run.units.append(Honest(job, shard, u, sub))
            worst = 0.0
            for inner in range(spec.inner_steps):
                near = run.validator.compare_step(job, sub, inner)
                claimed = u.result_digest if spec.inner_steps == 1 else u.checkpoint_digests[inner]
                run.bit_identical_steps += near.digest == claimed
                run.distances.append(near.distance)
                worst = max(worst, near.distance)
            run.unit_max.append(worst)
            if spec.inner_steps > 1 and run.validator.check_result(job, sub) != FAILURE_NONE:
                run.result_check_failures += 1
        # The chain aggregates the trainer's results under the job's profile.
        run.roots.append(run.validator.step_outcome(job, tuple(u.result_digest for u in trained)).model_root)
    run.seconds = time.perf_counter() - started
    return run


def choose_tolerance(max_distance: float) -> str:
    """``SAFETY_FACTOR`` × the largest honest distance, rounded up to a power of ten, as a decimal string.

    With no honest difference at all, the float32 unit roundoff (2^-24)
    stands in for the measured distance.
    """
    base = max_distance if max_distance > 0 else 2.0**-24
    return f"1e{math.ceil(math.log10(SAFETY_FACTOR * base))}"


def false_accusations(run: Run, spec: JobSpec, units: Sequence[Honest], trainer: TorchExecutor | None = None) -> int:
    """Honest units (retrained by ``trainer`` when given) that ``check_unit`` fails over all inner steps."""
    steps = tuple(range(spec.inner_steps))
    failed = 0
    for h in units:
        job = dataclasses.replace(h.job, spec=spec)
        sub = h.sub
        if trainer is not None:
            sub = submission(job, h.shard, trainer.train_unit(job, h.shard))
        failed += check_unit(run.validator, job, sub, steps).failure != FAILURE_NONE
    return failed


def distribution(values: Sequence[float]) -> dict[str, float]:
    """Max, upper percentiles (nearest rank), median and min of the distances."""
    ordered = sorted(values)
    n = len(ordered)

    def rank(q: float) -> float:
        return ordered[min(n - 1, max(0, math.ceil(q * n) - 1))]

    return {"max": ordered[-1], "p99.9": rank(0.999), "p99": rank(0.99), "median": rank(0.5), "min": ordered[0]}


# ---------------------------------------------------------------------------
# Forgeries


def rms(t: torch.Tensor) -> float:
    return float(torch.sqrt(torch.mean(t.detach().to(torch.float64) ** 2)))


def noise(name: str, like: torch.Tensor) -> torch.Tensor:
    """A fixed standard-normal tensor per name, so a larger ε is the same direction, farther."""
    gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    return torch.randn(like.shape, dtype=torch.float64, generator=gen)


def _scaled(name: str, t: torch.Tensor, eps: float) -> torch.Tensor:
    return (t.to(torch.float64) * (1.0 + eps)).to(t.dtype)


def _shifted(name: str, t: torch.Tensor, eps: float) -> torch.Tensor:
    return (t.to(torch.float64) + eps * rms(t)).to(t.dtype)


def _noised(name: str, t: torch.Tensor, eps: float) -> torch.Tensor:
    return (t.to(torch.float64) + eps * rms(t) * noise(name, t)).to(t.dtype)


SIZED: dict[str, Perturb] = {
    "scaled (×(1+ε))": _scaled,
    "mean-shifted (+ε·RMS)": _shifted,
    "Gaussian noise (σ = ε·RMS)": _noised,
}
FIXED: dict[str, Callable[[str, torch.Tensor], torch.Tensor]] = {
    "zero": lambda name, t: torch.zeros_like(t),
    "random (normal, same RMS)": lambda name, t: (noise(name + "/random", t) * rms(t)).to(t.dtype),
    "rounded to bfloat16": lambda name, t: t.to(torch.bfloat16).to(t.dtype),
    "rounded to float16": lambda name, t: t.to(torch.float16).to(t.dtype),
}


def bundle(run: Run, digest: Hash32) -> Tensors:
    return decode_bundle(run.blobs.get(digest) or b"")


def tamper(tensors: Tensors, prefix: str, fn: Callable[[str, torch.Tensor], torch.Tensor]) -> Tensors:
    return {name: (fn(name, t) if name.startswith(prefix) else t.clone()) for name, t in tensors.items()}


def one_element(tensors: Tensors, prefix: str, eps: float) -> Tensors:
    """Scale by 1 + ε the largest-magnitude element of the largest tensor under ``prefix``."""
    out = {name: t.clone() for name, t in tensors.items()}
    name = max((n for n in out if n.startswith(prefix)), key=lambda n: (out[n].numel(), n))
    flat = out[name].reshape(-1)
    j = int(torch.argmax(flat.abs()))
    flat[j] = float(flat[j]) * (1.0 + eps)
    return out


def forged_result(run: Run, h: Honest, fn: Callable[[str, torch.Tensor], torch.Tensor]) -> WorkSubmission:
    """The honest unit with its result's update tensors (grad/ or delta/) replaced."""
    prefix = unit.result_prefix(run.spec)
    digest = run.blobs.put(encode_bundle(tamper(bundle(run, h.unit.result_digest), prefix, fn)))
    return dataclasses.replace(h.sub, result_digest=digest)


def sized(perturb: Perturb, eps: float) -> Callable[[str, torch.Tensor], torch.Tensor]:
    """The perturbation of size ``eps``."""

    def fn(name: str, t: torch.Tensor) -> torch.Tensor:
        return perturb(name, t, eps)

    return fn


def forged_result_sized(run: Run, perturb: Perturb, h: Honest, eps: float) -> WorkSubmission:
    return forged_result(run, h, sized(perturb, eps))


def one_element_result(run: Run, h: Honest, eps: float) -> WorkSubmission:
    """(H = 1) one gradient element scaled by 1 + ε."""
    tensors = one_element(bundle(run, h.unit.result_digest), unit.GRAD_PREFIX, eps)
    return dataclasses.replace(h.sub, result_digest=run.blobs.put(encode_bundle(tensors)))


def lying_loss(run: Run, h: Honest, eps: float) -> WorkSubmission:
    """(H = 1) the loss claimed (in the submission and the result) is the honest one × (1 + ε)."""
    honest = float(f32_from_bits([h.unit.losses[0]])[0])
    bits = f32_bits(torch.tensor(honest * (1.0 + eps), dtype=torch.float64))
    tensors = bundle(run, h.unit.result_digest)
    tensors[unit.LOSS_KEY] = f32_from_bits([bits])
    return dataclasses.replace(h.sub, result_digest=run.blobs.put(encode_bundle(tensors)), losses=(bits,))


def consistent_forgery(run: Run, h: Honest, fn: Callable[[str, torch.Tensor], torch.Tensor]) -> WorkSubmission:
    """(H > 1) a forged delta with the final checkpoint rewritten to θ0 − delta, so the result check passes."""
    start = bundle(run, h.job.model_root)
    fake = tamper(bundle(run, h.unit.result_digest), unit.DELTA_PREFIX, fn)
    final = bundle(run, h.unit.checkpoint_digests[-1])
    params: Tensors = {}
    for key in list(final):
        if key.startswith("param/"):
            name = key[len("param/") :]
            final[key] = start[key] - fake[unit.DELTA_PREFIX + name]
            params[name] = final[key]
    result = unit.delta_result({n: start["param/" + n] for n in params}, params, h.unit.losses)
    checkpoints = (*h.unit.checkpoint_digests[:-1], run.blobs.put(encode_bundle(final)))
    return dataclasses.replace(h.sub, checkpoint_digests=checkpoints, result_digest=run.blobs.put(result))


def consistent_forgery_sized(run: Run, perturb: Perturb, h: Honest, eps: float) -> WorkSubmission:
    return consistent_forgery(run, h, sized(perturb, eps))


def skipped_step(run: Run, h: Honest, skip: int, trainer_profile: ExecutionProfile) -> WorkSubmission:
    """(H > 1) the unit with inner step ``skip`` never computed: its checkpoint repeats the state before.

    The cheater claims the honest losses, so only the state gives it away.
    """
    spec = run.spec
    device = apply_profile(trainer_profile)
    dtype = torch_dtype(trainer_profile)
    dataset = Dataset.decode(run.blobs.get(spec.dataset) or b"", task=spec.task, seq_len=spec.seq_len, dtype=dtype, device=device)
    model = build_model(spec.model, seed=0, dtype=dtype).to(device)
    start = parse_state(bundle(run, h.job.model_root), model, model_state_optimizer(spec))
    load_state(model, ModelState(start.params, {}))
    optimizer = build_optimizer(spec.optimizer, model.parameters(), lr=compute_lr(spec, h.job.step))
    checkpoints: list[Hash32] = []
    for inner in range(spec.inner_steps):
        if inner != skip:
            unit.inner_step(model, optimizer, dataset, spec, h.job.step, h.shard, inner)
        checkpoints.append(run.blobs.put(encode_state(model, optimizer)))
    result = unit.delta_result(start.params, dict(model.named_parameters()), h.unit.losses)
    return dataclasses.replace(h.sub, checkpoint_digests=tuple(checkpoints), result_digest=run.blobs.put(result))


def smallest_caught(caught: Callable[[float], bool]) -> dict[str, Any]:
    """Bisection on a log scale for the smallest ε caught: the bracket (largest passed, smallest caught)."""
    lo, hi = EPS_LOW, EPS_HIGH
    if not caught(hi):
        return {"passed_below": hi, "caught_at": None}
    if caught(lo):
        return {"passed_below": None, "caught_at": lo}
    for _ in range(BISECT_ITERATIONS):
        mid = math.sqrt(lo * hi)
        if caught(mid):
            hi = mid
        else:
            lo = mid
    return {"passed_below": lo, "caught_at": hi}


def attack_units(run: Run) -> list[Honest]:
    """``ATTACK_UNITS`` honest units spread over the trajectory, never at step 0 (stale parent needs one)."""
    later = [h for h in run.units if h.job.step >= 1]
    picks = sorted({round(i * (len(later) - 1) / max(1, ATTACK_UNITS - 1)) for i in range(ATTACK_UNITS)})
    return [later[i] for i in picks]


def run_attacks(run: Run, tolerance: str, trainer_profile: ExecutionProfile) -> dict[str, Any]:
    """Every forgery on every attack unit, checked at ``tolerance``: catches, failure codes, distances, bisections."""
    spec = with_tolerance(run.spec, tolerance)
    h_steps = spec.inner_steps
    all_steps = tuple(range(h_steps))
    picks = attack_units(run)

    def job_of(h: Honest) -> StepView:
        return dataclasses.replace(h.job, spec=spec)

    def check(h: Honest, sub: WorkSubmission, steps: Sequence[int] = all_steps) -> CheckResult:
        return check_unit(run.validator, job_of(h), sub, steps)

    def distance(h: Honest, sub: WorkSubmission, inner: int) -> float:
        return run.validator.compare_step(job_of(h), sub, inner).distance

    out: dict[str, Any] = {}

    def record(name: str, forge: Callable[[Honest], WorkSubmission], at: int | None, note: str) -> None:
        results = []
        for h in picks:
            sub = forge(h)
            res = check(h, sub)
            entry: dict[str, Any] = {"step": h.job.step, "shard": h.shard, "failure": res.failure,
                                     "failed_step": res.failed_step}
            if at is not None and res.failure == FAILURE_REPLAY:
                entry["distance"] = distance(h, sub, at)
            results.append(entry)
        out[name] = {"kind": "fixed", "caught": sum(r["failure"] != FAILURE_NONE for r in results),
                     "tried": len(results), "units": results, "note": note}

    def bisect(name: str, forge: Callable[[Honest, float], WorkSubmission], steps: Sequence[int], note: str) -> None:
        brackets: list[dict[str, Any]] = []
        for h in picks:

            def caught(eps: float, h: Honest = h) -> bool:
                return check(h, forge(h, eps), steps).failure != FAILURE_NONE

            brackets.append({"step": h.job.step, "shard": h.shard, **smallest_caught(caught)})
        thresholds = [b["caught_at"] for b in brackets]
        out[name] = {
            "kind": "bisection",
            "smallest_caught_max": None if None in thresholds else max(thresholds),
            "smallest_caught_min": None if None in thresholds else min(thresholds),
            "units": brackets,
            "note": note,
        }

    if h_steps == 1:
        for name, fn in FIXED.items():
            record(f"result {name}", partial(forged_result, run, fn=fn), 0, "gradient replaced")
        for name, pert in SIZED.items():
            bisect(f"result {name}", partial(forged_result_sized, run, pert), (0,), "every gradient tensor perturbed")
        bisect("result one element scaled (×(1+ε))", partial(one_element_result, run), (0,),
               "the largest-magnitude element of the largest gradient tensor")
        bisect("lying loss (×(1+ε))", partial(lying_loss, run), (0,), "loss in submission and result")
    else:
        for name, fn in FIXED.items():
            record(f"result {name}", partial(forged_result, run, fn=fn), None,
                   "delta replaced; the exact result check (θ0 − θH of the trainer's own checkpoint)")
        for name, pert in SIZED.items():
            bisect(f"result {name}", partial(forged_result_sized, run, pert), (),
                   "delta perturbed; the exact result check alone")
        last = h_steps - 1
        for name, fn in FIXED.items():
            record(f"consistent forgery: {name}", partial(consistent_forgery, run, fn=fn), last,
                   f"delta replaced and checkpoint {h_steps} rewritten to match; caught only by replaying step {last}")
        for name, pert in SIZED.items():
            bisect(f"consistent forgery: {name}", partial(consistent_forgery_sized, run, pert), (last,),
                   f"delta perturbed and checkpoint {h_steps} rewritten to match; replay of step {last}")
        for skip in range(h_steps):
            record(f"skipped inner step {skip}", partial(skipped_step, run, skip=skip, trainer_profile=trainer_profile),
                   skip, "checkpoint repeats the state before; honest losses claimed")
    k = spec.shards

    def wrong_shard(h: Honest) -> WorkSubmission:
        return submission(job_of(h), h.shard, run.trainer.train_unit(job_of(h), (h.shard + 1) % k))

    record("wrong shard", wrong_shard, 0, "the unit of the next shard, same step")

    def stale(h: Honest) -> WorkSubmission:
        old = job_state(spec, run.roots[h.job.step - 1], h.job.step)
        return submission(job_of(h), h.shard, run.trainer.train_unit(old, h.shard))

    record("stale parent (claims the current one)", stale, 0, "computed from the previous step's model state")
    record("stale parent (names it)",
           lambda h: dataclasses.replace(stale(h), parent_model_root=run.roots[h.job.step - 1]), None,
           "refused before any replay")
    return out


# ---------------------------------------------------------------------------
# Cost


def compare_cost(run: Run, count: int = 40) -> dict[str, float]:
    """Median milliseconds per call of ``replay_step`` and ``compare_step``, timed in pairs on the same inner steps."""
    picks = run.units[:: max(1, len(run.units) // count)][:count]
    h = run.spec.inner_steps
    calls = {"replay_step": run.validator.replay_step, "compare_step": run.validator.compare_step}
    times: dict[str, list[float]] = {label: [] for label in calls}
    for i, u in enumerate(picks):
        for label, call in calls.items():
            started = time.perf_counter()
            call(u.job, u.sub, i % h)
            times[label].append((time.perf_counter() - started) * 1e3)
    return {label: statistics.median(values) for label, values in times.items()}


# ---------------------------------------------------------------------------
# Driver


def calibrate_job(name: str, spec: JobSpec, dataset: bytes, args: argparse.Namespace, trainer_profile: ExecutionProfile) -> dict[str, Any]:
    print(f"[calibrate] {name}: {args.units} honest units …", file=sys.stderr, flush=True)
    run = honest_run(spec, dataset, args.units, trainer_profile)
    dist = distribution(run.distances)
    tolerance = choose_tolerance(dist["max"])
    tol_spec = with_tolerance(spec, tolerance)
    started = time.perf_counter()
    accused = false_accusations(run, tol_spec, run.units)
    check_seconds = time.perf_counter() - started
    within = sum(d <= float(tolerance) for d in run.distances)
    extra: dict[str, Any] = {}
    if args.trainer_device == "cpu":
        sample = run.units[:: max(1, len(run.units) // args.extra_units)][: args.extra_units]
        for threads in args.extra_threads:
            other = TorchExecutor(run.blobs, profile=local_profile(threads=threads))
            worst = 0.0
            for h in sample:
                sub = submission(h.job, h.shard, other.train_unit(h.job, h.shard))
                for inner in range(spec.inner_steps):
                    worst = max(worst, run.validator.compare_step(h.job, sub, inner).distance)
            extra[str(threads)] = {
                "units": len(sample),
                "max_distance": worst,
                "false_accusations": false_accusations(run, tol_spec, sample, other),
            }
    print(f"[calibrate] {name}: max honest {dist['max']:.3g} → tolerance {tolerance}; attacks …", file=sys.stderr, flush=True)
    started = time.perf_counter()
    attacks = run_attacks(run, tolerance, trainer_profile)
    attack_seconds = time.perf_counter() - started
    return {
        "inner_steps": spec.inner_steps,
        "shards": spec.shards,
        "steps_run": len(run.roots) - 1,
        "units": len(run.units),
        "step_comparisons": len(run.distances),
        "bit_identical_steps": run.bit_identical_steps,
        "result_check_failures": run.result_check_failures,
        "honest_distance": dist,
        "honest_unit_max_distance": distribution(run.unit_max),
        "tolerance": tolerance,
        "tolerance_over_max_honest": float(tolerance) / dist["max"] if dist["max"] else None,
        "steps_within_tolerance": within,
        "false_accusations": accused,
        "other_thread_counts": extra,
        "cost_ms": compare_cost(run),
        "attacks": attacks,
        "seconds": {"honest_run": round(run.seconds, 1), "false_accusation_check": round(check_seconds, 1),
                    "attacks": round(attack_seconds, 1)},
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.calibrate_tolerance", description=__doc__.split("\n\n")[0])
    parser.add_argument("--units", type=int, default=1200, metavar="N",
                        help="honest units per job (default 1200: 300 steps × 4 shards)")
    parser.add_argument("--jobs", nargs="+", choices=JOBS, default=list(JOBS), metavar="JOB",
                        help=f"jobs to calibrate ({', '.join(JOBS)})")
    parser.add_argument("--trainer-device", choices=("cpu", "cuda"), default="cpu",
                        help="the trainer's device (the validator always replays on the CPU with 1 thread)")
    parser.add_argument("--trainer-threads", type=int, default=2, metavar="T",
                        help="the trainer's CPU thread count (default 2)")
    parser.add_argument("--extra-threads", type=int, nargs="*", default=[3, 4], metavar="T",
                        help="other CPU thread counts a sample of units is retrained with (CPU trainer only)")
    parser.add_argument("--extra-units", type=int, default=100, metavar="N",
                        help="units per job retrained with each extra thread count")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for tolerance.json / .md")
    args = parser.parse_args(argv)
    if args.units < 2 * ATTACK_UNITS:
        parser.error(f"--units must be at least {2 * ATTACK_UNITS}")
    if args.trainer_threads < 1 or any(t < 1 for t in args.extra_threads):
        parser.error("thread counts must be at least 1")
    if args.trainer_device == "cuda" and not torch.cuda.is_available():
        parser.error(
            "--trainer-device cuda needs a CUDA GPU and torch reports none (torch.cuda.is_available() is False); "
            "CUDA-against-CPU tolerances must be measured on a GPU machine"
        )
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    trainer_profile = local_profile(threads=args.trainer_threads, device=args.trainer_device)
    validator_profile = local_profile()
    started = time.perf_counter()
    doc: dict[str, Any] = {
        "machine": machine_info(),
        "settings": {
            "trainer_profile": dataclasses.asdict(trainer_profile),
            "validator_profile": dataclasses.asdict(validator_profile),
            "units_per_job": args.units,
            "safety_factor": SAFETY_FACTOR,
            "attack_units_per_job": ATTACK_UNITS,
            "bisection": {"low": EPS_LOW, "high": EPS_HIGH, "iterations": BISECT_ITERATIONS},
            "text_chars": TEXT_CHARS,
            "distance": "max over tensors of ||claim - replay||_2 / (||replay||_2 + 1e-30) in float64, "
                        "and |loss_claim - loss_replay| / max(|loss_replay|, 1e-30)",
        },
        "jobs": {},
    }
    tmp = Path(tempfile.mkdtemp(prefix="tdml-calibrate-"))
    try:
        text_path = tmp / "corpus.txt"
        text_path.write_text(generated_text(TEXT_CHARS), encoding="utf-8")
        for name in args.jobs:
            spec, dataset = get_job(name, text_path=text_path)
            steps = math.ceil(args.units / spec.shards)
            spec = with_tolerance(dataclasses.replace(spec, steps=steps), PROBE_TOLERANCE)
            if replay_tolerance(spec) is None:  # pragma: no cover - PROBE_TOLERANCE is not "0"
                raise RuntimeError("the calibration job must be in tolerance mode")
            doc["jobs"][name] = calibrate_job(name, spec, dataset, args, trainer_profile)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    jobs = doc["jobs"]
    doc["summary"] = {
        "total_units": sum(j["units"] for j in jobs.values()),
        "total_step_comparisons": sum(j["step_comparisons"] for j in jobs.values()),
        "total_false_accusations": sum(j["false_accusations"] for j in jobs.values()),
        "tolerances": {name: j["tolerance"] for name, j in jobs.items()},
        "seconds": round(time.perf_counter() - started, 1),
    }
    suffix = "" if args.trainer_device == "cpu" else f"-{args.trainer_device}"
    write_results(doc, args.out, f"tolerance{suffix}", render_markdown)
    return 0


def write_results(doc: dict[str, Any], out: Path, stem: str, render: Callable[[dict[str, Any]], str]) -> None:
    """``<stem>.json`` and ``<stem>.md`` (``render`` of the document) in ``out``; the Markdown is printed too."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    markdown = render(doc)
    (out / f"{stem}.md").write_text(markdown, encoding="utf-8")
    print(markdown)


# ---------------------------------------------------------------------------
# Markdown


def g(x: float | None) -> str:
    """A distance or ε with three significant digits."""
    if x is None:
        return "–"
    if x == 0:
        return "0"
    if math.isinf(x):
        return "∞"
    return f"{x:.3g}"


def preamble(doc: dict[str, Any], title: str, command: str) -> list[str]:
    """The title, machine and profile paragraphs a calibration's Markdown opens with."""
    m, s = doc["machine"], doc["settings"]
    tp, vp = s["trainer_profile"], s["validator_profile"]
    return [
        f"# {title}",
        "",
        f"Machine: {m['cpus_usable']} CPUs ({m['cpu_model']}), {m['platform']}; Python {m['python']}, "
        f"torch {m['torch']}. Run {m['date']}, {doc['summary']['seconds']} s. "
        f"Produced by `{command}`.",
        "",
        f"Trainer profile: {tp['device']}, {tp['threads']} thread(s), {tp['dtype']}. "
        f"Validator (the jobs' profile): {vp['device']}, {vp['threads']} thread(s), {vp['dtype']}. "
        f"Distance: {s['distance']}. "
        f"Tolerance = {s['safety_factor']} × the largest honest distance, rounded up to a power of ten.",
    ]


def fixed_attack_row(attack: str, a: dict[str, Any], code: Callable[[dict[str, Any]], str]) -> str:
    """The table row of a fixed forgery: units caught, their failure codes, the smallest distance of a caught one."""
    codes = sorted({code(u) for u in a["units"]})
    dists = [u["distance"] for u in a["units"] if u.get("distance") is not None]
    shown = f"min {g(min(dists))}" if dists else "–"
    return f"| {attack} | {a['caught']} / {a['tried']} | {', '.join(codes)} | {shown} | {a['note']} |"


def render_markdown(doc: dict[str, Any]) -> str:
    s, jobs = doc["settings"], doc["jobs"]
    summary = doc["summary"]
    lines = [
        *preamble(doc, "Cross-profile verification: tolerance calibration", "python -m benchmarks.calibrate_tolerance"),
        "",
        "## Honest units",
        "",
        f"{summary['total_units']} honest units ({summary['total_step_comparisons']} replayed inner steps), "
        f"**{summary['total_false_accusations']} false accusations** at the tolerances below.",
        "",
        "| job | H | units | inner steps | bit-identical | max | p99.9 | p99 | median | min | tolerance | tolerance ÷ max | false accusations | result check (H > 1) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, j in jobs.items():
        d = j["honest_distance"]
        result = "–" if j["inner_steps"] == 1 else f"{j['result_check_failures']} mismatches (exact)"
        lines.append(
            f"| {name} | {j['inner_steps']} | {j['units']} | {j['step_comparisons']} | {j['bit_identical_steps']} | "
            f"{g(d['max'])} | {g(d['p99.9'])} | {g(d['p99'])} | {g(d['median'])} | {g(d['min'])} | "
            f"`{j['tolerance']}` | {g(j['tolerance_over_max_honest'])} | {j['false_accusations']} / {j['units']} | {result} |"
        )
    extra_rows = [
        f"| {name} | {threads} | {e['units']} | {g(e['max_distance'])} | `{j['tolerance']}` | {e['false_accusations']} |"
        for name, j in jobs.items()
        for threads, e in j["other_thread_counts"].items()
    ]
    if extra_rows:
        lines += [
            "",
            "Other trainer thread counts (a sample of the same units retrained, checked at the same tolerance):",
            "",
            "| job | trainer threads | units | max distance | tolerance | false accusations |",
            "|---|---|---|---|---|---|",
            *extra_rows,
        ]
    lines += [
        "",
        "Cost of a checked inner step (validator, median ms per call over the same 40 inner steps, timed in pairs; "
        "the machine is shared, so these are indicative):",
        "",
        "| job | replay_step (exact) | compare_step (tolerance) |",
        "|---|---|---|",
        *[f"| {name} | {j['cost_ms']['replay_step']:.2f} | {j['cost_ms']['compare_step']:.2f} |" for name, j in jobs.items()],
        "",
        "## Attacks at the calibrated tolerance",
        "",
        f"Each forgery is tried on {s['attack_units_per_job']} honest units spread over the trajectory and checked "
        "with `check_unit` (every inner step, unless the row says which). Failure codes: 1 wrong parent, "
        "2 replay, 3 result, 4 malformed. For sized perturbations, ε is bisected on a log scale between "
        f"{g(s['bisection']['low'])} and {g(s['bisection']['high'])}; the table gives the smallest ε caught "
        "(the largest over the units, i.e. caught on every unit from there on; the smallest over the units in brackets).",
        "",
    ]
    for name, j in jobs.items():
        lines += [f"### {name} (H = {j['inner_steps']}, tolerance `{j['tolerance']}`)", "",
                  "| attack | caught | failure (step) | distance at the failing step / smallest ε caught | note |",
                  "|---|---|---|---|---|"]
        for attack, a in j["attacks"].items():
            if a["kind"] == "fixed":
                lines.append(fixed_attack_row(attack, a, lambda u: f"{u['failure']} ({u['failed_step']})"))
            else:
                lo, hi = a["smallest_caught_min"], a["smallest_caught_max"]
                shown = "not caught up to ε = 10" if hi is None else f"ε ≥ {g(hi)} ({g(lo)})"
                lines.append(f"| {attack} | bisection | – | {shown} | {a['note']} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
