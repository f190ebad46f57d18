"""A private job on real node processes: sealed to the four members, unreadable to a fifth node that follows it.

The client seals the dataset and the key (``tdml_node.sdk.submit_spec`` with
``private=True``); the chain names the ciphertext. The four validators and
trainers train and check it and end at the public job's reference, bit for
bit. A fifth node that is no member syncs and follows the job to its end,
applying its certified steps without a key, holds only ciphertext, and
cannot open its key shares. No node's log holds the key.
"""

from __future__ import annotations

import base64
import dataclasses
from pathlib import Path

import pytest

from consensus import crypto
from consensus.types import Hash32
from tdml_node.config import load_config
from tdml_node.devnet import Devnet, running_devnet
from tdml_node.sdk import submit_spec
from tdml_node.storage import ChainStore
from tdml_node.work import sealed
from tdml_node.work.jobs import get_job
from tdml_node.work.reference import run_reference
from tests.tdml_node.test_network import SEED, _job_done, _wait, join_late_trainer, start_late_node

pytestmark = pytest.mark.slow


def _read_state(home: Path) -> tuple[object, set[Hash32]]:
    store = ChainStore(load_config(home).data_dir)
    try:
        return store.load_state(), set(store.iter_blob_digests())
    finally:
        store.close()


@pytest.mark.timeout(900)
def test_a_private_job_ends_at_the_reference_and_a_node_outside_it_cannot_read_its_data(tmp_path: Path) -> None:
    spec, dataset = get_job("digits-mlp", steps=12)
    spec = dataclasses.replace(spec, eval_every=12)
    devnet = Devnet.create(tmp_path / "net", 4)
    with running_devnet(devnet):
        client = devnet.nodes[0].client()
        _wait(lambda: client.call("tdml_blockNumber") >= 6, 120, "the chain to get going")
        outsider = start_late_node(devnet, tmp_path / "outsider")
        job_id = submit_spec(client, devnet.client_key, spec, dataset, chain_id=devnet.genesis.chain_id, private=True)
        view = _wait(lambda: _job_done(client, job_id), 600, "the job to finish")  # a bound, not a figure
        seen = _wait(lambda: _job_done(outsider.client(), job_id), 120, "the outsider to follow the job to its end")
        envelope = client.get_blob(view["spec"]["dataset"])
        devnet.stop_all()
    assert view["spec"]["private"] is True and view["sealedTo"] == 4
    assert view["modelRoot"] == "0x" + run_reference(spec, dataset).final_root.hex(), f"seed {SEED}"
    assert seen["modelRoot"] == view["modelRoot"]  # it followed the certified steps, key or no key

    # What anyone can fetch is the ciphertext the chain names; the outsider's key opens no share of it.
    assert sealed.is_sealed(envelope) and "0x" + crypto.sha256(envelope).hex() == view["spec"]["dataset"]
    state, outsider_blobs = _read_state(outsider.home)
    (job,) = [j for j in state.jobs.values() if "0x" + j.job_id.hex() == job_id]  # type: ignore[attr-defined]
    assert outsider.keypair.public_key not in {s.recipient for s in job.key_shares}
    for share in job.key_shares:
        with pytest.raises(sealed.SealError):
            sealed.open_key(share.sealed_key, outsider.keypair.signing_key)
    plain_digest = crypto.sha256(dataset)
    assert plain_digest not in outsider_blobs

    # A member's share opens to the key that opens the envelope; no member stores the plaintext, no log names the key.
    member = devnet.nodes[0]
    mine = next(s for s in job.key_shares if s.recipient == member.keypair.public_key)
    key = sealed.open_key(mine.sealed_key, member.keypair.signing_key)
    assert sealed.open_blob(envelope, key) == dataset
    spellings = (key.hex(), base64.b64encode(key).decode(), base64.urlsafe_b64encode(key).decode())
    for node in devnet.nodes:
        _, blobs = _read_state(node.home)
        assert plain_digest not in blobs
        log = node.log_path.read_text(errors="replace")
        assert not any(s in log for s in spellings), f"node {node.index}'s log holds the data key"


@pytest.mark.timeout(1200)
def test_a_trainer_that_joins_a_private_job_mid_way_gets_its_key_from_a_member_and_the_job_ends_at_the_reference(
    tmp_path: Path,
) -> None:
    spec, dataset = get_job("digits-mlp", steps=300)
    spec = dataclasses.replace(spec, eval_every=300)
    devnet = Devnet.create(tmp_path / "net", 4)
    with running_devnet(devnet):
        client = devnet.nodes[0].client()
        job_id = submit_spec(client, devnet.client_key, spec, dataset, chain_id=devnet.genesis.chain_id, private=True)
        _wait(lambda: (client.call("tdml_getJob", job_id) or {"step": 0})["step"] >= 5, 300, "the job to get going")
        _, late_address = join_late_trainer(devnet, tmp_path / "late")
        # No client is online: a member seals the key to the newcomer once it is registered.
        _wait(lambda: client.call("tdml_getJob", job_id)["sealedTo"] == 5, 120, "a member to share the key")
        _wait(lambda: client.call("tdml_getTrainer", late_address)["unitsVerified"] > 0, 300, "the newcomer's first accepted unit")
        view = _wait(lambda: _job_done(client, job_id), 900, "the job to finish")  # a bound, not a figure
        record = client.call("tdml_getTrainer", late_address)
    assert record["unitsVerified"] > 0 and record["unitsRejected"] == 0 and record["timesSlashed"] == 0, f"seed {SEED}"
    assert view["modelRoot"] == "0x" + run_reference(spec, dataset).final_root.hex(), f"seed {SEED}"
