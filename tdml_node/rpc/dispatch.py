"""JSON-RPC 2.0 framing: requests and batches in, results and standard errors out.

A batch holds at most ``MAX_BATCH`` requests; notifications (no ``id``) get
no answer; ``params``, when given, must be an array or an object (else
-32600); the time each known method takes goes to ``observe``; a storage failure met by a method halts the node (through the
``on_storage_failure`` callback) and is answered as an internal error.

This module must never know what a method does: it binds params and calls.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from tdml_node.rpc.params import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    Method,
    RpcError,
    bind,
)
from tdml_node.storage import StorageError

log = logging.getLogger("tdml.rpc")

MAX_BATCH = 100


class Dispatcher:
    def __init__(
        self,
        table: dict[str, Method],
        on_storage_failure: Callable[[StorageError], None],
        observe: Callable[[str, float], None] | None = None,
    ) -> None:
        self.table = table
        self._on_storage_failure = on_storage_failure
        self._observe = observe

    async def dispatch_bytes(self, body: bytes | str) -> Any:
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            return error(None, PARSE_ERROR, f"parse error: {exc}")
        except RecursionError:
            return error(None, PARSE_ERROR, "parse error: nested too deeply")
        return await self.dispatch(payload)

    async def dispatch(self, payload: Any) -> Any:
        if isinstance(payload, list):
            if not payload:
                return error(None, INVALID_REQUEST, "empty batch")
            if len(payload) > MAX_BATCH:
                return error(None, INVALID_REQUEST, f"batch of over {MAX_BATCH} requests")
            answers = [await self._one(item) for item in payload]
            kept = [a for a in answers if a is not None]
            return kept or None
        return await self._one(payload)

    async def _one(self, req: Any) -> Any:
        if not isinstance(req, dict) or req.get("jsonrpc") != "2.0" or not isinstance(req.get("method"), str):
            rid = req.get("id") if isinstance(req, dict) and valid_id(req.get("id")) else None
            return error(rid, INVALID_REQUEST, "not a JSON-RPC 2.0 request")
        is_notification = "id" not in req
        rid = req.get("id")
        if not is_notification and not valid_id(rid):
            return error(None, INVALID_REQUEST, "id must be a string, a number or null")
        params = req.get("params", [])
        if not isinstance(params, list | dict):
            return None if is_notification else error(rid, INVALID_REQUEST, "params must be an array or an object")
        method = self.table.get(req["method"])
        started = time.perf_counter()
        try:
            if method is None:
                raise RpcError(METHOD_NOT_FOUND, f"method {req['method']!r} not found")
            args = bind(method, params)
            result = await method.fn(*args)
        except RpcError as exc:
            return None if is_notification else error(rid, exc.code, exc.message)
        except StorageError as exc:
            self._on_storage_failure(exc)
            return None if is_notification else error(rid, INTERNAL_ERROR, f"storage failure; the node is stopping: {exc}")
        except Exception as exc:
            log.exception("internal error in %s", req.get("method"))
            return None if is_notification else error(rid, INTERNAL_ERROR, f"internal error: {type(exc).__name__}")
        finally:
            if method is not None and self._observe is not None:
                self._observe(req["method"], time.perf_counter() - started)
        return None if is_notification else {"jsonrpc": "2.0", "id": rid, "result": result}


def valid_id(rid: Any) -> bool:
    # NaN and the infinities parse from JSON text but cannot be written back as JSON.
    if isinstance(rid, float):
        return math.isfinite(rid)
    return rid is None or isinstance(rid, str) or (isinstance(rid, int) and not isinstance(rid, bool))


def error(rid: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}}
