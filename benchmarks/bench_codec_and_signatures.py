"""Canonical encoding, signatures and hashing against the raw libraries underneath them.

Values (real, signed): a precommit ``Vote``; a ``SignedTransaction`` of a
transfer and one of a ``SubmitJob`` of workload W; a ``Block`` with 4 work
submissions, 4 verdicts, a step outcome and a 4-signature last commit; and
the ``TensorBundle`` of W's model state (parameters and momentum buffers).

- encode (``consensus.codec.encode``) vs ``msgpack.packb`` of the same nested
  lists; decode (``decode_as``: strict checks, dataclasses, canonical
  re-encoding) vs ``msgpack.unpackb``; messages/s and MB/s;
- the bundle to torch tensors (``decode_bundle``) vs ``msgpack.unpackb``;
- Ed25519 through ``consensus.crypto`` (domain-separated sign, ``verify`` of
  distinct messages so its ``lru_cache`` never hits, and of one message again
  to show the hit) vs PyNaCl's ``SigningKey.sign`` / ``VerifyKey.verify``;
- ``hash_value`` of a block (encode + SHA-256) vs ``hashlib.sha256`` of its
  bytes, and SHA-256 of 1 MiB through ``consensus.crypto`` vs ``hashlib``.

This module must never assert on a timing, and never verify a message twice
where it means to measure an uncached verification.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import msgpack
from nacl.signing import VerifyKey

from benchmarks.common import BenchResult, Row, Settings, executor_for, job_state, rate
from consensus import crypto
from consensus.codec import decode_as, encode
from consensus.transition import compute_body_hash
from consensus.types import (
    PRECOMMIT,
    Block,
    BlockBody,
    BlockHeader,
    CommitCertificate,
    CommitSig,
    Hash32,
    Height,
    Round,
    SignedTransaction,
    SignedVerdict,
    StepOutcome,
    TensorBundle,
    Verdict,
    Vote,
    WorkSubmission,
)
from consensus.work import sign_submission, submission_id
from tdml_node.client import make_submit_job, make_transfer
from tdml_node.work.jobs import get_job
from tdml_node.work.profile import local_profile
from tdml_node.work.tensors import decode_bundle

NAME = "codec_and_signatures"
TITLE = "Canonical codec, Ed25519 and hashing vs raw msgpack, PyNaCl and hashlib"

CHAIN_ID = "tdml-bench"
MIB = 1 << 20

_heights = itertools.count(1_000_000)


def _keys(n: int) -> list[crypto.Keypair]:
    return [crypto.Keypair.from_seed(bytes([i + 1]) * 32) for i in range(n)]


def _h(tag: bytes) -> Hash32:
    return crypto.sha256(tag)


def w_model_state() -> bytes:
    """The bundle of W's model state after one step: parameters and SGD momentum buffers."""
    spec, dataset = get_job("digits-mlp", steps=1)
    executor = executor_for(dataset)
    root = executor.initial_model_root(spec)
    job = job_state(spec, root, 0)
    results = tuple(executor.train_unit(job, k).result_digest for k in range(spec.shards))
    new_root = executor.step_outcome(job, results).model_root
    data = executor.blobs.get(new_root)
    if data is None:
        raise RuntimeError("the executor did not store the new model state")
    return data


