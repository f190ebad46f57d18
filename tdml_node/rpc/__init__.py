"""JSON-RPC 2.0 over HTTP and websockets for people and tools.

- ``server``: the aiohttp app (RPC, websocket, health, metrics, blobs);
- ``dispatch``: request and batch framing, standard errors;
- ``methods``: the methods, reading the node through its ``NodeView``;
- ``params``: error codes, parameters and their parsers;
- ``views``: JSON views of blocks, jobs and outcomes;
- ``websocket``: JSON-RPC over websockets and block subscriptions.
"""

from tdml_node.rpc.params import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    TX_REJECTED,
    RpcError,
)
from tdml_node.rpc.server import MAX_BLOB_BODY, MAX_RPC_BODY, RpcServer

__all__ = [
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "MAX_BLOB_BODY",
    "MAX_RPC_BODY",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "TX_REJECTED",
    "RpcError",
    "RpcServer",
]
