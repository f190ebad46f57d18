"""A pipeline job on real node processes: four stages on four nodes, a stage trainer killed, a stage trainer joining.

Each node is a `tdml-node run` process with its own LevelDB, keys and ports.
The job is the ``digits-mlp-pipeline`` preset, shortened; its final state must
equal the single-process reference of the same spec, bit for bit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from consensus import pipeline
from consensus.types import Hash32
from tdml_node.client import NodeClient
from tdml_node.config import load_config
from tdml_node.devnet import Devnet, running_devnet, submit_job
from tdml_node.storage import ChainStore, stage_roots
from tdml_node.work.jobs import get_job
from tdml_node.work.reference import run_reference
from tests.tdml_node.test_network import SEED, _job_done, _wait, join_late_trainer

pytestmark = pytest.mark.slow


def _records(client: NodeClient, devnet: Devnet) -> list[dict[str, Any]]:
    return [client.call("tdml_getTrainer", "0x" + n.keypair.address.hex()) for n in devnet.nodes]


def test_a_four_stage_job_on_four_nodes_verifies_every_unit_and_ends_at_the_reference(tmp_path: Path) -> None:
    spec, dataset = get_job("digits-mlp-pipeline", steps=8)
    devnet = Devnet.create(tmp_path, 4)
    with running_devnet(devnet):
        client = devnet.nodes[0].client()
        job_id = submit_job(client, devnet.client_key, devnet.genesis.chain_id, spec, dataset)
        view = _wait(lambda: _job_done(client, job_id), 600, "the job to finish")  # a bound, not a figure
        records = _records(client, devnet)
    assert view["modelRoot"] == "0x" + run_reference(spec, dataset).final_root.hex(), f"seed {SEED}"
    assert sum(r["unitsVerified"] for r in records) == spec.steps * pipeline.units_per_step(spec)
    assert all(r["unitsRejected"] == 0 and r["timesSlashed"] == 0 for r in records)


@pytest.mark.timeout(1200)
def test_a_killed_stage_trainer_is_benched_its_stage_moves_and_the_job_ends_at_the_reference(tmp_path: Path) -> None:
    spec, dataset = get_job("digits-mlp-pipeline", steps=16)
    devnet = Devnet.create(tmp_path, 4)
    with running_devnet(devnet):
        client = devnet.nodes[0].client()
        job_id = submit_job(client, devnet.client_key, devnet.genesis.chain_id, spec, dataset)
        view = _wait(lambda: (client.call("tdml_getJob", job_id) or {"step": 0})["step"] >= 2 and
                     client.call("tdml_getJob", job_id), 300, "the job to get going")
        # The holder of stage 1 in shard 0, unless that is node 0 (our window on the chain).
        holders = [view["assignment"][pipeline.unit_index(spec, 0, s)] for s in range(pipeline.stage_count(spec))]
        by_address = {"0x" + n.keypair.address.hex(): n for n in devnet.nodes}
        victim = next(by_address[a] for a in holders if by_address[a].index != 0)
        devnet.stop(victim, kill=True)
        victim_address = "0x" + victim.keypair.address.hex()
        moved = _wait(
            lambda: (j := client.call("tdml_getJob", job_id)) is not None and j["status"] == "active"
            and victim_address not in j["assignment"] and j,
            300, "the victim's stage to move",
        )
        view = _wait(lambda: _job_done(client, job_id), 900, "the job to finish")  # a bound, not a figure
        victim_record = _records(client, devnet)[victim.index]
    assert moved["step"] < spec.steps
    assert victim_record["unitsReassigned"] > 0, f"seed {SEED}: {victim_record}"
    assert victim_record["timesSlashed"] == 0  # silence is not provable: benched, not slashed
    assert view["modelRoot"] == "0x" + run_reference(spec, dataset).final_root.hex(), f"seed {SEED}"


def _held_stages(home: Path, job_id: str, stages: int) -> tuple[list[set[int]], int]:
    """Per step start this node's LevelDB still holds the stage list of, the stages whose bundles it holds;
    and how many of its committed blocks name the job's outcomes (read after the node stopped)."""
    store = ChainStore(load_config(home).data_dir)
    try:
        tip = store.tip()
        assert tip is not None
        job = Hash32(bytes.fromhex(job_id[2:]))
        roots = [o.model_root for h in range(1, tip.height + 1) for o in store.get_block(h).body.outcomes if o.job == job]  # type: ignore[union-attr]
        held = []
        for root in roots:
            parts = stage_roots(store, root)
            if parts:
                assert len(parts) == stages
                held.append({s for s, r in enumerate(parts) if store.has(r)})
        return held, len(roots)
    finally:
        store.close()


def test_a_node_that_joins_mid_job_is_dealt_a_stage_fetches_only_that_range_and_its_units_are_accepted(
    tmp_path: Path,
) -> None:
    spec, dataset = get_job("digits-mlp-pipeline", steps=400)
    stages = pipeline.stage_count(spec)
    devnet = Devnet.create(tmp_path / "net", 4)
    with running_devnet(devnet):
        client = devnet.nodes[0].client()
        job_id = submit_job(client, devnet.client_key, devnet.genesis.chain_id, spec, dataset)
        _wait(lambda: (client.call("tdml_getJob", job_id) or {"step": 0})["step"] >= 5, 300, "the job to get going")
        # It trains but does not validate, and takes the model work from the certified blocks.
        late, late_address = join_late_trainer(devnet, tmp_path / "late", ("--model-state", "assigned"))
        late_client = late.client()
        _wait(lambda: client.call("tdml_getTrainer", late_address)["unitsVerified"] > 0, 300, "the late node's first accepted unit")
        joined_at = client.call("tdml_getJob", job_id)["step"]
        _wait(lambda: client.call("tdml_getJob", job_id)["step"] >= joined_at + 4, 300, "four more steps")
        # Its own view (it commits that block a moment later), with every unit it trained checked.
        _wait(lambda: late_client.call("tdml_getTrainer", late_address)["unitsVerified"] > 0, 60, "the late node's own view")
        record = client.call("tdml_getTrainer", late_address)
        view = client.call("tdml_getJob", job_id)
        info = late_client.call("tdml_nodeInfo")
        full = client.call("tdml_getModel", job_id)
        devnet.stop(late)
    assert view["status"] == "active" and record["unitsRejected"] == 0, f"seed {SEED}: {record}"
    assert info["modelState"] == "assigned" and not info["validator"]
    assert full["stages"] is not None and all(s["held"] for s in full["stages"])  # a full node holds every stage
    held, steps = _held_stages(late.home, job_id, stages)
    assert steps > 0 and held, f"seed {SEED}: the late node holds no stage list of {steps} steps"
    # One trainer of five per stage: it holds the range it is dealt (two where a unit moved to it), never all.
    assert all(len(h) < stages for h in held), f"seed {SEED}: {held}"
    assert any(held), f"seed {SEED}: it trained from no stage bundle it holds"
