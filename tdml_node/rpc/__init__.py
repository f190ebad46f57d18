"""JSON-RPC 2.0 over HTTP and websockets for people and tools.

- ``server``: the aiohttp app (RPC, websocket, health, metrics, blobs);
- ``dispatch``: request and batch framing, standard errors;
- ``methods``: the methods, reading the node through its ``NodeView``;
- ``eth``: the Ethereum-compatible reads (``eth_``, ``net_``, ``web3_``);
- ``catalog``: ``rpc_modules`` and ``tdml_methods``, read from the dispatch table;
- ``params``: error codes, parameters and their parsers;
- ``views``: JSON views of blocks, transactions, receipts, jobs and outcomes;
- ``ethview``: blocks, transactions and receipts in Ethereum's shapes;
- ``websocket``: JSON-RPC over websockets and block subscriptions;
- ``guard``: who may call (vhosts, origins, content types, the blob token);
- ``body``: request bodies read under a size limit and a deadline;
- ``auth``: the ``rpc.cookie`` token file.
"""

from tdml_node.rpc.auth import write_cookie
from tdml_node.rpc.guard import RpcPolicy
from tdml_node.rpc.params import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    LIMIT_EXCEEDED,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    TX_REJECTED,
    RpcError,
)
from tdml_node.rpc.server import MAX_BLOB_BODY, MAX_RPC_BODY, RpcServer
from tdml_node.rpc.websocket import WsLimits

__all__ = [
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "LIMIT_EXCEEDED",
    "MAX_BLOB_BODY",
    "MAX_RPC_BODY",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "TX_REJECTED",
    "RpcError",
    "RpcPolicy",
    "RpcServer",
    "WsLimits",
    "write_cookie",
]
