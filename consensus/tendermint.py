"""Tendermint BFT as a deterministic state machine (Buchman, Kwon, Milosevic 2018).

``TendermintCore.apply(event)`` takes one input and returns the actions the
node must carry out; the core never signs, sends, sleeps or reads a clock.
Line numbers in comments (``# L22``) refer to Algorithm 1 of "The latest
gossip on BFT consensus" (arXiv:1807.04938).

The shell's duties:

- ``Broadcast(proposal or vote)``: sign it (persisting the last signed
  height/round/step first, so a restart never signs twice), send it to the
  peers and feed it back as ``ProposalReceived``/``VoteReceived``.
- ``ScheduleTimeout``: start a timer and feed back ``TimeoutElapsed`` with the
  same (height, round, step); stale ones are ignored here.
- ``RequestValue``: build a block (``getValue()`` of the paper) and feed
  ``ValueReady``.
- ``RequestValidation``: run the block through the state transition and the
  work checks (``valid(v)``) and feed ``ValidityResult``.
- ``Decide``: commit the block and certificate, then feed ``StartHeight``
  for the next height with its validator set.

Safety holds while less than a third of the power is Byzantine; an input that
breaks a rule (bad signature, wrong proposer, non-validator) is answered with
``Rejected`` and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from consensus import crypto
from consensus.errors import FaultKind
from consensus.transition import compute_block_hash
from consensus.types import (
    PRECOMMIT,
    PREVOTE,
    Block,
    CommitCertificate,
    CommitSig,
    Equivocation,
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

STEP_PROPOSE = 0
STEP_PREVOTE = 1
STEP_PRECOMMIT = 2
STEP_NAMES = {STEP_PROPOSE: "propose", STEP_PREVOTE: "prevote", STEP_PRECOMMIT: "precommit"}

MAX_ROUND_AHEAD = 64
MAX_BUFFERED = 4096
MAX_VOTES_PER_SIGNER = 4
"""Votes of one validator per round and kind kept for values nobody else backs.

