"""A seeded simulation of real nodes: the node code that runs, on a simulated network and clock.

Every simulated validator is a real ``Node`` from ``open_node``, with a real
LevelDB store (on tmpfs where there is one), its real privval, write-ahead
log, duties and proposer, and its seams (honest, or a dev behaviour from
``tdml_node.devtools``). Only three things are simulated: the clock (a
virtual-time event loop), the network (``SimHub``) and the work queue and
offload (run inline, since a thread would let simulated time run on).

A scenario, drawn from one seed, fixes the validator count, the network's
misbehaviour before GST (delays, drops, duplicates, partitions), crashes
(a node's task is cancelled and the node reopened on the same store, as
after kill -9) and Byzantine validators; a ``work`` family trains a small
job from genesis on top (``work_pipeline``: in two pipeline stages). Invariants, checked at the end (a breach raises
``SimulationFailure`` naming the seed):

- agreement: no two honest nodes commit different blocks at one height;
- no double signing: no honest key signs two different votes or proposals
  for one (height, round, step);
- durability: a node's committed blocks never change across its restarts;
- termination: every honest node reaches ``target_height`` within
  ``termination_ms`` of GST, and a work job finishes with the reference root;
- no honest node halts, and no honest peer is penalised.

This module must never use real sockets, threads or the wall clock for
anything the run depends on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from consensus.crypto import Keypair
from consensus.transition import compute_block_hash, compute_job_id
from consensus.types import Genesis, Hash32, SignedProposal, SignedVote
from tdml_node.config import NodeConfig
from tdml_node.devtools.wiring import behaviour_seams
from tdml_node.genesis import compose_genesis
from tdml_node.node import Node, open_node
from tdml_node.runtime.seams import HONEST, Seams
from tdml_node.runtime.workqueue import inline
from tdml_node.storage import ChainStore

from .clock import Deadlock, VirtualClockLoop
from .network import NetworkModel, SimHub, SimLink

T = TypeVar("T")

FAMILIES = ("calm", "lossy", "partition", "crash", "byzantine", "chaos", "work", "work_byzantine", "work_pipeline")
SIM_CHAIN = "tdml-sim"
SIM_EPOCH_MS = 1_700_000_000_000
"""The wall clock nodes read (block times, timeliness) is this plus the simulated time: replayable by seed."""


HONEST_SKEW_MS = 250
"""Every node's clock is off by up to this (seeded), within half the default timeliness precision:
honest drift must cost no liveness."""


def sim_wall_ms() -> int:
    return SIM_EPOCH_MS + int(asyncio.get_running_loop().time() * 1000)


def skewed_clock(skew_ms: int) -> Callable[[], int]:
    return lambda: sim_wall_ms() + skew_ms
BYZANTINE = ("equivocate", "approve-invalid")
BYZANTINE_TRAINERS = ("zero", "random", "copy", "replay-old", "stale-parent", "accuse", "lazy", "withhold")


class SimulationFailure(AssertionError):
    """An invariant broke; the message names the seed and how to replay it."""


class InlineWorker:
    """The work queue of a simulated node: each call runs at once, on the loop, in simulated zero time."""

    def submit(self, priority: int, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:
            future.set_exception(exc)
        return future

    def longest_recent_seconds(self) -> float:
        return 0.0

    def close(self, timeout: float = 30.0) -> None:
        return None


@dataclass(frozen=True)
class Crash:
    node: int
    at_ms: int
    down_ms: int
    restart: bool = True


@dataclass(frozen=True)
class Scenario:
    seed: int
    family: str
    n: int
    target_height: int
    network: NetworkModel
    crashes: tuple[Crash, ...] = ()
    byzantine: tuple[tuple[int, str], ...] = ()
    job_steps: int = 0
    pipeline: bool = False  # the job trains its model in two stages (S = 2, two micro-batches)
    termination_ms: int = 120_000
    clock_skew_ms: tuple[int, ...] = ()  # per node; none: every clock exact

    def describe(self) -> str:
        parts = [f"family={self.family}", f"n={self.n}", f"gst={self.network.gst_ms}ms"]
        if self.crashes:
            parts.append(f"crashes={[(c.node, c.at_ms, c.down_ms) for c in self.crashes]}")
        if self.byzantine:
            parts.append(f"byzantine={dict(self.byzantine)}")
        if self.network.partitions:
            parts.append(f"partitions={[(s, e, sorted(c)) for s, e, c in self.network.partitions]}")
        if self.job_steps:
            parts.append(f"job={self.job_steps} steps" + (" in 2 stages" if self.pipeline else ""))
        if any(self.clock_skew_ms):
            parts.append(f"skews={list(self.clock_skew_ms)}ms")
        return " ".join(parts)


def make_scenario(seed: int, family: str | None = None) -> Scenario:
    rng = random.Random(seed)
    family = family or FAMILIES[seed % len(FAMILIES)]
    n = rng.randint(4, 7)
    faulty_budget = (n - 1) // 3
    work = family.startswith("work")
    gst = 0 if family == "calm" else rng.randint(2_000, 8_000)
    model = NetworkModel(gst_ms=gst)
    if family in ("lossy", "chaos", "work", "work_pipeline"):
        model.drop, model.duplicate = rng.uniform(0.05, 0.3), rng.uniform(0.0, 0.2)
    if family in ("partition", "chaos"):
        cut = frozenset(rng.sample(range(n), rng.randint(1, n // 2)))
        start = rng.randint(0, gst // 2)
        model.partitions.append((start, rng.randint(start + 500, gst), cut))
    crashes: list[Crash] = []
    byzantine: list[tuple[int, str]] = []
    faulty = rng.sample(range(n), faulty_budget)
    if family in ("crash", "chaos", "work", "work_pipeline"):
        for node in faulty:
            at = rng.randint(200, max(300, gst - 1000)) if gst else rng.randint(200, 3_000)
            crashes.append(Crash(node, at, rng.randint(100, 1_500)))
    if family in ("byzantine", "chaos"):
        byzantine = [(node, rng.choice(BYZANTINE)) for node in faulty if all(c.node != node for c in crashes)]
    if family == "work_byzantine":
        byzantine = [(node, rng.choice(BYZANTINE_TRAINERS)) for node in faulty]
    return Scenario(
        seed=seed,
        family=family,
        n=n,
        target_height=rng.randint(4, 7),
        network=model,
        crashes=tuple(crashes),
        byzantine=tuple(byzantine),
        job_steps=rng.randint(3, 6) if work else 0,
        pipeline=family == "work_pipeline",
        # Its own generator, so adding skews left every other draw of a seed as it was.
        clock_skew_ms=(
            () if family == "calm"
            else tuple(random.Random(seed ^ 0xC10C).randint(-HONEST_SKEW_MS, HONEST_SKEW_MS) for _ in range(n))
        ),
    )


@dataclass
class SimNode:
    index: int
    keypair: Keypair
    home: Path
    link: SimLink
    seams: Seams = HONEST
    store: ChainStore | None = None
    node: Node | None = None
    task: asyncio.Task[None] | None = None
    committed: dict[int, Hash32] = field(default_factory=dict)
    times: dict[int, int] = field(default_factory=dict)  # committed blocks' times, by height
    restarts: int = 0

    @property
    def height(self) -> int:
        return self.node.height if self.node is not None else max(self.committed, default=0)


class Simulation:
    def __init__(self, scenario: Scenario, *, trace: Callable[[str], None] | None = None) -> None:
        self.scenario = scenario
        self.trace = trace or (lambda _: None)
        self.rng = random.Random(scenario.seed ^ 0x5EED)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.failures: list[str] = []
        self.proposers: dict[int, bytes] = {}  # the proposer of each committed height

    # ------------------------------------------------------------ running

    def run(self) -> dict[str, Any]:
        base = Path(tempfile.mkdtemp(prefix="tdml-sim-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
        try:
            with asyncio.Runner(loop_factory=VirtualClockLoop) as runner:
                return runner.run(self._run(base))
        finally:
            shutil.rmtree(base, ignore_errors=True)

    async def _run(self, base: Path) -> dict[str, Any]:
        sc = self.scenario
        self.hub = SimHub(self.rng, sc.network, self._spawn)
        self.hub.reconnected = self._connect
        keys = [Keypair.from_seed(sc.seed.to_bytes(16, "big") + i.to_bytes(16, "big")) for i in range(sc.n)]
        self.genesis, self.job_id, self.dataset, self.reference_root = _genesis(keys, sc.job_steps, sc.pipeline)
        byz = dict(sc.byzantine)
        reassigned: list[int] = []
        self.nodes = []
        for i, key in enumerate(keys):
            seams = HONEST
            if i in byz:
                seams, _ = behaviour_seams((byz[i],), dev=True, keypair=key, chain_id=SIM_CHAIN)
            self.nodes.append(SimNode(i, key, base / f"n{i}", self.hub.link(i, key.public_key), seams))
        try:
            for node in self.nodes:
                await self._start(node)
            for crash in sc.crashes:
                self._spawn(self._crash_later(crash), f"crash-{crash.node}")
            for _, end, cut in sc.network.partitions:
                asyncio.get_running_loop().call_at(end / 1000, self._heal, cut)
            await self._until_done()
            state = next((n.node.state for n in self.nodes if n.node is not None and self._honest(n)), None)
            if state is not None:
                reassigned = [state.get_record(n.keypair.address).units_reassigned for n in self.nodes]
        except Deadlock as exc:
            self._fail(f"deadlock: {exc}")
        finally:
            for node in self.nodes:
                await self._stop(node)
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._check()
        return {
            "heights": [max(n.committed, default=0) for n in self.nodes],
            "restarts": sum(n.restarts for n in self.nodes),
            "signed": len(self.hub.signed),
            "units_reassigned": reassigned,  # by node, in the committed work records at the end
        }

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start(self, sim: SimNode) -> None:
        config = NodeConfig(home=sim.home, dev=True, block_interval_ms=200, partial_wait_ms=400)
        if sim.store is None:
            sim.store = ChainStore(config.data_dir)
            if self.dataset is not None:
                sim.store.put(self.dataset)
        stack = contextlib.AsyncExitStack()
        node = await stack.enter_async_context(
            open_node(
                config, sim.keypair, self.genesis, store=sim.store, network=sim.link, seams=sim.seams,
                worker=InlineWorker(), offload=inline, wall_clock=skewed_clock(self._skew(sim.index)),
            )
        )
        node.add_block_listener(lambda committed, s=sim: self._on_commit(s, committed.block))
        sim.node = node
        sim.link.attach(node.handlers)
        self.hub.up.add(sim.index)
        sim.task = asyncio.get_running_loop().create_task(self._run_node(sim, node, stack), name=f"node-{sim.index}")
        for other in self.nodes:
            if other is not sim:
                self._connect(sim.index, other.index)

    async def _run_node(self, sim: SimNode, node: Node, stack: contextlib.AsyncExitStack) -> None:
        try:
            await node.run()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            if sim.index not in dict(self.scenario.byzantine):
                self._fail(f"node {sim.index} stopped: {exc!r}")
        finally:
            await stack.aclose()
        if node.fatal is not None and sim.index not in dict(self.scenario.byzantine):
            self._fail(f"node {sim.index} halted: {node.fatal!r}")

    async def _stop(self, sim: SimNode) -> None:
        self.hub.up.discard(sim.index)
        sim.link.attach(None)
        if sim.task is not None:
            sim.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sim.task
        sim.node, sim.task = None, None

    async def _crash_later(self, crash: Crash) -> None:
        await asyncio.sleep(crash.at_ms / 1000)
        sim = self.nodes[crash.node]
        self.trace(f"{crash.at_ms}ms: crash n{crash.node} at height {sim.height}")
        await self._stop(sim)
        if not crash.restart:
            return
        await asyncio.sleep(crash.down_ms / 1000)
        sim.restarts += 1
        await self._start(sim)

    def _heal(self, cut: frozenset[int]) -> None:
        for a in sorted(cut):
            for b in range(self.scenario.n):
                if b not in cut:
                    self._connect(a, b)

    def _connect(self, a: int, b: int) -> None:
        """A connection between two running nodes comes (back) up: each catches the other up."""
        na, nb = self.nodes[a].node, self.nodes[b].node
        if na is not None and nb is not None and self.hub.reachable(a, b):
            na.handlers.on_peer_connected(self.nodes[b].keypair.public_key)
            nb.handlers.on_peer_connected(self.nodes[a].keypair.public_key)

    def _skew(self, index: int) -> int:
        skews = self.scenario.clock_skew_ms
        return skews[index] if index < len(skews) else 0

    def _on_commit(self, sim: SimNode, block: Any) -> None:
        height, digest = block.header.height, compute_block_hash(block.header)
        earlier = sim.committed.get(height)
        if earlier is not None and earlier != digest:
            self._fail(f"durability: n{sim.index} committed height {height} twice, differently")
        sim.committed[height] = digest
        parent_time = sim.times.get(height - 1)
        if parent_time is not None and block.header.time_ms <= parent_time:
            self._fail(f"block time: n{sim.index}'s block {height} is not later than its parent")
        sim.times[height] = block.header.time_ms
        self.proposers[height] = block.header.proposer
        for other in self.nodes:
            theirs = other.committed.get(height)
            if theirs is not None and theirs != digest and self._honest(sim) and self._honest(other):
                self._fail(f"agreement: n{sim.index} and n{other.index} committed different blocks at height {height}")

    async def _until_done(self) -> None:
        """Run past GST and the last crash, then until every honest node commits ``target_height`` more."""
        sc = self.scenario
        loop = asyncio.get_running_loop()
        settled = max([sc.network.gst_ms, *(c.at_ms + c.down_ms for c in sc.crashes if c.restart)]) / 1000 + 1.0
        await asyncio.sleep(max(0.0, settled - loop.time()))
        gone = {c.node for c in sc.crashes if not c.restart}
        honest = [n for n in self.nodes if self._honest(n) and n.index not in gone]
        goal = max(max(n.committed, default=0) for n in honest) + sc.target_height
        deadline = loop.time() + sc.termination_ms / 1000
        while loop.time() < deadline and not self.failures:
            if all(max(n.committed, default=0) >= goal for n in honest) and self._job_done(honest):
                return
            await asyncio.sleep(0.05)
        if not self.failures:
            self._fail(
                f"no termination: heights {[max(n.committed, default=0) for n in self.nodes]}, goal {goal}, "
                f"at {loop.time():.1f}s"
            )

    def _job_done(self, honest: list[SimNode]) -> bool:
        if self.job_id is None:
            return True
        for sim in honest:
            job = sim.node.state.jobs.get(self.job_id) if sim.node is not None else None
            if job is None or job.step < self.scenario.job_steps:
                return False
        return True

    # ------------------------------------------------------------ invariants

    def _honest(self, sim: SimNode) -> bool:
        return sim.index not in dict(self.scenario.byzantine)

    def _check(self) -> None:
        honest_keys = {n.keypair.public_key for n in self.nodes if self._honest(n)}
        signed: dict[tuple[bytes, int, int, int], bytes] = {}
        for _, message in self.hub.signed:
            key, position, digest = _signature_position(message)
            if key not in honest_keys:
                continue
            seen = signed.setdefault((key, *position), digest)
            if seen != digest:
                self._fail(f"double signing: {key.hex()[:8]} signed two different messages at {position}")
        honest_indices = {n.index for n in self.nodes if self._honest(n)}
        for dst, src, reason, severity in self.hub.penalties:
            if src in honest_indices and dst in honest_indices and severity > 0:
                self._fail(f"n{dst} penalised honest n{src} by {severity}: {reason}")
        if self.job_id is not None and self.reference_root is not None:
            for sim in self.nodes:
                if self._honest(sim) and sim.store is not None:
                    state = sim.store.load_state()
                    job = state.jobs.get(self.job_id) if state is not None else None
                    if job is None or job.model_root != self.reference_root:
                        self._fail(f"n{sim.index}'s final model is not the reference")
        if self.failures:
            sc = self.scenario
            raise SimulationFailure(
                f"seed {sc.seed}: {self.failures[0]} ({len(self.failures)} failure(s); {sc.describe()}; "
                f"replay with TDML_SHELL_SIM_SEED={sc.seed})"
            )

    def _fail(self, what: str) -> None:
        self.trace(f"FAIL {what}")
        self.failures.append(what)


def _signature_position(message: SignedProposal | SignedVote) -> tuple[bytes, tuple[int, int, int], bytes]:
    from consensus.codec import encode

    if isinstance(message, SignedProposal):
        p = message.proposal
        return bytes(p.proposer), (p.height, p.round, 0), encode(p)
    v = message.vote
    return bytes(v.validator), (v.height, v.round, v.kind), encode(v)


def _genesis(keys: list[Keypair], job_steps: int, pipeline: bool) -> tuple[Genesis, Hash32 | None, bytes | None, Hash32 | None]:
    """The validators' genesis, with a small training job in it when ``job_steps`` > 0."""
    nodes = [(k.public_key, "") for k in keys]
    if not job_steps:
        return compose_genesis(SIM_CHAIN, nodes), None, None, None
    spec, dataset, root, reference = _small_job(job_steps, pipeline)
    client = Keypair.from_seed(b"sim-client".ljust(32, b"\x00"))
    from tdml_node.client import make_submit_job

    tx = make_submit_job(client, SIM_CHAIN, 0, spec, 10**9, root)
    return compose_genesis(SIM_CHAIN, nodes, clients=[client.public_key], transactions=(tx,)), compute_job_id(tx.tx), dataset, reference


