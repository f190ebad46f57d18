"""JSON-RPC over a websocket, plus ``tdml_subscribe(["newBlocks"])`` notifications of committed blocks.

Each connection has a bounded outbox (``MAX_WS_BACKLOG`` messages): a
client that does not read its notifications is cut off rather than
buffered forever.

This module must never change node state but through the dispatcher's methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from typing import Any

from aiohttp import WSMsgType, web

from tdml_node.rpc.dispatch import Dispatcher, error, valid_id
from tdml_node.rpc.params import INVALID_PARAMS, INVALID_REQUEST, PARSE_ERROR
from tdml_node.rpc.views import block_summary
from tdml_node.runtime.views import CommittedBlock, NodeView

MAX_WS_BACKLOG = 256


async def serve_websocket(request: web.Request, node: NodeView, dispatcher: Dispatcher, max_message: int) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=max_message)
    await ws.prepare(request)
    outbox: asyncio.Queue[Any] = asyncio.Queue(maxsize=MAX_WS_BACKLOG)
    subscriptions: set[str] = set()
    overflow = asyncio.Event()

    def on_block(committed: CommittedBlock) -> None:
        if not subscriptions or overflow.is_set():
            return
        summary = block_summary(committed)
        for sub_id in subscriptions:
            note = {"jsonrpc": "2.0", "method": "tdml_subscription", "params": {"subscription": sub_id, "result": summary}}
            try:
                outbox.put_nowait(note)
            except asyncio.QueueFull:
                overflow.set()
                return

    async def writer() -> None:
        while not ws.closed:
            if overflow.is_set():
                await ws.close(message=b"notifications backlog full")
                return
            await ws.send_str(json.dumps(await outbox.get()))

    node.add_block_listener(on_block)
    send_task = asyncio.create_task(writer())
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            answer = await handle_text(msg.data, subscriptions, dispatcher)
            if answer is not None:
                await outbox.put(answer)
    finally:
        node.remove_block_listener(on_block)
        send_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await send_task
    return ws


async def handle_text(text: str, subscriptions: set[str], dispatcher: Dispatcher) -> Any:
    """The answer to one websocket text message (a subscription request, or any JSON-RPC request)."""
    try:
        payload = json.loads(text)
    except ValueError as exc:
        return error(None, PARSE_ERROR, f"parse error: {exc}")
    except RecursionError:
        return error(None, PARSE_ERROR, "parse error: nested too deeply")
    if isinstance(payload, dict) and payload.get("method") in ("tdml_subscribe", "tdml_unsubscribe"):
        rid = payload.get("id")
        if not valid_id(rid):
            return error(None, INVALID_REQUEST, "id must be a string, a number or null")
        params = payload.get("params", [])
        if not isinstance(params, list) or len(params) != 1 or not isinstance(params[0], str):
            return error(rid, INVALID_PARAMS, "expected one string param")
        if payload["method"] == "tdml_subscribe":
            if params[0] != "newBlocks":
                return error(rid, INVALID_PARAMS, "the only subscription is 'newBlocks'")
            sub_id = "0x" + os.urandom(8).hex()
            subscriptions.add(sub_id)
            return {"jsonrpc": "2.0", "id": rid, "result": sub_id}
        found = params[0] in subscriptions
        subscriptions.discard(params[0])
        return {"jsonrpc": "2.0", "id": rid, "result": found}
    return await dispatcher.dispatch(payload)
