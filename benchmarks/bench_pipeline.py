"""Pipeline-parallel training: the 4-node devnet on ``digits-mlp-pipeline`` beside its baselines, in one run.

Measured, in this order:

1. the devnet: a fresh 4-node devnet of real node processes trains the
   ``digits-mlp-pipeline`` preset (MLP 64-128-128-128-10, 4 stages of one
   layer, 4 micro-batches, 4 shards) for ``steps`` steps; time per step
   (submission to the first sighting of the last step's outcome, ÷ steps),
   blocks per step, the peak RSS (``VmHWM``) of every node process read just
   before the nodes stop, and verification ÷ training: the sums of the
   ``tdml_verification_seconds`` and ``tdml_training_seconds`` histograms of
   ``/metrics`` over the nodes, over the job's span;
2. the single-process reference (``run_reference``) of the same spec and
   steps: time per step, and whether its final root is the devnet's;
3. ``torch.distributed.pipelining`` with ``ScheduleGPipe``: 4 processes (one
   stage each, the job's layer bounds), gloo on 127.0.0.1, the job's initial
   weights, its 256 samples per step (the same rows as the job's 4 shards,
   concatenated) in its 4 micro-batches, SGD lr 0.05 momentum 0.9; time per
   step (after warm-up steps) and each process's peak RSS;
4. activation bytes per step: the project's stage units of one step run
   in-process (``compute_stage_unit``), summing the bundle sizes of the
   forward units' activation blobs and the handed-on activation-gradient
   blobs; for torch pipelining, the bytes of the tensors the stages send each
   other (activations forward, their gradients backward), from the shapes;
5. a stage trainer's memory, stage versus whole model: in a fresh process per
   case, the rise of the peak RSS over its baseline while the node's work for
   one shard's units of one stage at step 1 runs (decode the stage's committed
   bundle, with its optimizer state; build the skeleton model; decode the
   inputs; ``compute_stage_unit``), against the same for the whole model as
   one stage (S = 1), for the job's model and for a wide one (hidden 2048)
   where parameters dominate.

``python -m benchmarks.bench_pipeline [--quick] [--steps N]`` writes
``benchmarks/results/pipeline.json`` and ``pipeline.md`` (``pipeline-quick.*``
for ``--quick``); ``run_all --only pipeline`` runs the same measurements as a
section of the single-node results. The ``--torch-worker`` and
``--memory-probe`` arguments are this module's own child processes.

This module must never assert on a timing, leave a process running (every
child is waited for, killed past its deadline) or write outside
``benchmarks/results/`` and its temporary directories.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.common import BenchResult, Settings, machine_info, now_iso
from benchmarks.network.devnet_tools import read_metrics
from consensus.types import JobSpec, PipelineSpec

NAME = "pipeline"
TITLE = "Pipeline-parallel job: 4-node devnet vs reference vs torch.distributed.pipelining (GPipe)"
JOB = "digits-mlp-pipeline"
NODES = 4
STEPS = (50, 8)
"""Steps of the devnet, reference and torch runs: (full, quick)."""
TORCH_WARMUP_STEPS = 3
"""Untimed steps each torch pipelining run takes first (gloo connections, first-call costs)."""
WIDE_HIDDEN = 2048
"""Hidden width of the wide model of the memory comparison (5 hidden layers: 16.9 M parameters, 67 MB)."""
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
"""For the memory probes: glibc maps every large tensor on its own and gives it back when freed, so RSS follows tensors."""
JOB_TIMEOUT = 420.0
TORCH_TIMEOUT = 240.0
PROBE_TIMEOUT = 180.0
PROBES_AT_ONCE = 3
REFERENCE_RUNS = 3
HISTORY_LIMIT = 4
POLL_SECONDS = 0.25
RESULTS_DIR = Path(__file__).resolve().parent / "results"
MIB = 1024 * 1024


# ---------------------------------------------------------------------------
# /proc and /metrics


def vm_kib(pid: int | str, field: str) -> int:
    """A ``VmXXX`` line of ``/proc/<pid>/status`` in KiB (``field`` like ``"VmHWM"``)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise ValueError(f"no {field} in /proc/{pid}/status")


WORK_METRICS = (
    "tdml_training_seconds_sum",
    "tdml_training_seconds_count",
    "tdml_verification_seconds_sum",
    "tdml_verification_seconds_count",
)


# ---------------------------------------------------------------------------
# 1. The devnet


@dataclasses.dataclass(frozen=True, slots=True)
class DevnetFigures:
    seconds: float
    """Submission to the first sighting of the last step's outcome."""
    blocks: int
    final_root: str
    final_accuracy: float | None
    node_hwm_kib: tuple[int, ...]
    training_seconds: tuple[float, ...]
    """Per node: the rise of ``tdml_training_seconds_sum`` over the job's span."""
    verification_seconds: tuple[float, ...]
    units_trained: tuple[int, ...]
    units_replayed: tuple[int, ...]


