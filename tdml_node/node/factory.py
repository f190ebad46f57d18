"""Building a node: ``open_node`` opens (or takes) its store, builds every part, and closes what it opened.

    async with open_node(config, keypair, genesis, network=network) as node:
        await network.start(node.handlers)
        await node.run()

The network is built by the caller and started with the node's handlers
once the node exists, so neither needs the other to be half-built. In a
simulation the caller passes its own network, work queue and offload (inline,
on a simulated clock) and the parts are the same as a real node's.

This module must never run the node: it builds, and at the end closes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from consensus import crypto
from consensus.tendermint import TendermintCore
from consensus.transition import compute_genesis_hash, make_genesis_state
from consensus.types import Genesis
from tdml_node.config import NodeConfig
from tdml_node.duties import Duties, DutyContext
from tdml_node.metrics import ChainReads, NodeMetrics
from tdml_node.node.handlers import PeerHandlers
from tdml_node.node.intake import TransactionIntake
from tdml_node.node.keyring import KeyRing
from tdml_node.node.model_holding import ModelHolding
from tdml_node.node.node import InboxItem, Node, NodeHalted, NodeParts
from tdml_node.node.peer_gate import PeerInboxGate
from tdml_node.node.privval import PrivValidator
from tdml_node.node.proposal_hold import ProposalHold
from tdml_node.node.proposer import Proposer, ProposerTimings
from tdml_node.node.resealer import Resealer
from tdml_node.node.sync import Syncer
from tdml_node.node.timeliness import Synchrony, TimelinessCheck
from tdml_node.node.validator import ProposalChecker
from tdml_node.node.wal import ConsensusLog
from tdml_node.pools import Mempool, WorkPool
from tdml_node.runtime.netlink import BlobFetcher, Network, NoNetwork
from tdml_node.runtime.runner import WorkRunner
from tdml_node.runtime.seams import HONEST, Seams
from tdml_node.runtime.tasks import StopSignal, TaskOwner
from tdml_node.runtime.views import ChainHead
from tdml_node.runtime.wakeup import Wakeup
from tdml_node.runtime.wallclock import WallClock, system_wall_ms
from tdml_node.runtime.workqueue import Offload, Worker, WorkQueue, in_thread
from tdml_node.storage import ChainStore, Retention
from tdml_node.work.executor import TorchExecutor


def load_or_init_state(store: ChainStore, genesis: Genesis, executor: TorchExecutor) -> ChainHead:
    """The committed head of the store's chain; a fresh store is initialised with ``genesis``."""
    stored = store.get_genesis()
    if stored is None:
        state = make_genesis_state(genesis, executor)
        store.init_genesis(genesis, state)
        return ChainHead(genesis.chain_id, state)
    if compute_genesis_hash(stored) != compute_genesis_hash(genesis):
        raise NodeHalted(f"the data directory {store.path} belongs to another chain (genesis differs)")
    loaded = store.load_state()
    if loaded is None:
        raise NodeHalted(f"the data directory {store.path} has a genesis but no state")
    return ChainHead(genesis.chain_id, loaded)


@contextlib.asynccontextmanager
async def open_node(
    config: NodeConfig,
    keypair: crypto.Keypair,
    genesis: Genesis,
    *,
    store: ChainStore | None = None,
    network: Network | None = None,
    seams: Seams = HONEST,
    worker: Worker | None = None,
    offload: Offload = in_thread,
    standin_after: float = 3.0,
    wall_clock: WallClock = system_wall_ms,
) -> AsyncIterator[Node]:
    """A node with every part built; what it opened itself (store, work queue) is closed at the end.

    ``wall_clock`` stamps the blocks this node proposes and judges the peers'
    proposals' times; a simulation passes its simulated time.
    """
    async with contextlib.AsyncExitStack() as stack:
        if store is None:
            store = await offload(ChainStore, config.data_dir)
            stack.callback(store.close)
        if worker is None:
            worker = WorkQueue()
        stack.callback(worker.close)
        network = network or NoNetwork()
        keyring = KeyRing(keypair)
        executor = TorchExecutor(store, train_threads=config.train_threads, data_key=keyring.key_for)
        chain = await offload(load_or_init_state, store, genesis, executor)
        keyring.attach(lambda: chain.state)
        yield _assemble(
            config, keypair, genesis, store, executor, keyring, chain, network, seams, worker, offload, standin_after,
            wall_clock,
        )


