"""Raw loopback sockets for the tests of the connection limits on both ports.

This module must never open anything but loopback connections.
"""

from __future__ import annotations

import asyncio


async def connect(port: int, source: str = "127.0.0.1") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to a loopback port from ``source`` (any 127.x address stands for a distinct client)."""
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def closed_within(reader: asyncio.StreamReader, timeout: float) -> bool:
    """Whether the server closed the connection (EOF or reset) within ``timeout``, reading whatever comes."""
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True