def build_block(keys: list[crypto.Keypair]) -> Block:
    """A block of a 4-validator chain at one step of W: 4 submissions, 4 verdicts, an outcome, a commit."""
    height = Height(4242)
    parent = _h(b"parent")
    job_id = _h(b"job")
    model_root = _h(b"model")
    receipt = local_profile()
    loss_bits = 0x3E4CCCCD
    subs = []
    verdicts = []
    for k, trainer in enumerate(keys):
        sub = WorkSubmission(
            job=job_id,
            step=4200,
            shard=k,
            trainer=trainer.public_key,
            parent_model_root=model_root,
            checkpoint_digests=(),
            result_digest=_h(b"result%d" % k),
            losses=(loss_bits + k,),
            receipt=receipt,
        )
        subs.append(sign_submission(trainer, CHAIN_ID, sub))
        checker = keys[(k + 1) % len(keys)]
        sid = submission_id(sub)
        verdict = Verdict(
            submission_id=sid,
            validator=checker.public_key,
            sample_signature=checker.sign(crypto.DOMAIN_SAMPLE, CHAIN_ID, sid),
            checked_steps=(0,),
            failure=0,
            failed_step=-1,
            observed_digest=sub.result_digest,
            observed_loss=sub.losses[0],
            receipt=receipt,
        )
        verdicts.append(SignedVerdict(verdict, checker.sign_value(crypto.DOMAIN_VERDICT, CHAIN_ID, verdict)))
    precommits = tuple(
        CommitSig(v.public_key, v.sign_value(crypto.DOMAIN_VOTE, CHAIN_ID, Vote(PRECOMMIT, Height(height - 1), Round(0), parent, v.public_key)))
        for v in keys
    )
    body = BlockBody(
        transactions=(),
        submissions=tuple(subs),
        verdicts=tuple(verdicts),
        evidence=(),
        outcomes=(StepOutcome(job_id, 4200, _h(b"new model"), loss_bits, 0, 0, 0),),
        last_commit=CommitCertificate(Height(height - 1), Round(0), parent, precommits),
    )
    header = BlockHeader(
        chain_id=CHAIN_ID,
        height=height,
        round=Round(0),
        parent_hash=parent,
        proposer=keys[0].public_key,
        body_hash=compute_body_hash(body),
        state_root=_h(b"state"),
        time_ms=1_700_000_000_000 + 1000 * height,
    )
    return Block(header, body)


def values() -> dict[str, tuple[Any, type]]:
    keys = _keys(4)
    spec, _ = get_job("digits-mlp")
    transfer = make_transfer(keys[0], CHAIN_ID, 7, keys[1].address, 1_000)
    submit = make_submit_job(keys[0], CHAIN_ID, 8, spec, 10**9, _h(b"initial root"))
    vote = Vote(PRECOMMIT, Height(4242), Round(0), _h(b"block"), keys[0].public_key)
    state = decode_as(w_model_state(), TensorBundle)
    return {
        "Vote": (vote, Vote),
        "SignedTransaction (Transfer)": (transfer, SignedTransaction),
        "SignedTransaction (SubmitJob of W)": (submit, SignedTransaction),
        "Block (4 submissions, 4 verdicts, 1 outcome, 4-sig commit)": (build_block(keys), Block),
        "TensorBundle (W model state + momentum)": (state, TensorBundle),
    }


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, use_list=False)


