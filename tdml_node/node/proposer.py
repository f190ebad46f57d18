"""Building the block this node proposes: ``getValue()`` of the Tendermint paper.

When consensus asks this node for a value, the proposer waits until a block
is worth proposing, then builds it on the work queue:

- at once when a transaction or a piece of evidence is pending, or when
  every open unit of the steps in progress has its verdicts;
- while this node still trains or checks a unit of a step in progress, it
  waits (alone, a validator waits for its own work, which keeps a one-node
  chain's blocks independent of timing);
- with some units ready, after ``partial_wait_ms``; with none, after
  ``block_interval_ms`` (an empty block, so heights and deadlines advance);
- in a network, never later than shortly before the other validators'
  propose timeout, less the longest recent call on the work queue (building
  waits for the call in flight), so the round is not lost.

The wait wakes on events (new transactions, units, verdicts, evidence, a
round change), and otherwise on the next of those deadlines; it never polls.

This module must never decide what is valid: it offers what the pools
hold, and ``consensus.transition.apply_body`` computes the block.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from consensus.crypto import Keypair
from consensus.errors import InvariantViolation
from consensus.state import LedgerState
from consensus.tendermint import Step, TimeoutConfig
from consensus.transition import (
    BlockContext,
    BlockResult,
    InvalidBlock,
    apply_body,
    compute_block_hash,
    compute_body_hash,
)
from consensus.types import (
    Block,
    BlockBody,
    BlockHeader,
    Height,
    Round,
    SignedTransaction,
    SignedVerdict,
    SignedWorkSubmission,
)
from consensus.work import InvalidWork, WorkOracle, WorkUnavailable
from tdml_node.pools import Evidence, Mempool, WorkPool, open_unit_keys, select_transactions
from tdml_node.runtime.runner import WorkRunner
from tdml_node.runtime.views import ChainView
from tdml_node.runtime.wakeup import Wakeup
from tdml_node.runtime.wallclock import WallClock
from tdml_node.runtime.workqueue import PRIORITY_CONSENSUS
from tdml_node.storage import ChainStore

log = logging.getLogger("tdml.node")

PROPOSE_MARGIN_MS = 750
BLOB_WAIT_SECONDS = 1.0

Unit = tuple[SignedWorkSubmission, tuple[SignedVerdict, ...]]


@dataclass(frozen=True, slots=True)
class ProposerTimings:
    timeouts: TimeoutConfig
    partial_wait_ms: int
    """How long to wait for other trainers' units before proposing the ones that are ready."""
    block_interval_ms: int
    """How long to wait with nothing to include before proposing an empty block."""


