"""The node's LevelDB store: blocks, commits, ledger state, blobs, indexes.

Layout (keys are a one-byte prefix and a fixed-width suffix):

- ``b`` + height (8 bytes BE) → block bytes
- ``c`` + height → commit certificate bytes
- ``h`` + block hash → height
- ``w`` + submission id → height of the block that includes or judges it
- ``o`` + job id + step (8 bytes BE) → the step's outcome (loss, evaluation)
- ``t`` + transaction hash → height + index in the block (4 bytes BE)
- ``x`` + digest → blob bytes (content-addressed)
- ``m`` + name → metadata: ``tip`` (height + hash), ``state`` (snapshot),
  ``genesis`` (genesis bytes), ``privval`` (last signed height/round/step),
  ``txindex`` (present once every stored block's transactions are indexed)
- ``l`` + height + sequence (4 bytes BE) → a consensus message of that
  height, as the consensus loop received it (the write-ahead log)

``commit_block`` writes a block, its commit, the ledger state after it, its
indexes and the blobs it makes part of the state in ONE write batch with
``sync=True``: after a crash the store holds either all of a block or none of
it, and a restart resumes at the last committed height. Blocks a node
fetched by sync go through the same ``commit_block``, so they are indexed too.
A store written before the transaction index existed is indexed once, when
it is opened.

This module must never interpret blocks beyond reading the fields it indexes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import plyvel

from consensus.codec import DecodeError, decode_as, encode
from consensus.crypto import hash_value, sha256
from consensus.errors import LocalFault
from consensus.state import LedgerState
from consensus.transition import compute_block_hash
from consensus.types import (
    Block,
    CommitCertificate,
    FalsePass,
    FalseVerdict,
    Genesis,
    Hash32,
    Height,
    SignedTransaction,
    StepOutcome,
    WorkFraud,
)
from consensus.work import submission_id

MAX_BLOCK_BYTES = 64 * 1024 * 1024
TX_INDEXED = b"mtxindex"


class StorageError(LocalFault):
    """The database cannot be opened or written (full disk, permissions, corruption): the node must stop."""


def _h(height: int) -> bytes:
    return height.to_bytes(8, "big")


def _reason(exc: BaseException) -> str:
    """The text of an error; LevelDB's arrive as bytes (``b'IO error: ...'``)."""
    if len(exc.args) == 1 and isinstance(exc.args[0], bytes):
        return exc.args[0].decode("utf-8", "replace")
    return str(exc)


@dataclass(frozen=True, slots=True)
class Tip:
    height: Height
    block_hash: Hash32


