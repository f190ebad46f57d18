"""Calibrate cross-profile verification of pipeline units: ``python -m benchmarks.calibrate_pipeline_tolerance [--steps N] [--quick]``.

``benchmarks/calibrate_tolerance.py`` calibrates whole-model units; this
script does the same for the stage units of the pipeline presets
``digits-mlp-pipeline`` and ``chars-transformer-pipeline`` (on the plain
calibration's generated text). A pipeline unit is checked by replaying its
stage alone from the inputs the chain links it to, and passes in a tolerance
job when the largest of three distances is within the tolerance: that of its
result bundle (activations for a forward unit, parameter gradients with
``meta/loss`` otherwise), that of the gradient it hands on, and that of its
loss (``StageWork.compare``). Measured, per job:

1. **Honest distances.** The job runs its own trajectory: at every step the
   trainer (``--trainer-threads`` CPU threads, default 2) trains every unit
   in chain order, each from the trainer's own outputs before it as the
   chain links them (``pipeline.expected_inputs``); the validator (the job's
   profile: CPU, 1 thread) measures every unit with ``compare_step``, and the
   step is aggregated from the trainer's results, as the chain would. Each
   distance is recorded under its unit kind (phase and stage) and split into
   its parts, from the validator's own outputs of the same unit. By default
   the trajectory is the preset's own: 100 steps (2,800 units) of
   ``digits-mlp-pipeline`` and 300 steps (8,400 units) of
   ``chars-transformer-pipeline``. On the shared 2-core machine of
   ``benchmarks/results/tolerance-pipeline.md`` the whole run took 3 min
   41 s when nothing else ran, and 11 min 31 s for the recorded run, with
   other work loading the machine; either way at a peak resident memory of
   2.9 GB, as every unit's blobs are held until the false-accusation pass
   has checked it again. ``--steps N`` runs N
   steps of each job; ``--quick`` runs 2 (a smoke run, written to
   ``tolerance-pipeline-quick.*``).
2. **Tolerance.** ``calibrate_tolerance.choose_tolerance``: ``SAFETY_FACTOR``
   (100) × the largest honest distance, rounded up to a power of ten.
3. **False accusations.** Every honest unit is checked again with
   ``check_unit`` in a job carrying that tolerance; any failure is one.
4. **Attacks.** Every unit of one shard, at ``ATTACK_STEPS`` steps spread
   over the trajectory, is forged and checked with ``check_unit`` at the
   tolerance: its result's tensors (activations or parameter gradients) and
   its handed-on gradient replaced (zero, random, rounded to bfloat16 or
   float16) or perturbed with the plain calibration's perturbations, whose
   smallest ε still caught is bisected; a lying loss; and the outputs of the
   same unit of another shard.

Results go to ``benchmarks/results/tolerance-pipeline.json`` and
``tolerance-pipeline.md``. CUDA is not measured: the trainer here is a CPU
with another thread count, and nothing in these figures bounds a CUDA
trainer's distances.

This module must never report a figure it did not measure, never write
anywhere but its output directory (``benchmarks/results`` unless ``--out``
names another), and never copy a helper of ``calibrate_tolerance``: it
imports them.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from benchmarks.bench_replay_cost import generated_text
from benchmarks.calibrate_tolerance import (
    BISECT_ITERATIONS,
    EPS_HIGH,
    EPS_LOW,
    FIXED,
    PROBE_TOLERANCE,
    SAFETY_FACTOR,
    SIZED,
    TEXT_CHARS,
    Honest,
    Run,
    Tensors,
    bundle,
    choose_tolerance,
    distribution,
    false_accusations,
    fixed_attack_row,
    g,
    lying_loss,
    one_element,
    preamble,
    sized,
    smallest_caught,
    submission,
    tamper,
    with_tolerance,
    write_results,
)
from benchmarks.common import job_state, machine_info
from benchmarks.gpu_check import train_step
from consensus import pipeline
from consensus.types import (
    FAILURE_NONE,
    FAILURE_REPLAY,
    ExecutionProfile,
    Hash32,
    JobSpec,
    WorkSubmission,
)
from consensus.work import StepView, check_unit, replay_tolerance
from tdml_node.storage import BlobStore, MemoryBlobStore
from tdml_node.work.executor import TorchExecutor
from tdml_node.work.jobs import get_job, text_presets
from tdml_node.work.profile import local_profile
from tdml_node.work.stage import ACT_GRAD_PREFIX, ACT_PREFIX, GRAD_PREFIX
from tdml_node.work.tensors import decode_bundle, encode_bundle
from tdml_node.work.tolerance import bundle_distance, loss_distance

JOBS = ("digits-mlp-pipeline", "chars-transformer-pipeline")
QUICK_STEPS = 2
ATTACK_STEPS = 3
"""Steps, spread over the trajectory, at which every unit of one shard is attacked."""
RESULT, GRADIENT, LOSS = "result", "handed-on gradient", "loss"
"""The parts of a unit's distance, as ``StageWork.compare`` takes their maximum."""

