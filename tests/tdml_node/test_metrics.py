"""/metrics of real nodes (in this process, real LevelDB, real sockets): what users watch equals what the chain says.

A one-node chain runs a short job; its scrape must carry the job's step,
loss and accuracy as ``tdml_getJob`` decodes them, each trainer's units as
``tdml_getTrainer`` counts them, a replay time per checked unit, and no sync
lag. A node that joins later reports the blocks it is behind, then none.
The Grafana dashboard in docs/ may only ask for metrics a node exports, and
docs/operations.md must name every metric a node exports.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from consensus.crypto import Keypair
from consensus.transition import compute_genesis_hash, compute_job_id, make_genesis_state
from consensus.types import JOB_ACTIVE, JOB_DONE, Genesis, Hash32, Height, JobState, StepOutcome
from p2p.network import P2PNetwork
from p2p.settings import ChainIdentity, PeerSettings
from tdml_node.app import PROTOCOL_VERSION
from tdml_node.client import make_submit_job
from tdml_node.config import NodeConfig
from tdml_node.genesis import compose_genesis
from tdml_node.jsonview import f32
from tdml_node.metrics import WATCHED_JOBS, ChainReads, NodeMetrics, compute_loss
from tdml_node.node import Node, open_node
from tdml_node.rpc import RpcPolicy, RpcServer
from tdml_node.storage import ChainStore, MemoryBlobStore
from tdml_node.work.executor import TorchExecutor
from tdml_node.work.jobs import get_job

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
CHAIN = "metrics-test"
STEPS = 3

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> tuple[Samples, set[str]]:
    """Every sample by (name, labels), and every metric family's name."""
    samples: Samples = {}
    families = set()
    for family in text_string_to_metric_families(text):
        families.add(family.name)
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, families


def value(samples: Samples, metric: str, /, **labels: str) -> float:
    return samples[(metric, frozenset(labels.items()))]


@dataclass
class Live:
    node: Node
    url: str
    http: aiohttp.ClientSession

    async def call(self, method: str, *params: Any) -> Any:
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
        async with self.http.post(self.url, json=body) as resp:
            answer = await resp.json()
        assert "result" in answer, answer
        return answer["result"]

    async def scrape(self) -> str:
        async with self.http.get(self.url + "metrics") as resp:
            assert resp.status == 200
            return await resp.text()

    async def wait(self, predicate: Callable[[Samples], bool], timeout: float, what: str) -> Samples:
        try:
            async with asyncio.timeout(timeout):
                while True:
                    samples, _ = parse(await self.scrape())
                    if predicate(samples):
                        return samples
                    await asyncio.sleep(0.1)
        except TimeoutError:
            raise AssertionError(f"{what}: not within {timeout} s") from None


@contextlib.asynccontextmanager
async def running(
    home: Path, key: Keypair, genesis: Genesis, http: aiohttp.ClientSession, bootstrap: tuple[str, ...] = (), *, run: bool = True
) -> AsyncIterator[tuple[Live, P2PNetwork, Callable[[], None]]]:
    """A node with a real p2p network and RPC server; ``start()`` runs its loop if ``run`` was False."""
    config = NodeConfig(home=home, rpc_port=0, dev=True, block_interval_ms=100)
    identity = ChainIdentity(genesis.chain_id, compute_genesis_hash(genesis), PROTOCOL_VERSION)
    async with P2PNetwork(key, identity, PeerSettings(bootstrap=bootstrap)) as network, open_node(
        config, key, genesis, network=network
    ) as node:
        server = RpcServer(node, "127.0.0.1", 0, dev=True, policy=RpcPolicy())
        # As tdml_node.app wires a node process.
        node.metrics.watch_connections("p2p", network.listener.guard.stats)
        node.metrics.watch_connections("rpc", server.guard.stats)
        await network.start(node.handlers)
        port = await server.start()
        tasks: list[asyncio.Task[None]] = []

        def start() -> None:
            tasks.append(asyncio.create_task(node.run()))

        if run:
            start()
        try:
            yield Live(node, f"http://127.0.0.1:{port}/", http), network, start
        finally:
            node.request_stop()
            async with asyncio.timeout(30):
                for task in tasks:
                    await task
            await server.stop()


