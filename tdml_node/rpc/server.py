"""The RPC server: JSON-RPC 2.0 over HTTP and websockets, health, metrics, and raw blob transfer.

``POST /`` takes a request or a batch; ``GET /ws`` is JSON-RPC over a
websocket with block subscriptions; ``GET /health`` says whether the node
is up; ``GET /metrics`` serves Prometheus metrics; ``GET /blob/<digest>``
and ``POST /blob`` move content-addressed blobs (datasets, model states)
without hex-encoding them into JSON. The server binds to 127.0.0.1 unless
told otherwise; ``guard`` says who may call it (vhosts, origins, content
types, the blob token) and ``body`` bounds what a request may send.

It sees the node only as a ``NodeView``. This module must never change node
state except through that view's entry points (``submit_transaction``, the
blob store).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from consensus.types import Hash32
from p2p.guard import ConnectionGuard, GuardLimits
from tdml_node.explorer import HEADERS, get_asset
from tdml_node.jsonview import hex0x
from tdml_node.rpc.body import BodyRefused, read_body
from tdml_node.rpc.dispatch import Dispatcher, error
from tdml_node.rpc.guard import RpcPolicy, bearer_ok, guard_middleware, media_type
from tdml_node.rpc.methods import RpcMethods
from tdml_node.rpc.params import INVALID_REQUEST
from tdml_node.rpc.websocket import WsLimits, serve_websocket
from tdml_node.runtime.views import NodeView
from tdml_node.storage import StorageError

log = logging.getLogger("tdml.rpc")

MAX_RPC_BODY = 4 * 1024 * 1024
MAX_BLOB_BODY = RpcPolicy.max_blob_bytes


class _ClientFaults(logging.Filter):
    """aiohttp logs every malformed request at ERROR with a traceback, though it is the client's
    fault and answered 400: a hostile client could flood the log. Such records go down to DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and exc.code < 500:
            record.msg = f"{record.getMessage()}: {exc.code} {exc.message.splitlines()[0] if exc.message else ''}"
            record.args = None
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


CLIENT_FAULTS = _ClientFaults()
JSON_TYPE = "application/json"
BLOB_TYPE = "application/octet-stream"
RPC_LIMITS = GuardLimits(
    max_connections=1024, max_per_ip=64, reserved_known=64, header_timeout=10.0, idle_timeout=120.0, write_timeout=30.0,
)
"""The RPC port's connection guard: the idle deadline is well above the websocket heartbeat (30 s), whose pongs
keep a subscriber that only reads alive."""
LOCAL_IPS = frozenset({"127.0.0.1", "::1"})
"""Clients the RPC port keeps reserved connections for: the operator's own tools on this host."""