RESULTS_DIR = Path(__file__).resolve().parent / "results"

Edit = Callable[[Tensors, str], Tensors]
"""A forgery of one bundle: it receives the bundle and the prefix of the tensors it may change."""


# ---------------------------------------------------------------------------
# Honest units


@dataclass(frozen=True, slots=True)
class Measured:
    """One honest unit and what the validator measured of it."""

    honest: Honest
    phase: str
    kind: str
    """Phase and stage, e.g. ``"backward s1"``."""
    distance: float
    """``compare_step``'s distance: what the verdict is decided by."""
    parts: dict[str, float]
    """The distance of each output the unit has (``RESULT``, ``GRADIENT``, ``LOSS``)."""
    bit_identical: bool


@dataclass
class PipelineRun:
    """One job's honest trajectory: the plain calibration's ``Run`` and every unit's measurement, in order."""

    run: Run
    measured: list[Measured] = field(default_factory=list)
    part_mismatches: int = 0
    """Units whose largest part is not ``compare_step``'s distance (the split would then be wrong)."""
    last_eval: tuple[int, int] | None = None
    """(correct, total) of the last evaluated step of the trajectory."""


class ScratchStore:
    """Reads the run's blobs and keeps what is written to it apart, so it can be dropped.

    The validator's own outputs, computed only to split each distance into
    its parts, would otherwise double the blobs the run holds.
    """

    def __init__(self, base: BlobStore) -> None:
        self.base = base
        self.own = MemoryBlobStore()

    def get(self, digest: Hash32) -> bytes | None:
        data = self.own.get(digest)
        return data if data is not None else self.base.get(digest)

    def put(self, data: bytes) -> Hash32:
        return self.own.put(data)

    def has(self, digest: Hash32) -> bool:
        return self.own.has(digest) or self.base.has(digest)

    def clear(self) -> None:
        self.own = MemoryBlobStore()

    def tensors(self, digest: Hash32) -> Tensors:
        return decode_bundle(self.get(digest) or b"")


def kind_of(spec: JobSpec, unit_index: int) -> str:
    place = pipeline.place_of(spec, unit_index)
    return f"{pipeline.PHASE_NAMES[place.phase]} s{place.stage}"


def unit_kinds(spec: JobSpec) -> list[str]:
    """The unit kinds in chain order (a shard's positions 0 .. 2S − 2)."""
    return [kind_of(spec, j) for j in range(pipeline.units_per_shard(spec))]


