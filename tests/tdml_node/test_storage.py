"""The LevelDB store: atomic commits, indexes, blobs, and clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import plyvel
import pytest

from consensus.crypto import sha256
from consensus.state import LedgerState
from consensus.transition import compute_block_hash
from consensus.types import (
    ZERO_HASH,
    Block,
    BlockBody,
    BlockHeader,
    ChainParams,
    CommitCertificate,
    Hash32,
    Height,
    PublicKey,
    Round,
)
from tdml_node.storage import ChainStore, StorageError

PARAMS = ChainParams(1, 1, 5000, 1000, 4)


def _block(height: int, parent: bytes) -> Block:
    body = BlockBody((), (), (), (), (), None)
    header = BlockHeader("c", Height(height), Round(0), Hash32(parent), PublicKey(b"\x01" * 32), ZERO_HASH, ZERO_HASH, 1000 * height)
    return Block(header, body)


def test_commit_and_read_back_after_reopen(tmp_path: Path) -> None:
    store = ChainStore(tmp_path / "db")
    state0 = LedgerState("c", Height(0), Hash32(b"g" * 32), PARAMS)
    from consensus.types import Genesis

    genesis = Genesis("c", PARAMS, (), (), ())
    store.init_genesis(genesis, state0)
    block = _block(1, b"g" * 32)
    cert = CommitCertificate(Height(1), Round(0), compute_block_hash(block.header), ())
    state1 = LedgerState("c", Height(1), compute_block_hash(block.header), PARAMS)
    blob = os.urandom(1000)
    store.commit_block(block, cert, state1, [blob])
    store.close()

    store = ChainStore(tmp_path / "db")
    tip = store.tip()
    assert tip is not None and tip.height == 1 and tip.block_hash == compute_block_hash(block.header)
    assert store.get_block(1) == block
    assert store.get_commit(1) == cert
    assert store.get_height_of(compute_block_hash(block.header)) == 1
    assert store.get(sha256(blob)) == blob
    loaded = store.load_state()
    assert loaded is not None and loaded.root == state1.root and loaded.tip_hash == state1.tip_hash
    assert store.get_genesis() == genesis
    assert store.get_block(2) is None
    store.close()


def test_unopenable_datadir_is_a_clear_error(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("not a directory")
    with pytest.raises((StorageError, OSError)):
        ChainStore(target / "db")


def test_store_locked_by_another_process_is_a_clear_error(tmp_path: Path) -> None:
    first = ChainStore(tmp_path / "db")
    with pytest.raises(StorageError, match="cannot open"):
        ChainStore(tmp_path / "db")
    first.close()


def test_consensus_log_keeps_order_per_height_and_prunes_older_heights(tmp_path: Path) -> None:
    store = ChainStore(tmp_path / "db")
    for seq, msg in enumerate([b"a", b"b", b"c"]):
        store.wal_append(7, seq, msg)
    store.wal_append(8, 0, b"next")
    assert store.wal_entries(7) == [b"a", b"b", b"c"]
    assert store.wal_next_seq(7) == 3 and store.wal_next_seq(9) == 0
    store.close()
    store = ChainStore(tmp_path / "db")
    assert store.wal_entries(7) == [b"a", b"b", b"c"]
    store.wal_prune(8)
    assert store.wal_entries(7) == [] and store.wal_entries(8) == [b"next"]
    store.close()


def test_an_old_store_with_an_undecodable_block_is_a_storage_error_when_indexed(tmp_path: Path) -> None:
    # A store from before the transaction index (a tip, no index marker) is indexed at open;
    # a block it cannot decode stops the node as any storage failure does, and leaves the database closed.
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    db.put(b"mtip", (1).to_bytes(8, "big") + bytes(32))
    db.put(b"b" + (1).to_bytes(8, "big"), b"\xc1 not a block")
    db.close()
    with pytest.raises(StorageError, match="cannot be decoded"):
        ChainStore(tmp_path / "db")
    plyvel.DB(str(tmp_path / "db")).close()  # the lock was released: it opens again
