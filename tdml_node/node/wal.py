"""The consensus write-ahead log: every input the consensus core took at the height in progress.

Every input is logged before the core sees it: proposals and votes (peers'
and our own), elapsed timeouts, validity results and the values this node
built. A restarted node feeds the log back into a fresh core in the same
order; the core is a deterministic function of its inputs, so it comes back
in exactly the state it was in, locked where it was locked, and asks the
privval to sign only what it signed before, which returns the same
signatures. A proposal found untimely on arrival is logged as such
(``WalUntimely``), so the replay prevotes nil again instead of judging the
block's time anew with a later clock. Without timeouts and validity results in the log, a restarted
core could re-derive a different vote (say, for a proposal whose propose
timeout had already made it prevote nil) and be refused by the privval.

An entry is written unsynced: our next vote's synced privval record
(LevelDB syncs its whole log) persists every entry before it, so an input
that led to a vote is on disk before the vote leaves.

Records are canonical codec messages (tags 150-159, private to a node's
storage). This module must never interpret the inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from consensus.codec import IntRange, decode, encode, message
from consensus.tendermint import (
    Event,
    ProposalReceived,
    Step,
    TimeoutElapsed,
    ValidityResult,
    ValueReady,
    VoteReceived,
)
from consensus.types import Block, Hash32, Height, Round, SignedProposal, SignedVote
from tdml_node.storage import ChainStore

MAX_WAL_RECORD = 64 * 1024 * 1024


@message(150)
@dataclass(frozen=True, slots=True)
class WalTimeout:
    height: Height
    round: Round
    step: Annotated[int, IntRange(0, 2)]


@message(151)
@dataclass(frozen=True, slots=True)
class WalValidity:
    height: Height
    block_hash: Hash32
    valid: bool


@message(152)
@dataclass(frozen=True, slots=True)
class WalValue:
    height: Height
    round: Round
    block: Block


@message(153)
@dataclass(frozen=True, slots=True)
class WalUntimely:
    signed: SignedProposal


WalRecord = SignedProposal | SignedVote | WalTimeout | WalValidity | WalValue | WalUntimely
LoggedEvent = ProposalReceived | VoteReceived | TimeoutElapsed | ValidityResult | ValueReady


def event_height(event: LoggedEvent) -> int:
    if isinstance(event, ProposalReceived):
        return event.signed.proposal.height
    if isinstance(event, VoteReceived):
        return event.signed.vote.height
    return event.height


def to_record(event: LoggedEvent) -> WalRecord:
    if isinstance(event, ProposalReceived) and not event.timely:
        return WalUntimely(event.signed)
    if isinstance(event, ProposalReceived | VoteReceived):
        return event.signed
    if isinstance(event, TimeoutElapsed):
        return WalTimeout(event.height, event.round, int(event.step))
    if isinstance(event, ValidityResult):
        return WalValidity(event.height, event.block_hash, event.valid)
    return WalValue(event.height, event.round, event.block)


def to_event(record: WalRecord) -> Event:
    if isinstance(record, SignedProposal):
        return ProposalReceived(record)
    if isinstance(record, WalUntimely):
        return ProposalReceived(record.signed, timely=False)
    if isinstance(record, SignedVote):
        return VoteReceived(record)
    if isinstance(record, WalTimeout):
        return TimeoutElapsed(record.height, record.round, Step(record.step))
    if isinstance(record, WalValidity):
        return ValidityResult(record.height, record.block_hash, record.valid)
    return ValueReady(record.height, record.round, record.block)


class ConsensusLog:
    """The log of the height in progress, kept in the chain store."""

    def __init__(self, store: ChainStore) -> None:
        self.store = store
        self._height = 0
        self._seq = 0

    def resume_height(self, height: int) -> list[Event]:
        """Go on logging ``height`` after a restart; the inputs a previous run logged, in order."""
        self._height = height
        self._seq = self.store.wal_next_seq(height)
        return [to_event(decode(raw, WalRecord, max_size=MAX_WAL_RECORD)) for raw in self.store.wal_entries(height)]

    def start_height(self, height: int) -> None:
        """Start logging a height this run reached by committing the one before (its log is empty)."""
        self._height = height
        self._seq = 0

    def append(self, event: LoggedEvent) -> None:
        """Log an input of the height in progress (inputs of other heights are not the core's to keep)."""
        if event_height(event) != self._height:
            return
        self.store.wal_append(self._height, self._seq, encode(to_record(event)))
        self._seq += 1

    def prune_below(self, height: int) -> None:
        self.store.wal_prune(height)