class RpcServer:
    def __init__(
        self,
        node: NodeView,
        host: str,
        port: int,
        *,
        dev: bool = False,
        policy: RpcPolicy | None = None,
        ws_limits: WsLimits | None = None,
        limits: GuardLimits = RPC_LIMITS,
    ) -> None:
        self.node = node
        self.host = host
        self.port = port
        self.policy = policy or RpcPolicy()
        self.ws_limits = ws_limits or WsLimits()
        self.guard = ConnectionGuard(limits, is_known=LOCAL_IPS.__contains__)
        self.methods = RpcMethods(node, dev=dev)
        self.dispatcher = Dispatcher(self.methods.table, self._storage_failed, node.metrics.observe_rpc)
        self._runner: web.AppRunner | None = None
        logging.getLogger("aiohttp.server").addFilter(CLIENT_FAULTS)

    def make_app(self) -> web.Application:
        # Bodies are read through ``read_body``; nothing should ever buffer more than a JSON-RPC body.
        app = web.Application(client_max_size=MAX_RPC_BODY, middlewares=[guard_middleware(self.policy, self.host)])
        app.router.add_post("/", self.handle_rpc)
        app.router.add_get("/health", self.handle_health)
        app.router.add_get("/metrics", self.handle_metrics)
        app.router.add_get("/blob/{digest}", self.handle_get_blob)
        app.router.add_post("/blob", self.handle_put_blob)
        app.router.add_get("/ws", self.handle_ws)
        app.router.add_get("/", self.handle_explorer)
        app.router.add_get("/explorer/{name}", self.handle_explorer)
        return app

    async def start(self) -> int:
        app = self.make_app()
        app.middlewares.append(self.guard.middleware)
        # After a refused body (413) aiohttp reads and discards the rest for ``lingering_time``
        # (10 s by default): a second is enough for an honest client to see the answer.
        self._runner = web.AppRunner(app, access_log=None, lingering_time=1.0)
        await self._runner.setup()
        assert self._runner.server is not None, "set up above"
        try:
            self.port = await self.guard.serve(self._runner.server, self.host, self.port)
        except BaseException:
            await self.stop()
            raise
        return self.port

    async def stop(self) -> None:
        self.guard.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.guard.abort_all()

    async def dispatch_bytes(self, body: bytes) -> Any:
        return await self.dispatcher.dispatch_bytes(body)

    async def handle_rpc(self, request: web.Request) -> web.Response:
        if media_type(request.headers.get("Content-Type")) != JSON_TYPE:
            return web.Response(status=415, text=f"JSON-RPC requests must be {JSON_TYPE}")
        try:
            body = await read_body(request, MAX_RPC_BODY, self.policy.body_timeout_s)
        except BodyRefused as exc:
            return _closing(_json_response(error(None, INVALID_REQUEST, exc.message), status=exc.status))
        result = await self.dispatcher.dispatch_bytes(body)
        if result is None:
            return web.Response(status=204)
        return _json_response(result)

    async def handle_health(self, request: web.Request) -> web.Response:
        node = self.node
        healthy = node.fatal is None
        body = {"status": "ok" if healthy else "halted", "height": node.chain.state.height, "chainId": node.chain.chain_id}
        return _json_response(body, status=200 if healthy else 503)

    async def handle_metrics(self, request: web.Request) -> web.Response:
        metrics = self.node.metrics
        metrics.peers.set(self.node.network.peer_count())
        return web.Response(body=metrics.render(), content_type="text/plain")

    async def handle_get_blob(self, request: web.Request) -> web.Response:
        try:
            digest = bytes.fromhex(request.match_info["digest"].removeprefix("0x"))
        except ValueError:
            return web.Response(status=400, text="digest must be hex")
        if len(digest) != 32:
            return web.Response(status=400, text="digest must be 32 bytes")
        data = self.node.store.get(Hash32(digest))
        if data is None:
            return web.Response(status=404, text="no such blob")
        return web.Response(body=data, content_type="application/octet-stream")

    async def handle_put_blob(self, request: web.Request) -> web.Response:
        if not bearer_ok(request.headers.get("Authorization"), self.policy.tokens):
            return web.Response(
                status=401, text="blob uploads need Authorization: Bearer <token> (rpc.cookie or rpc_token)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if media_type(request.headers.get("Content-Type")) != BLOB_TYPE:
            return web.Response(status=415, text=f"blob uploads must be {BLOB_TYPE}")
        try:
            data = await read_body(request, self.policy.max_blob_bytes, self.policy.blob_timeout_s)
        except BodyRefused as exc:
            return _closing(web.Response(status=exc.status, text=exc.message))
        if not data:
            return web.Response(status=400, text="empty blob")
        try:
            digest = self.node.store.put(data)
        except StorageError as exc:
            self._storage_failed(exc)
            return web.Response(status=507, text=f"cannot store the blob; the node is stopping: {exc}")
        return _json_response({"digest": hex0x(digest), "size": len(data)})

    async def handle_ws(self, request: web.Request) -> web.WebSocketResponse:
        return await serve_websocket(request, self.node, self.dispatcher, self.ws_limits)

    async def handle_explorer(self, request: web.Request) -> web.Response:
        asset = get_asset(request.match_info.get("name", "index.html"))
        if asset is None:
            return web.Response(status=404, text="no such file")
        return web.Response(body=asset.body, content_type=asset.content_type, charset="utf-8", headers=HEADERS)

    def _storage_failed(self, exc: StorageError) -> None:
        """A write failed (full disk, permissions): the node stops rather than go on half-written."""
        log.error("node halted: %s", exc)
        self.node.halt(exc)


def _json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, content_type="application/json")


def _closing(response: web.Response) -> web.Response:
    # The rest of a refused body is not worth reading: the connection ends after this answer.
    response.force_close()
    return response
