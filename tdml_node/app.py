"""Assembling and running one node process: store, node, p2p network, RPC server, signals.

``serve`` is what ``tdml-node run`` executes. It returns when the node is
told to stop (SIGINT, SIGTERM) or halts on a fatal error, after closing the
network, the RPC server, the worker and the database, so a clean stop leaves
a datadir that restarts at its last committed height.

This module must never hold protocol logic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

from consensus.crypto import Keypair
from consensus.types import Genesis
from p2p.network import P2PNetwork
from tdml_node.byzantine import make_behaviour
from tdml_node.config import NodeConfig
from tdml_node.node import Node, NodeHalted
from tdml_node.rpc import RpcServer
from tdml_node.storage import ChainStore, StorageError

log = logging.getLogger("tdml.app")

PROTOCOL_VERSION = 1


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)s",
        stream=sys.stderr,
    )


async def serve(config: NodeConfig, keypair: Keypair, genesis: Genesis) -> int:
    """Run a node until stopped; the exit status is 0 after a clean stop, 2 after a halt."""
    try:
        store = ChainStore(config.data_dir)
    except StorageError as exc:
        log.error("%s", exc)
        return 2
    try:
        node = Node(config, keypair, store, genesis)
        node.byzantine = make_behaviour(config.byzantine, dev=config.dev)
    except (NodeHalted, StorageError, ValueError) as exc:
        log.error("%s", exc)
        store.close()
        return 2
    network = P2PNetwork(
        keypair,
        genesis.chain_id,
        node.genesis_hash,
        PROTOCOL_VERSION,
        config.p2p_host,
        config.p2p_port,
        node,
        bootstrap=config.bootstrap,
        max_peers=config.max_peers,
        advertise_addr=config.external_address or None,
    )
    node.attach_network(network)
    rpc = RpcServer(node, config.rpc_host, config.rpc_port)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, node.request_stop)
    try:
        await network.start()
        port = await rpc.start()
        log.info(
            "rpc on http://%s:%d, p2p on %s, chain=%s height=%d",
            config.rpc_host, port, network.listen_addr, node.chain_id, node.height,
        )
        print(f"RPC_READY http://{config.rpc_host}:{port}", flush=True)
        await node.run()
    except (NodeHalted, StorageError) as exc:
        log.error("node halted: %s", exc)
        return 2
    except OSError as exc:
        log.error("cannot listen: %s", exc)
        return 2
    finally:
        await network.aclose()
        await rpc.stop()
        store.close()
    if node.fatal is not None:
        log.error("node halted: %s", node.fatal)
        return 2
    log.info("stopped cleanly at height %d", node.height)
    return 0
