"""Durable writes: ``ChainStore.commit_block`` and the privval record against plain synced LevelDB writes.

A realistic block is taken from a short one-node devnet run of ``digits-mlp``
(the last block that completed a step: 4 submissions, 4 verdicts, an outcome,
its commit certificate, the ledger state, and the new model state blob that
``commit_block`` stores with it). Then, in fresh databases in one temporary
directory, calls alternate between the project and its baseline:

- ``commit_block`` (one synced write batch) vs one synced ``plyvel`` put of a
  value as large as everything it writes, and vs a synced ``plyvel`` batch of
  the same entries (same count and sizes, encoded beforehand);
- ``ChainStore.write_meta_synced`` of 100 small entries vs a synced ``plyvel``
  batch of 100 small keys;
- ``PrivValidator.sign_vote`` (sign, then a synced record before the vote may
  leave the node) vs PyNaCl sign plus a synced ``plyvel`` put of a record of
  the same size;
- an unsynced ``plyvel`` put of the same bytes, for what the sync costs.

This module must never assert on a timing, and never open a database outside
its temporary directory.
"""

from __future__ import annotations

import dataclasses
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import plyvel

from benchmarks.common import BenchResult, Settings
from consensus.codec import encode
from consensus.crypto import DOMAIN_VOTE, Keypair, sha256, signing_bytes
from consensus.state import LedgerState
from consensus.transition import compute_block_hash
from consensus.types import PREVOTE, Block, CommitCertificate, Hash32, Height, Round, Vote
from tdml_node.config import load_config
from tdml_node.devnet import Devnet, DevnetError, running_devnet, submit_job
from tdml_node.node.privval import PrivValidator
from tdml_node.storage import ChainStore
from tdml_node.work.jobs import get_job

NAME = "commit_latency"
TITLE = "Synced writes: commit_block and privval vs plain LevelDB"

SMALL_KEYS = 100


@dataclasses.dataclass(frozen=True, slots=True)
class Committed:
    block: Block
    cert: CommitCertificate
    state: LedgerState
    blobs: list[bytes]


def devnet_block(base: Path, steps: int, timeout: float = 300.0) -> Committed:
    """Run ``digits-mlp`` for ``steps`` steps on a one-node devnet; its last step-completing block."""
    spec, dataset = get_job("digits-mlp", steps=steps)
    devnet = Devnet.create(base / "net", 1)
    node = devnet.nodes[0]
    with running_devnet(devnet):
        client = node.client()
        job_id = submit_job(client, devnet.client_key, devnet.genesis.chain_id, spec, dataset)
        deadline = time.monotonic() + timeout
        while True:
            view = client.call("tdml_getJob", job_id)
            if view is not None and view.get("status") == "done":
                break
            if time.monotonic() > deadline:
                raise DevnetError(f"the devnet job did not finish within {timeout:.0f}s")
            time.sleep(0.1)
    store = ChainStore(load_config(node.home).data_dir)
    try:
        tip = store.tip()
        state = store.load_state()
        if tip is None or state is None:
            raise DevnetError("the devnet's store holds no chain")
        for height in range(tip.height, 0, -1):
            block = store.get_block(height)
            cert = store.get_commit(height)
            if block is not None and cert is not None and block.body.outcomes:
                blobs = [b for o in block.body.outcomes if (b := store.get(o.model_root)) is not None]
                return Committed(block, cert, state, blobs)
        raise DevnetError("no block of the devnet run completed a step")
    finally:
        store.close()


def _entries(c: Committed) -> list[tuple[bytes, bytes]]:
    """Entries as large as those ``commit_block`` writes (per docs: block, commit, indexes, outcome, blobs, state, tip)."""
    block_hash = compute_block_hash(c.block.header)
    out = [(b"b", encode(c.block)), (b"c", encode(c.cert)), (b"h" + block_hash, bytes(8))]
    out += [(b"w" + sha256(encode(s.submission)), bytes(8)) for s in c.block.body.submissions]
    out += [(b"o" + o.job + bytes(8), encode(o)) for o in c.block.body.outcomes]
    out += [(b"x" + sha256(b), b) for b in c.blobs]
    out += [(b"mstate", c.state.encode()), (b"mtip", bytes(8) + block_hash)]
    return out


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def _alternate(n: int, ours: Callable[[int], object], base: Callable[[int], object]) -> tuple[float, float]:
    """Median latency (ms) of ``n`` calls each, the project's and the baseline's calls alternating."""
    a: list[float] = []
    b: list[float] = []
    for i in range(n):
        t0 = time.perf_counter()
        ours(i)
        t1 = time.perf_counter()
        base(i)
        t2 = time.perf_counter()
        a.append(t1 - t0)
        b.append(t2 - t1)
    return _median_ms(a), _median_ms(b)