def measure_devnet(spec: JobSpec, dataset: bytes) -> DevnetFigures:
    from benchmarks.network.devnet_tools import (
        check_alive,
        height,
        pids,
        scratch,
        wait_for,
        wait_quiet,
    )
    from tdml_node.devnet import Devnet, DevnetError, running_devnet, submit_job

    with scratch("tdml-bench-pipeline-") as base:
        devnet = Devnet.create(base / "net", NODES)
        with running_devnet(devnet):
            node_pids = pids(devnet)
            clients = [n.client(timeout=60) for n in devnet.nodes]
            for c in clients:
                c.put_blob(dataset)
            wait_for(lambda: all(len(c.call("tdml_peers")) == NODES - 1 for c in clients), 60, "the peers", devnet)
            wait_quiet(node_pids)
            client = clients[0]
            height0 = height(client) or 0
            before = [read_metrics(n.rpc_url, WORK_METRICS) for n in devnet.nodes]
            started = time.perf_counter()
            job_id = submit_job(client, devnet.client_key, devnet.genesis.chain_id, spec, dataset)
            last, seen_at = spec.steps - 1, None
            while seen_at is None:
                check_alive(devnet)
                history = client.call("tdml_getJobHistory", job_id, HISTORY_LIMIT) or []
                now = time.perf_counter() - started
                if any(int(o["step"]) == last for o in history):
                    seen_at = now
                elif now > JOB_TIMEOUT:
                    raise DevnetError(f"the job did not finish within {JOB_TIMEOUT:.0f}s")
                else:
                    time.sleep(POLL_SECONDS)
            height1 = height(client) or height0
            after = [read_metrics(n.rpc_url, WORK_METRICS) for n in devnet.nodes]
            hwm = tuple(vm_kib(p, "VmHWM") for p in node_pids)
            view = client.call("tdml_getJob", job_id) or {}

    def delta(name: str) -> tuple[float, ...]:
        return tuple(a.get(name, 0.0) - b.get(name, 0.0) for b, a in zip(before, after, strict=True))

    return DevnetFigures(
        seconds=seen_at,
        blocks=height1 - height0,
        final_root=str(view.get("modelRoot", "")),
        final_accuracy=(view.get("lastEval") or {}).get("testAccuracy"),
        node_hwm_kib=hwm,
        training_seconds=delta("tdml_training_seconds_sum"),
        verification_seconds=delta("tdml_verification_seconds_sum"),
        units_trained=tuple(int(v) for v in delta("tdml_training_seconds_count")),
        units_replayed=tuple(int(v) for v in delta("tdml_verification_seconds_count")),
    )


# ---------------------------------------------------------------------------
# 2. The single-process reference


def measure_reference(spec: JobSpec, dataset: bytes) -> tuple[float, str]:
    """(median seconds of ``REFERENCE_RUNS`` whole runs, final root as 0x-hex) of ``run_reference`` in this process.

    A one-step run first pays the process's first-call costs (lazy imports, kernels), a few seconds here.
    """
    from tdml_node.work.reference import run_reference

    run_reference(spec, dataset, steps=1)
    seconds, root = [], ""
    for _ in range(REFERENCE_RUNS):
        started = time.perf_counter()
        result = run_reference(spec, dataset)
        seconds.append(time.perf_counter() - started)
        root = "0x" + bytes(result.final_root).hex()
    return statistics.median(seconds), root


# ---------------------------------------------------------------------------
# 3. torch.distributed.pipelining, GPipe


@dataclasses.dataclass(frozen=True, slots=True)
class TorchFigures:
    seconds_per_step: float
    """The slowest rank's timed span ÷ steps."""
    hwm_kib: tuple[int, ...]
    bytes_per_step: int
    """Activations sent forward plus their gradients sent back, per step, summed over the stage boundaries."""
    final_loss: float


