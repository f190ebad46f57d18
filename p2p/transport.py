"""Websocket transport: a listener and a dialler that turn aiohttp websockets into frame pipes.

A ``Connection`` carries whole frames (one websocket binary message each)
and knows nothing of what they mean. The ``Listener`` serves the route
``/p2p`` and hands every accepted websocket to a callback that runs the
connection until it ends; the ``Dialer`` opens websockets to ``host:port``
addresses. Both cap a websocket message at the largest frame the protocol
allows, so aiohttp refuses anything larger before it is buffered.

The listener serves through a ``ConnectionGuard`` (connection limits,
deadlines, and a byte budget until the owner calls
``Connection.mark_established``), and takes a pending-handshake slot from
its owner (``admit``) before it upgrades a request, so the cap on
handshakes is exact.

This and ``guard`` are the only modules that touch aiohttp. This module
must never decode frames, keep peer state or start background tasks of its
own: the network owns every task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from p2p.guard import ConnectionGuard, GuardLimits, Slot, mark_established
from p2p.messages import MAX_FRAME
from p2p.peers import format_addr

log = logging.getLogger("tdml.p2p.transport")

PATH = "/p2p"
DEFAULT_HEARTBEAT = 15.0
DEFAULT_CLOSE_TIMEOUT = 2.0
DEFAULT_CONNECT_TIMEOUT = 5.0


class TransportError(Exception):
    """A connection could not be opened, or broke."""


class BadFrame(TransportError):
    """The peer sent something that is not a binary frame (text, or a malformed websocket frame)."""


class Connection:
    """One open websocket, client or server side, as a pipe of binary frames.

    Only one task may call ``receive`` and only one may call ``send`` at a time.
    """

    def __init__(
        self,
        ws: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
        remote: str,
        *,
        inbound: bool,
        slot: Slot | None = None,
        transport: asyncio.BaseTransport | None = None,
    ) -> None:
        self._ws = ws
        self.remote = remote
        self.inbound = inbound
        self._slot = slot  # the pending-handshake slot an inbound connection holds
        self._transport = transport  # the server-side socket, which the guard watches

    def mark_established(self) -> None:
        """The handshake completed: give back the pending-handshake slot and lift the guard's pre-handshake limits."""
        if self._slot is not None:
            self._slot.release()
        mark_established(self._transport)

    @property
    def closed(self) -> bool:
        return self._ws.closed

    async def send(self, frame: bytes) -> None:
        try:
            await self._ws.send_bytes(frame)
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            # aiohttp raises ConnectionResetError or RuntimeError for a
            # socket that closed under us; to the network both mean "gone".
            raise TransportError(f"send failed: {exc}") from exc

    async def receive(self) -> bytes | None:
        """The next frame, or None once the connection is closed.

        Raises ``BadFrame`` for a text message or a websocket protocol error
        (such as a message over the size limit); the connection is then closed.
        """
        msg = await self._ws.receive()
        if msg.type is aiohttp.WSMsgType.BINARY:
            data: bytes = msg.data
            return data
        if msg.type is aiohttp.WSMsgType.TEXT:
            raise BadFrame("text frame")
        if msg.type is aiohttp.WSMsgType.ERROR:
            if isinstance(msg.data, aiohttp.WebSocketError):
                raise BadFrame(f"websocket error: {msg.data}")
            return None
        return None

    async def close(self) -> None:
        try:
            await self._ws.close()
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            log.debug("closing %s: %s", self.remote, exc)


ConnectionCallback = Callable[[Connection], Awaitable[None]]


Admit = Callable[[str], Slot | None]
"""Takes a pending-handshake slot for a client IP, or says no (None)."""


class Listener:
    """The websocket server. ``on_connection`` runs each accepted connection to its end."""

    def __init__(
        self,
        host: str,
        port: int,
        on_connection: ConnectionCallback,
        *,
        admit: Admit,
        limits: GuardLimits,
        is_known: Callable[[str], bool] = lambda ip: False,
        heartbeat: float = DEFAULT_HEARTBEAT,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    ) -> None:
        self.host = host
        self.port = port
        self._on_connection = on_connection
        self._admit = admit
        self._heartbeat = heartbeat
        self._close_timeout = close_timeout
        self.guard = ConnectionGuard(limits, is_known=is_known)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Bind and listen; with port 0, ``port`` is the one the system chose afterwards."""
        app = web.Application(middlewares=[self.guard.middleware])
        app.router.add_get(PATH, self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=self._close_timeout)
        await runner.setup()
        assert runner.server is not None, "set up above"
        try:
            self.port = await self.guard.serve(runner.server, self.host, self.port)
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner

    async def aclose(self) -> None:
        runner, self._runner = self._runner, None
        self.guard.close()
        if runner is not None:
            await runner.cleanup()
        self.guard.abort_all()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport else None
        ip = str(peer[0]) if peer else (request.remote or "?")
        slot = self._admit(ip)
        if slot is None:
            return web.Response(status=503, text="not accepting peers now")
        try:
            ws = web.WebSocketResponse(
                max_msg_size=MAX_FRAME,
                heartbeat=self._heartbeat,
                timeout=self._close_timeout,
                compress=False,
            )
            await ws.prepare(request)
            remote = format_addr(peer[0], peer[1]) if peer else ip
            await self._on_connection(Connection(ws, remote, inbound=True, slot=slot, transport=transport))
            return ws
        finally:
            slot.release()


class Dialer:
    """Opens websockets to peers. Create and close it inside the event loop that uses it."""

    def __init__(
        self,
        *,
        heartbeat: float = DEFAULT_HEARTBEAT,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        self._heartbeat = heartbeat
        self._close_timeout = close_timeout
        self._connect_timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None

    async def dial(self, addr: str) -> Connection:
        """Open a websocket to ``addr`` (``host:port``); raises ``TransportError`` on failure."""
        if self._session is None:
            # No pool limit: every peer holds its connection for as long as it
            # lives, and the network caps the number of peers itself.
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        try:
            async with asyncio.timeout(self._connect_timeout):
                ws = await self._session.ws_connect(
                    f"http://{addr}{PATH}",
                    max_msg_size=MAX_FRAME,
                    heartbeat=self._heartbeat,
                    timeout=aiohttp.ClientWSTimeout(ws_close=self._close_timeout),
                )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise TransportError(f"cannot connect to {addr}: {type(exc).__name__}: {exc}") from exc
        return Connection(ws, addr, inbound=False)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
