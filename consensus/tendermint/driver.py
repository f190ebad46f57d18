"""The driver: one validator's (or observer's) Tendermint, fed the shell's inputs one at a time.

``TendermintCore.apply(event)`` takes one input (``types.Event``) and returns
the actions the shell must carry out (``types.Action``, whose docstrings are
the shell's duties). Safety holds while less than a third of the power is
Byzantine; an input that breaks a rule is answered with ``Rejected``, whose
``FaultKind`` says what the sender did wrong, and changes nothing.

The layers, after Malachite: the driver checks every input (height and round
windows here; signature, membership and proposer in ``checks``) and keeps the
height's proposals and validity results; the vote keeper counts votes and
reports each threshold once; the round machine (``machine.apply``, pure)
holds the rules. After every input the driver offers the machine what now
holds, in the paper's order of precedence (L49, L55, L22/L28, L36, L44, L34,
L47), until the machine takes nothing. A threshold the keeper reported waits
as "pending" until the machine takes it, and is gone once taken: that is the
paper's "for the first time" of L34, L36 and L47. (Malachite instead asks the
keeper again whenever the step changes; a pending set gives the same answers
with one place to look.) Conditions about other rounds, L28's proof of lock in
an earlier round and L49's precommits in any round, are asked of the keeper.

This module must never hold a rule of Algorithm 1 (those are ``machine``'s),
nor sign, send, or read a clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from consensus.errors import FaultKind, InvariantViolation
from consensus.tendermint import machine
from consensus.tendermint.checks import check_proposal, check_vote
from consensus.tendermint.state import RoundState
from consensus.tendermint.types import (
    Action,
    Broadcast,
    Decide,
    Event,
    EvidenceFound,
    ProposalReceived,
    Rejected,
    RequestValidation,
    RequestValue,
    ScheduleTimeout,
    StartHeight,
    Step,
    TimeoutConfig,
    TimeoutElapsed,
    ValidityResult,
    ValueReady,
    VoteReceived,
)
from consensus.tendermint.votekeeper import (
    PolkaAny,
    PolkaNil,
    PolkaValue,
    PrecommitAny,
    PrecommitValue,
    SkipRound,
    Threshold,
    VoteKeeper,
)
from consensus.transition import compute_block_hash
from consensus.types import (
    PRECOMMIT,
    PREVOTE,
    CommitCertificate,
    CommitSig,
    Hash32,
    Height,
    Proposal,
    PublicKey,
    Round,
    SignedProposal,
    SignedVote,
    Vote,
)
from consensus.validators import ValidatorSet

MAX_ROUND_AHEAD = 64
"""Messages of rounds further ahead of ours are dropped: gossip brings them again when they matter."""
MAX_BUFFERED = 4096
"""Messages of the next height kept until it starts."""
MAX_SETTLE_STEPS = 64
"""Rules one input may fire; more means the rules loop, which is a bug, never an attack."""

# A dictionary, not a match on the step: a shell may hand back the step as the
# plain number it stored, and an unknown one is ignored like any stale timer.
_TIMEOUTS: dict[int, type[machine.TimeoutPropose | machine.TimeoutPrevote | machine.TimeoutPrecommit]] = {
    Step.PROPOSE: machine.TimeoutPropose,
    Step.PREVOTE: machine.TimeoutPrevote,
    Step.PRECOMMIT: machine.TimeoutPrecommit,
}


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything of a core's state that an input could change; equal snapshots, equal cores."""

    state: RoundState
    started: bool
    proposals: tuple[SignedProposal, ...]  # by round
    votes: tuple[SignedVote, ...]  # by round, prevotes first, in arrival order
    validity: tuple[tuple[Hash32, bool], ...]
    untimely: frozenset[int]  # rounds whose proposal came untimely
    validation_requested: frozenset[Hash32]
    thresholds: frozenset[Threshold]  # reached in the height
    pending: frozenset[Threshold]  # reached, not yet taken by the round machine
    proposed_round: int
    buffered: tuple[Event, ...]  # next-height messages, in arrival order


@dataclass
class _HeightBook:
    """What the driver keeps of one height besides the round state; made afresh for each."""

    keeper: VoteKeeper
    voter: PublicKey | None  # our key if we vote at this height
    proposals: dict[int, SignedProposal] = field(default_factory=dict)  # the first per round counts
    proposal_ids: dict[int, Hash32] = field(default_factory=dict)  # their block hashes
    validity: dict[Hash32, bool] = field(default_factory=dict)
    untimely: set[int] = field(default_factory=set)  # rounds whose fresh proposal failed timeliness
    validation_requested: set[Hash32] = field(default_factory=set)
    pending: set[Threshold] = field(default_factory=set)
    proposed_round: int = -1  # the last round we proposed in