class ChainStore:
    """Blocks, commits, state and blobs of one node in one LevelDB."""

    def __init__(self, path: Path) -> None:
        try:
            # Inside the try: a datadir that is a file or lies in a read-only
            # directory is a storage error, not a crash.
            path.mkdir(parents=True, exist_ok=True)
            self._db = plyvel.DB(str(path), create_if_missing=True)
        except (plyvel.Error, OSError) as exc:
            raise StorageError(f"cannot open the database at {path}: {_reason(exc)}") from exc
        self._lock = threading.Lock()
        self.path = path
        try:
            self._index_old_transactions()
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        # Under the write lock: a commit whose task was cancelled by a stop still
        # runs to its end in its thread, and LevelDB must not close under it.
        with self._lock:
            if not self._db.closed:
                self._db.close()

    # ------------------------------------------------------------ genesis

    def get_genesis(self) -> Genesis | None:
        raw = self._db.get(b"mgenesis")
        return decode_as(raw, Genesis) if raw is not None else None

    def init_genesis(self, genesis: Genesis, state: LedgerState) -> None:
        with self._write() as wb:
            wb.put(b"mgenesis", encode(genesis))
            wb.put(b"mstate", state.encode())
            wb.put(b"mtip", _h(0) + state.tip_hash)
            wb.put(TX_INDEXED, b"")

    # -------------------------------------------------------------- blocks

    def tip(self) -> Tip | None:
        raw = self._db.get(b"mtip")
        if raw is None:
            return None
        return Tip(Height(int.from_bytes(raw[:8], "big")), Hash32(raw[8:]))

    def load_state(self) -> LedgerState | None:
        tip = self.tip()
        raw = self._db.get(b"mstate")
        if tip is None or raw is None:
            return None
        # The tip's time sits beside the state, not in it: it is the tip block's header's.
        block = self.get_block(tip.height) if tip.height > 0 else None
        return LedgerState.decode(raw, tip.block_hash, block.header.time_ms if block is not None else 0)

    def commit_block(
        self, block: Block, cert: CommitCertificate, state: LedgerState, blobs: Iterable[bytes] = ()
    ) -> None:
        """Atomically and durably record a committed block and the state after it."""
        height = block.header.height
        block_hash = compute_block_hash(block.header)
        with self._write() as wb:
            wb.put(b"b" + _h(height), encode(block))
            wb.put(b"c" + _h(height), encode(cert))
            wb.put(b"h" + block_hash, _h(height))
            _put_tx_index(wb, block)
            for signed in block.body.submissions:
                wb.put(b"w" + submission_id(signed.submission), _h(height))
            for ev in block.body.evidence:
                if isinstance(ev, WorkFraud | FalseVerdict | FalsePass):
                    wb.put(b"w" + submission_id(ev.submission.submission), _h(height))
            for outcome in block.body.outcomes:
                wb.put(b"o" + outcome.job + _h(outcome.step), encode(outcome))
            for data in blobs:
                wb.put(b"x" + sha256(data), data)
            wb.put(b"mstate", state.encode())
            wb.put(b"mtip", _h(height) + block_hash)

    def get_block(self, height: int) -> Block | None:
        raw = self._db.get(b"b" + _h(height))
        return decode_as(raw, Block, max_size=MAX_BLOCK_BYTES) if raw is not None else None

    def get_block_bytes(self, height: int) -> bytes | None:
        raw: bytes | None = self._db.get(b"b" + _h(height))
        return raw

    def get_commit(self, height: int) -> CommitCertificate | None:
        raw = self._db.get(b"c" + _h(height))
        return decode_as(raw, CommitCertificate) if raw is not None else None

    def get_height_of(self, block_hash: bytes) -> Height | None:
        raw = self._db.get(b"h" + block_hash)
        return Height(int.from_bytes(raw, "big")) if raw is not None else None

    def get_tx_location(self, digest: bytes) -> tuple[Height, int] | None:
        """The height of the block holding the transaction of this hash and its index there."""
        raw = self._db.get(b"t" + digest)
        if raw is None:
            return None
        return Height(int.from_bytes(raw[:8], "big")), int.from_bytes(raw[8:12], "big")

    def get_tx_block(self, digest: bytes) -> tuple[Block, int] | None:
        """The block holding the transaction of this hash, and the transaction's index in it."""
        location = self.get_tx_location(digest)
        block = self.get_block(location[0]) if location is not None else None
        if location is None or block is None or location[1] >= len(block.body.transactions):
            return None
        return block, location[1]

    def get_work_height(self, sid: bytes) -> Height | None:
        raw = self._db.get(b"w" + sid)
        return Height(int.from_bytes(raw, "big")) if raw is not None else None

    def get_outcomes(self, job_id: Hash32, *, limit: int) -> list[StepOutcome]:
        """The job's most recent step outcomes, oldest first."""
        found = []
        for _, raw in self._db.iterator(prefix=b"o" + job_id, reverse=True):
            found.append(decode_as(raw, StepOutcome))
            if len(found) >= limit:
                break
        return found[::-1]

    def get_last_eval(self, job_id: Hash32, before_step: int, eval_every: int) -> StepOutcome | None:
        """The latest outcome before ``before_step`` that carries an evaluation."""
        if eval_every <= 0:
            return None
        for _, raw in self._db.iterator(start=b"o" + job_id, stop=b"o" + job_id + _h(before_step), reverse=True):
            outcome = decode_as(raw, StepOutcome)
            if outcome.eval_total:
                return outcome
        return None

    # --------------------------------------------------------------- blobs

    def get(self, digest: Hash32) -> bytes | None:
        raw: bytes | None = self._db.get(b"x" + digest)
        return raw

    def put(self, data: bytes) -> Hash32:
        digest = sha256(data)
        try:
            self._db.put(b"x" + digest, data)
        except plyvel.Error as exc:
            raise StorageError(f"cannot write a blob to the database at {self.path}: {_reason(exc)}") from exc
        return digest

    def has(self, digest: Hash32) -> bool:
        # A key-only seek, so checking for a large blob does not copy it.
        key = b"x" + digest
        with self._db.iterator(start=key, include_value=False) as it:
            return next(it, None) == key

    def delete_blobs(self, digests: Iterable[Hash32]) -> None:
        with self._write(sync=False) as wb:
            for d in digests:
                wb.delete(b"x" + d)

    def iter_blob_digests(self) -> Iterator[Hash32]:
        for key in self._db.iterator(prefix=b"x", include_value=False):
            yield Hash32(key[1:])

    # ------------------------------------------------------ write-ahead log

    def wal_append(self, height: int, seq: int, message: bytes) -> None:
        """Log a consensus message of ``height``; unsynced, since our own next vote's synced write flushes it."""
        try:
            self._db.put(b"l" + _h(height) + seq.to_bytes(4, "big"), message)
        except plyvel.Error as exc:
            raise StorageError(f"cannot write the consensus log: {_reason(exc)}") from exc

    def wal_entries(self, height: int) -> list[bytes]:
        return [v for _, v in self._db.iterator(prefix=b"l" + _h(height))]

    def wal_next_seq(self, height: int) -> int:
        with self._db.iterator(prefix=b"l" + _h(height), reverse=True, include_value=False) as it:
            last = next(it, None)
        return 0 if last is None else int.from_bytes(last[-4:], "big") + 1

    def wal_prune(self, below_height: int) -> None:
        with self._write(sync=False) as wb:
            for key in self._db.iterator(start=b"l", stop=b"l" + _h(below_height), include_value=False):
                wb.delete(key)

    # ---------------------------------------------------------------- meta

    def get_meta(self, name: bytes) -> bytes | None:
        raw: bytes | None = self._db.get(b"m" + name)
        return raw

    def write_meta_synced(self, values: dict[bytes, bytes], delete: Iterable[bytes] = ()) -> None:
        """Write (and delete) metadata entries in one synced batch; keys are given without the prefix."""
        with self._write() as wb:
            for name in delete:
                wb.delete(b"m" + name)
            for name, value in values.items():
                wb.put(b"m" + name, value)

    def iter_meta(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Metadata entries whose name starts with ``prefix``, in key order (names without the prefix byte)."""
        for key, value in self._db.iterator(prefix=b"m" + prefix):
            yield key[1:], value

    # ------------------------------------------------------------- helpers

    def _index_old_transactions(self) -> None:
        """Index the transactions of blocks committed before the index existed, once."""
        if self._db.get(TX_INDEXED) is not None or self._db.get(b"mtip") is None:
            return
        with self._write() as wb:
            for key, raw in self._db.iterator(prefix=b"b"):
                try:
                    block = decode_as(raw, Block, max_size=MAX_BLOCK_BYTES)
                except DecodeError as exc:
                    raise StorageError(f"the stored block {key[1:].hex()} cannot be decoded: {exc}") from exc
                _put_tx_index(wb, block)
            wb.put(TX_INDEXED, b"")

    def _write(self, sync: bool = True) -> _Batch:
        return _Batch(self, sync)


def compute_tx_hash(signed: SignedTransaction) -> Hash32:
    """A transaction's hash: the hash of its canonical signed encoding (``tdml_node.pools.tx_hash``)."""
    return hash_value(signed)


def _put_tx_index(wb: plyvel.WriteBatch, block: Block) -> None:
    height = _h(block.header.height)
    for index, signed in enumerate(block.body.transactions):
        wb.put(b"t" + compute_tx_hash(signed), height + index.to_bytes(4, "big"))


class _Batch:
    """A write batch that raises ``StorageError`` instead of plyvel's errors."""

    def __init__(self, store: ChainStore, sync: bool) -> None:
        self._store = store
        self._sync = sync

    def __enter__(self) -> plyvel.WriteBatch:
        self._store._lock.acquire()
        self._wb = self._store._db.write_batch(sync=self._sync)
        return self._wb

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None:
                try:
                    self._wb.write()
                except (plyvel.Error, OSError) as err:
                    raise StorageError(f"cannot write to the database at {self._store.path}: {_reason(err)}") from err
            else:
                self._wb.clear()
        finally:
            self._store._lock.release()
