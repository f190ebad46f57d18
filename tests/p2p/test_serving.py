"""Answers to peers' requests, table by table: blob chunks, block ranges, addresses to share."""

from __future__ import annotations

import hashlib

import pytest
from p2p_fixtures import MemoryHandler, keypair, make_link

from consensus.types import Hash32, Height
from p2p.link import Link
from p2p.messages import (
    BLOB_CHUNK_SIZE,
    MAX_BLOCK_BYTES,
    BlobChunk,
    BlobRequest,
    Blocks,
    BlocksRequest,
    BlockWithCommit,
    NotFound,
    Peers,
    PeersRequest,
    RequestId,
)
from p2p.peers import SOURCE_PEX, PeerBook
from p2p.serving import Server

BLOB = bytes(range(256)) * 5000  # 1.28 MB: three chunks, the last one short
DIGEST = Hash32(hashlib.sha256(BLOB).digest())
EMPTY = Hash32(hashlib.sha256(b"").digest())
OWN = "127.0.0.1:40000"


def server(handler: MemoryHandler | None = None, peers: list[Link] | None = None, book: PeerBook | None = None) -> Server:
    handler = handler or MemoryHandler(blobs={bytes(DIGEST): BLOB, bytes(EMPTY): b""})
    return Server(handler, book or PeerBook(), lambda: peers or [], own_addr=OWN, pex_interval=10.0)


def blob_req(offset: int, digest: Hash32 = DIGEST, length: int = BLOB_CHUNK_SIZE) -> BlobRequest:
    return BlobRequest(RequestId(7), digest, offset, length)


@pytest.mark.parametrize(
    ("req", "answer"),
    [
        (blob_req(0), BlobChunk(RequestId(7), DIGEST, 0, len(BLOB), BLOB[:BLOB_CHUNK_SIZE])),
        (blob_req(2 * BLOB_CHUNK_SIZE), BlobChunk(RequestId(7), DIGEST, 2 * BLOB_CHUNK_SIZE, len(BLOB), BLOB[2 * BLOB_CHUNK_SIZE :])),
        (blob_req(10, length=5), BlobChunk(RequestId(7), DIGEST, 10, len(BLOB), BLOB[10:15])),
        (blob_req(0, EMPTY), BlobChunk(RequestId(7), EMPTY, 0, 0, b"")),  # an empty blob is one empty chunk
        (blob_req(len(BLOB)), NotFound(RequestId(7))),  # past the end of a non-empty blob
        (blob_req(len(BLOB) + 1), NotFound(RequestId(7))),
        (blob_req(0, Hash32(bytes(32))), NotFound(RequestId(7))),  # a blob we do not have
    ],
    ids=["first", "last-short", "slice", "empty", "at-end", "past-end", "missing"],
)
def test_answer_blob(req: BlobRequest, answer: BlobChunk | NotFound) -> None:
    assert server().answer_blob(req) == answer


class BrokenStore(MemoryHandler):
    def get_blob(self, digest: Hash32) -> bytes | None:
        raise OSError("disk gone")

    def get_blocks(self, start: int, count: int) -> list[tuple[bytes, bytes]]:
        raise OSError("disk gone")


def test_a_broken_store_is_answered_as_having_nothing() -> None:
    s = server(BrokenStore())
    assert s.answer_blob(blob_req(0)) == NotFound(RequestId(7))
    assert s.answer_blocks(BlocksRequest(RequestId(8), Height(1), 5)) == NotFound(RequestId(8))


def blocks_req(start: int, count: int) -> BlocksRequest:
    return BlocksRequest(RequestId(9), Height(start), count)


def items(blocks: dict[int, tuple[bytes, bytes]], heights: range) -> Blocks:
    return Blocks(RequestId(9), tuple(BlockWithCommit(*blocks[h]) for h in heights))


SMALL = {h: (f"block {h}".encode(), f"commit {h}".encode()) for h in range(1, 6)}
BIG = {h: (bytes([h]) * (7 * 1024 * 1024), b"commit") for h in range(1, 4)}
HUGE = {1: (b"a", b"c"), 2: (b"b" * (MAX_BLOCK_BYTES + 1), b"c"), 3: (b"c", b"c")}


@pytest.mark.parametrize(
    ("blocks", "req", "answer"),
    [
        (SMALL, blocks_req(2, 10), items(SMALL, range(2, 6))),
        (SMALL, blocks_req(1, 2), items(SMALL, range(1, 3))),
        (SMALL, blocks_req(6, 10), NotFound(RequestId(9))),
        (BIG, blocks_req(1, 3), items(BIG, range(1, 3))),  # a third 7 MiB block would pass the frame limit
        (HUGE, blocks_req(1, 3), items(HUGE, range(1, 2))),  # a stored block too large to send stops the range
    ],
    ids=["to-the-tip", "count", "beyond", "cut-to-a-frame", "too-large"],
)
def test_answer_blocks(blocks: dict[int, tuple[bytes, bytes]], req: BlocksRequest, answer: Blocks | NotFound) -> None:
    assert server(MemoryHandler(blocks=blocks)).answer_blocks(req) == answer


def test_addresses_shared_are_other_peers_and_the_book_but_not_the_asker_or_us() -> None:
    asker, _ = make_link(2, dial_addr="127.0.0.1:40002")
    asker.listen_addr = "127.0.0.1:40002"
    other, _ = make_link(3)
    other.listen_addr = "127.0.0.1:40003"
    silent, _ = make_link(4)  # announced no dialable address
    book = PeerBook()
    for i, addr in enumerate(("127.0.0.1:40001", "127.0.0.1:40003", "127.0.0.1:40002", OWN, "127.0.0.1:40005")):
        book.add_address(addr, SOURCE_PEX)
        if addr != "127.0.0.1:40005":  # an address never verified is not passed on
            book.record_verified(addr, keypair(10 + i).public_key)
    s = server(peers=[asker, other, silent], book=book)
    # Connected peers first, then the book's verified addresses; once each; never the asker's or ours.
    assert s.get_addresses_to_share(asker, now=0.0) == ["127.0.0.1:40003", "127.0.0.1:40001"]


def test_a_peer_gets_at_most_two_answers_per_exchange_interval() -> None:
    asker, _ = make_link(2)
    s = server()
    assert isinstance(s.answer(asker, PeersRequest(), 100.0), Peers)
    assert s.answer(asker, PeersRequest(), 104.9) is None  # under half of the 10 s interval
    assert isinstance(s.answer(asker, PeersRequest(), 105.0), Peers)
