"""The node's service loop: one inbox, one loop, feeding the consensus core and carrying out its actions.

Everything that changes consensus state passes through the inbox and
``_consensus_loop``, so the Tendermint core sees one input at a time, every
input is logged first (``wal``), and the committed state changes only in
``_commit``. Torch work runs on the work queue and database writes through
the offload; the loop only awaits them. The loop:

- logs and feeds the core its inputs: peers' and our own proposals and
  votes, timeouts, validity results, built values;
- carries out the core's actions: signs and publishes our messages (the
  privval's synced record first), schedules timeouts, asks the proposer for
  a value and the checker for a proposal's validity, commits decisions;
- commits a decided block to LevelDB in one synced batch, then starts the
  next height and wakes the duties;
- applies certified blocks fetched by the syncer.

The parts it drives are built by ``factory.open_node`` and given to it in
``NodeParts``; this module builds none of them.

This module must never decide protocol questions itself: validity comes
from ``consensus.transition`` and ``consensus.prevote``, votes from
``consensus.tendermint``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TypeGuard

from consensus import crypto
from consensus.errors import LocalFault, ProtocolError
from consensus.state import LedgerState
from consensus.tendermint import (
    Action,
    Broadcast,
    Decide,
    EvidenceFound,
    ProposalReceived,
    Rejected,
    RequestValidation,
    RequestValue,
    ScheduleTimeout,
    StartHeight,
    Step,
    TendermintCore,
    TimeoutElapsed,
    ValidityResult,
    ValueReady,
    VoteReceived,
)
from consensus.tendermint import Event as ConsensusEvent
from consensus.transition import (
    BlockResult,
    InvalidBlock,
    apply_block,
    compute_block_hash,
    validate_commit,
)
from consensus.types import (
    Block,
    CommitCertificate,
    Genesis,
    Hash32,
    Height,
    Proposal,
    PublicKey,
    Round,
    SignedProposal,
    SignedTransaction,
    SignedVote,
    Vote,
)
from tdml_node.config import NodeConfig
from tdml_node.duties import Duties
from tdml_node.metrics import NodeMetrics
from tdml_node.node.handlers import FromPeer, PeerHandlers, as_event
from tdml_node.node.intake import TransactionIntake
from tdml_node.node.lifecycle import BlockEvents
from tdml_node.node.model_holding import ModelHolding
from tdml_node.node.privval import PrivValidator
from tdml_node.node.proposal_hold import ProposalHold
from tdml_node.node.proposer import Proposer
from tdml_node.node.sync import SyncedBlocks, Syncer
from tdml_node.node.validator import ProposalChecker
from tdml_node.node.wal import ConsensusLog, LoggedEvent, event_height
from tdml_node.pools import Mempool, WorkPool
from tdml_node.runtime.faults import penalise
from tdml_node.runtime.netlink import Network
from tdml_node.runtime.runner import WorkRunner
from tdml_node.runtime.seams import Seams
from tdml_node.runtime.tasks import StopSignal, TaskOwner
from tdml_node.runtime.views import BlockListener, ChainHead, ChainView, CommittedBlock
from tdml_node.runtime.wakeup import Wakeup
from tdml_node.runtime.workqueue import PRIORITY_CONSENSUS, PRIORITY_TRAIN, Offload
from tdml_node.storage import ChainStore, Retention, stage_roots, step_state
from tdml_node.work.executor import TorchExecutor

log = logging.getLogger("tdml.node")

RETRY_SECONDS = 0.5
MAX_NEXT_HEIGHT = 4096
"""Peers' messages of later heights kept until this node gets there (peers committed first)."""
HOLD_HEIGHTS_AHEAD = 16
"""How far ahead of the height in progress a peer's message is kept. A node that lags
(slow, or left out of quorums it was not needed for) sees later heights' proposals
and votes before it gets there; dropping them stalls the chain as soon as the
validator set needs this node again. Further ahead, the node syncs blocks, and a
peer sends it that height's messages again when it reports the height
(``PeerHandlers.on_peer_status``)."""

InboxItem = ConsensusEvent | FromPeer | SyncedBlocks


class NodeHalted(LocalFault):
    """The node stopped itself to protect its data (storage failure, broken invariant)."""