def measure(run: Run, splitter: TorchExecutor, scratch: ScratchStore, h: Honest) -> tuple[Measured, bool]:
    """``compare_step`` of the honest unit, and its parts; the flag says whether they disagree."""
    near = run.validator.compare_step(h.job, h.sub, 0)
    links = h.sub.links
    assert links is not None
    # Training the unit under the job's profile from the same inputs runs the very
    # computation a replay runs, so its outputs are the replay's.
    mine = splitter.train_stage(h.job, h.shard, links.inputs)
    parts = {RESULT: bundle_distance(bundle(run, h.sub.result_digest), scratch.tensors(mine.result_digest))}
    if links.output_gradient is not None:
        assert mine.links is not None and mine.links.output_gradient is not None
        parts[GRADIENT] = bundle_distance(bundle(run, links.output_gradient), scratch.tensors(mine.links.output_gradient))
    if h.sub.losses:
        parts[LOSS] = loss_distance(h.sub.losses[0], mine.losses[0])
    scratch.clear()
    bit_identical = near.digest == pipeline.claimed_output(h.sub)
    phase = pipeline.PHASE_NAMES[pipeline.place_of(run.spec, h.shard).phase]
    m = Measured(h, phase, kind_of(run.spec, h.shard), near.distance, parts, bit_identical)
    return m, max(parts.values()) != near.distance


def honest_run(spec: JobSpec, dataset: bytes, steps: int, trainer_profile: ExecutionProfile) -> PipelineRun:
    """Train ``steps`` steps of honest units along the job's own trajectory and measure every unit."""
    blobs = MemoryBlobStore()
    blobs.put(dataset)
    run = Run(spec, blobs, TorchExecutor(blobs, profile=trainer_profile), TorchExecutor(blobs))
    scratch = ScratchStore(blobs)
    out = PipelineRun(run)
    splitter = TorchExecutor(scratch)
    started = time.perf_counter()
    run.roots.append(run.validator.initial_model_root(spec))
    for t in range(steps):
        job = job_state(spec, run.roots[-1], t)
        trained = train_step(run.trainer, job)
        for u, tu in enumerate(trained):
            h = Honest(job, u, tu, submission(job, u, tu, links=tu.links))
            m, mismatch = measure(run, splitter, scratch, h)
            run.units.append(h)
            run.distances.append(m.distance)
            run.unit_max.append(m.distance)
            out.measured.append(m)
            out.part_mismatches += mismatch
        # The chain aggregates the trainer's results under the job's profile.
        outcome = run.validator.step_outcome(job, tuple(tu.result_digest for tu in trained))
        run.roots.append(outcome.model_root)
        if outcome.eval_total:
            out.last_eval = (outcome.eval_correct, outcome.eval_total)
    run.seconds = time.perf_counter() - started
    return out


def by_kind(spec: JobSpec, measured: Sequence[Measured]) -> dict[str, list[Measured]]:
    groups: dict[str, list[Measured]] = {kind: [] for kind in unit_kinds(spec)}
    for m in measured:
        groups[m.kind].append(m)
    return groups


def summarize(measured: Sequence[Measured]) -> dict[str, Any]:
    """Units, bit-identical units, and the distribution of the distance and of each part present."""
    parts: dict[str, list[float]] = {}
    for m in measured:
        for name, value in m.parts.items():
            parts.setdefault(name, []).append(value)
    return {
        "units": len(measured),
        "bit_identical": sum(m.bit_identical for m in measured),
        "distance": distribution([m.distance for m in measured]),
        "parts": {name: distribution(values) for name, values in parts.items()},
    }


# ---------------------------------------------------------------------------
# Attacks


def forge(run: Run, h: Honest, target: str, edit: Edit) -> WorkSubmission:
    """The honest unit with its result (``RESULT``) or handed-on gradient (``GRADIENT``) bundle edited."""
    links = h.sub.links
    assert links is not None
    if target == GRADIENT:
        assert links.output_gradient is not None
        digest = run.blobs.put(encode_bundle(edit(bundle(run, links.output_gradient), ACT_GRAD_PREFIX)))
        return dataclasses.replace(h.sub, links=dataclasses.replace(links, output_gradient=digest))
    forward = pipeline.place_of(run.spec, h.shard).phase == pipeline.PHASE_FORWARD
    # A last or backward unit's result also holds meta/loss: the lying-loss attack forges that one.
    prefix = ACT_PREFIX if forward else GRAD_PREFIX
    digest = run.blobs.put(encode_bundle(edit(bundle(run, h.sub.result_digest), prefix)))
    return dataclasses.replace(h.sub, result_digest=digest)


