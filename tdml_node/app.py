"""Assembling and running one node process: store, node, p2p network, RPC server, signals.

``serve`` is what ``tdml-node run`` executes. It returns when the node is
told to stop (SIGINT, SIGTERM) or halts on a fatal error, after closing the
network, the RPC server, the work queue and the database, so a clean stop
leaves a datadir that restarts at its last committed height.

On a dev network a configured Byzantine behaviour is installed here, and
only here (``devtools.wiring``).

This module must never hold protocol logic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from pathlib import Path

from consensus.crypto import Keypair
from consensus.errors import LocalFault
from consensus.transition import compute_genesis_hash
from consensus.types import Genesis
from p2p.network import P2PNetwork
from p2p.settings import ChainIdentity, PeerSettings
from tdml_node.config import NodeConfig
from tdml_node.devtools.wiring import BehaviourError, behaviour_seams, register_metrics
from tdml_node.node import open_node
from tdml_node.node.lifecycle import warn_without_bootstrap, watch
from tdml_node.rpc import RpcPolicy, RpcServer, write_cookie
from tdml_node.storage import ChainStore, StorageError

log = logging.getLogger("tdml.app")

PROTOCOL_VERSION = 1


ADDR_FILE = "node.addr.json"
"""In the data dir: where this node's RPC and p2p listen, written once both are up (readers poll for it)."""


def write_addr_file(data_dir: Path, addresses: dict[str, str]) -> None:
    """Replace ``data_dir/ADDR_FILE`` atomically, so a reader never sees half a file."""
    path = data_dir / ADDR_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(addresses) + "\n")
    os.replace(tmp, path)


async def serve(config: NodeConfig, keypair: Keypair, genesis: Genesis) -> int:
    """Run a node until stopped; the exit status is 0 after a clean stop, 2 after a halt."""
    try:
        seams, behaviour = behaviour_seams(config.byzantine, dev=config.dev, keypair=keypair, chain_id=genesis.chain_id)
        store = ChainStore(config.data_dir)
    except (BehaviourError, StorageError) as exc:
        log.error("%s", exc)
        return 2
    network = P2PNetwork(
        keypair,
        ChainIdentity(genesis.chain_id, compute_genesis_hash(genesis), PROTOCOL_VERSION),
        PeerSettings(
            host=config.p2p_host,
            port=config.p2p_port,
            bootstrap=config.bootstrap,
            max_peers=config.max_peers,
            advertise_addr=config.external_address or None,
        ),
    )
    try:
        async with open_node(config, keypair, genesis, store=store, network=network, seams=seams) as node:
            if behaviour is not None:
                log.warning("BYZANTINE behaviour %r is active (test network only)", behaviour.name)
                register_metrics(behaviour, node.metrics.registry, lambda: node.height)
            cookie = write_cookie(config.rpc_cookie_file)
            policy = RpcPolicy(
                vhosts=config.rpc_vhosts,
                cors_origins=config.rpc_cors_origins,
                tokens=tuple(t for t in (cookie, config.rpc_token) if t),
            )
            rpc = RpcServer(node, config.rpc_host, config.rpc_port, dev=config.dev, policy=policy)
            node.metrics.watch_connections("p2p", network.listener.guard.stats)
            node.metrics.watch_connections("rpc", rpc.guard.stats)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError):
                    loop.add_signal_handler(sig, node.request_stop)
            try:
                await network.start(node.handlers)
                port = await rpc.start()
                rpc_url = f"http://{config.rpc_host}:{port}"
                log.info("node started", extra={
                    "rpc": rpc_url, "p2p": network.listen_addr, "chain": node.chain_id, "height": node.height,
                    "address": keypair.address,
                })
                write_addr_file(config.data_dir, {"rpc": rpc_url, "p2p": str(network.listen_addr)})
                warn_without_bootstrap(node.chain, keypair.public_key, config.bootstrap)
                watcher = asyncio.create_task(
                    watch(node.chain, keypair.public_key, node.network.peer_count, lambda: node.syncing_to), name="lifecycle-watch"
                )
                try:
                    await node.run()
                finally:
                    watcher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await watcher
            finally:
                await network.aclose()
                await rpc.stop()
    except LocalFault as exc:
        log.error("node halted: %s", exc)
        return 2
    except OSError as exc:
        log.error("cannot listen: %s", exc)
        return 2
    finally:
        store.close()
    if node.fatal is not None:
        log.error("node halted: %s", node.fatal)
        return 2
    log.info("stopped cleanly", extra={"height": node.height})
    return 0
