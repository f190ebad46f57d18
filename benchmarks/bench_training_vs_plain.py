"""Workload W on a one-node chain against the plain PyTorch loop of BENCHMARKS.md.

Per repeat, in this order and in one run:

- the plain loop exactly as workload W defines it (digits split and scaler,
  MLP 64-128-128-10 after ``torch.manual_seed(0)``, SGD lr 0.05 momentum 0.9,
  batch 256, ``randperm`` batch schedule seeded 0, one thread): wall and CPU
  time of the training loop, final test accuracy, digest of the final weights;
- the ``digits-mlp`` job (K = 4 shards of 64 samples, H = 1, the same number
  of steps) on a real one-node devnet process: wall time from submission to
  the job's ``done``, blocks, and the node process's CPU time over the job
  (``/proc/<pid>/stat``), its mean commit time (``/metrics``), the final root
  and test accuracy it reports;
- the same units and aggregations run by calling the executor in this process
  (``train_unit`` per shard, ``check_unit`` as the checker does, then
  ``step_outcome``), each timed with ``time.process_time``: the pure training
  CPU time the node's CPU time is compared with;
- the single-process reference run (``run_reference``): its time and root.

The job samples its batches by the protocol's SHAKE-256 permutation rather
than by ``torch.randperm``; the amount of work (steps × 256 samples) is equal.

This module must never assert on a timing, leave a node process running, or
touch anything but temporary directories.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import (
    BenchResult,
    Settings,
    executor_for,
    job_state,
    proc_cpu_seconds,
    thread_cpu_seconds,
)
from consensus.crypto import Keypair
from consensus.types import JobSpec, WorkSubmission
from consensus.work import check_unit, sample_for
from tdml_node.devnet import Devnet, DevnetError, running_devnet, submit_job
from tdml_node.work.jobs import get_job
from tdml_node.work.reference import run_reference

NAME = "training_vs_plain"
TITLE = "Workload W: one-node chain vs plain PyTorch loop"

BATCH = 256
POLL_PROBES = 100
CHAIN_ID_FOR_SAMPLING = "tdml-bench"

# ---------------------------------------------------------------------------
# The plain loop of workload W


@lru_cache(maxsize=1)
def _digits_w() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """W's data: digits, 80/20 split with random_state 0, scaler fitted on the train part, float32."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=0)
    scaler = StandardScaler().fit(x_train)
    return (
        torch.tensor(scaler.transform(x_train), dtype=torch.float32),
        torch.tensor(y_train, dtype=torch.int64),
        torch.tensor(scaler.transform(x_test), dtype=torch.float32),
        torch.tensor(y_test, dtype=torch.int64),
    )


def _w_schedule(n: int, steps: int) -> torch.Tensor:
    """Concatenated ``randperm(n)`` epochs from a generator seeded 0, cut into rows of 256."""
    gen = torch.Generator().manual_seed(0)
    need = steps * BATCH
    epochs = -(-need // n)
    return torch.cat([torch.randperm(n, generator=gen) for _ in range(epochs)])[:need].view(steps, BATCH)


@dataclass(frozen=True, slots=True)
class PlainRun:
    seconds: float
    cpu_seconds: float
    accuracy: float
    digest: str


def run_plain(steps: int) -> PlainRun:
    """Train W's MLP for ``steps`` steps in a plain loop on one thread; only the loop is timed."""
    x_train, y_train, x_test, y_test = _digits_w()
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(False)  # a plain loop runs with torch's defaults
    try:
        order = _w_schedule(x_train.shape[0], steps)
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)
        )
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for t in range(steps):
            idx = order[t]
            opt.zero_grad()
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
        cpu = time.process_time() - cpu0
        wall = time.perf_counter() - wall0
        with torch.no_grad():
            accuracy = float((model(x_test).argmax(-1) == y_test).float().mean())
        h = hashlib.sha256()
        for p in model.parameters():
            h.update(p.detach().contiguous().numpy().tobytes())
        return PlainRun(wall, cpu, accuracy, h.hexdigest())
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


# ---------------------------------------------------------------------------
# The job on a one-node devnet


@dataclass(frozen=True, slots=True)
class ChainRun:
    seconds: float
    node_cpu_seconds: float
    ready_seconds: float
    blocks: int
    final_root: str
    accuracy: float | None
    units_verified: int | None
    commit_mean_seconds: float | None
    polls: int
    poll_cpu_seconds: float
    main_thread_cpu: float
    busiest_other_thread_cpu: float
    remaining_threads_cpu: float