class Proposer:
    def __init__(
        self,
        *,
        keypair: Keypair,
        chain: ChainView,
        store: ChainStore,
        mempool: Mempool,
        workpool: WorkPool,
        busy: Callable[[set[tuple[bytes, int, int]]], bool],
        runner: WorkRunner,
        executor: WorkOracle,
        timings: ProposerTimings,
        wakeup: Wakeup,
        clock: WallClock,
    ) -> None:
        self.keypair = keypair
        self.chain = chain
        self.store = store
        self.mempool = mempool
        self.workpool = workpool
        self._busy = busy
        self.runner = runner
        self.executor = executor
        self.timings = timings
        self.wakeup = wakeup
        self.clock = clock

    async def build(
        self, height: Height, round_: Round, still_wanted: Callable[[], bool]
    ) -> tuple[Block, BlockResult] | None:
        """The block to propose at (height, round) and the state after it; None once no longer wanted."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            if not still_wanted():
                return None
            seen = self.wakeup.count
            waited_ms = (loop.time() - started) * 1000
            wait_ms = self.time_to_ready(waited_ms, round_)
            if wait_ms < 1:  # a millisecond is as good as now, and float rounding never reaches 0
                break
            await self.wakeup.wait(seen, None if wait_ms == float("inf") else wait_ms / 1000)
        state = self.chain.state
        candidates = self.mempool.items()
        units = [u for u in self.workpool.includable(state, self.chain.validators()) if await self._blobs_ready(u[0])]
        evidence = self.workpool.pending_evidence(state)
        built: tuple[Block, BlockResult] | None = None
        for attempt in range(3):
            try:
                built = await self.runner.run(
                    PRIORITY_CONSENSUS, self.make_block, state, height, round_, candidates, units, evidence
                )
                break
            except WorkUnavailable as exc:
                log.warning("cannot build a proposal with all units yet: %s", exc)
                if attempt == 1:
                    units = []
        if built is None or self.chain.state is not state:
            return None
        return built

    def time_to_ready(self, waited_ms: float, round_: int) -> float:
        """Milliseconds until a block is worth proposing (0: now; infinite: only an event can make it so)."""
        state = self.chain.state
        timings = self.timings
        deadlines: list[float] = []
        if len(self.chain.validators()) > 1:
            busy_ms = self.runner.longest_recent_seconds() * 1000
            patience = timings.timeouts.duration(Step.PROPOSE, round_) - PROPOSE_MARGIN_MS - busy_ms
            deadlines.append(patience)
        if len(self.mempool) or self.workpool.pending_evidence(state):
            return 0.0
        open_keys = open_unit_keys(state)
        ready = self.workpool.includable(state, self.chain.validators())
        if open_keys and len(ready) == len(open_keys):
            return 0.0
        if not self._busy(open_keys):
            deadlines.append(timings.partial_wait_ms if ready else timings.block_interval_ms)
        return max(0.0, min(deadlines, default=float("inf")) - waited_ms)

    async def _blobs_ready(self, signed: SignedWorkSubmission) -> bool:
        """Whether the unit's outputs can be read: a unit whose blobs nobody serves stays out.

        A pipeline unit's handed-on gradient too, or the unit after it could never be trained.
        """
        sub = signed.submission
        wanted = [sub.result_digest]
        if sub.links is not None and sub.links.output_gradient is not None:
            wanted.append(sub.links.output_gradient)
        try:
            async with asyncio.timeout(BLOB_WAIT_SECONDS):
                return all([await self.runner.ensure_blob(d) for d in wanted])
        except TimeoutError:
            return False

    def make_block(
        self,
        state: LedgerState,
        height: Height,
        round_: Round,
        candidates: Sequence[SignedTransaction],
        units: Sequence[Unit],
        evidence: tuple[Evidence, ...],
    ) -> tuple[Block, BlockResult]:
        """Build (on the work queue) the block to propose, dropping parts that do not apply.

        The block's time is read once the body is executed (aggregation can
        take a while, and validators judge the time on arrival): our clock, or
        just past the parent's when our clock is behind it (the transition
        wants it to increase). The time is in no state, so the body and the
        root do not depend on it.
        """
        ctx = BlockContext(state.chain_id, height, state.tip_hash, self.keypair.public_key)
        last_commit = self.store.get_commit(height - 1) if height > 1 else None
        txs = select_transactions(state, ctx, candidates, self.executor)
        attempts: list[tuple[Sequence[SignedTransaction], Sequence[Unit], tuple[Evidence, ...]]] = [
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
                evidence=ev_part,
                outcomes=(),
                last_commit=last_commit,
            )
            try:
                result = apply_body(state, ctx, body, self.executor, propose=True)
            except (InvalidBlock, InvalidWork) as exc:
                log.warning("dropping part of a block proposal: %s", exc)
                continue
            body = dataclasses.replace(body, outcomes=result.completed)
            time_ms = max(self.clock(), state.tip_time_ms + 1)
            header = BlockHeader(
                chain_id=state.chain_id,
                height=height,
                round=round_,
                parent_hash=state.tip_hash,
                proposer=self.keypair.public_key,
                body_hash=compute_body_hash(body),
                state_root=result.state.root,
                time_ms=time_ms,
            )
            final = dataclasses.replace(result.state, tip_hash=compute_block_hash(header), tip_time_ms=time_ms)
            return Block(header, body), BlockResult(final, result.completed)
        raise InvariantViolation("cannot build even an empty block")