def _torch_worker(rank: int, port: int, steps: int, out_path: str) -> None:
    """One stage of the GPipe run: the job's layers ``bounds[rank]:bounds[rank+1]``; writes its figures as JSON."""
    import datetime

    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch import nn
    from torch.distributed.pipelining import PipelineStage, ScheduleGPipe

    from consensus.batches import compute_batch_indices
    from tdml_node.work.datasets import Dataset
    from tdml_node.work.jobs import get_job
    from tdml_node.work.models import build_model, layer_sequence

    torch.set_num_threads(1)
    spec, dataset = get_job(JOB, steps=steps)
    assert spec.pipeline is not None
    bounds, micro = spec.pipeline.layer_bounds, spec.pipeline.micro_batches
    world = len(bounds) - 1
    data = Dataset.decode(dataset, task=spec.task, seq_len=spec.seq_len, dtype=torch.float32)
    model = build_model(spec.model, seed=spec.seed, dtype=torch.float32)  # the job's initial weights
    module = nn.Sequential(*layer_sequence(model)[bounds[rank] : bounds[rank + 1]])
    lr = float(next(p.value for p in spec.optimizer.params if p.name == "lr"))
    momentum = float(next(p.value for p in spec.optimizer.params if p.name == "momentum"))
    optimizer = torch.optim.SGD(module.parameters(), lr=lr, momentum=momentum, foreach=False)

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))
    try:
        stage = PipelineStage(module, rank, world, torch.device("cpu"))
        schedule = ScheduleGPipe(stage, n_microbatches=micro, loss_fn=F.cross_entropy)

        def batch(t: int) -> tuple[torch.Tensor, torch.Tensor]:
            """The step's 256 rows: the job's shards' rows, in shard order."""
            rows: list[int] = []
            for k in range(spec.shards):
                rows += compute_batch_indices(seed=spec.seed, n=data.n_train, global_batch=spec.global_batch,
                                              shards=spec.shards, inner_steps=1, step=t, shard=k, inner=0)
            return data.batch(rows)

        losses: list[torch.Tensor] = []

        def train_step(t: int) -> None:
            x, y = batch(t)
            optimizer.zero_grad(set_to_none=True)
            if rank == 0:
                schedule.step(x)
            elif rank == world - 1:
                losses.clear()
                schedule.step(target=y, losses=losses)
            else:
                schedule.step()
            optimizer.step()

        for t in range(TORCH_WARMUP_STEPS):
            train_step(t)
        dist.barrier()
        started = time.perf_counter()
        for t in range(TORCH_WARMUP_STEPS, TORCH_WARMUP_STEPS + steps):
            train_step(t)
        dist.barrier()
        seconds = time.perf_counter() - started
        # What this stage sends per step: its output to the next (rank < world-1), the gradient of its input back (rank > 0).
        x, _ = batch(0)
        with torch.no_grad():
            h = x
            for layer in layer_sequence(model)[: bounds[rank]]:
                h = layer(h)
            out = module(h)
        sent_forward = out.numel() * out.element_size() if rank < world - 1 else 0
        sent_backward = h.numel() * h.element_size() if rank > 0 else 0
        figures = {
            "rank": rank,
            "seconds": seconds,
            "steps": steps,
            "vm_hwm_kib": vm_kib("self", "VmHWM"),
            "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "sent_forward_bytes": sent_forward,
            "sent_backward_bytes": sent_backward,
            "final_loss": float(torch.stack(losses).mean()) if losses else None,
        }
        Path(out_path).write_text(json.dumps(figures))
    finally:
        dist.destroy_process_group()


def _reap(procs: Sequence[subprocess.Popen[bytes]], deadline: float) -> None:
    """Wait for every child until ``deadline``; kill and wait for those still running after it."""
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)


def measure_torch_pipelining(steps: int) -> TorchFigures:
    """Four worker processes, one stage each; raises ``RuntimeError`` with the workers' stderr if they fail."""
    from tdml_node.devnet import free_port

    port = free_port()
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    with tempfile.TemporaryDirectory(prefix="tdml-bench-gpipe-") as tmp:
        outs = [Path(tmp) / f"rank{r}.json" for r in range(NODES)]
        errs = [Path(tmp) / f"rank{r}.err" for r in range(NODES)]
        procs: list[subprocess.Popen[bytes]] = []
        try:
            for r in range(NODES):
                with open(errs[r], "wb") as err:
                    procs.append(subprocess.Popen(
                        [sys.executable, "-m", "benchmarks.bench_pipeline", "--torch-worker", str(r), str(port),
                         str(steps), str(outs[r])],
                        stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=Path(__file__).resolve().parent.parent))
        finally:
            _reap(procs, time.monotonic() + TORCH_TIMEOUT)
        codes = [p.returncode for p in procs]
        if any(codes) or not all(o.exists() for o in outs):
            tails = "; ".join(f"rank {r} rc={codes[r]}: {_tail(errs[r])}" for r in range(NODES) if codes[r] or not outs[r].exists())
            raise RuntimeError(f"torch pipelining workers failed: {tails}")
        figures = [json.loads(o.read_text()) for o in outs]
    return TorchFigures(
        seconds_per_step=max(f["seconds"] for f in figures) / steps,
        hwm_kib=tuple(int(f["vm_hwm_kib"]) for f in figures),
        bytes_per_step=sum(int(f["sent_forward_bytes"]) + int(f["sent_backward_bytes"]) for f in figures),
        final_loss=float(figures[-1]["final_loss"]),
    )


def _tail(path: Path, chars: int = 600) -> str:
    text = path.read_text(errors="replace").strip() if path.exists() else ""
    lines = [line for line in text.splitlines() if line.strip()]
    return (" | ".join(lines[-3:]) if lines else "(no stderr)")[-chars:]


# ---------------------------------------------------------------------------
# 4. Activation bytes of one step, from the project's own stage units


@dataclasses.dataclass(frozen=True, slots=True)
class StepBlobs:
    activation_bundle_bytes: int
    """Result bundles of the forward units (``act/<m>``), summed over the step."""
    activation_gradient_bundle_bytes: int
    """Handed-on gradient bundles (``act_grad/<m>``) of the last and backward units."""
    activation_tensor_bytes: int
    """The raw float32 bytes of those tensors (what the bundles wrap)."""
    parameter_gradient_bundle_bytes: int
    """Result bundles of the last and backward units (parameter gradients): the step's other blobs."""
    blobs: int


