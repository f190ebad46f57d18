"""Requests and their responses, against stand-in peers that answer (or lie) on the link's queue."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from p2p_fixtures import MemoryHandler, make_link

from consensus.types import Hash32, Height
from p2p.link import Link
from p2p.messages import (
    BLOB_CHUNK_SIZE,
    MAX_BLOCKS_PER_REQUEST,
    BlobChunk,
    BlobRequest,
    Blocks,
    BlocksRequest,
    BlockWithCommit,
    NotFound,
    ResponseMessage,
    WireMessage,
    decode_frame,
)
from p2p.peers import PeerBook
from p2p.requests import Requests
from p2p.serving import Server
from p2p.session import SEVERITY_MAJOR

pytestmark = pytest.mark.timeout(10)

BLOB = bytes(range(256)) * 5000  # three chunks, the last one short
DIGEST = Hash32(hashlib.sha256(BLOB).digest())
Answer = Callable[[WireMessage], ResponseMessage | None]


@dataclasses.dataclass
class Harness:
    requests: Requests
    penalties: list[tuple[Link, str, int]]
    asked: list[tuple[Link, WireMessage]]
    tasks: list[asyncio.Task[None]]

    def peer(self, answer: Answer, index: int, height: int = 0) -> Link:
        """A linked peer that answers each request it is sent with ``answer``."""
        link, _ = make_link(index)
        link.height = height
        self.tasks.append(asyncio.create_task(self._serve(link, answer)))
        return link

    async def _serve(self, link: Link, answer: Answer) -> None:
        while True:
            while not link.queue:
                link.wake.clear()
                await link.wake.wait()
            frame = link.queue.popleft()
            if frame is None:
                return
            req = decode_frame(frame)
            self.asked.append((link, req))
            resp = answer(req)
            if resp is not None:
                self.requests.on_response(link, resp)


@asynccontextmanager
async def harness(*, request_timeout: float = 2.0, max_blob_size: int = 1 << 30) -> AsyncIterator[Harness]:
    penalties: list[tuple[Link, str, int]] = []
    h = Harness(
        Requests(lambda *p: penalties.append(p), request_timeout=request_timeout, max_blob_size=max_blob_size),
        penalties,
        [],
        [],
    )
    try:
        yield h
    finally:
        for task in h.tasks:
            task.cancel()
        await asyncio.gather(*h.tasks, return_exceptions=True)


def store(blob: bytes = BLOB, blocks: dict[int, tuple[bytes, bytes]] | None = None) -> Server:
    handler = MemoryHandler(blobs={bytes(DIGEST): blob}, blocks=blocks or {})
    return Server(handler, PeerBook(), list, own_addr="", pex_interval=10.0)


def honest(blob: bytes = BLOB, blocks: dict[int, tuple[bytes, bytes]] | None = None) -> Answer:
    s = store(blob, blocks)

    def answer(req: WireMessage) -> ResponseMessage | None:
        if isinstance(req, BlobRequest):
            return s.answer_blob(req)
        assert isinstance(req, BlocksRequest)
        return s.answer_blocks(req)

    return answer


def lying(change: Callable[[BlobChunk], ResponseMessage]) -> Answer:
    """Answers honestly, except that the chunk at offset 512 KiB is changed."""
    good = honest()

    def answer(req: WireMessage) -> ResponseMessage | None:
        resp = good(req)
        if isinstance(resp, BlobChunk) and resp.offset == BLOB_CHUNK_SIZE:
            return change(resp)
        return resp

    return answer


def silent(req: WireMessage) -> None:
    return None


# ---------------------------------------------------------------------------
# Blobs


async def test_a_blob_comes_in_chunks_from_one_peer() -> None:
    async with harness() as h:
        link = h.peer(honest(), 2)
        assert await h.requests.request_blob([link], DIGEST, timeout=5.0) == BLOB
        offsets = [req.offset for _, req in h.asked if isinstance(req, BlobRequest)]
        assert offsets == [0, BLOB_CHUNK_SIZE, 2 * BLOB_CHUNK_SIZE]
        assert h.penalties == []


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda c: dataclasses.replace(c, offset=c.offset + 1), "answered a blob request with the wrong chunk"),
        (lambda c: dataclasses.replace(c, digest=Hash32(bytes(32))), "answered a blob request with the wrong chunk"),
        (lambda c: Blocks(c.req_id, (BlockWithCommit(b"b", b"c"),)), "answered a blob request with the wrong chunk"),
        (lambda c: dataclasses.replace(c, total_size=c.total_size + 1), "changed a blob's size between chunks"),
        (lambda c: dataclasses.replace(c, data=c.data[:-1]), "sent a blob chunk of the wrong length"),
        (lambda c: dataclasses.replace(c, data=bytes(len(c.data))), "sent a blob that does not match its digest"),
    ],
    ids=["offset", "digest", "not-a-chunk", "size", "length", "content"],
)
async def test_a_peer_that_lies_about_a_blob_is_penalised_and_the_next_is_asked(
    change: Callable[[BlobChunk], ResponseMessage], reason: str
) -> None:
    async with harness() as h:
        liar, good = h.peer(lying(change), 2), h.peer(honest(), 3)
        assert await h.requests.request_blob([liar, good], DIGEST, timeout=5.0) == BLOB
        assert h.penalties == [(liar, reason, SEVERITY_MAJOR)]


async def test_a_blob_over_our_limit_is_not_fetched_and_not_held_against_the_peer() -> None:
    async with harness(max_blob_size=len(BLOB) - 1) as h:
        link = h.peer(honest(), 2)
        assert await h.requests.request_blob([link], DIGEST, timeout=5.0) is None
        assert len(h.asked) == 1 and h.penalties == []


async def test_a_silent_peer_costs_one_request_timeout_then_the_next_is_asked() -> None:
    async with harness(request_timeout=0.1) as h:
        quiet, good = h.peer(silent, 2), h.peer(honest(), 3)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await h.requests.request_blob([quiet, good], DIGEST, timeout=5.0) == BLOB
        assert 0.1 <= loop.time() - started < 2.0
        assert h.penalties == []


async def test_an_answer_from_another_link_is_not_taken() -> None:
    async with harness(request_timeout=0.2) as h:
        asked, other = h.peer(silent, 2), h.peer(silent, 3)
        task = asyncio.create_task(h.requests.request_blob([asked], DIGEST, timeout=5.0))
        await asyncio.sleep(0.05)
        req = h.asked[0][1]
        assert isinstance(req, BlobRequest)
        h.requests.on_response(other, NotFound(req.req_id))
        h.requests.on_response(other, store().answer_blob(req))  # even a right answer, from the wrong peer
        assert await task is None


async def test_a_link_that_ends_fails_its_requests_at_once() -> None:
    async with harness(request_timeout=30.0) as h:
        link = h.peer(silent, 2)
        task = asyncio.create_task(h.requests.request_blob([link], DIGEST, timeout=30.0))
        await asyncio.sleep(0.05)
        h.requests.on_link_closed(link)
        assert await asyncio.wait_for(task, 1.0) is None


# ---------------------------------------------------------------------------
# Block ranges


BLOCKS = {h: (f"block {h}".encode(), f"commit {h}".encode()) for h in range(1, 6)}


async def test_blocks_come_from_the_highest_peer_that_has_them() -> None:
    async with harness() as h:
        low = h.peer(honest(blocks={1: (b"x", b"y")}), 2, height=1)  # below the start: not asked
        lost = h.peer(honest(blocks={}), 3, height=9)  # claims a height, has nothing: NotFound, next
        tall = h.peer(honest(blocks=BLOCKS), 4, height=5)
        got = await h.requests.request_blocks([low, tall, lost], 2, 10, timeout=5.0)
        assert got == [BLOCKS[h] for h in range(2, 6)]
        assert [link for link, _ in h.asked] == [lost, tall]
        assert h.penalties == []


async def test_an_answer_with_more_blocks_than_asked_is_penalised() -> None:
    async with harness() as h:
        def too_many(req: WireMessage) -> ResponseMessage:
            assert isinstance(req, BlocksRequest)
            return Blocks(req.req_id, tuple(BlockWithCommit(b"b", b"c") for _ in range(req.count + 1)))

        liar = h.peer(too_many, 2, height=9)
        good = h.peer(honest(blocks=BLOCKS), 3, height=5)
        assert await h.requests.request_blocks([liar, good], 1, 2, timeout=5.0) == [BLOCKS[1], BLOCKS[2]]
        assert h.penalties == [(liar, "answered a block request with something else", SEVERITY_MAJOR)]


async def test_a_block_request_is_capped_and_an_empty_one_is_not_sent() -> None:
    async with harness() as h:
        link = h.peer(honest(blocks=BLOCKS), 2, height=5)
        assert await h.requests.request_blocks([link], 1, 0, timeout=5.0) == []
        assert await h.requests.request_blocks([link], -1, 5, timeout=5.0) == []
        assert h.asked == []
        await h.requests.request_blocks([link], 1, 10_000, timeout=5.0)
        assert h.asked[0][1] == BlocksRequest(h.asked[0][1].req_id, Height(1), MAX_BLOCKS_PER_REQUEST)  # type: ignore[union-attr]