def job_genesis(steps: int) -> tuple[Keypair, Genesis, Hash32, bytes]:
    """One validator-trainer and a job already in genesis, so the chain starts training at once."""
    key, client = Keypair.generate(), Keypair.generate()
    spec, dataset = get_job("digits-mlp", steps=steps)
    root = TorchExecutor(MemoryBlobStore()).initial_model_root(spec)
    tx = make_submit_job(client, CHAIN, 0, spec, 10**9, root)
    genesis = compose_genesis(CHAIN, [(key.public_key, "")], clients=[client.public_key], transactions=[tx])
    return key, genesis, compute_job_id(tx.tx), dataset


def seed_dataset(home: Path, dataset: bytes) -> None:
    store = ChainStore(NodeConfig(home=home).data_dir)
    try:
        store.put(dataset)
    finally:
        store.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_a_short_job_is_seen_in_metrics_as_the_chain_records_it(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    key, genesis, job_id, dataset = job_genesis(STEPS)
    seed_dataset(tmp_path / "a", dataset)
    job = "0x" + job_id.hex()
    trainer = "0x" + key.address.hex()
    async with running(tmp_path / "a", key, genesis, http) as (live, _, _):
        samples = await live.wait(
            lambda s: s.get(("tdml_job_active", frozenset({("job_id", job), ("name", "digits-mlp")}))) == 0,
            240, "the job to finish",
        )
        view = await live.call("tdml_getJob", job)
        record = await live.call("tdml_getTrainer", trainer)
        text = await live.scrape()
        height = await live.call("tdml_blockNumber")
        rounds = [(await live.call("tdml_getBlockByNumber", h, False))["commit"]["round"] for h in range(1, height + 1)]
    samples, families = parse(text)
    labels = {"job_id": job, "name": "digits-mlp"}
    assert view["status"] == "done" and view["step"] == STEPS
    assert value(samples, "tdml_job_step", **labels) == STEPS == value(samples, "tdml_job_steps_planned", **labels)
    assert value(samples, "tdml_job_train_loss", **labels) == view["lastOutcome"]["trainLossFloat"]
    assert value(samples, "tdml_job_test_loss", **labels) == view["lastEval"]["evalLossFloat"]
    assert value(samples, "tdml_job_test_accuracy", **labels) == view["lastEval"]["testAccuracy"] > 0
    units = value(samples, "tdml_trainer_units_committed_total", trainer=trainer)
    assert units == record["unitsVerified"] == STEPS * view["spec"]["shards"]
    assert value(samples, "tdml_trainer_units_rejected_total", trainer=trainer) == record["unitsRejected"] == 0
    assert value(samples, "tdml_trainer_slashed_total", trainer=trainer) == 0
    checked = value(samples, "tdml_units_checked_total")
    assert checked > 0 and value(samples, "tdml_verification_seconds_count") == checked
    assert value(samples, "tdml_verification_seconds_sum") > 0
    assert value(samples, "tdml_training_seconds_count") == value(samples, "tdml_units_trained_total") == units
    assert value(samples, "tdml_sync_lag_blocks") == 0 and value(samples, "tdml_syncing") == 0
    # The round histogram holds each commit's certificate round (the scrape came before the last RPC reads).
    count = value(samples, "tdml_commit_round_count")
    assert count == value(samples, "tdml_blocks_committed_total") <= height
    assert value(samples, "tdml_commit_round_sum") == sum(rounds[: int(count)])

    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    assert dashboard["schemaVersion"] >= 39
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    names = {s[0] for s in samples}
    used: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}"
            used |= set(re.findall(r"\b(?:tdml|process|python)_[a-z0-9_]+", target["expr"]))
    assert used, "the dashboard asks for nothing"
    assert used <= names, f"the dashboard asks for metrics no node exports: {sorted(used - names)}"
    for wanted in ("tdml_job_test_accuracy", "tdml_verification_seconds_bucket", "tdml_sync_lag_blocks",
                   "tdml_trainer_units_committed_total", "tdml_rpc_seconds_bucket", "process_resident_memory_bytes"):
        assert wanted in used, wanted

    operations = (ROOT / "docs" / "operations.md").read_text()
    ours = {f for f in families if f.startswith("tdml_") and not f.endswith("_created")}
    assert {f for f in ours if f"`{f}" not in operations} == set(), "docs/operations.md misses these metrics"


