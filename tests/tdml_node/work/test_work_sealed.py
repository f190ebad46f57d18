"""Private jobs' sealed blobs: envelopes open only whole and under their key; shares only for their member.

And a private job trained through the executor from its sealed dataset ends
where the public job's reference does, bit for bit; a node without a share
cannot train it and is told so as unavailability, never as a verdict.
"""

from __future__ import annotations

import dataclasses

import pytest
from work_harness import digits_job, job_state, make_executor

from consensus import crypto
from consensus.crypto import Keypair
from tdml_node.sdk import seal_job
from tdml_node.work import sealed
from tdml_node.work.reference import run_reference
from tdml_node.work.sealed import NoDataKey

KEY = bytes(range(32))
MEMBER = Keypair.from_seed(b"\x05" * 32)
OUTSIDER = Keypair.from_seed(b"\x06" * 32)


@pytest.mark.parametrize(("size", "chunk"), [(0, 8), (1, 8), (8, 8), (9, 8), (1000, 64), (70_000, 1 << 16)])
def test_an_envelope_opens_to_its_plaintext_under_its_key(size: int, chunk: int) -> None:
    plain = bytes(i % 251 for i in range(size))
    env = sealed.seal_blob(plain, KEY, chunk_size=chunk)
    assert sealed.is_sealed(env)
    if size >= 16:
        assert plain[:16] not in env  # no run of plaintext survives
    assert sealed.open_blob(env, KEY) == plain
    assert sealed.seal_blob(plain, KEY, chunk_size=chunk) != env  # a fresh nonce prefix each time


def test_a_wrong_key_a_changed_byte_a_cut_or_reordered_envelope_does_not_open() -> None:
    plain = bytes(range(200))
    env = sealed.seal_blob(plain, KEY, chunk_size=50)
    _, offset = sealed.read_header(env)
    chunk = 50 + 16
    body = env[offset:]
    swapped = env[:offset] + body[chunk : 2 * chunk] + body[:chunk] + body[2 * chunk :]
    cases = {
        "wrong key": (env, bytes(32)),
        "a flipped ciphertext byte": (env[:-1] + bytes([env[-1] ^ 1]), KEY),
        "a flipped header byte": (env[: offset - 1] + bytes([env[offset - 1] ^ 1]) + env[offset:], KEY),
        "the last chunk dropped": (env[: offset + 3 * chunk], KEY),
        "two chunks swapped": (swapped, KEY),
        "bytes after the end": (env + b"\x00", KEY),
        "plain bytes": (plain, KEY),
    }
    for name, (blob, key) in cases.items():
        with pytest.raises(sealed.SealError):
            sealed.open_blob(blob, key)
        assert name  # every case is refused with SealError, naming nothing it read


def test_a_key_share_opens_only_for_its_member() -> None:
    share = sealed.seal_key(KEY, MEMBER.public_key)
    assert len(share) == sealed.SEALED_KEY_BYTES
    assert sealed.open_key(share, MEMBER.signing_key) == KEY
    with pytest.raises(sealed.SealError):
        sealed.open_key(share, OUTSIDER.signing_key)
    with pytest.raises(sealed.SealError):
        sealed.seal_key(KEY, b"\x00" * 5)


def test_a_private_job_trained_from_its_sealed_dataset_ends_at_the_public_reference() -> None:
    spec, data = digits_job(steps=2)
    spec = dataclasses.replace(spec, eval_every=2)
    private, envelope, shares = seal_job(spec, data, [OUTSIDER.public_key, MEMBER.public_key, MEMBER.public_key])
    assert private.private and private.dataset == crypto.sha256(envelope) != spec.dataset
    assert sorted(s.recipient for s in shares) == sorted([OUTSIDER.public_key, MEMBER.public_key])  # each once
    mine = next(s for s in shares if s.recipient == MEMBER.public_key)
    key = sealed.open_key(mine.sealed_key, MEMBER.signing_key)

    # The executor holds only the envelope, and opens it with the member's key.
    ex = make_executor(envelope, data_key=lambda s: key if s.dataset == private.dataset else None)
    root = ex.initial_model_root(private)
    stranger = make_executor(envelope)
    with pytest.raises(NoDataKey, match="no key share"):
        stranger.train_unit(job_state(private, stranger.initial_model_root(private)), 0)
    for step in range(private.steps):
        job = job_state(private, root, step)
        results = tuple(ex.train_unit(job, shard).result_digest for shard in range(private.shards))
        outcome = ex.step_outcome(job, results)
        root = outcome.model_root
    reference = run_reference(spec, data)
    assert root == reference.final_root
    assert outcome.eval_correct == reference.outcomes[-1].eval_correct
    assert not ex.blobs.has(crypto.sha256(data))
    # A key that does not open the envelope is unavailability too, not a fault of anyone's unit.
    wrong = make_executor(envelope, data_key=lambda s: bytes(32))
    with pytest.raises(NoDataKey, match="does not open"):
        wrong.train_unit(job_state(private, root), 0)