def run_units(
    model: Any, spec: JobSpec, data: Any, step: int, states: Sequence[Any], units: Iterable[int],
) -> tuple[dict[int, bytes], dict[int, bytes]]:
    """The given units of ``step`` in chain order, each from the outputs before it: (results, handed-on gradients)."""
    from consensus import pipeline
    from tdml_node.work.stage_unit import compute_stage_unit
    from tdml_node.work.tensors import decode_bundle

    results: dict[int, bytes] = {}
    handed: dict[int, bytes] = {}
    for u in units:
        place = pipeline.place_of(spec, u)
        inputs = [decode_bundle(handed[src] if gradient else results[src]) for src, gradient in pipeline.input_units(spec, u)]
        out = compute_stage_unit(model, spec, data, step, u, states[place.stage], inputs)
        results[u] = out.result
        if out.gradient is not None:
            handed[u] = out.gradient
    return results, handed


def compute_step_blobs(spec: JobSpec, dataset: bytes, step: int = 0) -> StepBlobs:
    """Every unit of step ``step`` from the initial state, in chain order, as a trainer computes it."""
    from consensus import pipeline
    from consensus.pipeline import PHASE_FORWARD
    from tdml_node.work.datasets import Dataset
    from tdml_node.work.models import build_model, build_model_skeleton
    from tdml_node.work.pipeline_state import encode_stage_states
    from tdml_node.work.profile import apply_profile, torch_dtype
    from tdml_node.work.tensors import decode_bundle

    apply_profile(spec.profile)
    dtype = torch_dtype(spec.profile)
    data = Dataset.decode(dataset, task=spec.task, seq_len=spec.seq_len, dtype=dtype)
    states = [decode_bundle(b) for b in encode_stage_states(build_model(spec.model, seed=spec.seed, dtype=dtype), spec)]
    results, handed = run_units(build_model_skeleton(spec.model, dtype=dtype), spec, data, step, states,
                                range(pipeline.units_per_step(spec)))

    def raw_bytes(bundle: bytes) -> int:
        return sum(t.numel() * t.element_size() for t in decode_bundle(bundle).values())

    forward = [u for u in results if pipeline.place_of(spec, u).phase == PHASE_FORWARD]
    act = sum(len(results[u]) for u in forward)
    grads = sum(len(b) for u, b in results.items() if u not in forward)
    act_grad = sum(len(b) for b in handed.values())
    raw = sum(raw_bytes(results[u]) for u in forward) + sum(raw_bytes(b) for b in handed.values())
    return StepBlobs(act, act_grad, raw, grads, len(results) + len(handed))


# ---------------------------------------------------------------------------
# 5. Unit memory: one stage's units versus a whole-model unit, each in a fresh process


def memory_spec(hidden: int, whole: bool) -> JobSpec:
    """The job's spec with an MLP of width ``hidden``; ``whole``: one stage holding every layer (S = 1).

    The wide model (``WIDE_HIDDEN``) has four square hidden layers between its
    thin input and output layers, cut (0, 2, 3, 4, 6), so each of its four
    stages holds a quarter of the parameters and 1/S can be read off.
    """
    from tdml_node.work.jobs import get_job
    from tdml_node.work.models import make_model_spec

    spec, _ = get_job(JOB, steps=1)
    layout = spec.pipeline
    assert layout is not None
    if hidden == WIDE_HIDDEN:
        model = make_model_spec("mlp", in_dim=64, hidden=hidden, layers=5, classes=10)
        layout = PipelineSpec((0, 2, 3, 4, 6), layout.micro_batches)
    else:
        model = make_model_spec("mlp", in_dim=64, hidden=hidden, layers=3, classes=10)
    spec = dataclasses.replace(spec, model=model, pipeline=layout)
    if whole:
        bounds = layout.layer_bounds
        spec = dataclasses.replace(spec, pipeline=PipelineSpec((bounds[0], bounds[-1]), layout.micro_batches))
    return spec