async def test_a_joining_node_reports_its_lag_then_none(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    key = Keypair.generate()
    genesis = compose_genesis(CHAIN, [(key.public_key, "")])
    async with running(tmp_path / "a", key, genesis, http) as (first, first_net, _):
        await first.wait(lambda s: value(s, "tdml_height") >= 10, 60, "the first node to pass height 10")
        bootstrap = (first_net.listen_addr,)
        async with running(tmp_path / "b", Keypair.generate(), genesis, http, bootstrap, run=False) as (late, _, start):
            # Connected but not yet running: it knows its peer's height and has applied nothing.
            behind = await late.wait(lambda s: value(s, "tdml_sync_lag_blocks") >= 10, 30, "the lag to show")
            assert value(behind, "tdml_syncing") == 0 and value(behind, "tdml_peers") == 1
            start()
            caught_up = await late.wait(
                lambda s: value(s, "tdml_sync_lag_blocks") == 0 and value(s, "tdml_height") >= 10, 60, "the lag to close"
            )
            assert value(caught_up, "tdml_blocks_committed_total") >= 10


def test_the_job_series_are_bounded_to_the_most_recent_jobs() -> None:
    _, genesis, job_id, _ = job_genesis(STEPS)
    state = make_genesis_state(genesis, TorchExecutor(MemoryBlobStore()))
    template = state.jobs[job_id]
    jobs = {}
    for i in range(3 * WATCHED_JOBS):
        jid = Hash32(i.to_bytes(32, "big"))
        # Two running jobs among the oldest, the rest done: the running ones must stay in view.
        status = JOB_ACTIVE if i in (0, 1) else JOB_DONE
        jobs[jid] = dataclasses.replace(template, job_id=jid, status=status, created_height=Height(i), finished_height=Height(i + 1))
    crowded = dataclasses.replace(state, jobs=jobs)
    metrics = NodeMetrics()
    metrics.watch_chain(ChainReads(state=lambda: crowded, last_eval=lambda job: None, best_peer_height=lambda: 0, syncing=lambda: False))
    samples, _ = parse(metrics.render().decode())
    shown = {dict(labels)["job_id"] for name, labels in samples if name == "tdml_job_step"}
    newest_done = {"0x" + (i).to_bytes(32, "big").hex() for i in range(3 * WATCHED_JOBS - (WATCHED_JOBS - 2), 3 * WATCHED_JOBS)}
    running_ids = {"0x" + i.to_bytes(32, "big").hex() for i in (0, 1)}
    assert shown == running_ids | newest_done


def test_a_nan_loss_is_exported_as_nan_and_a_loss_as_the_rpc_decodes_it() -> None:
    assert math.isnan(compute_loss(0x7FC00000))
    assert compute_loss(0x3F800000) == 1.0 == f32(0x3F800000)


def test_a_jobs_evaluation_is_read_from_the_store_once_per_step_not_per_scrape() -> None:
    _, genesis, job_id, _ = job_genesis(STEPS)
    state = make_genesis_state(genesis, TorchExecutor(MemoryBlobStore()))
    current = [state]
    reads: list[int] = []

    def last_eval(job: JobState) -> StepOutcome | None:
        reads.append(job.step)
        return None

    metrics = NodeMetrics()
    metrics.watch_chain(ChainReads(state=lambda: current[0], last_eval=last_eval, best_peer_height=lambda: 0, syncing=lambda: False))
    metrics.render()
    metrics.render()
    assert reads == [0]
    current[0] = dataclasses.replace(state, jobs={job_id: dataclasses.replace(state.jobs[job_id], step=1)})
    metrics.render()
    metrics.render()
    assert reads == [0, 1]
