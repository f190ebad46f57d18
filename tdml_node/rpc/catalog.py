"""What the server offers, read from the dispatch table itself: ``rpc_modules`` and ``tdml_methods``.

Both answers are computed from the table at call time, so a method added to
the table is listed without anyone remembering to; a listing cannot drift
from what the server answers. The websocket's subscription methods are in
the table too (answered over HTTP with "websocket only"), so they are listed.

This module must never know what a method does beyond its name and params.
"""

from __future__ import annotations

from typing import Any

from tdml_node.rpc.params import INVALID_PARAMS, INVALID_REQUEST, Method, Param, RpcError

MODULE_VERSION = "1.0"
SUBSCRIPTION_METHODS = {
    "tdml_subscribe": "kind",
    "tdml_unsubscribe": "subscription",
    "eth_subscribe": "kind",
    "eth_unsubscribe": "subscription",
}
"""Methods the websocket answers itself, with their one parameter's name."""


def add_catalog(table: dict[str, Method]) -> None:
    """Add the listing methods and the websocket-only entries to ``table``."""
    for name, param in SUBSCRIPTION_METHODS.items():
        table[name] = Method(_websocket_only, (Param(param, _any_string),))

    async def rpc_modules() -> dict[str, str]:
        return {module: MODULE_VERSION for module in sorted({name.split("_", 1)[0] for name in table})}

    async def tdml_methods() -> list[dict[str, Any]]:
        return [{"name": name, "params": [p.name for p in table[name].params]} for name in sorted(table)]

    table["rpc_modules"] = Method(rpc_modules, ())
    table["tdml_methods"] = Method(tdml_methods, ())


def _any_string(value: Any) -> str:
    if not isinstance(value, str):
        raise RpcError(INVALID_PARAMS, "expected a string")
    return value


async def _websocket_only(_: str) -> None:
    raise RpcError(INVALID_REQUEST, "subscriptions need the websocket: GET /ws")
