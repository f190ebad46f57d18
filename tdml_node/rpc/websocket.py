"""JSON-RPC over a websocket, plus notifications of committed blocks: ``tdml_subscribe(["newBlocks"])``
(TDML's block summary) and ``eth_subscribe(["newHeads"])`` (Ethereum's header shape, for Ethereum tools).

Text and binary frames both carry UTF-8 JSON (web3.py sends binary). A
request without an id is a notification: it is never answered, and a
subscribe without ``"jsonrpc": "2.0"`` and an id subscribes nothing.

A client that does not read is cut off at bounds that hold (``WsLimits``):
the socket's send buffer is fixed small (which turns off the kernel's
autotuning, so the kernel does not quietly queue megabytes), the outbox
holds at most ``max_backlog`` messages, and one message that cannot be
sent within ``send_timeout_s`` ends the connection. A connection has at
most ``max_subscriptions`` subscriptions, and the outbox has room for a
block's notifications to all of them, so a client that reads is never cut.

This module must never change node state but through the dispatcher's methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from tdml_node.rpc.dispatch import Dispatcher, error, valid_id
from tdml_node.rpc.ethview import eth_header
from tdml_node.rpc.params import INVALID_PARAMS, INVALID_REQUEST, LIMIT_EXCEEDED, PARSE_ERROR
from tdml_node.rpc.views import block_summary
from tdml_node.runtime.views import CommittedBlock, NodeView

log = logging.getLogger("tdml.rpc")

SUBSCRIBE = {"tdml_subscribe": "newBlocks", "eth_subscribe": "newHeads"}
"""Each subscribe method and the one kind it offers."""
UNSUBSCRIBE = ("tdml_unsubscribe", "eth_unsubscribe")
NOTIFICATION = {"newBlocks": "tdml_subscription", "newHeads": "eth_subscription"}
"""The method name each kind's notifications carry."""


@dataclass(frozen=True)
class WsLimits:
    max_backlog: int = 256
    """Messages waiting to be sent to one client; a block that would pass it cuts the client off."""
    max_subscriptions: int = 5
    """Subscriptions one connection may hold (CometBFT's max_subscriptions_per_client)."""
    send_timeout_s: float = 10.0
    """A message the client has not taken within this cuts it off."""
    send_buffer: int = 64 * 1024
    """SO_SNDBUF of the connection's socket, and the transport's write-buffer limit, in bytes."""
    max_message: int = 4 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.max_backlog < 2 * self.max_subscriptions:
            raise ValueError("max_backlog must hold two blocks' notifications to every subscription")

    @property
    def answer_room(self) -> int:
        """Answers wait (and requests stop being read) while this many messages are queued."""
        return self.max_backlog - self.max_subscriptions


