"""The node's service: one event loop that feeds the consensus core and carries out its actions.

Everything that changes consensus state passes through one inbox and one
loop (``_consensus_loop``), so the Tendermint core sees one event at a time.
Torch work runs on the ``WorkQueue`` thread, database writes in a thread;
the loop only waits for them. The node:

- trains the units the chain assigns to it and gossips signed submissions;
- checks the units it is a designated checker of and gossips verdicts;
- re-checks failing verdicts and turns them into evidence (fraud, or a
  false accusation);
- proposes blocks when it is the proposer and the work of a step is ready;
- validates proposals (state transition, aggregation, its own checks)
  before prevoting;
- commits decided blocks to LevelDB in one synced batch, then starts the
  next height.

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
from consensus.state import LedgerState, get_validator_set
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
)
from consensus.types import (
    JOB_ACTIVE,
    Block,
    BlockBody,
    BlockHeader,
    CommitCertificate,
    FalseVerdict,
    Genesis,
    Hash32,
    Height,
    JobState,
    Proposal,
    Round,
    SignedProposal,
    SignedTransaction,
    SignedVerdict,
    SignedVote,
    SignedWorkSubmission,
    Vote,
    WorkFraud,
    WorkSubmission,
)
from consensus.validators import ValidatorSet
from consensus.work import (
    InvalidWork,
    WorkRejected,
    WorkUnavailable,
    check_unit,
    compute_checkers,
    make_verdict,
    required_checkers,
    sample_for,
    sign_submission,
    submission_id,
)
from tdml_node.config import NodeConfig
from tdml_node.metrics import NodeMetrics
from tdml_node.pools import Evidence, Mempool, TxRejected, WorkPool
from tdml_node.privval import DoubleSignRefused, PrivValidator
from tdml_node.retention import Retention
from tdml_node.storage import ChainStore, StorageError
from tdml_node.work.executor import TorchExecutor
from tdml_node.workqueue import PRIORITY_CHECK, PRIORITY_CONSENSUS, PRIORITY_TRAIN, WorkQueue

log = logging.getLogger("tdml.node")

RETRY_SECONDS = 0.5

GossipMessage = SignedProposal | SignedVote | SignedTransaction | SignedWorkSubmission | SignedVerdict


class NodeHalted(Exception):
    """The node stopped itself to protect its data (storage failure, broken invariant)."""


class Network:
    """What the node needs of the network. The default reaches no one (a single node)."""

    async def broadcast(self, message: GossipMessage, exclude: object = None) -> None:
        return None

    def peer_count(self) -> int:
        return 0

    def peers(self) -> list[dict[str, Any]]:
        return []


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
        self.network = network or Network()
        self.executor = TorchExecutor(store)
        self.worker = WorkQueue()
        self.metrics = NodeMetrics()
        self.mempool = Mempool()
        self.workpool = WorkPool()
        self.privval = PrivValidator(store, keypair, self.chain_id)
        self.retention = Retention(config.retain_steps)
        self.state = self._load_or_init_state()
        self.core = TendermintCore(self.chain_id, keypair.public_key, config.timeouts)
        self.inbox: asyncio.Queue[ConsensusEvent] = asyncio.Queue()
        self.started_at = time.time()
        self._changed = asyncio.Event()
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: list[asyncio.TimerHandle] = []
        self._validated: dict[bytes, BlockResult] = {}
        self._training: set[tuple[bytes, int, int]] = set()
        self._checking: set[bytes] = set()
        self._block_listeners: list[Callable[[CommittedBlock], Awaitable[None] | None]] = []
        self.fatal: BaseException | None = None

    # ----------------------------------------------------------- lifecycle

    def _load_or_init_state(self) -> LedgerState:
        stored = self.store.get_genesis()
        if stored is None:
            state = make_genesis_state(self.genesis, self.executor)
            self.store.init_genesis(self.genesis, state)
            return state
        if compute_genesis_hash(stored) != self.genesis_hash:
            raise NodeHalted(f"the data directory {self.store.path} belongs to another chain (genesis differs)")
        state = self.store.load_state()
        if state is None:
            raise NodeHalted(f"the data directory {self.store.path} has a genesis but no state")
        return state

    @property
    def address(self) -> bytes:
        return self.keypair.address

    @property
    def height(self) -> int:
        return self.state.height

    def request_stop(self) -> None:
        self._stop.set()

    def add_block_listener(self, fn: Callable[[CommittedBlock], Awaitable[None] | None]) -> None:
        self._block_listeners.append(fn)

    async def run(self) -> None:
        """Run until ``request_stop`` or a fatal error; always releases the worker and timers."""
        loop_task = asyncio.create_task(self._consensus_loop(), name="consensus")
        stop_task = asyncio.create_task(self._stop.wait(), name="stop")
        try:
            # torch loads much of itself on the first use of its determinism
            # switches; pay that before the first unit rather than during it.
            self._spawn(self._warm_up(), "warm-up")
            self._spawn(self._retry_loop(), "retry")
            self._schedule_work()
            done, _ = await asyncio.wait({loop_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            if loop_task in done and loop_task.exception() is not None:
                raise loop_task.exception()  # type: ignore[misc]
        finally:
            for t in (loop_task, stop_task, *self._tasks):
                t.cancel()
            for t in (loop_task, stop_task, *self._tasks):
                with contextlib.suppress(BaseException):
                    await t
            for handle in self._timers:
                handle.cancel()
            self.worker.close()

    async def _warm_up(self) -> None:
        await self.worker.submit(PRIORITY_TRAIN, self.executor.warm_up)

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("task %s failed: %r", task.get_name(), exc, exc_info=exc)
            if isinstance(exc, StorageError | NodeHalted):
                self.fatal = exc
                self._stop.set()

    # ------------------------------------------------------ consensus loop

    async def _consensus_loop(self) -> None:
        height = Height(self.state.height + 1)
        await self._apply_consensus(StartHeight(height, get_validator_set(self.state)))
        # Resume the height where a previous run of this node stopped: its own
        # signed proposal and votes are the write-ahead log.
        for signed in self.privval.replay(height):
            if isinstance(signed, SignedProposal):
                await self._apply_consensus(ProposalReceived(signed))
            else:
                await self._apply_consensus(VoteReceived(signed))
        while True:
            event = await self.inbox.get()
            await self._apply_consensus(event)

    async def _apply_consensus(self, event: ConsensusEvent) -> None:
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
            self._spawn(self._build_value(action.height, action.round), f"propose-{action.height}-{action.round}")
        elif isinstance(action, RequestValidation):
            self._spawn(self._validate(action.height, action.block), f"validate-{action.height}-{action.round}")
        elif isinstance(action, Decide):
            await self._commit(action.block, action.commit)
        elif isinstance(action, EvidenceFound):
            if self.workpool.add_evidence(action.evidence):
                log.warning("equivocation by %s", action.evidence.vote_a.vote.validator.hex()[:16])
                self._changed.set()
        elif isinstance(action, Rejected):
            log.debug("consensus rejected a message: %s", action.reason)

    async def _broadcast_own(self, message: Proposal | Vote) -> None:
        try:
            if isinstance(message, Proposal):
                signed: SignedProposal | SignedVote = SignedProposal(message, self.privval.sign_proposal(message))
            else:
                signed = SignedVote(message, self.privval.sign_vote(message))
        except DoubleSignRefused as exc:
            log.error("refused to sign: %s", exc)
            return
        await self.network.broadcast(signed)
        if isinstance(signed, SignedProposal):
            self.inbox.put_nowait(ProposalReceived(signed))
        else:
            self.inbox.put_nowait(VoteReceived(signed))

    # ------------------------------------------------------------ proposing

    async def _build_value(self, height: Height, round_: Round) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            if self.core.height != height or self.core.round != round_ or self.state.height + 1 != height:
                return
            waited_ms = (loop.time() - started) * 1000
            if self._ready_to_propose(waited_ms):
                break
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=0.05)
        state = self.state
        validators = get_validator_set(state)
        candidates = self.mempool.items()
        units = self.workpool.includable(state, validators)
        evidence = self.workpool.pending_evidence(state)
        block, result = await self.worker.submit(
            PRIORITY_CONSENSUS, self._make_block, state, height, round_, candidates, units, evidence
        )
        self._validated[compute_block_hash(block.header)] = result
        self.inbox.put_nowait(ValueReady(height, round_, block))

    def _ready_to_propose(self, waited_ms: float) -> bool:
        state = self.state
        if len(self.mempool) or self.workpool.pending_evidence(state):
            return True
        validators = get_validator_set(state)
        open_units = [
            (job, shard)
            for job in state.jobs.values()
            if job.status == JOB_ACTIVE
            for shard in range(job.spec.shards)
            if job.accepted[shard] is None
        ]
        ready = self.workpool.includable(state, validators)
        if open_units and len(ready) == len(open_units):
            return True
        if self._own_work_pending(state, validators, open_units):
            return False
        if ready and waited_ms >= self.config.partial_wait_ms:
            return True
        return waited_ms >= self.config.block_interval_ms

    def _own_work_pending(
        self, state: LedgerState, validators: ValidatorSet, open_units: list[tuple[JobState, int]]
    ) -> bool:
        """Whether this node is still training or checking a unit of a step in progress."""
        open_keys = {(job.job_id, job.step, shard) for job, shard in open_units}
        if open_keys & self._training:
            return True
        me = self.keypair.public_key
        for sid in self._checking:
            entry = self.workpool.get(sid)
            if entry is not None and me not in entry.verdicts:
                return True
        return False

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
        attempts = [
            (txs, units, evidence),
            (txs, units, ()),
            (txs, [], ()),
            ((), [], ()),
        ]
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
                body = dataclasses.replace(body, outcomes=result.completed)
            except (InvalidBlock, WorkUnavailable, InvalidWork) as exc:
                log.warning("dropping part of a block proposal: %s", exc)
                continue
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

    async def _validate(self, height: Height, block: Block) -> None:
        block_hash = compute_block_hash(block.header)
        if block_hash in self._validated:
            self.inbox.put_nowait(ValidityResult(height, block_hash, True))
            return
        state = self.state
        if state.height + 1 != height:
            return
        mine = self._my_verdicts()
        ok, result = await self.worker.submit(PRIORITY_CONSENSUS, self._check_block, state, block, mine)
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
        except (WorkUnavailable, InvalidWork) as exc:
            log.info("cannot validate block: %s", exc)
            return False, None
        validators = get_validator_set(state)
        me = self.keypair.public_key
        if me not in validators:
            return True, result
        for signed in block.body.submissions:
            sub = signed.submission
            job = state.jobs[sub.job]
            if not self._is_designated(job, sub, validators):
                continue
            sid = submission_id(sub)
            verdict = mine.get(sid)
            if verdict is None:
                _, steps = sample_for(self.keypair, self.chain_id, job, sub)
                try:
                    failure = check_unit(self.executor, job, sub, steps).failure
                except (WorkUnavailable, InvalidWork):
                    return False, None
            else:
                failure = verdict.verdict.failure
            if failure:
                log.warning("block includes unit %s that failed our replay", sid.hex()[:16])
                return False, None
        return True, result

    # ------------------------------------------------------------ committing

    async def _commit(self, block: Block, cert: CommitCertificate) -> None:
        block_hash = compute_block_hash(block.header)
        result = self._validated.get(block_hash)
        if result is None:
            result = await self.worker.submit(PRIORITY_CONSENSUS, apply_block, self.state, block, self.executor)
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
        self.mempool.prune(self.state)
        self.workpool.prune(self.state)
        self.retention.record_block(block)
        expired = self.retention.expired(self.state)
        if expired:
            await asyncio.to_thread(self.store.delete_blobs, expired)
        log.info(
            "committed height=%d hash=%s txs=%d units=%d steps=%d",
            block.header.height,
            block_hash.hex()[:16],
            len(block.body.transactions),
            len(block.body.submissions),
            len(result.completed),
        )
        committed = CommittedBlock(block, block_hash, cert, self.state)
        for listener in list(self._block_listeners):
            maybe = listener(committed)
            if maybe is not None:
                await maybe
        await self._apply_consensus(StartHeight(Height(self.state.height + 1), get_validator_set(self.state)))
        self._schedule_work()
        self._changed.set()

    # -------------------------------------------------------------- work

    def _can_train(self, job: JobState) -> bool:
        return self.executor.can_run(job.spec)

    def _is_designated(self, job: JobState, sub: WorkSubmission, validators: ValidatorSet) -> bool:
        need = required_checkers(job.spec, validators)
        ranked = compute_checkers(job, sub.shard, sub.trainer, validators)
        return self.keypair.public_key in ranked[:need]

    async def _retry_loop(self) -> None:
        """Pick up work that could not start earlier (a blob was missing, a check was dropped)."""
        while True:
            await asyncio.sleep(RETRY_SECONDS)
            self._schedule_work()
            self._schedule_checks()

    def _schedule_checks(self) -> None:
        validators = get_validator_set(self.state)
        me = self.keypair.public_key
        if me not in validators:
            return
        for sid, entry in list(self.workpool.units.items()):
            sub = entry.signed.submission
            job = self.state.jobs.get(sub.job)
            if job is None or me in entry.verdicts or sid in self._checking:
                continue
            if self._is_designated(job, sub, validators):
                self._spawn(self._check(entry.signed, job), f"check-{job.step}-{sub.shard}")

    def _schedule_work(self) -> None:
        for job in self.state.jobs.values():
            if job.status != JOB_ACTIVE or not self._can_train(job):
                continue
            for shard in range(job.spec.shards):
                key = (job.job_id, job.step, shard)
                if job.assignment[shard] != self.address or job.accepted[shard] is not None:
                    continue
                if key in self._training or self.workpool.unit_for(*key) is not None:
                    continue
                self._training.add(key)
                self._spawn(self._train(job, shard), f"train-{job.step}-{shard}")

    async def _train(self, job: JobState, shard: int) -> None:
        key = (job.job_id, job.step, shard)
        try:
            unit = await self.worker.submit(PRIORITY_TRAIN, self.executor.train_unit, job, shard)
        except WorkUnavailable as exc:
            log.warning("cannot train step %d shard %d yet: %s", job.step, shard, exc)
            self._training.discard(key)
            return
        current = self.state.jobs.get(job.job_id)
        if current is None or current.step != job.step or current.assignment[shard] != self.address:
            self._training.discard(key)
            return
        sub = WorkSubmission(
            job=job.job_id,
            step=job.step,
            shard=shard,
            trainer=self.keypair.public_key,
            parent_model_root=job.model_root,
            checkpoint_digests=unit.checkpoint_digests,
            result_digest=unit.result_digest,
            losses=unit.losses,
            receipt=unit.receipt,
        )
        self.metrics.units_trained.inc()
        try:
            await self.on_submission(sign_submission(self.keypair, self.chain_id, sub), origin=None)
        finally:
            self._training.discard(key)

    async def on_submission(self, signed: SignedWorkSubmission, origin: object) -> None:
        try:
            added = self.workpool.add_submission(self.chain_id, signed, self.state)
        except WorkRejected as exc:
            log.debug("submission rejected: %s", exc)
            return
        if not added:
            return
        await self.network.broadcast(signed, exclude=origin)
        self._changed.set()
        job = self.state.jobs[signed.submission.job]
        validators = get_validator_set(self.state)
        if self.keypair.public_key in validators and self._is_designated(job, signed.submission, validators):
            self._spawn(self._check(signed, job), f"check-{job.step}-{signed.submission.shard}")

    async def _check(self, signed: SignedWorkSubmission, job: JobState) -> None:
        sub = signed.submission
        sid = submission_id(sub)
        if sid in self._checking:
            return
        self._checking.add(sid)
        sample_sig, steps = sample_for(self.keypair, self.chain_id, job, sub)
        try:
            result = await self.worker.submit(PRIORITY_CHECK, check_unit, self.executor, job, sub, steps)
        except WorkUnavailable as exc:
            log.warning("cannot check %s yet: %s", sid.hex()[:16], exc)
            self._checking.discard(sid)
            return
        verdict = make_verdict(
            self.keypair, self.chain_id, job, sub, result, steps, sample_sig, self.executor.receipt(job.spec)
        )
        self.metrics.units_checked.inc()
        if result.failure:
            self.metrics.units_failed.inc()
            log.warning("unit %s failed replay (failure %d, step %d)", sid.hex()[:16], result.failure, result.failed_step)
            self.workpool.add_evidence(WorkFraud(signed, verdict))
        try:
            await self.on_verdict(verdict, origin=None)
        finally:
            self._checking.discard(sid)

    async def on_verdict(self, signed: SignedVerdict, origin: object) -> None:
        try:
            added = self.workpool.add_verdict(self.chain_id, signed, self.state, get_validator_set(self.state))
        except (WorkRejected, KeyError) as exc:
            log.debug("verdict rejected: %s", exc)
            return
        if not added:
            return
        await self.network.broadcast(signed, exclude=origin)
        self._changed.set()
        if signed.verdict.failure and signed.verdict.validator != self.keypair.public_key:
            self._spawn(self._judge(signed), "judge")

    async def _judge(self, signed: SignedVerdict) -> None:
        """Re-check another validator's failure claim; either way it becomes evidence."""
        entry = self.workpool.get(signed.verdict.submission_id)
        if entry is None:
            return
        job = self.state.jobs.get(entry.signed.submission.job)
        if job is None:
            return
        try:
            upheld = await self.worker.submit(
                PRIORITY_CHECK, self.executor.recheck, job, entry.signed.submission, signed.verdict
            )
        except WorkUnavailable:
            return
        ev: Evidence = WorkFraud(entry.signed, signed) if upheld else FalseVerdict(entry.signed, signed)
        if self.workpool.add_evidence(ev):
            self._changed.set()

    # ----------------------------------------------------------- inbound

    async def on_transaction(self, signed: SignedTransaction, origin: object = None) -> Hash32:
        """Check a transaction against the state and the sender's pending ones, admit and gossip it.

        Raises ``TxRejected`` with the reason when it cannot apply.
        """
        digest = crypto.hash_value(signed)
        if digest in self.mempool:
            return digest
        ctx = BlockContext(self.chain_id, Height(self.state.height + 1), self.state.tip_hash, self.keypair.public_key)
        earlier = sorted(
            (t for t in self.mempool.items() if t.tx.sender == signed.tx.sender and t.tx.nonce < signed.tx.nonce),
            key=lambda t: t.tx.nonce,
        )
        await self.worker.submit(
            PRIORITY_CONSENSUS, _check_transaction, self.state, ctx, earlier, signed, self.executor
        )
        self.mempool.admit(signed, self.state)
        await self.network.broadcast(signed, exclude=origin)
        self._changed.set()
        return digest

    async def on_consensus_message(self, message: SignedProposal | SignedVote) -> None:
        if isinstance(message, SignedProposal):
            self.inbox.put_nowait(ProposalReceived(message))
        else:
            self.inbox.put_nowait(VoteReceived(message))


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