def _memory_probe(case: str, hidden: int) -> dict[str, Any]:
    """What a stage trainer's process takes on for one case: ``whole`` (the S = 1 unit) or ``stage<s>``.

    Unmeasured first: step 0 is trained (every unit) and aggregated, so the
    state the case reads at step 1 carries its optimizer state (momentum), as
    a committed bundle does; shard 0's units before the case's are run for
    the inputs it reads, and the case's units once (first-call costs). Then
    everything but the dataset and the bytes the trainer would fetch (its
    stage's bundle, its inputs) is dropped, freed memory is handed back
    (``malloc_trim``), and the peak is reset to the current RSS
    (``/proc/self/clear_refs``, 5). Measured: what the node does, decode the
    stage bundle, build the skeleton model, decode each unit's inputs and run
    the unit; the peak is read after.
    """
    from consensus import pipeline
    from tdml_node.work.datasets import Dataset
    from tdml_node.work.jobs import get_job
    from tdml_node.work.models import build_model, build_model_skeleton
    from tdml_node.work.pipeline_exec import aggregate_step
    from tdml_node.work.pipeline_state import encode_stage_states
    from tdml_node.work.profile import apply_profile, torch_dtype
    from tdml_node.work.stage import stage_parameter_names
    from tdml_node.work.stage_unit import compute_stage_unit
    from tdml_node.work.tensors import decode_bundle

    whole = case == "whole"
    stage = 0 if whole else int(case.removeprefix("stage"))
    spec = memory_spec(hidden, whole)
    _, dataset = get_job(JOB, steps=1)
    apply_profile(spec.profile)
    dtype = torch_dtype(spec.profile)
    data = Dataset.decode(dataset, task=spec.task, seq_len=spec.seq_len, dtype=dtype)
    model = build_model(spec.model, seed=spec.seed, dtype=dtype)
    states = [decode_bundle(b) for b in encode_stage_states(model, spec)]
    skeleton = build_model_skeleton(spec.model, dtype=dtype)
    results, _ = run_units(skeleton, spec, data, 0, states, range(pipeline.units_per_step(spec)))
    step0 = aggregate_step(model, spec, 0, states, [decode_bundle(results[u]) for u in sorted(results)], data)
    bundles = step0.blobs[:-1]  # the stage bundles; the last blob is the PipelineState naming them
    states = [decode_bundle(b) for b in bundles]
    mine = [u for u in range(pipeline.units_per_shard(spec)) if pipeline.place_of(spec, u).stage == stage]
    results, handed = run_units(skeleton, spec, data, 1, states, range(mine[-1]))
    fetched = {u: [handed[src] if g else results[src] for src, g in pipeline.input_units(spec, u)] for u in mine}
    for u in mine:  # first-call costs (autograd's engine, kernels), unmeasured
        compute_stage_unit(skeleton, spec, data, 1, u, states[stage], [decode_bundle(b) for b in fetched[u]])
    stage_bundle = bundles[stage]
    stage_params = sum(p.numel() for n, p in model.named_parameters() if n in set(stage_parameter_names(model, spec, stage)))
    model_params = sum(p.numel() for p in model.parameters())
    del model, states, results, handed, step0, bundles, skeleton
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    base_rss = vm_kib("self", "VmRSS")
    state = decode_bundle(stage_bundle)
    skeleton = build_model_skeleton(spec.model, dtype=dtype)
    outputs = [compute_stage_unit(skeleton, spec, data, 1, u, state, [decode_bundle(b) for b in fetched[u]]) for u in mine]
    peak = vm_kib("self", "VmHWM")
    return {
        "case": case,
        "hidden": hidden,
        "units": len(mine),
        "stage_parameters": stage_params,
        "model_parameters": model_params,
        "stage_bundle_bytes": len(stage_bundle),
        "input_bytes": sum(len(b) for bs in fetched.values() for b in bs),
        "baseline_rss_kib": base_rss,
        "peak_kib": peak,
        "rise_kib": peak - base_rss,
        "output_bytes": sum(len(o.result) + len(o.gradient or b"") for o in outputs),
        "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


def measure_unit_memory(cases: Sequence[tuple[str, int]]) -> dict[tuple[str, int], dict[str, Any]]:
    """Each (case, hidden) in its own fresh process, ``PROBES_AT_ONCE`` at a time (RSS is per process)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", **MALLOC_ENV)

    def probe(case: str, hidden: int) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.bench_pipeline", "--memory-probe", case, str(hidden)],
            capture_output=True, text=True, timeout=PROBE_TIMEOUT, env=env, check=False,
            cwd=Path(__file__).resolve().parent.parent)
        if done.returncode != 0:
            raise RuntimeError(f"memory probe {case} (hidden {hidden}) failed: {done.stderr.strip()[-600:]}")
        figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return figures

    with ThreadPoolExecutor(max_workers=PROBES_AT_ONCE) as pool:
        futures = {key: pool.submit(probe, *key) for key in cases}
        return {key: f.result() for key, f in futures.items()}


# ---------------------------------------------------------------------------
# The whole benchmark


def run(settings: Settings, steps: int | None = None) -> BenchResult:
    from tdml_node.work.jobs import get_job

    steps = steps or settings.pick(*STEPS)
    spec, dataset = get_job(JOB, steps=steps)
    assert spec.pipeline is not None
    res = BenchResult(NAME, TITLE, 1)
    stages = len(spec.pipeline.layer_bounds) - 1

    _progress(f"devnet: {NODES} nodes, {JOB}, {steps} steps")
    load0 = os.getloadavg()
    net = measure_devnet(spec, dataset)
    load1 = os.getloadavg()
    _progress(f"devnet done: {net.seconds:.1f}s, {net.blocks} blocks; reference …")
    ref_seconds, ref_root = measure_reference(spec, dataset)
    _progress(f"reference done: {ref_seconds:.2f}s; torch pipelining …")
    torch_error: str | None = None
    gpipe: TorchFigures | None = None
    try:
        gpipe = measure_torch_pipelining(steps)
    except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as exc:
        torch_error = repr(exc)
    _progress("torch pipelining " + ("done" if gpipe else f"FAILED: {torch_error}") + "; step blobs and memory probes …")
    blobs = compute_step_blobs(spec, dataset)
    stage_cases = [f"stage{s}" for s in range(stages)]
    # The job's model: its largest stage (a hidden layer) and the whole; the wide model: every stage and the whole.
    probes = [("stage1", 128), ("whole", 128), *((c, WIDE_HIDDEN) for c in [*stage_cases, "whole"])]
    measured = measure_unit_memory(probes)
    memory: dict[int, dict[str, dict[str, Any]]] = {}
    for (case, hidden), figures in measured.items():
        memory.setdefault(hidden, {})[case] = figures
    _progress("memory probes done")

    net_ms = net.seconds / steps * 1e3
    ref_ms = ref_seconds / steps * 1e3
    res.row("time per step: 4-node devnet (every unit verified)", "ms",
            baseline_label="single-process reference (run_reference)").add(net_ms, ref_ms)
    if gpipe is not None:
        res.row("time per step: 4-node devnet", "ms",
                baseline_label="torch pipelining ScheduleGPipe, gloo, 4 processes").add(net_ms, gpipe.seconds_per_step * 1e3)
        res.row("time per step: torch pipelining GPipe, 4 processes", "ms",
                baseline_label="single-process reference").add(gpipe.seconds_per_step * 1e3, ref_ms)
    res.row("blocks per step: 4-node devnet", "blocks").add(net.blocks / steps)
    act_bytes = blobs.activation_bundle_bytes + blobs.activation_gradient_bundle_bytes
    if gpipe is not None:
        res.row("activation + activation-gradient bytes per step (devnet: bundle sizes)", "bytes",
                baseline_label="torch pipelining: tensor bytes sent between stages").add(act_bytes, gpipe.bytes_per_step)
    else:
        res.row("activation + activation-gradient bytes per step (devnet: bundle sizes)", "bytes").add(act_bytes)
    net_peak = max(net.node_hwm_kib) / 1024
    if gpipe is not None:
        res.row("peak RSS per process, largest (VmHWM)", "MiB",
                baseline_label="torch pipelining process, largest").add(net_peak, max(gpipe.hwm_kib) / 1024)
    else:
        res.row("peak RSS per process, largest (VmHWM)", "MiB").add(net_peak)
    for hidden, cases in memory.items():
        largest = max((c for c in cases if c != "whole"), key=lambda c: cases[c]["rise_kib"])
        res.row(f"stage trainer's peak-RSS rise, hidden {hidden}: its stage's state, inputs and units "
                f"(largest: {largest}, shard 0)", "MiB", baseline_label="the whole model as one stage (S = 1), shard 0").add(
            cases[largest]["rise_kib"] / 1024, cases["whole"]["rise_kib"] / 1024)
    train_s, verify_s = sum(net.training_seconds), sum(net.verification_seconds)
    res.row("verification ÷ training seconds, summed over the nodes", "ratio").add(
        verify_s / train_s if train_s else float("nan"))

    res.facts.update({
        "job": f"{JOB}: MLP 64-128-128-128-10, layer bounds {list(spec.pipeline.layer_bounds)}, "
               f"{spec.pipeline.micro_batches} micro-batches, {spec.shards} shards, global batch {spec.global_batch}",
        "steps (devnet, reference, torch pipelining timed)": steps,
        "devnet seconds (submission to last step seen)": round(net.seconds, 2),
        "devnet blocks over the job": net.blocks,
        "devnet final test accuracy": net.final_accuracy,
        "devnet final root equals the reference's": net.final_root.lower() == ref_root.lower(),
        "reference seconds": round(ref_seconds, 3),
        "devnet node peak RSS (VmHWM), MiB": [round(k / 1024, 1) for k in net.node_hwm_kib],
        "devnet training seconds per node (tdml_training_seconds_sum)": [round(v, 3) for v in net.training_seconds],
        "devnet verification seconds per node (tdml_verification_seconds_sum)":
            [round(v, 3) for v in net.verification_seconds],
        "devnet units trained / replayed per node": [f"{a}/{b}" for a, b in
                                                     zip(net.units_trained, net.units_replayed, strict=True)],
        "devnet replays per unit trained (all nodes)": round(sum(net.units_replayed) / max(1, sum(net.units_trained)), 3),
        "devnet training + verification seconds per node, mean": round((train_s + verify_s) / NODES, 2),
        "devnet activation bundle bytes per step": blobs.activation_bundle_bytes,
        "devnet activation-gradient bundle bytes per step": blobs.activation_gradient_bundle_bytes,
        "devnet activation + gradient raw tensor bytes per step": blobs.activation_tensor_bytes,
        "devnet parameter-gradient bundle bytes per step (not activations)": blobs.parameter_gradient_bundle_bytes,
        "devnet output blobs per step": blobs.blobs,
        "units per shard per step (2S - 1)": 2 * stages - 1,
        "load average (1 min) before → after the devnet": f"{load0[0]:.2f} → {load1[0]:.2f}",
    })
    if gpipe is not None:
        res.facts["torch pipelining peak RSS per process (VmHWM), MiB"] = [round(k / 1024, 1) for k in gpipe.hwm_kib]
        res.facts["torch pipelining mean micro-batch loss of its last step"] = round(gpipe.final_loss, 5)
    else:
        res.facts["torch pipelining error"] = torch_error
    for hidden, cases in memory.items():
        res.facts[f"stage trainer's peak-RSS rise, hidden {hidden}, MiB"] = [
            f"{c} {cases[c]['rise_kib'] / 1024:.2f}" for c in cases]
        res.facts[f"parameters held, hidden {hidden}"] = [f"{c} {cases[c]['stage_parameters']:,}" for c in cases]
        res.facts[f"stage state bundle bytes fetched, hidden {hidden}"] = [
            f"{c} {cases[c]['stage_bundle_bytes']:,}" for c in cases]
        res.facts[f"output bundle bytes of the probed units, hidden {hidden}"] = [
            f"{c} {cases[c]['output_bytes']:,}" for c in cases]
    res.notes = [
        "One run of each (no repeats: the devnet alone takes a minute or more here); the machine is a loaded 2-core VM "
        "shared with other work, so compare the ratios, not the absolute figures.",
        "Devnet time per step: from submitting the job to first seeing its last step's outcome over RPC (polled every "
        f"{POLL_SECONDS} s), ÷ steps; it includes the first units' start-up. Blocks: node 0's height rise over that span.",
        f"Reference time per step: the median of {REFERENCE_RUNS} whole run_reference calls (dataset decode, model "
        "build, per-step root hashing, evaluation every 20 steps) ÷ steps, in the benchmark's own process on one "
        "thread, after a one-step call that pays the first-call costs.",
        f"Torch pipelining: {NODES} processes, one stage (the job's layer bounds) each, gloo over 127.0.0.1, one thread "
        f"each, ScheduleGPipe with the job's {spec.pipeline.micro_batches} micro-batches over the step's "
        f"{spec.global_batch} rows (the job's 4 shards' rows concatenated: micro-batches of "
        f"{spec.global_batch // spec.pipeline.micro_batches}, where the devnet runs 4 shards × 4 micro-batches of "
        f"{spec.global_batch // spec.shards // spec.pipeline.micro_batches}; the same mean gradient), "
        "loss cross-entropy per micro-batch with scale_grads, SGD lr 0.05 momentum 0.9 per stage; the job's initial "
        f"weights. {TORCH_WARMUP_STEPS} untimed warm-up steps, then the slowest rank's span between two barriers ÷ steps. "
        "It verifies nothing and is not bitwise equal to the reference.",
        "Activation bytes: every unit of step 0 computed in-process with compute_stage_unit from the initial state "
        "(bundle sizes do not depend on the values); the devnet figure is the encoded size of the forward units' "
        "activation bundles plus the handed-on activation-gradient bundles, each counted once as produced (the "
        "parameter-gradient results are listed apart). Each blob is then fetched by its readers and replayers, which "
        "this figure does not multiply in. The torch figure is numel × 4 bytes of each stage's output (sent forward) "
        "and input gradient (sent back), per step.",
        "Peak RSS per process: VmHWM of /proc/<pid>/status of each node process read after the last step, before the "
        "nodes stop (a node also holds consensus, storage and RPC state), and of each torch process at its end.",
        "Stage trainer's peak-RSS rise: a fresh process per case (glibc mmap threshold fixed at 64 KiB so freed "
        "tensors leave RSS). Unmeasured: step 0 trained and aggregated (so the step-1 stage bundle holds SGD momentum, "
        "as a committed one does), shard 0's units before the case's run for its inputs, the case's units run once "
        "(first-call costs), everything but the dataset and the fetched bytes (the stage's bundle, the inputs) "
        "dropped, malloc_trim(0), the peak reset (echo 5 > /proc/self/clear_refs). Measured, as the node does it: "
        "decode the stage bundle, build the skeleton model (meta device), decode each unit's inputs and run shard "
        "0's units of the stage (forward and backward; the last stage: its one unit); the rise of VmHWM over the "
        "baseline RSS is reported. 'whole' is the same for the whole model as one stage (S = 1). The job's own "
        "model (hidden 128, 42,634 parameters) is small beside the allocator's granularity, so the same job with a "
        f"wide MLP (hidden {WIDE_HIDDEN}, 5 hidden layers, cut (0, 2, 3, 4, 6) so each stage holds a quarter of the "
        "parameters; via dataclasses.replace of its spec) is measured too.",
        "Verification ÷ training: the rise, over the job's span, of the tdml_verification_seconds and "
        "tdml_training_seconds histogram sums of every node's /metrics, summed over the nodes.",
    ]
    return res


def _progress(text: str) -> None:
    print(f"[bench pipeline] {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Results and the command line


def what_this_shows(section: dict[str, Any]) -> str:
    """The paragraph of the markdown that reads the figures, written from them (no figure it does not hold)."""
    rows = {r["label"]: r for r in section["rows"]}
    facts = section["facts"]

    def ratio(label: str) -> float | None:
        row = rows.get(label)
        return None if row is None or "ratio_ours_over_baseline" not in row else float(row["ratio_ours_over_baseline"]["median"])

    def ours(prefix: str) -> dict[str, Any] | None:
        return next((r for r in section["rows"] if r["label"].startswith(prefix)), None)

    vs_ref = ratio("time per step: 4-node devnet (every unit verified)")
    vs_torch = ratio("time per step: 4-node devnet")
    torch_ref = ratio("time per step: torch pipelining GPipe, 4 processes")
    parts = []
    if vs_ref is not None:
        parts.append(f"On this loaded machine the 4-node devnet took {vs_ref:.1f}× the single-process reference's time per step")
    if vs_torch is not None and torch_ref is not None:
        parts.append(f" and {vs_torch:.1f}× that of torch.distributed.pipelining's GPipe on 4 gloo processes, which "
                     f"itself took {torch_ref:.2f}× the reference")
    else:
        parts.append(f"; torch pipelining did not run here ({facts.get('torch pipelining error')})")
    blocks = rows["blocks per step: 4-node devnet"]["ours"]["median"]
    units = facts.get("units per shard per step (2S - 1)")
    parts.append(f". A devnet step took {blocks:.1f} blocks: each shard's {units} units are accepted in chain order, "
                 "each once its inputs are, so a step spans several consensus heights; over the "
                 f"{facts['devnet seconds (submission to last step seen)']} s of the job a node spent on average "
                 f"{facts['devnet training + verification seconds per node, mean']} s training and replaying units, "
                 "so the per-block cost, not the model's compute, sets the step time.")
    act = ours("activation")
    if act is not None and "ratio_ours_over_baseline" in act:
        parts.append(f" The activation and activation-gradient blobs of a step ({act['ours']['median']:,.0f} bytes of "
                     f"bundles) are {act['ratio_ours_over_baseline']['median']:.3f}× the tensor bytes GPipe sends "
                     "between stages: the same tensors plus the bundles' framing, before each blob is fetched by its "
                     "readers and replayers.")
    mem = [r for r in section["rows"] if r["label"].startswith("stage trainer's peak-RSS rise")]
    if mem:
        texts = [f"{r['ratio_ours_over_baseline']['median']:.2f}× (hidden {r['label'].split('hidden ')[1].split(':')[0]})"
                 for r in mem]
        parts.append(" A stage trainer's work for its largest stage (its committed bundle, inputs and units) raised a "
                     "fresh process's peak RSS by " + " and ".join(texts) + " what the same work for the whole "
                     "model as one stage did")
        peak = ours("peak RSS per process")
        if peak is not None:
            parts.append(f", while each node process peaked at up to {peak['ours']['median']:.0f} MiB, most of it "
                         "interpreter, torch and node state")
        parts.append(".")
    ver = rows["verification ÷ training seconds, summed over the nodes"]["ours"]["median"]
    parts.append(f" Verification cost {ver:.2f}× the training time, summed over the nodes (the goal is at most 0.1×): "
                 f"every unit was replayed {facts['devnet replays per unit trained (all nodes)']} times on average, "
                 "each replay recomputing the unit.")
    return "".join(parts)


def render_markdown(doc: dict[str, Any]) -> str:
    from benchmarks.run_all import section_lines

    m = doc["machine"]
    section = doc["benchmarks"][NAME]
    lines = [
        "# Pipeline-parallel job: devnet vs reference vs torch pipelining",
        "",
        f"Machine: {m['cpu_count']} CPUs ({m['cpus_usable']} usable, {m['cpu_model']}), {m['platform']}; "
        f"Python {m['python']}, torch {m['torch']}; load average at start "
        f"{', '.join(f'{v:.2f}' for v in m['load_average_at_start'])}. Run {m['date']}"
        f"{' (quick smoke run)' if doc.get('quick') else ''}. Command: `{doc['command']}`.",
        "",
        "The machine is shared and was loaded: compare ratios rather than absolute figures.",
    ]
    if "error" not in section:
        lines += ["", "## What this shows", "", what_this_shows(section)]
    lines += section_lines(NAME, section)
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["--torch-worker"]:
        rank, port, steps, out = args_list[1:5]
        _torch_worker(int(rank), int(port), int(steps), out)
        return 0
    if args_list[:1] == ["--memory-probe"]:
        print(json.dumps(_memory_probe(args_list[1], int(args_list[2]))))
        return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_pipeline", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"a smoke run ({STEPS[1]} steps)")
    parser.add_argument("--steps", type=int, default=None, help=f"steps of every run (default {STEPS[0]}, quick {STEPS[1]})")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for the result files")
    args = parser.parse_args(args_list)
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be at least 1")
    started = time.perf_counter()
    doc: dict[str, Any] = {"machine": machine_info(), "quick": args.quick}
    measured_at = now_iso()
    result = run(Settings(quick=args.quick), steps=args.steps)
    result.seconds = time.perf_counter() - started
    result.measured_at = measured_at
    doc["benchmarks"] = {NAME: result.to_json()}
    doc["command"] = " ".join(["python -m benchmarks.bench_pipeline", *args_list])
    doc["seconds"] = round(time.perf_counter() - started, 1)
    doc["load_average_at_end"] = list(os.getloadavg())
    stem = "pipeline-quick" if args.quick else "pipeline"
    out_dir: Path = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(doc, indent=2) + "\n")
    markdown = render_markdown(doc)
    md_path.write_text(markdown)
    print(markdown)
    _progress(f"wrote {json_path} and {md_path} in {doc['seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