def _small_job(steps: int, pipeline: bool = False) -> tuple[Any, bytes, Hash32, Hash32]:
    from tdml_node.storage import MemoryBlobStore
    from tdml_node.work.datasets import synthetic_bundle
    from tdml_node.work.executor import TorchExecutor
    from tdml_node.work.jobs import make_job, optimizer_spec
    from tdml_node.work.models import make_model_spec
    from tdml_node.work.reference import run_reference

    dataset = synthetic_bundle(n_train=256, n_test=64, features=8, classes=3)
    spec = make_job(
        "sim-mlp",
        dataset=dataset,
        model=make_model_spec("mlp", in_dim=8, hidden=16, layers=1, classes=3),
        optimizer=optimizer_spec("sgd", lr="0.1", momentum="0.9"),
        global_batch=32,
        shards=4,
        steps=steps,
        eval_every=0,
    )
    spec = dataclasses.replace(spec, verification=dataclasses.replace(spec.verification, unit_timeout_blocks=4))
    if pipeline:
        from consensus.types import PipelineSpec

        spec = dataclasses.replace(spec, pipeline=PipelineSpec((0, 1, 2), 2))
    root = TorchExecutor(MemoryBlobStore()).initial_model_root(spec)
    return spec, dataset, root, run_reference(spec, dataset).final_root


def run_seed(seed: int, family: str | None = None) -> dict[str, Any]:
    return Simulation(make_scenario(seed, family)).run()
