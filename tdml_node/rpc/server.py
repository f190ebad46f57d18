"""The RPC server: JSON-RPC 2.0 over HTTP and websockets, health, metrics, and raw blob transfer.

``POST /`` takes a request or a batch; ``GET /ws`` is JSON-RPC over a
websocket with block subscriptions; ``GET /health`` says whether the node
is up; ``GET /metrics`` serves Prometheus metrics; ``GET /blob/<digest>``
and ``POST /blob`` move content-addressed blobs (datasets, model states)
without hex-encoding them into JSON. The server binds to 127.0.0.1 unless
told otherwise.

It sees the node only as a ``NodeView``. This module must never change node
state except through that view's entry points (``submit_transaction``, the
blob store).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from consensus.types import Hash32
from tdml_node.explorer import HEADERS, get_asset
from tdml_node.jsonview import hex0x
from tdml_node.rpc.dispatch import Dispatcher, error
from tdml_node.rpc.methods import RpcMethods
from tdml_node.rpc.params import INVALID_REQUEST
from tdml_node.rpc.websocket import serve_websocket
from tdml_node.runtime.views import NodeView
from tdml_node.storage import StorageError

log = logging.getLogger("tdml.rpc")

MAX_RPC_BODY = 4 * 1024 * 1024
MAX_BLOB_BODY = 256 * 1024 * 1024


class RpcServer:
    def __init__(self, node: NodeView, host: str, port: int, *, dev: bool = False) -> None:
        self.node = node
        self.host = host
        self.port = port
        self.methods = RpcMethods(node, dev=dev)
        self.dispatcher = Dispatcher(self.methods.table, self._storage_failed)
        self._runner: web.AppRunner | None = None

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BLOB_BODY)
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
        self._runner = web.AppRunner(self.make_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def dispatch_bytes(self, body: bytes) -> Any:
        return await self.dispatcher.dispatch_bytes(body)

    async def handle_rpc(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_RPC_BODY:
            return _json_response(error(None, INVALID_REQUEST, f"request body over {MAX_RPC_BODY} bytes"))
        body = await request.read()
        if len(body) > MAX_RPC_BODY:
            return _json_response(error(None, INVALID_REQUEST, f"request body over {MAX_RPC_BODY} bytes"))
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
        data = await request.read()
        if not data:
            return web.Response(status=400, text="empty blob")
        try:
            digest = self.node.store.put(data)
        except StorageError as exc:
            self._storage_failed(exc)
            return web.Response(status=507, text=f"cannot store the blob; the node is stopping: {exc}")
        return _json_response({"digest": hex0x(digest), "size": len(data)})

    async def handle_ws(self, request: web.Request) -> web.WebSocketResponse:
        return await serve_websocket(request, self.node, self.dispatcher, MAX_RPC_BODY)

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
