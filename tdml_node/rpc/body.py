"""Request bodies read under a size limit and a deadline, chunked bodies too.

The body is read from the stream piece by piece and refused as soon as it
passes the limit, so an oversized body (declared or chunked) is never held
whole; a body that does not arrive whole within the deadline (a slowloris
sender) is cut. This module must never interpret a body.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

READ_PIECE = 64 * 1024


class BodyRefused(Exception):
    """The body was too large (413) or too slow (408); the connection is not reused."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def read_body(request: web.Request, limit: int, deadline_s: float) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise BodyRefused(413, f"request body over {limit} bytes")
    data = bytearray()
    try:
        async with asyncio.timeout(deadline_s):
            async for piece in request.content.iter_chunked(READ_PIECE):
                if len(data) + len(piece) > limit:
                    raise BodyRefused(413, f"request body over {limit} bytes")
                data += piece
    except TimeoutError as exc:
        raise BodyRefused(408, f"request body not received within {deadline_s:g} s") from exc
    return bytes(data)