async def serve_websocket(request: web.Request, node: NodeView, dispatcher: Dispatcher, limits: WsLimits) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=limits.max_message, writer_limit=limits.send_buffer)
    await ws.prepare(request)
    transport = request.transport
    _bound_send_buffer(transport, limits.send_buffer)
    outbox: asyncio.Queue[Any] = asyncio.Queue()
    room = asyncio.Event()
    subscriptions: dict[str, str] = {}
    cut_reason: list[str] = []

    def cut_off(reason: str) -> None:
        if cut_reason:
            return
        cut_reason.append(reason)
        room.set()  # a request waiting for room in the outbox must not wait for a writer that is gone
        log.info("websocket client %s cut off: %s", request.remote, reason)
        if asyncio.current_task() is not send_task:
            send_task.cancel()
        cutters.add(asyncio.get_running_loop().create_task(cut(reason)))

    def on_block(committed: CommittedBlock) -> None:
        if not subscriptions or cut_reason:
            return
        if outbox.qsize() + len(subscriptions) > limits.max_backlog:
            cut_off(f"over {limits.max_backlog} messages unread")
            return
        views = {kind: _notified(kind, committed) for kind in set(subscriptions.values())}
        for sub_id, kind in subscriptions.items():
            outbox.put_nowait(
                {"jsonrpc": "2.0", "method": NOTIFICATION[kind], "params": {"subscription": sub_id, "result": views[kind]}}
            )

    async def writer() -> None:
        while True:
            message = await outbox.get()
            room.set()
            try:
                async with asyncio.timeout(limits.send_timeout_s):
                    await ws.send_str(json.dumps(message))
            except TimeoutError:
                cut_off(f"a message not taken within {limits.send_timeout_s:g} s")
                return
            except ConnectionError:
                return

    async def answer(message: Any) -> None:
        while outbox.qsize() >= limits.answer_room and not cut_reason:
            room.clear()
            await room.wait()
        outbox.put_nowait(message)

    async def read() -> None:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                text: str | None = msg.data
            elif msg.type == WSMsgType.BINARY:
                text = _utf8(msg.data)
            else:
                continue
            if text is None:
                reply: Any = error(None, PARSE_ERROR, "parse error: a binary frame must be UTF-8 JSON")
            else:
                reply = await handle_text(text, subscriptions, dispatcher, limits.max_subscriptions)
            if reply is not None and not cut_reason:
                await answer(reply)

    async def cut(reason: str) -> None:
        # A client that does not read may not take the close frame either: try briefly, then drop the
        # socket, and stop reading (aiohttp may not wake a receive() on a connection aborted here).
        closing = asyncio.ensure_future(ws.close(code=WSCloseCode.POLICY_VIOLATION, message=reason.encode()[:120]))
        closing.add_done_callback(lambda f: f.cancelled() or f.exception())
        # Awaited through wait(), not directly: aiohttp's close() may cancel the task that awaits it.
        await asyncio.wait({closing}, timeout=1.0)
        closing.cancel()
        if transport is not None:
            transport.abort()
        reading.cancel()

    cutters: set[asyncio.Task[None]] = set()
    node.add_block_listener(on_block)
    send_task = asyncio.create_task(writer())
    reading = asyncio.create_task(read())
    try:
        await asyncio.wait({reading})
    finally:
        node.remove_block_listener(on_block)
        for task in (reading, send_task, *cutters):
            task.cancel()
        for task in (reading, send_task, *cutters):
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await task
    return ws


def _bound_send_buffer(transport: asyncio.Transport | None, size: int) -> None:
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    transport.set_write_buffer_limits(high=size)


def _notified(kind: str, committed: CommittedBlock) -> Any:
    if kind == "newHeads":
        return eth_header(committed.block, committed.block_hash)
    return block_summary(committed)


def _utf8(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


async def handle_text(
    text: str, subscriptions: dict[str, str], dispatcher: Dispatcher, max_subscriptions: int = 5
) -> Any:
    """The answer to one websocket message (a subscription request, or any JSON-RPC request); None: no answer."""
    try:
        payload = json.loads(text)
    except ValueError as exc:
        return error(None, PARSE_ERROR, f"parse error: {exc}")
    except RecursionError:
        return error(None, PARSE_ERROR, "parse error: nested too deeply")
    if isinstance(payload, dict) and (payload.get("method") in SUBSCRIBE or payload.get("method") in UNSUBSCRIBE):
        return _subscription(payload, subscriptions, max_subscriptions)
    return await dispatcher.dispatch(payload)


def _subscription(payload: dict[str, Any], subscriptions: dict[str, str], max_subscriptions: int) -> Any:
    if "id" not in payload:
        return None  # a notification: it changes nothing and is not answered
    rid = payload["id"]
    if not valid_id(rid):
        return error(None, INVALID_REQUEST, "id must be a string, a number or null")
    if payload.get("jsonrpc") != "2.0":
        return error(rid, INVALID_REQUEST, "not a JSON-RPC 2.0 request")
    params = payload.get("params", [])
    if not isinstance(params, list | dict):
        return error(rid, INVALID_REQUEST, "params must be an array or an object")
    if not isinstance(params, list) or len(params) != 1 or not isinstance(params[0], str):
        return error(rid, INVALID_PARAMS, "expected one string param")
    kind = SUBSCRIBE.get(payload["method"])
    if kind is not None:
        if params[0] != kind:
            return error(rid, INVALID_PARAMS, f"the only subscription of {payload['method']} is {kind!r}")
        if len(subscriptions) >= max_subscriptions:
            return error(rid, LIMIT_EXCEEDED, f"at most {max_subscriptions} subscriptions per connection")
        sub_id = "0x" + os.urandom(8).hex()
        subscriptions[sub_id] = kind
        return {"jsonrpc": "2.0", "id": rid, "result": sub_id}
    found = subscriptions.pop(params[0], None) is not None
    return {"jsonrpc": "2.0", "id": rid, "result": found}