def run(settings: Settings) -> BenchResult:
    repeats = settings.repeats_for(5, 2)
    min_seconds = 0.15 if not settings.quick else 0.03
    n_verify = settings.pick(3000, 500)
    res = BenchResult(NAME, TITLE, repeats)

    cases = values()
    encoded = {name: encode(v) for name, (v, _) in cases.items()}
    rows: list[tuple[Row, Callable[[], object], Callable[[], object]]] = []
    for name, (value, cls) in cases.items():
        data = encoded[name]
        raw = msgpack.unpackb(data, raw=False, use_list=True)
        size = len(data)
        rows.append((
            res.row(f"{name}, {size:,} B: encode", "msgs/s", baseline_label="msgpack.packb", bytes_per_op=size),
            partial(encode, value),
            partial(msgpack.packb, raw, use_bin_type=True),
        ))
        rows.append((
            res.row(f"{name}, {size:,} B: decode_as", "msgs/s", baseline_label="msgpack.unpackb", bytes_per_op=size),
            partial(decode_as, data, cls),
            partial(_unpack, data),
        ))
    bundle = encoded["TensorBundle (W model state + momentum)"]
    rows.append((
        res.row(f"model state bundle → torch tensors (decode_bundle), {len(bundle):,} B", "msgs/s",
                baseline_label="msgpack.unpackb", bytes_per_op=len(bundle)),
        lambda: decode_bundle(bundle),
        lambda: _unpack(bundle),
    ))

    block_value = cases["Block (4 submissions, 4 verdicts, 1 outcome, 4-sig commit)"][0]
    block_bytes = encoded["Block (4 submissions, 4 verdicts, 1 outcome, 4-sig commit)"]
    rows.append((
        res.row("hash_value(Block): encode + SHA-256", "hashes/s", baseline_label="hashlib.sha256 of its bytes"),
        lambda: crypto.hash_value(block_value),
        lambda: hashlib.sha256(block_bytes).digest(),
    ))
    buffer = bytes(range(256)) * (MIB // 256)
    rows.append((
        res.row("SHA-256 of 1 MiB (consensus.crypto.sha256)", "MiB/s", baseline_label="hashlib.sha256"),
        lambda: crypto.sha256(buffer),
        lambda: hashlib.sha256(buffer).digest(),
    ))

    signer = crypto.Keypair.from_seed(bytes([9]) * 32)
    vote_bytes = encoded["Vote"]
    message = crypto.signing_bytes(crypto.DOMAIN_VOTE, CHAIN_ID, vote_bytes)
    rows.append((
        res.row(f"Ed25519 sign, domain-separated Vote ({len(message)} B signed)", "sigs/s",
                baseline_label="nacl SigningKey.sign of the same bytes"),
        lambda: signer.sign(crypto.DOMAIN_VOTE, CHAIN_ID, vote_bytes),
        lambda: signer.signing_key.sign(message),
    ))
    signature = signer.sign(crypto.DOMAIN_VOTE, CHAIN_ID, vote_bytes)
    verify_key = VerifyKey(bytes(signer.public_key))
    rows.append((
        res.row("Ed25519 verify, the same Vote again (lru_cache hit)", "verifies/s",
                baseline_label="nacl VerifyKey.verify (no cache)"),
        lambda: crypto.verify(signer.public_key, crypto.DOMAIN_VOTE, CHAIN_ID, vote_bytes, signature),
        lambda: verify_key.verify(message, signature),
    ))
    distinct = res.row(f"Ed25519 verify, {n_verify:,} distinct Votes (cache misses)", "verifies/s",
                       baseline_label="nacl VerifyKey.verify, same messages")
    blake = res.row("BLAKE2b of 1 MiB (hashlib, for reference; not used by the protocol)", "MiB/s")

    for _ in range(repeats):
        for row, ours, base in rows:
            row.add(rate(ours, min_seconds), rate(base, min_seconds))  # a 1 MiB call/s is MiB/s
        ours_rate, base_rate = _verify_distinct(signer, verify_key, n_verify)
        distinct.add(ours_rate, base_rate)
        blake.add(rate(lambda: hashlib.blake2b(buffer).digest(), min_seconds))

    res.facts = {
        "encoded sizes (bytes)": ", ".join(f"{name}: {len(data):,}" for name, data in encoded.items()),
    }
    res.notes = [
        "Throughputs are calls per second over a batch of calls lasting at least "
        f"{min_seconds:g} s; MB/s = calls/s × encoded size.",
        "Baselines handle the same structure without the codec's work: msgpack.packb gets the nested lists "
        "the codec would build; msgpack.unpackb returns plain tuples (no type checks, no dataclasses, "
        "no canonical re-encoding check).",
        "Distinct-message verification signs fresh Votes (new heights) each repeat, so consensus.crypto's "
        "lru_cache (16,384 entries) never answers; the project's path also builds a VerifyKey per call.",
    ]
    return res


def _verify_distinct(signer: crypto.Keypair, verify_key: VerifyKey, n: int) -> tuple[float, float]:
    """Verifications per second of ``n`` never-seen signed Votes: consensus.crypto, then raw PyNaCl."""
    payloads = []
    for _ in range(n):
        vote = Vote(PRECOMMIT, Height(next(_heights)), Round(0), _h(b"block"), signer.public_key)
        payload = encode(vote)
        payloads.append((payload, signer.sign(crypto.DOMAIN_VOTE, CHAIN_ID, payload)))
    started = time.perf_counter()
    for payload, sig in payloads:
        crypto.verify(signer.public_key, crypto.DOMAIN_VOTE, CHAIN_ID, payload, sig)
    ours = n / (time.perf_counter() - started)
    messages = [(crypto.signing_bytes(crypto.DOMAIN_VOTE, CHAIN_ID, p), s) for p, s in payloads]
    started = time.perf_counter()
    for message, sig in messages:
        verify_key.verify(message, sig)
    base = n / (time.perf_counter() - started)
    return ours, base
