"""The node's service: one event loop that feeds the consensus core and carries out its actions.

Everything that changes consensus state passes through one inbox and one
loop (``_consensus_loop``), so the Tendermint core sees one event at a time
and the committed state changes only there. Torch work runs on the
``WorkQueue`` thread and database writes in a thread; the loop only awaits
them. The node:

- proposes blocks when it is the proposer and the work of a step is ready;
- validates proposals (state transition, aggregation, its own replays)
  before prevoting;
- commits decided blocks to LevelDB in one synced batch, then starts the
  next height;
- takes gossip from peers (``on_gossip``), serves blobs and blocks, catches up
  a peer that connects mid-height with its own signed messages, and syncs
  certified blocks when peers are ahead;
- leaves training, checking and judging to ``Duties``.

This module must never decide protocol questions itself: validity comes from
``consensus.transition`` and ``consensus.work``, votes from
``consensus.tendermint``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from consensus import crypto
from consensus.codec import DecodeError, decode, decode_as, encode
from consensus.state import LedgerState, get_validator_set
from consensus.tendermint import (
    STEP_NAMES,
    STEP_PRECOMMIT,
    STEP_PROPOSE,
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
    TendermintCore,
    TimeoutElapsed,
    ValidityResult,
    ValueReady,
    VoteReceived,
)
from consensus.tendermint import Event as ConsensusEvent
from consensus.transition import (
    BlockContext,
    BlockResult,
    InvalidBlock,
    apply_block,
    apply_body,
    apply_transaction,
    compute_block_hash,
    compute_body_hash,
    compute_genesis_hash,
    make_genesis_state,
    validate_commit,
)
from consensus.types import (
    JOB_ACTIVE,
    Block,
    BlockBody,
    BlockHeader,
    CommitCertificate,
    Equivocation,
    FalsePass,
    FalseVerdict,
    Genesis,
    Hash32,
    Height,
    Proposal,
    Round,
    SignedProposal,
    SignedTransaction,
    SignedVerdict,
    SignedVote,
    SignedWorkSubmission,
    Vote,
    WorkFraud,
)
from consensus.validators import ValidatorSet
from consensus.work import InvalidWork, WorkUnavailable, check_unit, sample_for, submission_id
from p2p.messages import GossipPayload
from tdml_node.byzantine import Honest
from tdml_node.config import NodeConfig
from tdml_node.duties import Duties
from tdml_node.metrics import NodeMetrics
from tdml_node.netlink import SEVERITY_FATAL, SEVERITY_MINOR, BlobFetcher, Network, NoNetwork
from tdml_node.pools import Evidence, Mempool, TxRejected, WorkPool
from tdml_node.privval import DoubleSignRefused, PrivValidator
from tdml_node.proposal_hold import ProposalHold
from tdml_node.retention import Retention
from tdml_node.storage import ChainStore, StorageError
from tdml_node.work.executor import TorchExecutor
from tdml_node.workqueue import PRIORITY_CONSENSUS, PRIORITY_TRAIN, WorkQueue

log = logging.getLogger("tdml.node")

RETRY_SECONDS = 0.5
PROPOSE_MARGIN_MS = 750
BLOB_WAIT_SECONDS = 1.0
SYNC_BATCH = 64


class NodeHalted(Exception):
    """The node stopped itself to protect its data (storage failure, broken invariant)."""


@dataclass(frozen=True, slots=True)
class FromPeer:
    """A consensus message that arrived from a peer (relayed onward if the core accepts it)."""

    event: ProposalReceived | VoteReceived
    peer: bytes


@dataclass(frozen=True, slots=True)
class SyncedBlocks:
    """Certified blocks fetched from a peer, to apply in order."""

    items: tuple[tuple[Block, CommitCertificate], ...]


@dataclass(frozen=True, slots=True)
class SyncDone:
    """Tells the sync loop that the blocks it queued before this were applied."""

    future: asyncio.Future[None]


InboxItem = ConsensusEvent | FromPeer | SyncedBlocks | SyncDone


@dataclass(frozen=True, slots=True)
class CommittedBlock:
    block: Block
    block_hash: Hash32
    commit: CommitCertificate
    state: LedgerState


class Node:
    def __init__(
        self,
        config: NodeConfig,
        keypair: crypto.Keypair,
        store: ChainStore,
        genesis: Genesis,
        network: Network | None = None,
    ) -> None:
        self.config = config
        self.keypair = keypair
        self.store = store
        self.genesis = genesis
        self.chain_id = genesis.chain_id
        self.genesis_hash = compute_genesis_hash(genesis)
        self.network: Network = network or NoNetwork()
        self.blobs = BlobFetcher(store, self.network)
        self.executor = TorchExecutor(store, train_threads=config.train_threads)
        self.worker = WorkQueue()
        self.metrics = NodeMetrics()
        self.mempool = Mempool()
        self.workpool = WorkPool()
        self.byzantine: Honest = Honest()
        self.privval = PrivValidator(store, keypair, self.chain_id)
        self.retention = Retention(config.retain_steps)
        self.state: LedgerState = self._load_or_init_state()
        self.core = TendermintCore(self.chain_id, keypair.public_key, config.timeouts)
        self.duties = Duties(self)
        self.inbox: asyncio.Queue[InboxItem] = asyncio.Queue()
        self.started_at = time.time()
        self.changed = asyncio.Event()
        self.syncing_to = 0
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Future[Any]] = set()
        self._timers: list[asyncio.TimerHandle] = []
        self._validated: dict[bytes, BlockResult] = {}
        self.proposal_hold = ProposalHold()
        self._wal_seq = 0
        self._block_listeners: list[Callable[[CommittedBlock], Awaitable[None] | None]] = []
        self.fatal: BaseException | None = None

    def attach_network(self, network: Network) -> None:
        """Use ``network`` from now on (the p2p network needs the node as its handler first)."""
        self.network = network
        self.blobs.network = network

    # ----------------------------------------------------------- lifecycle

    def _load_or_init_state(self) -> LedgerState:
        stored = self.store.get_genesis()
        if stored is None:
            state = make_genesis_state(self.genesis, self.executor)
            self.store.init_genesis(self.genesis, state)
            return state
        if compute_genesis_hash(stored) != self.genesis_hash:
            raise NodeHalted(f"the data directory {self.store.path} belongs to another chain (genesis differs)")
        loaded = self.store.load_state()
        if loaded is None:
            raise NodeHalted(f"the data directory {self.store.path} has a genesis but no state")
        return loaded

    @property
    def address(self) -> bytes:
        return self.keypair.address

    @property
    def height(self) -> int:
        return self.state.height

    def request_stop(self) -> None:
        self._stop.set()

    def halt(self, exc: BaseException) -> None:
        """Stop because the node cannot go on safely (a storage failure): ``/health`` says halted."""
        if self.fatal is None:
            self.fatal = exc
        self._stop.set()

    def add_block_listener(self, fn: Callable[[CommittedBlock], Awaitable[None] | None]) -> None:
        self._block_listeners.append(fn)

    def remove_block_listener(self, fn: Callable[[CommittedBlock], Awaitable[None] | None]) -> None:
        with contextlib.suppress(ValueError):
            self._block_listeners.remove(fn)

    async def run(self) -> None:
        """Run until ``request_stop`` or a fatal error; always releases the worker and timers."""
        loop_task = asyncio.create_task(self._consensus_loop(), name="consensus")
        stop_task = asyncio.create_task(self._stop.wait(), name="stop")
        try:
            # torch loads much of itself on the first use of its determinism
            # switches; pay that before the first unit rather than during it.
            self.spawn(self.worker.submit(PRIORITY_TRAIN, self.executor.warm_up), "warm-up")
            self.spawn(self._retry_loop(), "retry")
            self.spawn(self._sync_loop(), "sync")
            if not self.byzantine.is_honest:
                log.warning("BYZANTINE behaviour %r is active (test network only)", self.byzantine.name)
                self.spawn(self.byzantine.run(self), "byzantine")
            self.duties.schedule()
            done, _ = await asyncio.wait({loop_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            failure = loop_task.exception() if loop_task in done else None
            if failure is not None:
                if isinstance(failure, StorageError | NodeHalted):
                    self.halt(failure)
                raise failure
        finally:
            for t in (loop_task, stop_task, *self._tasks):
                t.cancel()
            for t in (loop_task, stop_task, *self._tasks):
                with contextlib.suppress(BaseException):
                    await t
            for handle in self._timers:
                handle.cancel()
            self.worker.close()

    def spawn(self, aw: Coroutine[Any, Any, Any] | asyncio.Future[Any], name: str) -> None:
        """Run ``aw`` as a task the node owns: cancelled and awaited when the node stops."""
        task = asyncio.ensure_future(aw)
        if isinstance(task, asyncio.Task):
            task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if isinstance(exc, StorageError | NodeHalted):
            log.error("task %s: %s", task.get_name() if isinstance(task, asyncio.Task) else "?", exc)
            self.halt(exc)
        elif exc is not None:
            log.error("task failed: %r", exc, exc_info=exc)

    async def _retry_loop(self) -> None:
        """Pick up work that could not start earlier (a blob was missing, a checker was silent)."""
        while True:
            await asyncio.sleep(RETRY_SECONDS)
            self.duties.schedule()

    # ------------------------------------------------------ consensus loop

    async def _consensus_loop(self) -> None:
        height = Height(self.state.height + 1)
        await self._apply_consensus(StartHeight(height, get_validator_set(self.state)))
        # Resume the height where a previous run of this node stopped: replay
        # every consensus message it had taken in (so it is locked again where
        # it was locked), then its own signed messages (the double-sign
        # records, synced, in case the log's last unsynced writes were lost).
        self._wal_seq = self.store.wal_next_seq(height)
        for raw in self.store.wal_entries(height):
            await self._apply_consensus(_as_event(decode(raw, SignedProposal | SignedVote)))
        for signed in self.privval.replay(height):
            await self._apply_consensus(_as_event(signed))
        while True:
            item = await self.inbox.get()
            if isinstance(item, FromPeer):
                await self._from_peer(item)
            elif isinstance(item, SyncedBlocks):
                await self._apply_synced(item)
            elif isinstance(item, SyncDone):
                if not item.future.done():
                    item.future.set_result(None)
            elif isinstance(item, TimeoutElapsed) and self._hold_timeout(item):
                continue
            else:
                await self._apply_consensus(item)

    def _hold_timeout(self, event: TimeoutElapsed) -> bool:
        """Hold a propose timeout back while this node checks the round's proposal (see ``proposal_hold``)."""
        key = (event.height, event.round)
        first = not self.proposal_hold.is_held(*key)
        if not self.proposal_hold.hold(event):
            return False
        if first:
            delay = self.config.timeouts.duration(STEP_PROPOSE, event.round) / 1000
            self._timers.append(asyncio.get_running_loop().call_later(delay, self._release_timeout, key))
        return True

    def _release_timeout(self, key: tuple[int, int]) -> None:
        event = self.proposal_hold.release(key)
        if event is not None:
            self.inbox.put_nowait(event)

    async def _from_peer(self, item: FromPeer) -> None:
        actions = self.core.apply(item.event)
        rejected = [a for a in actions if isinstance(a, Rejected)]
        if rejected:
            reason = rejected[0].reason
            severity = SEVERITY_FATAL if "signature" in reason else SEVERITY_MINOR
            self.network.penalize(item.peer, reason, severity)
        else:
            payload = item.event.signed
            self._log_consensus(payload)
            await self.network.broadcast(payload, exclude=item.peer)
        for action in actions:
            await self._perform(action)

    def _log_consensus(self, signed: SignedProposal | SignedVote) -> None:
        """Append a consensus message of the height in progress to the write-ahead log."""
        height = signed.proposal.height if isinstance(signed, SignedProposal) else signed.vote.height
        if height != self.state.height + 1:
            return
        self.store.wal_append(height, self._wal_seq, encode(signed))
        self._wal_seq += 1

    async def _apply_consensus(self, event: ConsensusEvent) -> None:
        if (
            isinstance(event, TimeoutElapsed)
            and (event.height, event.round) == (self.core.height, self.core.round)
            and event.step in (self.core.step, STEP_PRECOMMIT)
        ):
            # A timeout that moves consensus on means a slow proposer, slow validation or lost votes.
            log.info("timed out height=%d round=%d step=%s", event.height, event.round, STEP_NAMES[event.step])
        for action in self.core.apply(event):
            await self._perform(action)

    async def _perform(self, action: Action) -> None:
        if isinstance(action, Broadcast):
            await self._broadcast_own(action.message)
        elif isinstance(action, ScheduleTimeout):
            loop = asyncio.get_running_loop()
            event = TimeoutElapsed(action.height, action.round, action.step)
            self._timers = [h for h in self._timers if not h.cancelled() and h.when() > loop.time()]
            self._timers.append(loop.call_later(action.duration_ms / 1000, self.inbox.put_nowait, event))
        elif isinstance(action, RequestValue):
            self.spawn(self._build_value(action.height, action.round), f"propose-{action.height}-{action.round}")
        elif isinstance(action, RequestValidation):
            self.spawn(
                self._validate(action.height, action.round, action.block), f"validate-{action.height}-{action.round}"
            )
        elif isinstance(action, Decide):
            await self._commit(action.block, action.commit)
        elif isinstance(action, EvidenceFound):
            if self.workpool.add_evidence(action.evidence):
                log.warning("equivocation by %s", action.evidence.vote_a.vote.validator.hex()[:16])
                self.changed.set()
        elif isinstance(action, Rejected):
            log.debug("consensus rejected a message: %s", action.reason)

    async def _broadcast_own(self, message: Proposal | Vote) -> None:
        # The guard's synced write happens in a thread, but the loop waits for
        # it: nothing is sent before the record is on disk.
        try:
            if isinstance(message, Proposal):
                sig = await asyncio.to_thread(self.privval.sign_proposal, message)
                signed: SignedProposal | SignedVote = SignedProposal(message, sig)
            else:
                signed = SignedVote(message, await asyncio.to_thread(self.privval.sign_vote, message))
        except DoubleSignRefused as exc:
            log.error("refused to sign: %s", exc)
            return
        if isinstance(signed, SignedVote) and self.byzantine.equivocates():
            await self._equivocate(signed)
        else:
            await self.network.broadcast(signed)
        self._log_consensus(signed)
        self.inbox.put_nowait(_as_event(signed))

    async def _equivocate(self, signed: SignedVote) -> None:
        """(Byzantine, test networks only) send half the peers a conflicting vote, bypassing the guard."""
        vote = signed.vote
        other_hash = None if vote.block_hash is not None else Hash32(crypto.sha256(b"equivocation" + bytes(vote.height)))
        other = dataclasses.replace(vote, block_hash=other_hash)
        conflicting = SignedVote(other, self.keypair.sign_value(crypto.DOMAIN_VOTE, self.chain_id, other))
        peers = [p["node_id"] for p in self.network.peers()]
        for i, peer_hex in enumerate(peers):
            self.network.send_to(bytes.fromhex(peer_hex.removeprefix("0x")), conflicting if i % 2 else signed)
        self.byzantine.note_fault(vote.height)

    # ------------------------------------------------------------ proposing

    async def _build_value(self, height: Height, round_: Round) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            if self.core.height != height or self.core.round != round_ or self.state.height + 1 != height:
                return
            waited_ms = (loop.time() - started) * 1000
            if self._ready_to_propose(waited_ms, round_):
                break
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), timeout=0.05)
        state = self.state
        validators = get_validator_set(state)
        candidates = self.mempool.items()
        units = [u for u in self.workpool.includable(state, validators) if await self._blobs_ready(u[0])]
        evidence = self.workpool.pending_evidence(state)
        for attempt in range(3):
            try:
                block, result = await self.duties.run_work(
                    PRIORITY_CONSENSUS, self._make_block, state, height, round_, candidates, units, evidence
                )
                break
            except WorkUnavailable as exc:
                log.warning("cannot build a proposal with all units yet: %s", exc)
                if attempt == 1:
                    units = []
        else:
            return
        if self.state is not state:
            return
        self._validated[compute_block_hash(block.header)] = result
        self.inbox.put_nowait(ValueReady(height, round_, block))

    async def _blobs_ready(self, signed: SignedWorkSubmission) -> bool:
        """Whether the unit's result can be aggregated: a unit whose blob nobody serves stays out."""
        try:
            async with asyncio.timeout(BLOB_WAIT_SECONDS):
                return await self.blobs.ensure(signed.submission.result_digest)
        except TimeoutError:
            return False

    def _ready_to_propose(self, waited_ms: float, round_: int) -> bool:
        state = self.state
        # The other validators give up on this proposal when their propose
        # timeout fires: propose what is ready shortly before that rather than
        # lose the round. (Alone, a validator waits for its own work, which
        # keeps a one-node chain's blocks independent of timing.)
        # Building waits for the call the worker is running, so start early
        # enough that the longest recent call still leaves the proposal time.
        busy_ms = self.worker.longest_recent_seconds() * 1000
        patience = self.config.timeouts.duration(STEP_PROPOSE, round_) - PROPOSE_MARGIN_MS - busy_ms
        if waited_ms >= patience and len(get_validator_set(state)) > 1:
            return True
        if len(self.mempool) or self.workpool.pending_evidence(state):
            return True
        validators = get_validator_set(state)
        open_keys = {
            (job.job_id, job.step, shard)
            for job in state.jobs.values()
            if job.status == JOB_ACTIVE
            for shard in range(job.spec.shards)
            if job.accepted[shard] is None
        }
        ready = self.workpool.includable(state, validators)
        if open_keys and len(ready) == len(open_keys):
            return True
        if self.duties.pending(open_keys):
            return False
        if ready and waited_ms >= self.config.partial_wait_ms:
            return True
        return waited_ms >= self.config.block_interval_ms

    def _make_block(
        self,
        state: LedgerState,
        height: Height,
        round_: Round,
        candidates: list[SignedTransaction],
        units: list[tuple[SignedWorkSubmission, tuple[SignedVerdict, ...]]],
        evidence: tuple[Evidence, ...],
    ) -> tuple[Block, BlockResult]:
        """Build (on the worker thread) the block this node proposes."""
        ctx = BlockContext(self.chain_id, height, state.tip_hash, self.keypair.public_key)
        last_commit = self.store.get_commit(height - 1) if height > 1 else None
        txs = _select_transactions(state, ctx, candidates, self.executor)
        attempts = [(txs, units, evidence), (txs, units, ()), (txs, [], ()), ((), [], ())]
        for tx_part, unit_part, ev_part in attempts:
            body = BlockBody(
                transactions=tuple(tx_part),
                submissions=tuple(s for s, _ in unit_part),
                verdicts=tuple(v for _, vs in unit_part for v in vs),
                evidence=tuple(ev_part),
                outcomes=(),
                last_commit=last_commit,
            )
            try:
                result = apply_body(state, ctx, body, self.executor, propose=True)
            except (InvalidBlock, InvalidWork) as exc:
                log.warning("dropping part of a block proposal: %s", exc)
                continue
            body = dataclasses.replace(body, outcomes=result.completed)
            header = BlockHeader(
                chain_id=self.chain_id,
                height=height,
                round=round_,
                parent_hash=state.tip_hash,
                proposer=self.keypair.public_key,
                body_hash=compute_body_hash(body),
                state_root=result.state.root,
            )
            block = Block(header, body)
            final = dataclasses.replace(result.state, tip_hash=compute_block_hash(header))
            return block, BlockResult(final, result.completed)
        raise NodeHalted("cannot build even an empty block")

    # ----------------------------------------------------------- validating

    async def _validate(self, height: Height, round_: Round, block: Block) -> None:
        self.proposal_hold.check_started(height, round_)
        try:
            await self._check_proposal(height, block)
        finally:
            held = self.proposal_hold.check_ended(height, round_)
            if held is not None:
                self.inbox.put_nowait(held)

    async def _check_proposal(self, height: Height, block: Block) -> None:
        block_hash = compute_block_hash(block.header)
        if self.byzantine.approves_everything():
            self.byzantine.note_fault(height)
            self.inbox.put_nowait(ValidityResult(height, block_hash, True))
            return
        if block_hash in self._validated:
            self.inbox.put_nowait(ValidityResult(height, block_hash, True))
            return
        state = self.state
        if state.height + 1 != height:
            return
        mine = self._my_verdicts()
        try:
            ok, result = await self.duties.run_work(PRIORITY_CONSENSUS, self._check_block, state, block, mine)
        except (WorkUnavailable, InvalidWork) as exc:
            log.info("cannot validate proposal %s: %s", block_hash.hex()[:16], exc)
            ok, result = False, None
        if self.state is not state:
            return
        if ok and result is not None:
            self._validated[block_hash] = result
        else:
            log.warning("proposal %s at height %d is invalid", block_hash.hex()[:16], height)
        self.inbox.put_nowait(ValidityResult(height, block_hash, ok))

    def _my_verdicts(self) -> dict[bytes, SignedVerdict]:
        me = self.keypair.public_key
        return {sid: e.verdicts[me] for sid, e in self.workpool.units.items() if me in e.verdicts}

    def _check_block(
        self, state: LedgerState, block: Block, mine: dict[bytes, SignedVerdict]
    ) -> tuple[bool, BlockResult | None]:
        """The prevote condition: the block applies, and every unit we must check passes our replay."""
        try:
            result = apply_block(state, block, self.executor)
        except InvalidBlock as exc:
            log.info("invalid block: %s", exc)
            return False, None
        validators = get_validator_set(state)
        me = self.keypair.public_key
        if me not in validators:
            return True, result
        for signed in block.body.submissions:
            sub = signed.submission
            job = state.jobs[sub.job]
            if not self.duties.is_designated(job, sub, validators):
                continue
            sid = submission_id(sub)
            verdict = mine.get(sid)
            if verdict is None:
                _, steps = sample_for(self.keypair, self.chain_id, job, sub)
                failure = check_unit(self.executor, job, sub, steps).failure
            else:
                failure = verdict.verdict.failure
            if failure:
                log.warning("block includes unit %s that failed our replay", sid.hex()[:16])
                return False, None
        return True, result

    # ------------------------------------------------------------ committing

    async def _commit(self, block: Block, cert: CommitCertificate, result: BlockResult | None = None) -> None:
        block_hash = compute_block_hash(block.header)
        if result is None:
            result = self._validated.get(block_hash)
        if result is None:
            result = await self.duties.run_work(PRIORITY_CONSENSUS, apply_block, self.state, block, self.executor)
        blobs = [b for o in result.completed if (b := self.store.get(o.model_root)) is not None]
        started = time.perf_counter()
        try:
            await asyncio.to_thread(self.store.commit_block, block, cert, result.state, blobs)
        except StorageError as exc:
            self.fatal = exc
            self._stop.set()
            raise NodeHalted(f"stopping: {exc}") from exc
        self.metrics.observe_commit(time.perf_counter() - started, block, result.completed)
        self.state = result.state
        self._validated.clear()
        self.proposal_hold.prune(self.state.height)
        self.mempool.prune(self.state)
        self.workpool.prune(self.state)
        self.duties.prune()
        self.retention.record_block(block)
        expired = self.retention.expired(self.state)
        if expired:
            await asyncio.to_thread(self.store.delete_blobs, expired)
        log.info(
            "committed height=%d hash=%s round=%d txs=%d units=%d steps=%d evidence=%d",
            block.header.height,
            block_hash.hex()[:16],
            cert.round,
            len(block.body.transactions),
            len(block.body.submissions),
            len(result.completed),
            len(block.body.evidence),
        )
        committed = CommittedBlock(block, block_hash, cert, self.state)
        for listener in list(self._block_listeners):
            maybe = listener(committed)
            if maybe is not None:
                await maybe
        self._wal_seq = 0
        self.network.announce_status()
        await asyncio.to_thread(self.store.wal_prune, self.state.height + 1)
        await self._apply_consensus(StartHeight(Height(self.state.height + 1), get_validator_set(self.state)))
        self.duties.schedule()
        await self.duties.retry_early()
        self.changed.set()

    # ------------------------------------------------------------ syncing

    async def _sync_loop(self) -> None:
        """Fetch certified blocks while peers report a higher height than ours.

        One height behind is normal for an instant (a peer committed first);
        it starts a sync only if it lasts past one check. While blocks come,
        the next batch is asked for at once.
        """
        behind_by_one_since: int | None = None
        while True:
            if not self.syncing_to:
                await asyncio.sleep(RETRY_SECONDS)
            best = self.network.best_peer_height()
            height = self.state.height
            if best <= height or (best == height + 1 and behind_by_one_since != height):
                behind_by_one_since = height if best == height + 1 else None
                self.syncing_to = 0
                continue
            self.syncing_to = best
            start = self.state.height + 1
            raw = await self.network.request_blocks(start, SYNC_BATCH, timeout=10.0)
            items: list[tuple[Block, CommitCertificate]] = []
            try:
                for block_bytes, commit_bytes in raw:
                    items.append((decode_as(block_bytes, Block), decode_as(commit_bytes, CommitCertificate)))
            except DecodeError as exc:
                log.warning("a peer sent undecodable blocks: %s", exc)
                self.syncing_to = 0
                continue
            if not items:
                self.syncing_to = 0
            else:
                done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self.inbox.put_nowait(SyncedBlocks(tuple(items)))
                self.inbox.put_nowait(SyncDone(done))
                await done
                if self.state.height < start:  # nothing applied: back off before asking again
                    self.syncing_to = 0

    async def _apply_synced(self, item: SyncedBlocks) -> None:
        """Apply certified blocks: the commit proves them, so the model work is not recomputed."""
        for block, cert in item.items:
            state = self.state
            if block.header.height != state.height + 1:
                continue
            block_hash = compute_block_hash(block.header)
            try:
                validate_commit(cert, get_validator_set(state), self.chain_id, block.header.height, block_hash)
                result = apply_block(state, block, None)
            except InvalidBlock as exc:
                log.warning("a synced block at height %d is invalid: %s", block.header.height, exc)
                return
            await self._commit(block, cert, result)

    # ------------------------------------------------------ network handler

    async def on_gossip(self, payload: GossipPayload, peer_id: bytes) -> None:
        """Take a payload a peer gossiped; consensus messages go through the inbox in order."""
        if isinstance(payload, SignedProposal | SignedVote):
            self.inbox.put_nowait(FromPeer(_as_event(payload), peer_id))
        elif isinstance(payload, SignedTransaction):
            try:
                await self.on_transaction(payload, origin=peer_id)
            except TxRejected as exc:
                if "signature" in str(exc):
                    self.network.penalize(peer_id, f"transaction: {exc}", SEVERITY_FATAL)
        elif isinstance(payload, SignedWorkSubmission):
            await self.duties.on_submission(payload, origin=peer_id)
        elif isinstance(payload, SignedVerdict):
            await self.duties.on_verdict(payload, origin=peer_id)
        elif isinstance(payload, WorkFraud | FalseVerdict | FalsePass | Equivocation):
            log.debug("evidence gossip is not needed: validators judge failing verdicts themselves")

    def get_blob(self, digest: Hash32) -> bytes | None:
        if not self.byzantine.serves_blob(digest):
            return None
        return self.store.get(digest)

    def get_blocks(self, start: int, count: int) -> list[tuple[bytes, bytes]]:
        out = []
        for height in range(start, min(start + count, self.state.height + 1)):
            block = self.store.get_block_bytes(height)
            commit = self.store.get_commit(height)
            if block is None or commit is None:
                break
            out.append((block, encode(commit)))
        return out

    def status(self) -> tuple[int, Hash32]:
        return self.state.height, self.state.tip_hash

    def on_peer_connected(self, peer_id: bytes) -> None:
        """Catch a new peer up: our signed messages of the height in progress and our pending work.

        A peer that restarted has seen none of them, and gossip is not repeated.
        """
        for signed in self.privval.replay(self.state.height + 1):
            self.network.send_to(peer_id, signed)
        me = self.keypair.public_key
        for entry in list(self.workpool.units.values()):
            if entry.signed.submission.trainer == me:
                self.network.send_to(peer_id, entry.signed)
            if me in entry.verdicts:
                self.network.send_to(peer_id, entry.verdicts[me])

    # ----------------------------------------------------------- inbound

    async def on_transaction(self, signed: SignedTransaction, origin: bytes | None = None) -> Hash32:
        """Check a transaction against the state and the sender's pending ones, admit and gossip it.

        Raises ``TxRejected`` with the reason when it cannot apply.
        """
        digest = crypto.hash_value(signed)
        if digest in self.mempool:
            return digest
        ctx = BlockContext(self.chain_id, Height(self.state.height + 1), self.state.tip_hash, self.keypair.public_key)
        # One pending transaction per nonce (the first admitted): two that share a
        # nonce cannot both apply, and checking both would refuse every later one.
        pending: dict[int, SignedTransaction] = {}
        for t in self.mempool.items():
            if t.tx.sender == signed.tx.sender and t.tx.nonce < signed.tx.nonce:
                pending.setdefault(t.tx.nonce, t)
        earlier = [pending[n] for n in sorted(pending)]
        await self.worker.submit(PRIORITY_CONSENSUS, _check_transaction, self.state, ctx, earlier, signed, self.executor)
        self.mempool.admit(signed, self.state)
        await self.network.broadcast(signed, exclude=origin)
        self.changed.set()
        return digest

    def validator_set(self) -> ValidatorSet:
        return get_validator_set(self.state)


def _as_event(signed: SignedProposal | SignedVote) -> ProposalReceived | VoteReceived:
    return ProposalReceived(signed) if isinstance(signed, SignedProposal) else VoteReceived(signed)


def _check_transaction(
    state: LedgerState,
    ctx: BlockContext,
    earlier: list[SignedTransaction],
    signed: SignedTransaction,
    work: TorchExecutor,
) -> None:
    """Apply a transaction after its sender's pending ones on a scratch state (raises ``TxRejected``)."""
    try:
        for tx in earlier:
            state = apply_transaction(state, ctx, tx, work)
        apply_transaction(state, ctx, signed, work)
    except InvalidBlock as exc:
        raise TxRejected(str(exc)) from exc


def _select_transactions(
    state: LedgerState, ctx: BlockContext, candidates: list[SignedTransaction], work: TorchExecutor
) -> tuple[SignedTransaction, ...]:
    pool = Mempool()
    for signed in candidates:
        with contextlib.suppress(TxRejected):
            pool.admit(signed, state)
    return pool.select(state, ctx, work)