def run(settings: Settings) -> BenchResult:
    repeats = settings.repeats_for(5, 2)
    n = settings.pick(40, 10)
    res = BenchResult(NAME, TITLE, repeats)
    tmp = Path(tempfile.mkdtemp(prefix="tdml-bench-commit-"))
    try:
        committed = devnet_block(tmp / "devnet", steps=settings.pick(5, 3))
        entries = _entries(committed)
        total = sum(len(k) + len(v) for k, v in entries)
        block_bytes = len(encode(committed.block))

        commit_vs_put = res.row("ChainStore.commit_block", "ms", baseline_label=f"plyvel synced put of one {total:,} B value")
        commit_vs_batch = res.row("ChainStore.commit_block", "ms",
                                  baseline_label=f"plyvel synced batch of the same {len(entries)} entries, pre-encoded")
        meta_vs_batch = res.row(f"ChainStore.write_meta_synced, {SMALL_KEYS} small entries", "ms",
                                baseline_label=f"plyvel synced batch of {SMALL_KEYS} small keys")
        privval_row = res.row("PrivValidator.sign_vote (sign + synced record)", "ms",
                              baseline_label="nacl sign + plyvel synced put of the same record")
        unsynced = res.row(f"plyvel put of one {total:,} B value, sync=False (what the sync costs)", "ms")

        keypair = Keypair.from_seed(bytes([3]) * 32)
        for r in range(repeats):
            got = _one_repeat(tmp / f"repeat{r}", committed, entries, keypair, n)
            commit_vs_put.add(*got["commit_vs_put"])
            commit_vs_batch.add(*got["commit_vs_batch"])
            meta_vs_batch.add(*got["meta_vs_batch"])
            privval_row.add(*got["privval"])
            unsynced.add(got["unsynced"][0])

        res.facts = {
            "block height taken from the devnet": int(committed.block.header.height),
            "block bytes": block_bytes,
            "submissions / verdicts / outcomes in the block": (
                f"{len(committed.block.body.submissions)} / {len(committed.block.body.verdicts)} / "
                f"{len(committed.block.body.outcomes)}"
            ),
            "ledger state bytes": len(committed.state.encode()),
            "model state blob bytes written with the block": sum(len(b) for b in committed.blobs),
            "entries and bytes per commit_block": f"{len(entries)} entries, {total:,} B",
            "calls per repeat": n,
        }
        res.notes = [
            "Latency is the median of the calls in a repeat; the project's call and its baseline's alternate, "
            "in separate fresh LevelDB databases of the same temporary directory (same filesystem).",
            "A one-node chain does, per height, one commit_block and three privval records "
            "(proposal, prevote, precommit), each a synced write.",
        ]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return res


def _one_repeat(
    rdir: Path, committed: Committed, entries: list[tuple[bytes, bytes]], keypair: Keypair, n: int
) -> dict[str, tuple[float, ...]]:
    """One repeat in fresh databases under ``rdir``: (ours, baseline) median latencies in ms per figure."""
    blob = b"".join(k + v for k, v in entries)
    small = [(b"%03d" % j + bytes(29), bytes(range(64))) for j in range(SMALL_KEYS)]
    header = committed.block.header
    blocks = [
        dataclasses.replace(committed.block, header=dataclasses.replace(header, height=Height(header.height + 1 + i)))
        for i in range(n)
    ]
    votes = [Vote(PREVOTE, Height(10 + i), Round(0), Hash32(sha256(b"%d" % i)), keypair.public_key) for i in range(n)]
    records = [encode(v) for v in votes]
    store = ChainStore(rdir / "chain")
    raw = plyvel.DB(str(rdir / "raw"), create_if_missing=True)
    privval = PrivValidator(store, keypair, "tdml-bench")

    def commit(i: int) -> None:
        store.commit_block(blocks[i], committed.cert, committed.state, committed.blobs)

    def put_one(i: int) -> None:
        raw.put(b"p%08d" % i, blob, sync=True)

    def batch_same(i: int) -> None:
        with raw.write_batch(sync=True) as wb:
            for key, value in entries:
                wb.put(key + b"%08d" % i, value)

    def meta(i: int) -> None:
        store.write_meta_synced({b"bench/" + key + b"%06d" % i: value for key, value in small})

    def batch_small(i: int) -> None:
        with raw.write_batch(sync=True) as wb:
            for key, value in small:
                wb.put(b"s" + key + b"%06d" % i, value)

    def sign_vote(i: int) -> None:
        privval.sign_vote(votes[i])

    def raw_sign_put(i: int) -> None:
        message = signing_bytes(DOMAIN_VOTE, "tdml-bench", records[i])
        signature = keypair.signing_key.sign(message).signature
        raw.put(b"v%08d" % i, sha256(records[i]) + signature + records[i], sync=True)

    try:
        out: dict[str, tuple[float, ...]] = {
            "commit_vs_put": _alternate(n, commit, put_one),
            "commit_vs_batch": _alternate(n, commit, batch_same),
            "meta_vs_batch": _alternate(n, meta, batch_small),
            "privval": _alternate(n, sign_vote, raw_sign_put),
        }
        samples = []
        for i in range(n):
            t0 = time.perf_counter()
            raw.put(b"u%08d" % i, blob, sync=False)
            samples.append(time.perf_counter() - t0)
        out["unsynced"] = (_median_ms(samples),)
        return out
    finally:
        store.close()
        raw.close()
        shutil.rmtree(rdir, ignore_errors=True)