class TendermintCore:
    """One validator's (or observer's, with ``me=None``) consensus state for the current height."""

    def __init__(self, chain_id: str, me: PublicKey | None, timeouts: TimeoutConfig | None = None) -> None:
        self._chain_id = chain_id
        self._me = me
        self._timeouts = timeouts or TimeoutConfig()
        self._validators = ValidatorSet(())
        self._state = RoundState(Height(0), Round(0), Step.PROPOSE)
        self._book = _HeightBook(VoteKeeper(self._validators), voter=None)
        self._started = False
        self._buffered: list[Event] = []

    # ------------------------------------------------------------ reads

    @property
    def chain_id(self) -> str:
        return self._chain_id

    @property
    def me(self) -> PublicKey | None:
        return self._me

    @property
    def timeouts(self) -> TimeoutConfig:
        return self._timeouts

    @property
    def height(self) -> Height:
        return self._state.height

    @property
    def round(self) -> Round:
        return self._state.round

    @property
    def step(self) -> Step:
        return self._state.step

    @property
    def validators(self) -> ValidatorSet:
        return self._validators

    @property
    def state(self) -> RoundState:
        """The round state: round, step, lock, valid value and decision of the current height."""
        return self._state

    @property
    def started(self) -> bool:
        """Whether a height is in progress (false before the first ``StartHeight`` and after ``Decide``)."""
        return self._started

    @property
    def is_proposer(self) -> bool:
        return self._is_proposer_of(self._state.round)

    def get_proposal(self, round_: int) -> SignedProposal | None:
        """The proposal of ``round_`` at this height that counts (the first valid one received)."""
        return self._book.proposals.get(round_)

    def snapshot(self) -> Snapshot:
        book = self._book
        return Snapshot(
            state=self._state,
            started=self._started,
            proposals=tuple(book.proposals[r] for r in sorted(book.proposals)),
            votes=book.keeper.get_votes(),
            validity=tuple(sorted(book.validity.items())),
            untimely=frozenset(book.untimely),
            validation_requested=frozenset(book.validation_requested),
            thresholds=book.keeper.get_reached(),
            pending=frozenset(book.pending),
            proposed_round=book.proposed_round,
            buffered=tuple(self._buffered),
        )

    # ------------------------------------------------------------ input

    def apply(self, event: Event) -> list[Action]:
        out: list[Action] = []
        match event:
            case StartHeight():
                self._on_start_height(event, out)
            case _ if not self._started:
                if _height_of(event) == self._state.height + 1:
                    self._buffer(event)
                return out
            case ProposalReceived(signed=signed, timely=timely):
                self._on_proposal(signed, timely, out)
            case VoteReceived(signed=signed):
                self._on_vote(signed, out)
            case ValueReady():
                self._on_value(event, out)
            case ValidityResult(height=h, block_hash=block_hash, valid=valid):
                # The first answer for a block stands: a restarted node's log
                # replays the answer its rules already acted on, and a second
                # check of the same block (started by the replay) must not undo it.
                if h == self._state.height:
                    self._book.validity.setdefault(block_hash, valid)
            case TimeoutElapsed():
                self._on_timeout(event, out)
        if self._started and self._state.decision is None:
            self._settle(out)
        return out

    def _on_start_height(self, event: StartHeight, out: list[Action]) -> None:
        if event.height <= self._state.height:
            # Also after a decision (when not started): re-running a height would
            # vote on it again from round 0 and could sign conflicting votes. Only
            # the shell sends this, and a height that was valid once is stale, not
            # anyone's fault.
            out.append(Rejected(FaultKind.STALE, f"height {event.height} already started"))
            return
        buffered = [e for e in self._buffered if _height_of(e) == event.height]
        self._validators = event.validators
        self._state = RoundState.initial(event.height)
        voter = self._me if self._me is not None and self._me in event.validators else None
        self._book = _HeightBook(VoteKeeper(event.validators), voter=voter)
        self._buffered = []
        self._started = True
        self._enter_round(Round(0), out)  # L10
        for e in buffered:
            out.extend(self.apply(e))

    def _on_proposal(self, signed: SignedProposal, timely: bool, out: list[Action]) -> None:
        p = signed.proposal
        if p.height != self._state.height:
            if p.height == self._state.height + 1:
                self._buffer(ProposalReceived(signed, timely))
            return
        if self._state.decision is not None or p.round > self._state.round + MAX_ROUND_AHEAD:
            return
        rejected = check_proposal(self._chain_id, self._validators, signed)
        if rejected is not None:
            out.append(rejected)
            return
        book = self._book
        if p.round in book.proposals:
            return  # the first proposal of a round counts; another is the proposer's fault, not ours
        block_hash = compute_block_hash(p.block.header)
        book.proposals[p.round] = signed
        book.proposal_ids[p.round] = block_hash
        if not timely:
            book.untimely.add(p.round)
        self._note(book.keeper.apply_proposal(p.round, p.proposer, block_hash))
        if block_hash not in book.validity and block_hash not in book.validation_requested:
            book.validation_requested.add(block_hash)
            out.append(RequestValidation(self._state.height, p.round, p.block))

    def _on_vote(self, signed: SignedVote, out: list[Action]) -> None:
        v = signed.vote
        if v.height != self._state.height:
            if v.height == self._state.height + 1:
                self._buffer(VoteReceived(signed))
            return
        if v.round > self._state.round + MAX_ROUND_AHEAD:
            return
        rejected = check_vote(self._chain_id, self._validators, signed)
        if rejected is not None:
            out.append(rejected)
            return
        outcome = self._book.keeper.apply_vote(signed)
        if outcome.evidence is not None:
            out.append(EvidenceFound(outcome.evidence))
        self._note(outcome.thresholds)

    def _on_value(self, event: ValueReady, out: list[Action]) -> None:
        # L18-L19, completed asynchronously: getValue() returned.
        state, book = self._state, self._book
        if (event.height, event.round) != (state.height, state.round) or book.proposed_round == state.round:
            return
        if state.decision is not None or not self.is_proposer or state.round in book.proposals:
            return  # our proposal of this round is already known (e.g. replayed after a restart)
        # The machine refuses once the propose timeout (L57) fired and we prevoted: a
        # proposal now would be signed at an earlier step than our prevote, which the
        # privval rightly refuses, and nobody would still use it.
        transition = machine.apply(state, machine.ProposeValue(event.round, event.block))
        if transition.applied:
            book.validity[compute_block_hash(event.block.header)] = True
            self._take(transition, out)

    def _on_timeout(self, event: TimeoutElapsed, out: list[Action]) -> None:
        if event.height != self._state.height or self._state.decision is not None:
            return
        timeout = _TIMEOUTS.get(event.step)
        if timeout is None:
            return
        transition = machine.apply(self._state, timeout(event.round))
        if transition.applied:
            self._take(transition, out)

    # ------------------------------------------------------------ rules

    def _settle(self, out: list[Action]) -> None:
        """Offer the round machine what holds, until it takes nothing more."""
        for _ in range(MAX_SETTLE_STEPS):
            if self._state.decision is not None:
                return
            for input_, threshold in self._candidates():
                transition = machine.apply(self._state, input_)
                if transition.applied:
                    if threshold is not None:
                        self._book.pending.discard(threshold)
                    self._take(transition, out)
                    break
            else:
                return
        raise InvariantViolation(f"consensus rules did not settle at height {self._state.height}")

    def _candidates(self) -> Iterator[tuple[machine.Input, Threshold | None]]:
        """The machine inputs that hold now, in the paper's precedence, with the threshold each takes."""
        state, book = self._state, self._book
        # L49: a proposal of any round with 2f+1 precommits for it decides the height.
        for pr in sorted(book.proposals):
            pid = book.proposal_ids[pr]
            if book.validity.get(pid) and book.keeper.is_reached(PrecommitValue(Round(pr), pid)):
                yield machine.ProposalAndPrecommitValue(Round(pr), book.proposals[pr].proposal.block, pid), None

        # L55: f+1 messages of a higher round make us skip to it, the highest first.
        skips = [t for t in book.pending if isinstance(t, SkipRound) and t.round > state.round]
        if skips:
            highest = max(skips, key=lambda t: t.round)
            yield highest, highest

        r = state.round
        signed = book.proposals.get(r)
        if signed is not None:
            vid = book.proposal_ids[r]
            v = signed.proposal.block
            valid = book.validity.get(vid)
            vr = signed.proposal.valid_round
            if valid is not None:
                if vr == -1:  # L22, with PBTS's timely(v): an untimely fresh value gets a nil prevote
                    fresh_ok = valid and r not in book.untimely
                    yield (machine.Proposal(r, v, vid) if fresh_ok else machine.InvalidProposal(r)), None
                elif 0 <= vr < r and book.keeper.is_reached(PolkaValue(Round(vr), vid)):  # L28
                    previous: machine.Input = (
                        machine.ProposalAndPolkaPrevious(r, v, vid, vr)
                        if valid
                        else machine.InvalidProposalAndPolkaPrevious(r, vr)
                    )
                    yield previous, None
            polka = PolkaValue(r, vid)
            if valid and polka in book.pending:  # L36
                yield machine.ProposalAndPolkaCurrent(r, v, vid), polka

        for threshold in (PolkaNil(r), PolkaAny(r), PrecommitAny(r)):  # L44, L34, L47
            if threshold in book.pending:
                yield threshold, threshold

    def _take(self, transition: machine.Transition, out: list[Action]) -> None:
        """Adopt the machine's next state and carry out its outputs, in order."""
        self._state = transition.state
        height = self._state.height
        for o in transition.outputs:
            match o:
                case machine.Propose(round=r, value=value, valid_round=vr):
                    if self._me is None:
                        raise InvariantViolation("an observer was asked to propose")
                    self._book.proposed_round = r
                    out.append(Broadcast(Proposal(height, r, value, vr, self._me)))
                case machine.GetValue(round=r):
                    out.append(RequestValue(height, r))
                case machine.Prevote(round=r, value_id=vid):
                    self._vote(PREVOTE, r, vid, out)
                case machine.Precommit(round=r, value_id=vid):
                    self._vote(PRECOMMIT, r, vid, out)
                case machine.StartTimer(round=r, step=step):
                    out.append(ScheduleTimeout(height, r, step, self._timeouts.duration(step, r)))
                case machine.StartRound(round=r):
                    self._enter_round(r, out)
                case machine.Decision(round=r, value=value, value_id=vid):
                    out.append(Decide(height, r, value, self._certificate(r, vid)))
                    self._started = False  # L52-L54 continue when the shell feeds StartHeight(h + 1)

    def _enter_round(self, round_: Round, out: list[Action]) -> None:  # L11
        self._book.pending = {t for t in self._book.pending if _is_takeable(t, round_)}
        transition = machine.apply(self._state, machine.NewRound(round_, self._is_proposer_of(round_)))
        if not transition.applied:
            raise InvariantViolation(f"round {round_} does not follow round {self._state.round}")
        self._take(transition, out)

    # ----------------------------------------------------------- helpers

    def _vote(self, kind: int, round_: Round, value_id: Hash32 | None, out: list[Action]) -> None:
        voter = self._book.voter
        if voter is not None:
            out.append(Broadcast(Vote(kind, self._state.height, round_, value_id, voter)))

    def _certificate(self, round_: Round, value_id: Hash32) -> CommitCertificate:
        votes = self._book.keeper.get_commit_votes(round_, value_id)
        sigs = tuple(CommitSig(sv.vote.validator, sv.signature) for sv in votes)
        return CommitCertificate(self._state.height, round_, value_id, sigs)

    def _proposer_of(self, round_: int) -> PublicKey:
        return self._validators.get_proposer(self._chain_id, self._state.height, round_)

    def _is_proposer_of(self, round_: int) -> bool:
        return self._me is not None and self._proposer_of(round_) == self._me

    def _note(self, thresholds: tuple[Threshold, ...]) -> None:
        self._book.pending.update(t for t in thresholds if _is_takeable(t, self._state.round))

    def _buffer(self, event: Event) -> None:
        if len(self._buffered) < MAX_BUFFERED:
            self._buffered.append(event)


def _is_takeable(threshold: Threshold, round_: int) -> bool:
    """Whether the round machine may still take ``threshold`` as an input once in ``round_``.

    A polka or precommit quorum is an input only in its own round, a skip only
    from a lower one; L49's quorums, in any round, are asked of the keeper.
    """
    if isinstance(threshold, PrecommitValue):
        return False
    if isinstance(threshold, SkipRound):
        return threshold.round > round_
    return threshold.round >= round_


def _height_of(event: Event) -> int:
    """The height of a message; -1 for the shell's own inputs, which are never buffered."""
    if isinstance(event, ProposalReceived):
        return event.signed.proposal.height
    if isinstance(event, VoteReceived):
        return event.signed.vote.height
    return -1