@dataclass(frozen=True)
class NodeParts:
    """Everything a node drives, built by ``factory.open_node``."""

    store: ChainStore
    executor: TorchExecutor
    holding: ModelHolding
    chain: ChainHead
    core: TendermintCore
    network: Network
    seams: Seams
    runner: WorkRunner
    offload: Offload
    metrics: NodeMetrics
    mempool: Mempool
    workpool: WorkPool
    privval: PrivValidator
    wal: ConsensusLog
    retention: Retention
    hold: ProposalHold
    intake: TransactionIntake
    duties: Duties
    proposer: Proposer
    checker: ProposalChecker
    syncer: Syncer
    handlers: PeerHandlers
    tasks: TaskOwner
    wakeup: Wakeup
    inbox: asyncio.Queue[InboxItem]
    stop: StopSignal


class Node:
    def __init__(self, config: NodeConfig, keypair: crypto.Keypair, genesis: Genesis, parts: NodeParts) -> None:
        self.config = config
        self.keypair = keypair
        self._genesis = genesis
        self.parts = parts
        self._chain = parts.chain
        self.core = parts.core
        self.inbox = parts.inbox
        self._started_at = time.time()
        self._timers: list[asyncio.TimerHandle] = []
        self._listeners: list[BlockListener] = [BlockEvents()]  # first: the log says a block committed before what it caused
        self._replaying = False
        self._next_height: list[FromPeer] = []

    # -------------------------------------------------------------- what others may read (NodeView)

    @property
    def chain(self) -> ChainView:
        return self._chain

    @property
    def state(self) -> LedgerState:
        return self._chain.state

    @property
    def height(self) -> int:
        return self._chain.state.height

    @property
    def chain_id(self) -> str:
        return self._chain.chain_id

    @property
    def genesis(self) -> Genesis:
        return self._genesis

    @property
    def genesis_hash(self) -> Hash32:
        from consensus.transition import compute_genesis_hash

        return compute_genesis_hash(self._genesis)

    @property
    def store(self) -> ChainStore:
        return self.parts.store

    @property
    def workpool(self) -> WorkPool:
        return self.parts.workpool

    @property
    def mempool(self) -> Mempool:
        return self.parts.mempool

    @property
    def network(self) -> Network:
        return self.parts.network

    @property
    def metrics(self) -> NodeMetrics:
        return self.parts.metrics

    @property
    def handlers(self) -> PeerHandlers:
        return self.parts.handlers

    @property
    def node_key(self) -> PublicKey:
        return self.keypair.public_key

    @property
    def torch_version(self) -> str:
        return self.parts.executor.torch_version

    @property
    def model_state(self) -> str:
        return self.config.model_state

    @property
    def started_at(self) -> float:
        return self._started_at

    @property
    def syncing_to(self) -> int:
        return self.parts.syncer.syncing_to

    @property
    def fatal(self) -> BaseException | None:
        return self.parts.stop.fatal

    async def submit_transaction(self, signed: SignedTransaction) -> Hash32:
        return await self.parts.intake.submit(signed)

    def add_block_listener(self, fn: BlockListener) -> None:
        self._listeners.append(fn)

    def remove_block_listener(self, fn: BlockListener) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    # -------------------------------------------------------------- lifecycle

    def request_stop(self) -> None:
        self.parts.stop.request()

    def halt(self, exc: BaseException) -> None:
        """Stop because the node cannot go on safely (a storage failure): ``/health`` says halted."""
        self.parts.stop.halt(exc)

    async def run(self) -> None:
        """Run until ``request_stop`` or a fatal error; always cancels its tasks and timers."""
        parts = self.parts
        loop_task = asyncio.create_task(self._consensus_loop(), name="consensus")
        stop_task = asyncio.create_task(parts.stop.event.wait(), name="stop")
        try:
            # torch loads much of itself on the first use of its determinism
            # switches; pay that before the first unit rather than during it.
            parts.tasks.spawn(parts.runner.worker.submit(PRIORITY_TRAIN, parts.executor.warm_up), "warm-up")
            parts.tasks.spawn(self._retry_loop(), "retry")
            parts.tasks.spawn(parts.syncer.run(), "sync")
            parts.duties.schedule()
            done, _ = await asyncio.wait({loop_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            failure = loop_task.exception() if loop_task in done else None
            if failure is not None:
                if isinstance(failure, LocalFault):
                    self.halt(failure)
                raise failure
        finally:
            for t in (loop_task, stop_task):
                t.cancel()
            for t in (loop_task, stop_task):
                try:
                    await t
                except BaseException as exc:  # the loop's own failure was raised above
                    if not isinstance(exc, asyncio.CancelledError | LocalFault):
                        log.debug("consensus loop ended with %r", exc)
            await parts.tasks.aclose()
            for handle in self._timers:
                handle.cancel()

    async def _retry_loop(self) -> None:
        """Pick up work that could not start earlier (a blob was missing, a checker was silent)."""
        while True:
            await asyncio.sleep(RETRY_SECONDS)
            self.parts.duties.schedule()

    # -------------------------------------------------------------- the consensus loop

    async def _consensus_loop(self) -> None:
        parts = self.parts
        height = Height(self.state.height + 1)
        logged = parts.wal.resume_height(height)
        await self._apply(StartHeight(height, self._chain.validators()))
        # Resume the height where a previous run stopped: every input the core
        # took is fed again, in order (so it is locked again where it was), then
        # our own signed messages (synced privval records, should the log's last
        # unsynced entries have been lost with the machine).
        self._replaying = True
        try:
            for event in logged:
                await self._feed(event)
            for signed in parts.privval.replay(height):
                await self._feed(as_event(signed))
        finally:
            self._replaying = False
        while True:
            item = await self.inbox.get()
            if isinstance(item, FromPeer):
                await self._from_peer(item)
            elif isinstance(item, SyncedBlocks):
                try:
                    await self._apply_synced(item)
                finally:
                    if not item.done.done():
                        item.done.set_result(None)
            elif isinstance(item, TimeoutElapsed) and self._hold_timeout(item):
                continue
            else:
                await self._feed(item)

    async def _feed(self, event: ConsensusEvent) -> list[Action]:
        """Log an input (unless it is being replayed from the log), then apply it to the core."""
        if not self._replaying and _is_logged(event):
            self.parts.wal.append(event)
        return await self._apply(event)

    async def _apply(self, event: ConsensusEvent) -> list[Action]:
        core = self.core
        if (
            isinstance(event, TimeoutElapsed)
            and (event.height, event.round) == (core.height, core.round)
            and event.step in (core.step, Step.PRECOMMIT)
        ):
            # A timeout that moves consensus on means a slow proposer, slow validation or lost votes.
            log.info("timed out", extra={"height": event.height, "round": event.round, "step": event.step.label})
        position = (core.height, core.round)
        actions = core.apply(event)
        for action in actions:
            await self._perform(action)
        if (core.height, core.round) != position:
            self.parts.wakeup.notify()  # a proposer waiting for the old round gives up at once
        return actions

    async def _from_peer(self, item: FromPeer) -> None:
        ahead = event_height(item.event) - self.state.height
        if ahead >= 2:
            # A message of a later height waits here, not in the core, so that
            # it is logged when the core takes it, like every other input.
            if ahead <= HOLD_HEIGHTS_AHEAD and len(self._next_height) < MAX_NEXT_HEIGHT:
                self._next_height.append(item)
            else:
                # Dropped unread: forgotten as seen, so the copy a peer sends when
                # this node reaches the height gets through.
                self.network.forget(item.event.signed)
            return
        actions = await self._feed(item.event)
        rejected = [a for a in actions if isinstance(a, Rejected)]
        if rejected:
            penalise(self.network, item.peer, "consensus message", ProtocolError(rejected[0].reason, rejected[0].kind))
        else:
            await self.network.broadcast(item.event.signed, exclude=item.peer)

    def _hold_timeout(self, event: TimeoutElapsed) -> bool:
        """Hold a propose timeout back while this node checks the round's proposal (see ``proposal_hold``)."""
        hold = self.parts.hold
        key = (event.height, event.round)
        first = not hold.is_held(*key)
        if not hold.hold(event):
            return False
        if first:
            delay = self.config.timeouts.duration(Step.PROPOSE, event.round) / 1000
            self._timers.append(asyncio.get_running_loop().call_later(delay, self._release_timeout, key))
        return True

    def _release_timeout(self, key: tuple[int, int]) -> None:
        event = self.parts.hold.release(key)
        if event is not None:
            self.inbox.put_nowait(event)

    async def _perform(self, action: Action) -> None:
        parts = self.parts
        if isinstance(action, Broadcast):
            await self._publish_own(action.message)
        elif isinstance(action, ScheduleTimeout):
            loop = asyncio.get_running_loop()
            event = TimeoutElapsed(action.height, action.round, action.step)
            self._timers = [h for h in self._timers if not h.cancelled() and h.when() > loop.time()]
            self._timers.append(loop.call_later(action.duration_ms / 1000, self.inbox.put_nowait, event))
        elif isinstance(action, RequestValue):
            parts.tasks.spawn(self._propose(action.height, action.round), f"propose-{action.height}-{action.round}")
        elif isinstance(action, RequestValidation):
            parts.tasks.spawn(
                parts.checker.check(action.height, action.round, action.block),
                f"validate-{action.height}-{action.round}",
            )
        elif isinstance(action, Decide):
            await self._commit(action.block, action.commit)
        elif isinstance(action, EvidenceFound):
            if parts.workpool.add_evidence(action.evidence):
                log.warning("equivocation by %s", action.evidence.vote_a.vote.validator.hex()[:16])
                parts.wakeup.notify()
        elif isinstance(action, Rejected):
            log.debug("consensus rejected a message: %s", action.reason)

    async def _publish_own(self, message: Proposal | Vote) -> None:
        # The guard's synced write happens off the loop, but the loop waits for
        # it: nothing is sent before the record is on disk. A refusal means this
        # node was about to sign twice, which the log replay rules out: it halts.
        parts = self.parts
        if isinstance(message, Proposal):
            signed: SignedProposal | SignedVote = SignedProposal(
                message, await parts.offload(parts.privval.sign_proposal, message)
            )
        else:
            signed = SignedVote(message, await parts.offload(parts.privval.sign_vote, message))
        await parts.seams.publish(self.network, signed)
        self.inbox.put_nowait(as_event(signed))

    async def _propose(self, height: Height, round_: Round) -> None:
        core = self.core
        parts = self.parts

        def still_wanted() -> bool:
            return (core.height, core.round) == (height, round_) and self.state.height + 1 == height

        built = await parts.proposer.build(height, round_, still_wanted)
        if built is None:
            return
        block, result = built
        parts.checker.remember(compute_block_hash(block.header), result)
        self.inbox.put_nowait(ValueReady(height, round_, block))

    # -------------------------------------------------------------- committing

    async def _commit(self, block: Block, cert: CommitCertificate, result: BlockResult | None = None) -> None:
        parts = self.parts
        block_hash = compute_block_hash(block.header)
        if result is None:
            result = parts.checker.result_for(block_hash)
        if result is None:
            result = await parts.runner.run(
                PRIORITY_CONSENSUS, parts.holding.apply_certified, self.state, block, self._chain.validators()
            )
        states = [step_state(parts.store, result.state, o) for o in result.completed]
        blobs = [b for s in states for b in s.blobs]
        started = time.perf_counter()
        try:
            await parts.offload(parts.store.commit_block, block, cert, result.state, blobs)
        except LocalFault as exc:
            self.halt(exc)
            raise NodeHalted(f"stopping: {exc}") from exc
        parts.metrics.observe_commit(time.perf_counter() - started, block, result.completed, cert.round)
        self._chain.advance(result.state)
        state = self.state
        parts.checker.forget_all()
        parts.hold.prune(state.height)
        parts.mempool.prune(state)
        for dropped in parts.workpool.prune(state):
            self.network.forget(dropped)
        parts.duties.prune()
        parts.retention.record_block(block, {s.root: s.parts for s in states})
        expired = parts.retention.expired(state, lambda root: stage_roots(parts.store, root))
        if expired:
            await parts.offload(parts.store.delete_blobs, expired)
        committed = CommittedBlock(block, block_hash, cert, state)
        for listener in list(self._listeners):
            maybe = listener(committed)
            if maybe is not None:
                await maybe
        self.network.announce_status()
        next_height = Height(state.height + 1)
        parts.wal.start_height(next_height)
        await parts.offload(parts.wal.prune_below, next_height)
        await self._apply(StartHeight(next_height, self._chain.validators()))
        held, self._next_height = self._next_height, []
        for item in held:
            await self._from_peer(item)
        parts.duties.schedule()
        await parts.duties.retry_early()
        parts.wakeup.notify()

    async def _apply_synced(self, item: SyncedBlocks) -> None:
        """Apply certified blocks: the commit proves them, so the model work is not recomputed."""
        for block, cert in item.items:
            state = self.state
            if block.header.height != state.height + 1:
                continue
            block_hash = compute_block_hash(block.header)
            try:
                validate_commit(cert, self._chain.validators(), self.chain_id, block.header.height, block_hash)
                result = apply_block(state, block, None)
            except InvalidBlock as exc:
                log.warning("a synced block at height %d is invalid: %s", block.header.height, exc)
                return
            await self._commit(block, cert, result)


def _is_logged(event: ConsensusEvent) -> TypeGuard[LoggedEvent]:
    return isinstance(event, ProposalReceived | VoteReceived | TimeoutElapsed | ValidityResult | ValueReady)