def replaced(fn: Callable[[str, torch.Tensor], torch.Tensor]) -> Edit:
    """Every tensor under the prefix replaced by ``fn`` (a ``FIXED`` forgery)."""

    def edit(tensors: Tensors, prefix: str) -> Tensors:
        return tamper(tensors, prefix, fn)

    return edit


def perturbed(name: str, eps: float) -> Edit:
    """Every tensor under the prefix perturbed by the ``SIZED`` perturbation ``name`` of size ``eps``."""
    return replaced(sized(SIZED[name], eps))


def one_element_scaled(eps: float) -> Edit:
    def edit(tensors: Tensors, prefix: str) -> Tensors:
        return one_element(tensors, prefix, eps)

    return edit


def attack_units(prun: PipelineRun) -> list[Measured]:
    """Every unit of one shard (the next shard at each pick) at ``ATTACK_STEPS`` steps spread over the trajectory."""
    spec = prun.run.spec
    steps = len(prun.run.roots) - 1
    chosen = sorted({round(i * (steps - 1) / max(1, ATTACK_STEPS - 1)) for i in range(ATTACK_STEPS)})
    per_step = pipeline.units_per_step(spec)
    return [
        prun.measured[t * per_step + pipeline.unit_index(spec, n % spec.shards, j)]
        for n, t in enumerate(chosen)
        for j in range(pipeline.units_per_shard(spec))
    ]


TARGETS = {
    "activations (forward units)": RESULT,
    "parameter gradients (last and backward units)": RESULT,
    "handed-on gradient": GRADIENT,
}


def targets_of(spec: JobSpec, unit_index: int) -> list[str]:
    """The attack targets (keys of ``TARGETS``) a unit has."""
    forward = pipeline.place_of(spec, unit_index).phase == pipeline.PHASE_FORWARD
    out = ["activations (forward units)" if forward else "parameter gradients (last and backward units)"]
    if pipeline.emits_gradient(spec, unit_index):
        out.append("handed-on gradient")
    return out


def forged_replaced(run: Run, target: str, fn: Callable[[str, torch.Tensor], torch.Tensor], m: Measured) -> WorkSubmission:
    return forge(run, m.honest, target, replaced(fn))


def forged_perturbed(run: Run, target: str, name: str, m: Measured, eps: float) -> WorkSubmission:
    return forge(run, m.honest, target, perturbed(name, eps))


def forged_one_element(run: Run, target: str, m: Measured, eps: float) -> WorkSubmission:
    return forge(run, m.honest, target, one_element_scaled(eps))


def forged_loss(run: Run, m: Measured, eps: float) -> WorkSubmission:
    return lying_loss(run, m.honest, eps)


def other_shard(prun: PipelineRun, m: Measured) -> WorkSubmission:
    """The outputs (result, handed-on gradient, loss) of the same unit of the next shard, same step,
    claimed from this unit's own inputs."""
    spec = prun.run.spec
    per_step = pipeline.units_per_step(spec)
    step_base = m.honest.job.step * per_step
    other = prun.measured[step_base + (m.honest.shard + pipeline.units_per_shard(spec)) % per_step].honest.sub
    assert m.honest.sub.links is not None and other.links is not None
    links = dataclasses.replace(m.honest.sub.links, output_gradient=other.links.output_gradient)
    return dataclasses.replace(m.honest.sub, result_digest=other.result_digest, losses=other.losses, links=links)


