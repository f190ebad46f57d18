"""JSON-RPC errors, method parameters and their parsers.

The standard error codes (Ethereum's conventions where they fit):

- ``-32700`` parse error (the body is not JSON)
- ``-32600`` invalid request (not a JSON-RPC 2.0 request object, empty batch)
- ``-32601`` method not found
- ``-32602`` invalid params (wrong count, type, format, or size)
- ``-32603`` internal error
- ``-32005`` limit exceeded (too many subscriptions on one websocket)
- ``-32010`` transaction rejected (the message says why)

A method declares its parameters as ``Param``s; ``bind`` matches a request's
positional or named ``params`` against them. This module must never touch
the node.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from consensus import crypto

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
LIMIT_EXCEEDED = -32005
TX_REJECTED = -32010

MAX_HEIGHT = 2**64 - 1
"""Block numbers above this cannot name a block (heights are 64-bit keys in the store)."""
_REQUIRED = object()
_QUANTITY = re.compile(r"0x(0|[1-9a-f][0-9a-f]*)")
"""A block number in hex: lower-case, no leading zeros, no underscores, no sign (Ethereum's QUANTITY)."""


class RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Param:
    name: str
    parse: Callable[[Any], Any]
    default: Any = _REQUIRED


@dataclass(frozen=True)
class Method:
    fn: Callable[..., Awaitable[Any]]
    params: tuple[Param, ...]


def _bytes_param(length: int | None, what: str) -> Callable[[Any], bytes]:
    def parse(value: Any) -> bytes:
        if not isinstance(value, str) or not value.startswith("0x"):
            raise RpcError(INVALID_PARAMS, f"{what} must be 0x-prefixed hex")
        try:
            data = bytes.fromhex(value[2:])
        except ValueError as exc:
            raise RpcError(INVALID_PARAMS, f"{what} is not valid hex") from exc
        if length is not None and len(data) != length:
            raise RpcError(INVALID_PARAMS, f"{what} must be {length} bytes, got {len(data)}")
        return data

    return parse


parse_hash = _bytes_param(32, "a hash")
parse_raw = _bytes_param(None, "raw bytes")


def parse_address(value: Any) -> bytes:
    data = _bytes_param(None, "an address")(value)
    if len(data) == 32:
        return crypto.address_of(data)
    if len(data) != 20:
        raise RpcError(INVALID_PARAMS, "an address is 20 bytes (or a 32-byte public key)")
    return data


def parse_key_list(value: Any) -> list[bytes]:
    if not isinstance(value, list) or len(value) > 1024:
        raise RpcError(INVALID_PARAMS, "expected a list of node ids")
    return [_bytes_param(32, "a node id")(v) for v in value]


def parse_count_or_zero(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_HEIGHT:
        raise RpcError(INVALID_PARAMS, "expected a non-negative 64-bit integer")
    return value


def parse_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise RpcError(INVALID_PARAMS, "expected true or false")
    return value


def parse_count(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= 1000:
        raise RpcError(INVALID_PARAMS, "expected an integer from 1 to 1000")
    return value


def parse_block_tag(value: Any) -> int | str:
    if value in ("latest", "earliest"):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_HEIGHT:
        return value
    if isinstance(value, str) and len(value) <= 18 and _QUANTITY.fullmatch(value):
        number = int(value, 16)
        if number <= MAX_HEIGHT:
            return number
    raise RpcError(
        INVALID_PARAMS, "a block is a non-negative number, a canonical 0x-hex quantity, 'latest' or 'earliest'"
    )


def bind(method: Method, params: Any) -> list[Any]:
    """The arguments of a call: positional (a list) or named (an object) params, parsed and defaulted."""
    specs = method.params
    if isinstance(params, list):
        if len(params) > len(specs):
            raise RpcError(INVALID_PARAMS, f"expected at most {len(specs)} params, got {len(params)}")
        values = list(params) + [_REQUIRED] * (len(specs) - len(params))
    elif isinstance(params, dict):
        unknown = set(params) - {p.name for p in specs}
        if unknown:
            raise RpcError(INVALID_PARAMS, f"unknown params: {sorted(unknown)}")
        values = [params.get(p.name, _REQUIRED) for p in specs]
    else:
        raise RpcError(INVALID_PARAMS, "params must be an array or an object")
    out = []
    for spec, value in zip(specs, values, strict=True):
        if value is _REQUIRED:
            if spec.default is _REQUIRED:
                raise RpcError(INVALID_PARAMS, f"missing param {spec.name!r}")
            out.append(spec.default)
        else:
            try:
                out.append(spec.parse(value))
            except RpcError as exc:
                raise RpcError(INVALID_PARAMS, f"{spec.name}: {exc.message}") from exc
    return out