def _commit_totals(rpc_url: str) -> tuple[float, float] | None:
    """(sum, count) of the node's ``tdml_commit_seconds`` histogram, or None when it has none."""
    try:
        with urllib.request.urlopen(rpc_url + "/metrics", timeout=10) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    found = dict(re.findall(r"^tdml_commit_seconds_(sum|count)\s+(\S+)$", text, flags=re.MULTILINE))
    if "sum" not in found or "count" not in found:
        return None
    return float(found["sum"]), float(found["count"])


def _wait_idle(pid: int, *, window: float = 0.5, busy_below: float = 0.15, timeout: float = 60.0) -> None:
    """Wait until the node's start-up work (torch warm-up) is over: little CPU used over ``window``."""
    deadline = time.monotonic() + timeout
    last = proc_cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(window)
        now = proc_cpu_seconds(pid)
        if now - last < busy_below * window:
            return
        last = now


def run_chain(spec: JobSpec, dataset: bytes, *, poll: float, timeout: float) -> ChainRun:
    """Start a fresh one-node devnet, submit the job, follow it to ``done`` through RPC, stop the node."""
    base = Path(tempfile.mkdtemp(prefix="tdml-bench-chain-"))
    try:
        devnet = Devnet.create(base / "net", 1)
        node = devnet.nodes[0]
        launched = time.perf_counter()
        with running_devnet(devnet):
            ready = time.perf_counter() - launched
            if node.process is None:
                raise DevnetError("the devnet did not start its node")
            pid = node.process.pid
            client = node.client()
            client.put_blob(dataset)
            _wait_idle(pid)
            height0 = int(client.call("tdml_blockNumber"))
            commits0 = _commit_totals(node.rpc_url)
            threads0 = thread_cpu_seconds(pid)
            cpu0 = proc_cpu_seconds(pid)
            started = time.perf_counter()
            job_id = submit_job(client, devnet.client_key, devnet.genesis.chain_id, spec, dataset)
            view: dict[str, Any] | None = None
            polls = 0
            while True:
                if node.process.poll() is not None:
                    raise DevnetError(f"the node exited during the job:\n{devnet.log_tail(node)}")
                view = client.call("tdml_getJob", job_id)
                polls += 1
                if view is not None and view.get("status") == "done":
                    break
                if time.perf_counter() - started > timeout:
                    raise DevnetError(f"the job did not finish within {timeout:.0f}s")
                time.sleep(poll)
            seconds = time.perf_counter() - started
            cpu = proc_cpu_seconds(pid) - cpu0
            threads1 = thread_cpu_seconds(pid)
            height1 = int(client.call("tdml_blockNumber"))
            commits1 = _commit_totals(node.rpc_url)
            trainer = client.call("tdml_getTrainer", "0x" + node.keypair.address.hex()) or {}
            # What one of our polls costs the node, so its share of the job's CPU time is known.
            cpu_before_polls = proc_cpu_seconds(pid)
            for _ in range(POLL_PROBES):
                client.call("tdml_getJob", job_id)
            poll_cpu = (proc_cpu_seconds(pid) - cpu_before_polls) / POLL_PROBES
        commit_mean = None
        if commits0 is not None and commits1 is not None and commits1[1] > commits0[1]:
            commit_mean = (commits1[0] - commits0[0]) / (commits1[1] - commits0[1])
        last_eval = view.get("lastEval") or {}
        # Threads that ended during the job are missing here; their time shows only in the process total.
        deltas = {tid: t - threads0.get(tid, 0.0) for tid, t in threads1.items()}
        main = deltas.pop(pid, 0.0)
        busiest = max(deltas.values(), default=0.0)
        return ChainRun(
            seconds=seconds,
            node_cpu_seconds=cpu,
            ready_seconds=ready,
            blocks=height1 - height0,
            final_root=str(view["modelRoot"]),
            accuracy=last_eval.get("testAccuracy"),
            units_verified=trainer.get("unitsVerified"),
            commit_mean_seconds=commit_mean,
            polls=polls,
            poll_cpu_seconds=poll_cpu,
            main_thread_cpu=main,
            busiest_other_thread_cpu=busiest,
            remaining_threads_cpu=sum(deltas.values()) - busiest,
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------------------
# The same work through the executor, in this process


@dataclass(frozen=True, slots=True)
class ExecutorRun:
    train_cpu: float
    replay_cpu: float
    aggregate_cpu: float
    train_aggregate_wall: float
    final_root: str
    accuracy: float | None


def run_executor(spec: JobSpec, dataset: bytes) -> ExecutorRun:
    """Every unit trained, checked and aggregated by one executor, as the one node does them."""
    executor = executor_for(dataset, warm=True)  # the node pays torch's lazy imports at start-up, before any job
    keypair = Keypair.from_seed(bytes(range(32)))
    root = executor.initial_model_root(spec)
    train = replay = aggregate = wall = 0.0
    accuracy: float | None = None
    for t in range(spec.steps):
        job = job_state(spec, root, t)
        results = []
        for k in range(spec.shards):
            w0, c0 = time.perf_counter(), time.process_time()
            unit = executor.train_unit(job, k)
            train += time.process_time() - c0
            wall += time.perf_counter() - w0
            results.append(unit.result_digest)
            sub = WorkSubmission(
                job=job.job_id,
                step=t,
                shard=k,
                trainer=keypair.public_key,
                parent_model_root=root,
                checkpoint_digests=unit.checkpoint_digests,
                result_digest=unit.result_digest,
                losses=unit.losses,
                receipt=unit.receipt,
            )
            _, steps = sample_for(keypair, CHAIN_ID_FOR_SAMPLING, job, sub)
            c0 = time.process_time()
            check_unit(executor, job, sub, steps)
            replay += time.process_time() - c0
        w0, c0 = time.perf_counter(), time.process_time()
        result = executor.step_outcome(job, tuple(results))
        root, correct, total = result.model_root, result.eval_correct, result.eval_total
        aggregate += time.process_time() - c0
        wall += time.perf_counter() - w0
        if total:
            accuracy = correct / total
    return ExecutorRun(train, replay, aggregate, wall, "0x" + root.hex(), accuracy)


# ---------------------------------------------------------------------------


def run(settings: Settings) -> BenchResult:
    steps = settings.pick(300, 30)
    repeats = settings.repeats_for(5, 1)
    spec, dataset = get_job("digits-mlp", steps=steps)
    samples = steps * spec.global_batch
    res = BenchResult(NAME, TITLE, repeats)

    plain_label = "plain PyTorch loop (W, 1 thread)"
    step_ms = res.row("time per step", "ms", baseline_label=plain_label, note="chain: submission to job done")
    steps_s = res.row("steps/s", "steps/s", baseline_label=plain_label)
    samples_s = res.row("samples/s", "samples/s", baseline_label=plain_label)
    ref_ms = res.row("reference run (run_reference, in-process, no chain): time per step", "ms", baseline_label=plain_label)
    exec_ms = res.row("executor in-process: train_unit ×K + step_outcome, time per step", "ms", baseline_label=plain_label)
    cpu_step = res.row("node process CPU per step", "ms", baseline_label="plain loop CPU per step")
    node_vs_train = res.row(
        "node process CPU for the job", "s",
        baseline_label="training CPU: train_unit ×K + step_outcome, in-process",
    )
    node_vs_all = res.row(
        "node process CPU for the job", "s",
        baseline_label="training + replay CPU: train_unit + check_unit ×K + step_outcome, in-process",
    )
    main_ms = res.row("node main thread (event loop: consensus, RPC, privval) CPU per step", "ms")
    worker_ms = res.row(
        "node busiest other thread (the work queue: train, check, build block) CPU per step", "ms",
        baseline_label="in-process train + replay + aggregate CPU per step",
    )
    rest_ms = res.row("node remaining threads (commit writes, torch, …) CPU per step", "ms")
    train_ms = res.row("in-process CPU per step: train_unit ×K", "ms")
    replay_ms = res.row("in-process CPU per step: check_unit (replay) ×K", "ms")
    agg_ms = res.row("in-process CPU per step: step_outcome (aggregate, eval every 10)", "ms")
    util = res.row("node CPU utilisation during the job (CPU s ÷ wall s)", "cores")
    commit = res.row("node commit_block time per block (mean, from /metrics)", "ms")
    blocks_per_step = res.row("blocks per step", "blocks")
    ready = res.row("node process start to RPC ready", "s")

    plain_digests: list[str] = []
    plain_acc: list[float] = []
    chain_acc: list[float | None] = []
    ref_acc: list[float | None] = []
    exec_acc: list[float | None] = []
    chain_roots: list[str] = []
    ref_roots: list[str] = []
    exec_roots: list[str] = []
    verified: list[int | None] = []
    poll_share: list[float] = []

    for _ in range(repeats):
        plain = run_plain(steps)
        chain = run_chain(spec, dataset, poll=0.05, timeout=900.0)
        direct = run_executor(spec, dataset)
        r0 = time.perf_counter()
        reference = run_reference(spec, dataset)
        ref_seconds = time.perf_counter() - r0

        step_ms.add(chain.seconds / steps * 1e3, plain.seconds / steps * 1e3)
        steps_s.add(steps / chain.seconds, steps / plain.seconds)
        samples_s.add(samples / chain.seconds, samples / plain.seconds)
        ref_ms.add(ref_seconds / steps * 1e3, plain.seconds / steps * 1e3)
        exec_ms.add(direct.train_aggregate_wall / steps * 1e3, plain.seconds / steps * 1e3)
        cpu_step.add(chain.node_cpu_seconds / steps * 1e3, plain.cpu_seconds / steps * 1e3)
        node_vs_train.add(chain.node_cpu_seconds, direct.train_cpu + direct.aggregate_cpu)
        node_vs_all.add(chain.node_cpu_seconds, direct.train_cpu + direct.replay_cpu + direct.aggregate_cpu)
        main_ms.add(chain.main_thread_cpu / steps * 1e3)
        worker_ms.add(
            chain.busiest_other_thread_cpu / steps * 1e3,
            (direct.train_cpu + direct.replay_cpu + direct.aggregate_cpu) / steps * 1e3,
        )
        rest_ms.add(chain.remaining_threads_cpu / steps * 1e3)
        train_ms.add(direct.train_cpu / steps * 1e3)
        replay_ms.add(direct.replay_cpu / steps * 1e3)
        agg_ms.add(direct.aggregate_cpu / steps * 1e3)
        util.add(chain.node_cpu_seconds / chain.seconds)
        if chain.commit_mean_seconds is not None:
            commit.add(chain.commit_mean_seconds * 1e3)
        blocks_per_step.add(chain.blocks / steps)
        ready.add(chain.ready_seconds)

        plain_digests.append(plain.digest)
        plain_acc.append(plain.accuracy)
        chain_acc.append(chain.accuracy)
        ref_acc.append(_accuracy(reference.outcomes))
        exec_acc.append(direct.accuracy)
        chain_roots.append(chain.final_root)
        ref_roots.append("0x" + reference.final_root.hex())
        exec_roots.append(direct.final_root)
        verified.append(chain.units_verified)
        poll_share.append(chain.polls * chain.poll_cpu_seconds / chain.node_cpu_seconds)

    res.rows = [r for r in res.rows if r.ours]
    res.facts = {
        "steps": steps,
        "global_batch": spec.global_batch,
        "shards": spec.shards,
        "inner_steps": spec.inner_steps,
        "samples_per_run": samples,
        "chain_final_root_equals_reference_root": all(c == r for c, r in zip(chain_roots, ref_roots, strict=True)),
        "in_process_executor_root_equals_chain_root": all(e == c for e, c in zip(exec_roots, chain_roots, strict=True)),
        "chain_final_roots": sorted(set(chain_roots)),
        "reference_final_roots": sorted(set(ref_roots)),
        "plain_loop_bitwise_identical_across_repeats": len(set(plain_digests)) == 1,
        "plain_loop_test_accuracy": plain_acc,
        "chain_test_accuracy": chain_acc,
        "reference_test_accuracy": ref_acc,
        "in_process_executor_test_accuracy": exec_acc,
        "units_verified_per_chain_run": verified,
        "share_of_node_cpu_spent_answering_our_polls": poll_share,
    }
    res.notes = [
        f"Chain: a fresh one-node devnet process per repeat; the job `digits-mlp` ({steps} steps, "
        f"K={spec.shards} shards of {spec.global_batch // spec.shards}, H={spec.inner_steps}); time from "
        "submission (initial root, signing, RPC) to the RPC reporting `done`, polled every 50 ms. "
        "The node's start-up (torch warm-up) is excluded: the job is submitted once the node is idle.",
        "The node trains every unit, replays it as the (only) checker, aggregates, and commits one block "
        "per step; its CPU time is read from /proc before submission and after `done`.",
        "The job samples batches by the protocol's SHAKE-256 permutation, W's plain loop by torch.randperm: "
        "the same amount of work (steps × 256 samples), not the same samples, so accuracies differ slightly.",
    ]
    return res


def _accuracy(outcomes: tuple[Any, ...]) -> float | None:
    for o in reversed(outcomes):
        if o.eval_total:
            return float(o.eval_correct / o.eval_total)
    return None