def run_attacks(prun: PipelineRun, tolerance: str) -> dict[str, Any]:
    """Every forgery on every attack unit it applies to, checked at ``tolerance``."""
    run = prun.run
    spec = with_tolerance(run.spec, tolerance)
    picks = attack_units(prun)
    out: dict[str, Any] = {}

    def job_of(m: Measured) -> StepView:
        return dataclasses.replace(m.honest.job, spec=spec)

    def where(m: Measured) -> dict[str, Any]:
        return {"step": m.honest.job.step, "unit": m.honest.shard, "kind": m.kind}

    def record(name: str, units: Sequence[Measured], forged: Callable[[Measured], WorkSubmission], note: str) -> None:
        entries = []
        for m in units:
            sub = forged(m)
            failure = check_unit(run.validator, job_of(m), sub, (0,)).failure
            distance = run.validator.compare_step(job_of(m), sub, 0).distance if failure == FAILURE_REPLAY else None
            entries.append({**where(m), "failure": failure, "distance": distance})
        out[name] = {"kind": "fixed", "caught": sum(e["failure"] != FAILURE_NONE for e in entries),
                     "tried": len(entries), "units": entries, "note": note}

    def bisect(name: str, units: Sequence[Measured], forged: Callable[[Measured, float], WorkSubmission], note: str) -> None:
        brackets = []
        for m in units:

            def is_caught(eps: float, m: Measured = m) -> bool:
                return check_unit(run.validator, job_of(m), forged(m, eps), (0,)).failure != FAILURE_NONE

            brackets.append({**where(m), **smallest_caught(is_caught)})
        thresholds = [b["caught_at"] for b in brackets]
        complete = None not in thresholds
        out[name] = {
            "kind": "bisection",
            "smallest_caught_max": max(thresholds) if complete else None,
            "smallest_caught_min": min(thresholds) if complete else None,
            "hardest_kind": brackets[thresholds.index(max(thresholds))]["kind"] if complete else None,
            "units": brackets,
            "note": note,
        }

    for label, target in TARGETS.items():
        units = [m for m in picks if label in targets_of(spec, m.honest.shard)]
        for name, fn in FIXED.items():
            record(f"{label}: {name}", units, partial(forged_replaced, run, target, fn), "every tensor replaced")
        for name in SIZED:
            bisect(f"{label}: {name}", units, partial(forged_perturbed, run, target, name), "every tensor perturbed")
        bisect(f"{label}: one element scaled (×(1+ε))", units, partial(forged_one_element, run, target),
               "the largest-magnitude element of the largest tensor")
    last = [m for m in picks if pipeline.has_loss(spec, m.honest.shard)]
    bisect("lying loss (×(1+ε))", last, partial(forged_loss, run), "last unit: loss in submission and result")
    record("another shard's outputs", picks, partial(other_shard, prun),
           "result, handed-on gradient and loss of the same unit of the next shard")
    return out


# ---------------------------------------------------------------------------
# Driver


def calibrate_job(name: str, spec: JobSpec, dataset: bytes, steps: int, trainer_profile: ExecutionProfile) -> dict[str, Any]:
    """Honest distances, tolerance, false accusations and attacks of one pipeline job over ``steps`` steps."""
    print(f"[calibrate-pipeline] {name}: {steps} steps …", file=sys.stderr, flush=True)
    prun = honest_run(spec, dataset, steps, trainer_profile)
    run = prun.run
    overall = summarize(prun.measured)
    worst = overall["distance"]["max"]
    tolerance = choose_tolerance(worst)
    tol_spec = with_tolerance(spec, tolerance)
    started = time.perf_counter()
    kinds = by_kind(spec, prun.measured)
    per_kind = {}
    for kind, measured in kinds.items():
        per_kind[kind] = {**summarize(measured),
                          "false_accusations": false_accusations(run, tol_spec, [m.honest for m in measured])}
    check_seconds = time.perf_counter() - started
    phases: dict[str, list[Measured]] = {}
    for m in prun.measured:
        phases.setdefault(m.phase, []).append(m)
    print(f"[calibrate-pipeline] {name}: max honest {worst:.3g} → tolerance {tolerance}; attacks …",
          file=sys.stderr, flush=True)
    started = time.perf_counter()
    attacks = run_attacks(prun, tolerance)
    attack_seconds = time.perf_counter() - started
    assert spec.pipeline is not None
    return {
        "stages": pipeline.stage_count(spec),
        "micro_batches": spec.pipeline.micro_batches,
        "shards": spec.shards,
        "units_per_step": pipeline.units_per_step(spec),
        "steps_run": len(run.roots) - 1,
        "units": len(prun.measured),
        "honest_distance": overall,
        "by_phase": {phase: summarize(measured) for phase, measured in phases.items()},
        "by_kind": per_kind,
        "part_mismatches": prun.part_mismatches,
        "last_eval": None if prun.last_eval is None else {"correct": prun.last_eval[0], "total": prun.last_eval[1]},
        "tolerance": tolerance,
        "tolerance_over_max_honest": float(tolerance) / worst if worst else None,
        "units_within_tolerance": sum(m.distance <= float(tolerance) for m in prun.measured),
        "false_accusations": sum(k["false_accusations"] for k in per_kind.values()),
        "attacks": attacks,
        "seconds": {"honest_run": round(run.seconds, 1), "false_accusation_check": round(check_seconds, 1),
                    "attacks": round(attack_seconds, 1)},
    }


