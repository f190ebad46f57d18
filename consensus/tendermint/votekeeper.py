"""The votes of one height, counted by power, and the thresholds they cross, each reported once.

``VoteKeeper.apply_vote`` stores a vote whose signature and signer the driver
has checked, and returns what it changed: whether it was stored, the
equivocation it shows if any, and the thresholds it made true for the first
time. A threshold (a polka, 2f+1 precommits, the f+1 that make a node skip
ahead) is a fact about a round that, once true, stays true for the height,
because votes are only ever added; reporting each exactly once is what lets
the driver hand the round machine one input per fact instead of re-deriving
every rule after every message. Facts about earlier rounds that a rule needs
later (L28's proof of lock in round ``vr``) are asked for with
``is_reached``.

The paper's L55 counts messages of any kind, so a round's proposer counts
towards its skip threshold too (``apply_proposal``).

This module must never check a signature or membership (the driver does,
before a vote reaches it), never look at the round state, and never decide
what a threshold makes a node do: that is the round machine's business.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from consensus.types import PREVOTE, Equivocation, Hash32, PublicKey, Round, SignedVote, Vote
from consensus.validators import ValidatorSet

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
# Thresholds; the round machine takes the value-free ones as inputs as they are.


@dataclass(frozen=True, slots=True)
class PolkaAny:
    """2f+1 prevotes in ``round``, for anything (L34)."""

    round: Round


@dataclass(frozen=True, slots=True)
class PolkaNil:
    """2f+1 prevotes for nil in ``round`` (L44)."""

    round: Round


@dataclass(frozen=True, slots=True)
class PolkaValue:
    """2f+1 prevotes for ``value_id`` in ``round``: a proof of lock (L28, L36)."""

    round: Round
    value_id: Hash32


@dataclass(frozen=True, slots=True)
class PrecommitAny:
    """2f+1 precommits in ``round``, for anything (L47)."""

    round: Round


@dataclass(frozen=True, slots=True)
class PrecommitValue:
    """2f+1 precommits for ``value_id`` in ``round``: enough to decide it (L49)."""

    round: Round
    value_id: Hash32


@dataclass(frozen=True, slots=True)
class SkipRound:
    """f+1 of the power sent messages of ``round``: some honest node is there (L55)."""

    round: Round


Threshold = PolkaAny | PolkaNil | PolkaValue | PrecommitAny | PrecommitValue | SkipRound


@dataclass(frozen=True, slots=True)
class VoteOutcome:
    stored: bool  # False for a duplicate, and for an equivocator's vote over the cap
    evidence: Equivocation | None  # the signer's first vote of this round and kind, and this one
    thresholds: tuple[Threshold, ...]  # crossed by this vote, none of them ever reported before


@dataclass
class _Tally:
    """The votes of one kind in one round."""

    votes: dict[tuple[bytes, Hash32 | None], SignedVote] = field(default_factory=dict)
    by_signer: dict[bytes, list[SignedVote]] = field(default_factory=dict)  # in arrival order
    signers_of: dict[Hash32 | None, set[bytes]] = field(default_factory=dict)
    power_for: dict[Hash32 | None, int] = field(default_factory=dict)
    power_any: int = 0  # each signer once, however many values it voted for


@dataclass
class _RoundVotes:
    prevotes: _Tally = field(default_factory=_Tally)
    precommits: _Tally = field(default_factory=_Tally)
    senders: set[bytes] = field(default_factory=set)  # of votes of either kind and of the proposal
    sender_power: int = 0


class VoteKeeper:
    """The votes of one height under one validator set; made afresh for every height."""

    def __init__(self, validators: ValidatorSet) -> None:
        self._validators = validators
        self._rounds: dict[int, _RoundVotes] = {}
        self._proposed: set[Hash32] = set()  # values proposed in any round of the height
        self._reached: set[Threshold] = set()

    # ------------------------------------------------------------ updates

    def apply_proposal(self, round_: Round, proposer: PublicKey, value_id: Hash32) -> tuple[Threshold, ...]:
        """Note a round's (first, checked) proposal: its value is backed, its proposer a sender (L55)."""
        self._proposed.add(value_id)
        book = self._rounds.setdefault(round_, _RoundVotes())
        return self._emit(self._skip_if_new_sender(round_, book, proposer))

    def apply_vote(self, signed: SignedVote) -> VoteOutcome:
        """Store a checked vote unless it is a duplicate or an equivocator's over the cap."""
        v = signed.vote
        book = self._rounds.setdefault(v.round, _RoundVotes())
        tally = book.prevotes if v.kind == PREVOTE else book.precommits
        if (v.validator, v.block_hash) in tally.votes:
            return VoteOutcome(False, None, ())
        prior = tally.by_signer.get(v.validator)
        evidence = None
        if prior:
            evidence = Equivocation(prior[0], signed)
            unbacked = [sv for sv in prior if not self._is_backed(tally, sv.vote)]
            if not self._is_backed(tally, v) and len(unbacked) >= MAX_VOTES_PER_SIGNER:
                return VoteOutcome(False, evidence, ())
        power = self._validators.power_of(v.validator)
        tally.votes[(v.validator, v.block_hash)] = signed
        tally.signers_of.setdefault(v.block_hash, set()).add(v.validator)
        tally.power_for[v.block_hash] = tally.power_for.get(v.block_hash, 0) + power
        if prior is None:
            tally.by_signer[v.validator] = [signed]
            tally.power_any += power
        else:
            prior.append(signed)
        crossed: list[Threshold] = []
        if self._validators.is_quorum(tally.power_for[v.block_hash]):
            if v.kind == PREVOTE:
                crossed.append(PolkaNil(v.round) if v.block_hash is None else PolkaValue(v.round, v.block_hash))
            elif v.block_hash is not None:
                crossed.append(PrecommitValue(v.round, v.block_hash))
        if self._validators.is_quorum(tally.power_any):
            crossed.append(PolkaAny(v.round) if v.kind == PREVOTE else PrecommitAny(v.round))
        crossed.extend(self._skip_if_new_sender(v.round, book, v.validator))
        return VoteOutcome(True, evidence, self._emit(crossed))

    # ------------------------------------------------------------- reads

    def is_reached(self, threshold: Threshold) -> bool:
        return threshold in self._reached

    def get_commit_votes(self, round_: Round, value_id: Hash32) -> tuple[SignedVote, ...]:
        """The precommits for ``value_id`` in ``round_``, in validator order (a certificate's order)."""
        book = self._rounds.get(round_)
        if book is None:
            return ()
        votes = (sv for (_, h), sv in book.precommits.votes.items() if h == value_id)
        return tuple(sorted(votes, key=lambda sv: sv.vote.validator))

    def get_votes(self) -> tuple[SignedVote, ...]:
        """Every stored vote: by round, prevotes first, in arrival order."""
        return tuple(
            sv
            for r in sorted(self._rounds)
            for tally in (self._rounds[r].prevotes, self._rounds[r].precommits)
            for sv in tally.votes.values()
        )

    def get_reached(self) -> frozenset[Threshold]:
        return frozenset(self._reached)

    # ----------------------------------------------------------- helpers

    def _is_backed(self, tally: _Tally, v: Vote) -> bool:
        """Whether ``v``'s value could be part of a quorum besides its signer's word."""
        if v.block_hash is None or v.block_hash in self._proposed:
            return True
        return any(k != v.validator for k in tally.signers_of.get(v.block_hash, ()))

    def _skip_if_new_sender(self, round_: Round, book: _RoundVotes, sender: bytes) -> list[Threshold]:
        if sender in book.senders:
            return []
        book.senders.add(sender)
        book.sender_power += self._validators.power_of(sender)
        return [SkipRound(round_)] if self._validators.is_skip(book.sender_power) else []

    def _emit(self, crossed: list[Threshold]) -> tuple[Threshold, ...]:
        fresh = tuple(t for t in crossed if t not in self._reached)
        self._reached.update(fresh)
        return fresh
