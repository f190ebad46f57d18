"""One real node process: trains the default job to accuracy, equals the reference, survives kill -9.

These tests start ``tdml-node run`` as separate processes on loopback with
their own LevelDB. The crash test kills the process with SIGKILL at random
moments (seeded; the seed is printed on failure) and checks that no
committed block is lost or changed and that the job reaches exactly the
model states of an uninterrupted run, step by step. Block hashes are not
compared: which round decides a height, and so a header's round, depends on
timing (``docs/decisions.md``, "What is deterministic").
"""

from __future__ import annotations

import os
import random
import shutil
import time
from pathlib import Path

import pytest
import torch

from consensus.crypto import Keypair
from consensus.transition import compute_job_id
from tdml_node.client import NodeClient, make_submit_job
from tdml_node.config import load_config, write_config
from tdml_node.devnet import Devnet, free_port, running_devnet, submit_job
from tdml_node.storage import ChainStore, MemoryBlobStore
from tdml_node.work.datasets import digits_split
from tdml_node.work.executor import TorchExecutor
from tdml_node.work.export import load_exported
from tdml_node.work.jobs import get_job
from tdml_node.work.reference import run_reference

pytestmark = pytest.mark.slow


def _wait_job_done(client: NodeClient, job_id: str, timeout: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = client.call("tdml_getJob", job_id)
        if view is not None and view["status"] == "done":
            return dict(view)
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not done within {timeout}s")


def test_default_job_reaches_accuracy_and_equals_reference(tmp_path: Path) -> None:
    spec, dataset = get_job("digits-mlp")
    devnet = Devnet.create(tmp_path / "net", 1)
    with running_devnet(devnet):
        client = devnet.nodes[0].client()
        job_id = submit_job(client, devnet.client_key, devnet.genesis.chain_id, spec, dataset)
        view = _wait_job_done(client, job_id, timeout=300)
        state = client.get_blob(str(view["modelRoot"]))
        last_eval = view["lastEval"]
        trainer = client.call("tdml_getTrainer", "0x" + devnet.nodes[0].keypair.address.hex())
    assert isinstance(last_eval, dict) and last_eval["testAccuracy"] >= 0.95
    assert trainer["unitsVerified"] == spec.steps * spec.shards and trainer["unitsRejected"] == 0
    reference = run_reference(spec, dataset)
    assert view["modelRoot"] == "0x" + reference.final_root.hex()

    from tdml_node.work.export import export_model

    out = tmp_path / "model.safetensors"
    export_model(spec, state, out)
    model, meta = load_exported(out)
    assert meta["model_root"] == reference.final_root.hex()
    assert sum(p.numel() for p in model.parameters()) > 0
    # The recorded standardisation travels with the model: raw pixels score what the chain reported.
    _, _, x_test, y_test = digits_split()
    with torch.no_grad():
        correct = int((model(torch.from_numpy(x_test)).argmax(dim=-1).numpy() == y_test).sum())
    assert correct / len(y_test) == last_eval["testAccuracy"]


def _genesis_job_devnet(base: Path, steps: int) -> tuple[Devnet, bytes]:
    """A one-node devnet whose genesis already holds the job, so every block is determined."""
    spec, dataset = get_job("digits-mlp", steps=steps)
    client_key = Keypair.generate()
    root = TorchExecutor(MemoryBlobStore()).initial_model_root(spec)
    tx = make_submit_job(client_key, "tdml-devnet", 0, spec, 10**9, root)
    devnet = Devnet.create(base, 1, genesis_txs=(tx,), client_key=client_key)
    store = ChainStore(load_config(devnet.nodes[0].home).data_dir)
    store.put(dataset)
    store.close()
    return devnet, compute_job_id(tx.tx)


def _step_roots(client: NodeClient, job_id: str) -> list[str]:
    """The job's model root after each step, in step order."""
    return [str(o["model_root"]) for o in client.call("tdml_getJobHistory", job_id, 1000)]


def test_kill_9_at_random_moments_loses_nothing_and_reaches_the_same_model(tmp_path: Path) -> None:
    seed = int(os.environ.get("TDML_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    steps = 200  # long enough (about 5 s of node time) for every kill to land before the job ends
    devnet, job_id = _genesis_job_devnet(tmp_path / "a", steps)
    pristine = tmp_path / "pristine"
    shutil.copytree(devnet.base, pristine)

    with running_devnet(devnet):
        client = devnet.nodes[0].client()
        done = _wait_job_done(client, "0x" + job_id.hex(), timeout=300)
        final_height = int(str(done["finishedHeight"]))
        expected = _step_roots(client, "0x" + job_id.hex())
    assert len(expected) == steps

    # The same genesis, keys and datadir contents, on fresh ports.
    shutil.copytree(pristine, tmp_path / "b")
    crashed = Devnet(tmp_path / "b", [devnet.nodes[0]], devnet.genesis, devnet.client_key)
    node = crashed.nodes[0]
    node.home = tmp_path / "b" / "node0"
    node.rpc_port, node.p2p_port = free_port(), free_port()
    cfg = load_config(node.home)
    write_config(type(cfg)(**{**cfg.__dict__, "home": node.home, "rpc_port": node.rpc_port, "p2p_port": node.p2p_port}))

    observed: dict[int, str] = {}
    kills = 0
    try:
        crashed.start(node)
        crashed.wait_ready()
        while kills < 5:
            time.sleep(rng.uniform(0.05, 0.8))
            client = node.client(timeout=5)
            height = client.call("tdml_blockNumber")
            if height >= final_height:
                break
            if height:
                observed[height] = client.call("tdml_getBlockByNumber", height, False)["hash"]
            crashed.stop(node, kill=True)
            kills += 1
            crashed.start(node)
            crashed.wait_ready()
            client = node.client(timeout=5)
            now = client.call("tdml_blockNumber")
            assert now >= max(observed, default=0), f"seed {seed}: committed height {max(observed)} lost, now {now}"
            for h, digest in observed.items():
                got = client.call("tdml_getBlockByNumber", h, False)["hash"]
                assert got == digest, f"seed {seed}: block {h} changed after a crash"
        client = node.client()
        again = _wait_job_done(client, "0x" + job_id.hex(), timeout=300)
        for h, digest in observed.items():
            got = client.call("tdml_getBlockByNumber", h, False)["hash"]
            assert got == digest, f"seed {seed}: block {h} changed after the crashes"
        assert _step_roots(client, "0x" + job_id.hex()) == expected, f"seed {seed}: a step's model state differs"
        assert again["modelRoot"] == done["modelRoot"], f"seed {seed}: the final model differs"
    finally:
        crashed.stop_all()
    assert kills >= 3, f"seed {seed}: only {kills} crashes happened before the job ended"