def job_for(name: str) -> tuple[JobSpec, bytes]:
    """The preset, on the plain calibration's generated text when it trains on one (so no text file is written)."""
    from_text = text_presets().get(name)
    return from_text(generated_text(TEXT_CHARS)) if from_text is not None else get_job(name)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.calibrate_pipeline_tolerance",
                                     description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=None, metavar="N",
                        help="steps per job (default: each preset's own, 100 and 300)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke run of {QUICK_STEPS} steps per job, written to tolerance-pipeline-quick.*")
    parser.add_argument("--jobs", nargs="+", choices=JOBS, default=list(JOBS), metavar="JOB",
                        help=f"jobs to calibrate ({', '.join(JOBS)})")
    parser.add_argument("--trainer-threads", type=int, default=2, metavar="T",
                        help="the trainer's CPU thread count (default 2; the validator replays with 1)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for tolerance-pipeline.json / .md")
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be at least 1")
    if args.trainer_threads < 1:
        parser.error("--trainer-threads must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    trainer_profile = local_profile(threads=args.trainer_threads)
    validator_profile = local_profile()
    started = time.perf_counter()
    doc: dict[str, Any] = {
        "machine": machine_info(),
        "settings": {
            "trainer_profile": dataclasses.asdict(trainer_profile),
            "validator_profile": dataclasses.asdict(validator_profile),
            "steps": args.steps if args.steps is not None else (QUICK_STEPS if args.quick else "preset"),
            "safety_factor": SAFETY_FACTOR,
            "attack_steps_per_job": ATTACK_STEPS,
            "bisection": {"low": EPS_LOW, "high": EPS_HIGH, "iterations": BISECT_ITERATIONS},
            "text_chars": TEXT_CHARS,
            "distance": "per unit, the max of the result bundle's, the handed-on gradient bundle's and the loss's "
                        "distance; a bundle's is the max over tensors of ||claim - replay||_2 / (||replay||_2 + 1e-30) "
                        "in float64, the loss's |loss_claim - loss_replay| / max(|loss_replay|, 1e-30)",
        },
        "jobs": {},
    }
    for name in args.jobs:
        spec, dataset = job_for(name)
        steps = args.steps if args.steps is not None else (QUICK_STEPS if args.quick else spec.steps)
        # The job's schedule runs over the steps actually taken, as a job of that length would.
        spec = with_tolerance(dataclasses.replace(spec, steps=steps), PROBE_TOLERANCE)
        if replay_tolerance(spec) is None:  # pragma: no cover - PROBE_TOLERANCE is not "0"
            raise RuntimeError("the calibration job must be in tolerance mode")
        doc["jobs"][name] = calibrate_job(name, spec, dataset, steps, trainer_profile)
    jobs = doc["jobs"]
    doc["summary"] = {
        "total_units": sum(j["units"] for j in jobs.values()),
        "total_bit_identical_units": sum(j["honest_distance"]["bit_identical"] for j in jobs.values()),
        "total_false_accusations": sum(j["false_accusations"] for j in jobs.values()),
        "tolerances": {name: j["tolerance"] for name, j in jobs.items()},
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_results(doc, args.out, "tolerance-pipeline-quick" if args.quick else "tolerance-pipeline", render_markdown)
    return 0


# ---------------------------------------------------------------------------
# Markdown


def render_markdown(doc: dict[str, Any]) -> str:
    s, jobs, summary = doc["settings"], doc["jobs"], doc["summary"]
    lines = [
        *preamble(doc, "Pipeline units: cross-profile tolerance calibration",
                  "python -m benchmarks.calibrate_pipeline_tolerance"),
        "",
        "CPU only: no CUDA trainer was measured, and these figures do not bound one.",
        "",
        "## Honest units",
        "",
        f"{summary['total_units']} honest units, **{summary['total_false_accusations']} false accusations** "
        "at the tolerances below. Each unit is replayed from the trainer's own inputs, so its distance is the "
        "rounding of its own stage and phase, not the drift of the stages before it.",
        "",
        "| job | steps | units | bit-identical | max | p99.9 | median | tolerance | tolerance ÷ max | false accusations | last evaluation |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, j in jobs.items():
        d = j["honest_distance"]
        ev = j["last_eval"]
        shown = "–" if ev is None else f"{ev['correct']} / {ev['total']} correct"
        lines.append(
            f"| {name} | {j['steps_run']} | {j['units']} | {d['bit_identical']} | {g(d['distance']['max'])} | "
            f"{g(d['distance']['p99.9'])} | {g(d['distance']['median'])} | `{j['tolerance']}` | "
            f"{g(j['tolerance_over_max_honest'])} | {j['false_accusations']} / {j['units']} | {shown} |"
        )
    lines += [
        "",
        "Per unit kind (phase and stage, in chain order). The last three columns give the largest distance of "
        "each part of the unit's output; the unit's distance is the largest of them.",
        "",
        "| job | unit kind | units | bit-identical | max | p99.9 | median | max: result | max: handed-on gradient | max: loss | false accusations |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, j in jobs.items():
        for kind, k in j["by_kind"].items():
            parts = k["parts"]

            def part(key: str, parts: dict[str, Any] = parts) -> str:
                return g(parts[key]["max"]) if key in parts else "–"

            d = k["distance"]
            lines.append(
                f"| {name} | {kind} | {k['units']} | {k['bit_identical']} | {g(d['max'])} | {g(d['p99.9'])} | "
                f"{g(d['median'])} | {part(RESULT)} | {part(GRADIENT)} | {part(LOSS)} | "
                f"{k['false_accusations']} / {k['units']} |"
            )
    mismatches = sum(j["part_mismatches"] for j in jobs.values())
    lines += [
        "",
        f"Units whose largest part differs from `compare_step`'s distance: {mismatches}.",
        "",
        "## Attacks at the calibrated tolerance",
        "",
        f"Every unit of one shard, at {s['attack_steps_per_job']} steps spread over the trajectory, is forged and "
        "checked with `check_unit`. Failure codes: 0 none (the forgery was accepted), 2 replay, 4 malformed. For sized perturbations ε is bisected "
        f"on a log scale between {g(s['bisection']['low'])} and {g(s['bisection']['high'])}; the table gives the "
        "smallest ε caught on every unit tried (the smallest over the units in brackets) and the unit kind that "
        "needed the largest.",
        "",
    ]
    for name, j in jobs.items():
        lines += [f"### {name} (tolerance `{j['tolerance']}`)", "",
                  "| attack | caught | failure | smallest distance of a caught forgery / smallest ε caught | note |",
                  "|---|---|---|---|---|"]
        for attack, a in j["attacks"].items():
            if a["kind"] == "fixed":
                lines.append(fixed_attack_row(attack, a, lambda u: str(u["failure"])))
            else:
                hi, lo = a["smallest_caught_max"], a["smallest_caught_min"]
                shown = ("not caught up to ε = 10 on every unit" if hi is None
                         else f"ε ≥ {g(hi)} ({g(lo)}), hardest: {a['hardest_kind']}")
                lines.append(f"| {attack} | bisection on {len(a['units'])} | – | {shown} | {a['note']} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
