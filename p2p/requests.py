"""Request/response: the requests this node makes of its peers, and the answers it waits for.

``Requests`` numbers each request, remembers which link it went to, and
hands the matching response to the waiting caller; a response from another
link, or to a request no one waits for any more (it timed out), is dropped.
On top of that it fetches:

- a blob by its SHA-256 digest, in ``BLOB_CHUNK_SIZE`` chunks from one peer,
  checking every chunk's digest, offset, length and the total size, then the
  whole blob against the digest; a peer that fails a check is penalised and
  the next one is asked;
- a range of committed blocks, from the highest peer first; the bytes are
  returned as the peer sent them, for the node to decode and check.

Each wait is bounded by ``request_timeout`` and by the caller's overall
timeout, so a silent peer costs at most one ``request_timeout``.

This module must never import the network, choose which peers exist, or
score a peer itself: the caller hands it the links to ask, and it reports
misbehaviour through ``penalize``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from consensus.crypto import sha256
from consensus.types import Hash32, Height
from p2p.link import Link
from p2p.messages import (
    BLOB_CHUNK_SIZE,
    MAX_BLOCKS_PER_REQUEST,
    BlobChunk,
    BlobRequest,
    Blocks,
    BlocksRequest,
    NotFound,
    RequestId,
    ResponseMessage,
)
from p2p.session import SEVERITY_MAJOR

log = logging.getLogger("tdml.p2p")

Penalize = Callable[[Link, str, int], None]
"""Lower the score of the peer behind a link, for a reason, by a severity."""


@dataclass(slots=True)
class _Pending:
    link: Link
    future: asyncio.Future[ResponseMessage | None]


class Requests:
    """This node's outstanding requests, by id, and the fetches built on them."""

    def __init__(self, penalize: Penalize, *, request_timeout: float, max_blob_size: int) -> None:
        self._penalize = penalize
        self._request_timeout = request_timeout
        self._max_blob_size = max_blob_size
        self._pending: dict[int, _Pending] = {}
        self._next_id = 1

    # ------------------------------------------------------------ responses

    def on_response(self, link: Link, msg: ResponseMessage) -> None:
        """Hand a response to the request waiting for it, if that request went to this link."""
        pending = self._pending.get(msg.req_id)
        if pending is None or pending.link is not link:
            # A late answer to a request that timed out, or noise: the rate
            # limit bounds what it costs us, so it is dropped without penalty.
            log.debug("%s: unexpected response %d from %s", link.me, msg.req_id, link.address)
            return
        del self._pending[msg.req_id]
        if not pending.future.done():
            pending.future.set_result(msg)

    def on_link_closed(self, link: Link) -> None:
        """The link ended: every request waiting on it gets no answer."""
        for req_id, pending in list(self._pending.items()):
            if pending.link is link:
                del self._pending[req_id]
                if not pending.future.done():
                    pending.future.set_result(None)

    # ------------------------------------------------------------ fetches

    async def request_blob(self, links: Iterable[Link], digest: Hash32, timeout: float) -> bytes | None:
        """Fetch a blob from the first of ``links`` that serves it whole and correct; None if none did."""
        deadline = _now() + timeout
        for link in links:
            if _now() >= deadline:
                break
            data = await self._fetch_blob(link, digest, deadline)
            if data is not None:
                return data
        return None

    async def request_blocks(
        self, links: Iterable[Link], start: int, count: int, timeout: float
    ) -> list[tuple[bytes, bytes]]:
        """Up to ``count`` (block, commit) bytes from ``start`` on, from the highest of ``links`` that answers."""
        count = min(count, MAX_BLOCKS_PER_REQUEST)
        if count < 1 or start < 0:
            return []
        deadline = _now() + timeout
        candidates = sorted((c for c in links if c.height >= start), key=lambda c: (-c.height, c.sort_key))
        for link in candidates:
            remaining = deadline - _now()
            if remaining <= 0:
                break
            req = BlocksRequest(self._new_id(), Height(start), count)
            resp = await self._request(link, req, remaining)
            if resp is None or isinstance(resp, NotFound):
                continue
            if not isinstance(resp, Blocks) or len(resp.items) > count:
                self._penalize(link, "answered a block request with something else", SEVERITY_MAJOR)
                continue
            if resp.items:
                return [(item.block, item.commit) for item in resp.items]
        return []

    # ------------------------------------------------------------ internals

    def _new_id(self) -> RequestId:
        req_id = self._next_id
        self._next_id += 1
        return RequestId(req_id)

    async def _request(self, link: Link, req: BlobRequest | BlocksRequest, remaining: float) -> ResponseMessage | None:
        """Send one request and wait for its answer; None on timeout or when the link ends."""
        if link.ending or not link.session.is_established:
            return None
        future: asyncio.Future[ResponseMessage | None] = asyncio.get_running_loop().create_future()
        self._pending[req.req_id] = _Pending(link, future)
        try:
            link.send(req)
            async with asyncio.timeout(min(remaining, self._request_timeout)):
                return await future
        except TimeoutError:
            return None
        finally:
            self._pending.pop(req.req_id, None)

    async def _fetch_blob(self, link: Link, digest: Hash32, deadline: float) -> bytes | None:
        parts: list[bytes] = []
        offset = 0
        total: int | None = None
        while total is None or offset < total:
            remaining = deadline - _now()
            if remaining <= 0 or link.ending:
                return None
            resp = await self._request(link, BlobRequest(self._new_id(), digest, offset, BLOB_CHUNK_SIZE), remaining)
            if resp is None or isinstance(resp, NotFound):
                return None
            if not isinstance(resp, BlobChunk) or resp.digest != digest or resp.offset != offset:
                self._penalize(link, "answered a blob request with the wrong chunk", SEVERITY_MAJOR)
                return None
            if total is None:
                if resp.total_size > self._max_blob_size:
                    log.info("%s: blob %s of %d bytes is over our limit", link.me, digest.hex()[:12], resp.total_size)
                    return None
                total = resp.total_size
            elif resp.total_size != total:
                self._penalize(link, "changed a blob's size between chunks", SEVERITY_MAJOR)
                return None
            if len(resp.data) != min(BLOB_CHUNK_SIZE, total - offset):
                self._penalize(link, "sent a blob chunk of the wrong length", SEVERITY_MAJOR)
                return None
            parts.append(resp.data)
            offset += len(resp.data)
        blob = b"".join(parts)
        if sha256(blob) != digest:
            self._penalize(link, "sent a blob that does not match its digest", SEVERITY_MAJOR)
            return None
        return blob


def _now() -> float:
    return asyncio.get_running_loop().time()