def _assemble(
    config: NodeConfig,
    keypair: crypto.Keypair,
    genesis: Genesis,
    store: ChainStore,
    executor: TorchExecutor,
    keyring: KeyRing,
    chain: ChainHead,
    network: Network,
    seams: Seams,
    worker: Worker,
    offload: Offload,
    standin_after: float,
    wall_clock: WallClock,
) -> Node:
    loop = asyncio.get_running_loop()
    stop = StopSignal()
    inbox: asyncio.Queue[InboxItem] = asyncio.Queue()
    wakeup = Wakeup()
    metrics = NodeMetrics()
    mempool, workpool = Mempool(), WorkPool()
    privval = PrivValidator(store, keypair, chain.chain_id)
    hold = ProposalHold()
    runner = WorkRunner(worker, BlobFetcher(store, network, offload=offload))
    tasks = TaskOwner(stop.halt)
    syncer = Syncer(chain, network, inbox.put_nowait)
    metrics.watch_chain(ChainReads(
        state=lambda: chain.state,
        last_eval=lambda job: store.get_last_eval(job.job_id, job.step, job.spec.eval_every),
        best_peer_height=network.best_peer_height,
        syncing=lambda: bool(syncer.syncing_to),
    ))
    duties = Duties(
        DutyContext(
            keypair=keypair,
            chain=chain,
            pool=workpool,
            runner=runner,
            network=network,
            executor=executor,
            seams=seams,
            metrics=metrics,
            spawn=tasks.spawn,
            wake=wakeup.notify,
            clock=loop.time,
        ),
        standin_after=standin_after,
    )
    holding = ModelHolding(config.model_state, keypair.public_key, executor)
    intake = TransactionIntake(
        keypair=keypair, chain=chain, mempool=mempool, worker=worker, holding=holding, network=network, wake=wakeup.notify
    )
    parts = NodeParts(
        store=store,
        executor=executor,
        holding=holding,
        chain=chain,
        core=TendermintCore(chain.chain_id, keypair.public_key, config.timeouts),
        network=network,
        seams=seams,
        runner=runner,
        offload=offload,
        metrics=metrics,
        mempool=mempool,
        workpool=workpool,
        privval=privval,
        wal=ConsensusLog(store),
        retention=Retention(config.retain_steps),
        hold=hold,
        intake=intake,
        duties=duties,
        proposer=Proposer(
            keypair=keypair,
            chain=chain,
            store=store,
            mempool=mempool,
            workpool=workpool,
            busy=duties.pending,
            runner=runner,
            executor=executor,
            timings=ProposerTimings(config.timeouts, config.partial_wait_ms, config.block_interval_ms),
            wakeup=wakeup,
            clock=wall_clock,
        ),
        checker=ProposalChecker(
            keypair=keypair,
            chain=chain,
            workpool=workpool,
            runner=runner,
            executor=executor,
            holding=holding,
            seams=seams,
            hold=hold,
            deliver=inbox.put_nowait,
        ),
        syncer=syncer,
        handlers=PeerHandlers(
            node_key=keypair.public_key,
            chain=chain,
            store=store,
            seams=seams,
            network=network,
            privval=privval,
            workpool=workpool,
            intake=intake,
            duties=duties,
            to_inbox=PeerInboxGate(inbox, metrics.peer_messages_dropped).admit,
            timeliness=TimelinessCheck(
                Synchrony(config.timely_precision_ms, config.timely_message_delay_ms), wall_clock
            ),
        ),
        tasks=tasks,
        wakeup=wakeup,
        inbox=inbox,
        stop=stop,
    )
    node = Node(config, keypair, genesis, parts)
    resealer = Resealer(keypair=keypair, keyring=keyring, intake=intake, spawn=tasks.spawn)
    node.add_block_listener(resealer.on_commit)
    return node