An honest validator casts one vote. An equivocator's votes each count for the
value they name, as the paper counts messages: another node may have locked
on one of them, and unless that vote counts here too, that node's proof of
lock can never be reproduced and the height never ends. A vote for a value
that matters (nil, a proposed block, or a value another validator voted for
in the same round and kind) is always kept, and there are at most about as
many such values as validators; only votes for values nobody else backs are
capped, so a spamming equivocator can neither exhaust memory nor crowd out
the vote that completes someone's proof of lock. Equivocation is reported.
"""

# ---------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True, slots=True)
class StartHeight:
    height: Height
    validators: ValidatorSet


@dataclass(frozen=True, slots=True)
class ProposalReceived:
    signed: SignedProposal


@dataclass(frozen=True, slots=True)
class VoteReceived:
    signed: SignedVote


@dataclass(frozen=True, slots=True)
class ValueReady:
    height: Height
    round: Round
    block: Block


@dataclass(frozen=True, slots=True)
class ValidityResult:
    height: Height
    block_hash: Hash32
    valid: bool


@dataclass(frozen=True, slots=True)
class TimeoutElapsed:
    height: Height
    round: Round
    step: int


Event = StartHeight | ProposalReceived | VoteReceived | ValueReady | ValidityResult | TimeoutElapsed

# ---------------------------------------------------------------------------
# Outputs


@dataclass(frozen=True, slots=True)
class Broadcast:
    message: Proposal | Vote


@dataclass(frozen=True, slots=True)
class ScheduleTimeout:
    height: Height
    round: Round
    step: int
    duration_ms: int


@dataclass(frozen=True, slots=True)
class RequestValue:
    height: Height
    round: Round


@dataclass(frozen=True, slots=True)
class RequestValidation:
    height: Height
    round: Round
    block: Block


@dataclass(frozen=True, slots=True)
class Decide:
    height: Height
    round: Round
    block: Block
    commit: CommitCertificate


@dataclass(frozen=True, slots=True)
class EvidenceFound:
    evidence: Equivocation


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str
    kind: FaultKind


Action = Broadcast | ScheduleTimeout | RequestValue | RequestValidation | Decide | EvidenceFound | Rejected


@dataclass(frozen=True, slots=True)
class TimeoutConfig:
    """Timeouts grow linearly with the round so that a slow network eventually fits."""

    propose_ms: int = 3000
    propose_delta_ms: int = 500
    prevote_ms: int = 1000
    prevote_delta_ms: int = 500
    precommit_ms: int = 1000
    precommit_delta_ms: int = 500

    def duration(self, step: int, round_: int) -> int:
        if step == STEP_PROPOSE:
            return self.propose_ms + round_ * self.propose_delta_ms
        if step == STEP_PREVOTE:
            return self.prevote_ms + round_ * self.prevote_delta_ms
        return self.precommit_ms + round_ * self.precommit_delta_ms


@dataclass
class _RoundVotes:
    # Keyed by (validator, block hash): one entry per value a validator voted for.
    prevotes: dict[tuple[bytes, Hash32 | None], SignedVote] = field(default_factory=dict)
    precommits: dict[tuple[bytes, Hash32 | None], SignedVote] = field(default_factory=dict)


class TendermintCore:
    """One validator's (or observer's, with ``me=None``) consensus state for the current height."""

    def __init__(self, chain_id: str, me: PublicKey | None, timeouts: TimeoutConfig | None = None) -> None:
        self.chain_id = chain_id
        self.me = me
        self.timeouts = timeouts or TimeoutConfig()
        self.height = Height(0)
        self.validators = ValidatorSet(())
        self.started = False
        self._reset_height()

    def _reset_height(self) -> None:
        self.round = Round(0)
        self.step = STEP_PROPOSE
        self.decided: Block | None = None  # L5 decision_p[h_p]
        self.locked_value: Block | None = None  # L6
        self.locked_round = -1  # L7
        self.valid_value: Block | None = None  # L8
        self.valid_round = -1  # L9
        self.proposals: dict[int, SignedProposal] = {}
        self._proposed_ids: set[bytes] = set()  # block hashes of the proposals above
        self.votes: dict[int, _RoundVotes] = {}
        self.validity: dict[bytes, bool] = {}
        self._validation_requested: set[bytes] = set()
        self._fired: set[tuple[str, int]] = set()
        self._proposed_round = -1
        self._future: list[Event] = []

    # ------------------------------------------------------------------ API

    def apply(self, event: Event) -> list[Action]:
        out: list[Action] = []
        if isinstance(event, StartHeight):
            self._on_start_height(event, out)
        elif not self.started:
            if self._is_next_height(event):
                self._buffer(event)
            return out
        elif isinstance(event, ProposalReceived):
            self._on_proposal(event.signed, out)
        elif isinstance(event, VoteReceived):
            self._on_vote(event.signed, out)
        elif isinstance(event, ValueReady):
            self._on_value(event, out)
        elif isinstance(event, ValidityResult):
            if event.height == self.height:
                self.validity[event.block_hash] = event.valid
        else:
            self._on_timeout(event, out)
        if self.started and self.decided is None:
            self._evaluate(out)
        return out

    @property
    def is_proposer(self) -> bool:
        return self.me is not None and self._proposer(self.round) == self.me

    # ---------------------------------------------------------- event arms

    def _on_start_height(self, event: StartHeight, out: list[Action]) -> None:
        if event.height <= self.height:
            # Also after a decision (when ``started`` is off): re-running a height
            # would vote on it again from round 0 and could sign conflicting votes.
            out.append(Rejected(f"height {event.height} already started", FaultKind.INVALID))
            return
        buffered = [e for e in self._future if self._event_height(e) == event.height]
        self.height = event.height
        self.validators = event.validators
        self._reset_height()
        self.started = True
        self._start_round(Round(0), out)  # L10
        for e in buffered:
            out.extend(self.apply(e))

    def _on_proposal(self, signed: SignedProposal, out: list[Action]) -> None:
        p = signed.proposal
        if p.height != self.height:
            if p.height == self.height + 1:
                self._buffer(ProposalReceived(signed))
            return
        if self.decided is not None or p.round > self.round + MAX_ROUND_AHEAD:
            return
        if p.proposer != self._proposer(p.round):
            out.append(Rejected(f"proposal for round {p.round} not from its proposer", FaultKind.NOT_AUTHORISED))
            return
        if p.block.header.height != p.height or p.valid_round >= p.round:
            out.append(Rejected("malformed proposal", FaultKind.MALFORMED))
            return
        if not crypto.verify_value(p.proposer, crypto.DOMAIN_PROPOSAL, self.chain_id, p, signed.signature):
            out.append(Rejected("bad proposal signature", FaultKind.BAD_SIGNATURE))
            return
        if p.round in self.proposals:
            return  # the first proposal of a round counts; another is the proposer's fault, not ours
        self.proposals[p.round] = signed
        block_hash = compute_block_hash(p.block.header)
        self._proposed_ids.add(block_hash)
        if block_hash not in self.validity and block_hash not in self._validation_requested:
            self._validation_requested.add(block_hash)
            out.append(RequestValidation(self.height, p.round, p.block))

    def _on_vote(self, signed: SignedVote, out: list[Action]) -> None:
        v = signed.vote
        if v.height != self.height:
            if v.height == self.height + 1:
                self._buffer(VoteReceived(signed))
            return
        if v.round > self.round + MAX_ROUND_AHEAD:
            return
        if v.validator not in self.validators:
            out.append(Rejected("vote from a non-validator", FaultKind.NOT_AUTHORISED))
            return
        if not crypto.verify_value(v.validator, crypto.DOMAIN_VOTE, self.chain_id, v, signed.signature):
            out.append(Rejected("bad vote signature", FaultKind.BAD_SIGNATURE))
            return
        book = self.votes.setdefault(v.round, _RoundVotes())
        slot = book.prevotes if v.kind == PREVOTE else book.precommits
        if (v.validator, v.block_hash) in slot:
            return  # a duplicate
        prior = [sv for (k, _), sv in slot.items() if k == v.validator]
        if prior:
            out.append(EvidenceFound(Equivocation(prior[0], signed)))
            unbacked = [sv for sv in prior if not self._is_backed(slot, sv.vote)]
            if not self._is_backed(slot, v) and len(unbacked) >= MAX_VOTES_PER_SIGNER:
                return
        slot[(v.validator, v.block_hash)] = signed

    def _is_backed(self, slot: dict[tuple[bytes, Hash32 | None], SignedVote], v: Vote) -> bool:
        """Whether ``v``'s value could be part of a quorum besides its signer's word."""
        if v.block_hash is None or v.block_hash in self._proposed_ids:
            return True
        return any(h == v.block_hash and k != v.validator for k, h in slot)

    def _on_value(self, event: ValueReady, out: list[Action]) -> None:
        # L18-L19, completed asynchronously: getValue() returned.
        if (event.height, event.round) != (self.height, self.round) or self._proposed_round == self.round:
            return
        if self.step != STEP_PROPOSE:
            # The propose timeout (L57) fired first and we prevoted already: a
            # proposal now would be signed at an earlier step than our prevote,
            # which the privval rightly refuses, and nobody would still use it.
            return
        if self.decided is not None or not self.is_proposer or self.round in self.proposals:
            return  # our proposal of this round is already known (e.g. replayed after a restart)
        block_hash = compute_block_hash(event.block.header)
        self.validity[block_hash] = True
        self._propose(event.block, -1, out)

    def _on_timeout(self, event: TimeoutElapsed, out: list[Action]) -> None:
        if event.height != self.height or event.round != self.round or self.decided is not None:
            return
        if event.step == STEP_PROPOSE and self.step == STEP_PROPOSE:  # L57-L60
            self._vote(PREVOTE, None, out)
            self.step = STEP_PREVOTE
        elif event.step == STEP_PREVOTE and self.step == STEP_PREVOTE:  # L61-L64
            self._vote(PRECOMMIT, None, out)
            self.step = STEP_PRECOMMIT
        elif event.step == STEP_PRECOMMIT:  # L65-L67
            self._start_round(Round(self.round + 1), out)

    # --------------------------------------------------------------- rules

    def _evaluate(self, out: list[Action]) -> None:
        """Fire every "upon" rule whose condition holds until none does."""
        for _ in range(64):
            if self.decided is not None or not self._fire_one(out):
                return
        raise AssertionError("consensus rules did not settle")

    def _fire_one(self, out: list[Action]) -> bool:
        # L49: a proposal of any round with 2f+1 precommits for it decides the height.
        for pr, signed in sorted(self.proposals.items()):
            pv = signed.proposal.block
            pid = compute_block_hash(pv.header)
            if self._power(pr, PRECOMMIT, pid) and self.validity.get(pid):
                self._decide(pr, pv, pid, out)
                return True

        # L55: f+1 messages of a higher round make us skip to it.
        for r in sorted(self._rounds_seen(), reverse=True):
            if r > self.round and self.validators.is_skip(self._senders_power(r)):
                self._start_round(Round(r), out)
                return True

        r = self.round
        proposal = self.proposals.get(r)
        v: Block | None = proposal.proposal.block if proposal else None
        vid = compute_block_hash(v.header) if v is not None else None
        valid = self.validity.get(vid) if vid is not None else None

        if self.step == STEP_PROPOSE and proposal is not None and valid is not None:
            vr = proposal.proposal.valid_round
            if vr == -1:  # L22-L27
                ok = valid and (self.locked_round == -1 or self._is_locked_on(vid))
                self._vote(PREVOTE, vid if ok else None, out)
                self.step = STEP_PREVOTE
                return True
            if 0 <= vr < r and vid is not None and self._power(vr, PREVOTE, vid):  # L28-L33
                ok = valid and (self.locked_round <= vr or self._is_locked_on(vid))
                self._vote(PREVOTE, vid if ok else None, out)
                self.step = STEP_PREVOTE
                return True

        if (
            self.step >= STEP_PREVOTE
            and v is not None
            and vid is not None
            and valid
            and ("L36", r) not in self._fired
            and self._power(r, PREVOTE, vid)
        ):  # L36-L43
            self._fired.add(("L36", r))
            if self.step == STEP_PREVOTE:
                self.locked_value, self.locked_round = v, r
                self._vote(PRECOMMIT, vid, out)
                self.step = STEP_PRECOMMIT
            self.valid_value, self.valid_round = v, r
            return True

        if self.step == STEP_PREVOTE and self._power(r, PREVOTE, None):  # L44-L46
            self._vote(PRECOMMIT, None, out)
            self.step = STEP_PRECOMMIT
            return True

        if self.step == STEP_PREVOTE and ("L34", r) not in self._fired and self._power_any(r, PREVOTE):  # L34-L35
            self._fired.add(("L34", r))
            out.append(ScheduleTimeout(self.height, r, STEP_PREVOTE, self.timeouts.duration(STEP_PREVOTE, r)))
            return True

        if ("L47", r) not in self._fired and self._power_any(r, PRECOMMIT):  # L47-L48
            self._fired.add(("L47", r))
            out.append(ScheduleTimeout(self.height, r, STEP_PRECOMMIT, self.timeouts.duration(STEP_PRECOMMIT, r)))
            return True
        return False

    # ------------------------------------------------------------- helpers

    def _start_round(self, round_: Round, out: list[Action]) -> None:  # L11-L21
        self.round = round_
        self.step = STEP_PROPOSE
        if self.is_proposer:  # L14
            if self.valid_value is not None:  # L15-L16
                self._propose(self.valid_value, self.valid_round, out)
            else:  # L17-L18
                out.append(RequestValue(self.height, round_))
        # L21 (and for the proposer too, so a slow getValue cannot stall the round)
        out.append(ScheduleTimeout(self.height, round_, STEP_PROPOSE, self.timeouts.duration(STEP_PROPOSE, round_)))

    def _propose(self, block: Block, valid_round: int, out: list[Action]) -> None:  # L19
        assert self.me is not None
        self._proposed_round = self.round
        out.append(Broadcast(Proposal(self.height, self.round, block, valid_round, self.me)))

    def _vote(self, kind: int, block_hash: Hash32 | None, out: list[Action]) -> None:
        if self.me is not None and self.me in self.validators:
            out.append(Broadcast(Vote(kind, self.height, self.round, block_hash, self.me)))

    def _decide(self, r: int, block: Block, vid: Hash32, out: list[Action]) -> None:  # L49-L54
        book = self.votes[r].precommits
        sigs = tuple(
            CommitSig(sv.vote.validator, sv.signature)
            for sv in sorted((sv for (_, h), sv in book.items() if h == vid), key=lambda sv: sv.vote.validator)
        )
        self.decided = block
        out.append(Decide(self.height, Round(r), block, CommitCertificate(self.height, Round(r), vid, sigs)))
        self.started = False  # L52-L54 continue when the shell feeds StartHeight(h + 1)

    def _proposer(self, round_: int) -> PublicKey:
        return self.validators.get_proposer(self.chain_id, self.height, round_)

    def _is_locked_on(self, vid: Hash32 | None) -> bool:
        return self.locked_value is not None and compute_block_hash(self.locked_value.header) == vid

    def _power(self, r: int, kind: int, block_hash: Hash32 | None) -> bool:
        """2f+1 votes of ``kind`` in round ``r`` for ``block_hash`` (None = nil)."""
        book = self.votes.get(r)
        if book is None:
            return False
        slot = book.prevotes if kind == PREVOTE else book.precommits
        power = sum(self.validators.power_of(k) for k, h in slot if h == block_hash)
        return self.validators.is_quorum(power)

    def _power_any(self, r: int, kind: int) -> bool:
        book = self.votes.get(r)
        if book is None:
            return False
        slot = book.prevotes if kind == PREVOTE else book.precommits
        return self.validators.is_quorum(self.validators.power_of_all(k for k, _ in slot))

    def _rounds_seen(self) -> set[int]:
        return set(self.votes) | set(self.proposals)

    def _senders_power(self, r: int) -> int:
        senders: set[bytes] = set()
        book = self.votes.get(r)
        if book is not None:
            senders.update(k for k, _ in book.prevotes)
            senders.update(k for k, _ in book.precommits)
        if r in self.proposals:
            senders.add(self.proposals[r].proposal.proposer)
        return self.validators.power_of_all(senders)

    def _is_next_height(self, event: Event) -> bool:
        return self._event_height(event) == self.height + 1

    @staticmethod
    def _event_height(event: Event) -> int:
        if isinstance(event, ProposalReceived):
            return event.signed.proposal.height
        if isinstance(event, VoteReceived):
            return event.signed.vote.height
        return -1

    def _buffer(self, event: Event) -> None:
        if len(self._future) < MAX_BUFFERED:
            self._future.append(event)
