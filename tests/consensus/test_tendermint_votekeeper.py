"""Tests of the vote keeper: counting by power, each threshold reported once, equivocators capped.

The keeper trusts its caller on signatures and membership, so the votes here
carry a dummy signature; what is tested is the arithmetic and the memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from consensus_fixtures import validator_set

from consensus import crypto
from consensus.tendermint.votekeeper import (
    MAX_VOTES_PER_SIGNER,
    PolkaAny,
    PolkaNil,
    PolkaValue,
    PrecommitAny,
    PrecommitValue,
    SkipRound,
    Threshold,
    VoteKeeper,
    VoteOutcome,
)
from consensus.types import (
    PRECOMMIT,
    PREVOTE,
    Hash32,
    Height,
    PublicKey,
    Round,
    Signature,
    SignedVote,
    Vote,
)

V = crypto.sha256(b"v")
W = crypto.sha256(b"w")
R0, R1 = Round(0), Round(1)


class Keeper:
    """A keeper over a test validator set, with votes named by validator index."""

    def __init__(self, powers: Sequence[int] = (1, 1, 1, 1)) -> None:
        vs, _ = validator_set(powers)
        self.keys = list(vs.keys)  # in key order, as ``vs`` sorts them
        self.power = {k: vs.power_of(k) for k in self.keys}
        self.keeper = VoteKeeper(vs)

    def vote(self, who: int, kind: int, round_: int, value: Hash32 | None) -> SignedVote:
        return SignedVote(Vote(kind, Height(1), Round(round_), value, self.keys[who]), Signature(bytes(64)))

    def add(self, who: int, kind: int, round_: int, value: Hash32 | None) -> VoteOutcome:
        return self.keeper.apply_vote(self.vote(who, kind, round_, value))

    def heaviest(self) -> int:
        return max(range(len(self.keys)), key=lambda i: self.power[self.keys[i]])


# (label, powers, votes as (validator, kind, round, value), thresholds reported by each vote)
SCRIPTS: list[tuple[str, tuple[int, ...], list[tuple[int, int, int, Hash32 | None]], list[tuple[Threshold, ...]]]] = [
    (
        "a polka for a value, and any polka with it; f+1 senders first",
        (1, 1, 1, 1),
        [(0, PREVOTE, 0, V), (1, PREVOTE, 0, V), (2, PREVOTE, 0, V), (3, PREVOTE, 0, V)],
        [(), (SkipRound(R0),), (PolkaValue(R0, V), PolkaAny(R0)), ()],
    ),
    (
        "a nil polka",
        (1, 1, 1, 1),
        [(0, PREVOTE, 1, None), (1, PREVOTE, 1, None), (2, PREVOTE, 1, None)],
        [(), (SkipRound(R1),), (PolkaNil(R1), PolkaAny(R1))],
    ),
    (
        "mixed prevotes: any polka, and no value has one",
        (1, 1, 1, 1),
        [(0, PREVOTE, 0, V), (1, PREVOTE, 0, None), (2, PREVOTE, 0, W), (3, PREVOTE, 0, V)],
        [(), (SkipRound(R0),), (PolkaAny(R0),), ()],
    ),
    (
        "precommits for a value, and any precommits with them",
        (1, 1, 1, 1),
        [(0, PRECOMMIT, 0, V), (1, PRECOMMIT, 0, V), (2, PRECOMMIT, 0, V)],
        [(), (SkipRound(R0),), (PrecommitValue(R0, V), PrecommitAny(R0))],
    ),
    (
        "nil precommits count only as any precommits",
        (1, 1, 1, 1),
        [(0, PRECOMMIT, 0, None), (1, PRECOMMIT, 0, None), (2, PRECOMMIT, 0, None)],
        [(), (SkipRound(R0),), (PrecommitAny(R0),)],
    ),
    (
        "the skip counts senders of either kind, each once",
        (1, 1, 1, 1),
        [(0, PREVOTE, 1, None), (0, PRECOMMIT, 1, None), (1, PRECOMMIT, 1, V)],
        [(), (), (SkipRound(R1),)],
    ),
    (
        "thresholds are per round",
        (1, 1, 1, 1),
        [(0, PREVOTE, 0, V), (1, PREVOTE, 0, V), (2, PREVOTE, 1, V), (3, PREVOTE, 1, V), (2, PREVOTE, 0, V)],
        [(), (SkipRound(R0),), (), (SkipRound(R1),), (PolkaValue(R0, V), PolkaAny(R0))],
    ),
]


@pytest.mark.parametrize(("powers", "votes", "expected"), [s[1:] for s in SCRIPTS], ids=[s[0] for s in SCRIPTS])
def test_thresholds_are_reported_once(
    powers: tuple[int, ...], votes: list[tuple[int, int, int, Hash32 | None]], expected: list[tuple[Threshold, ...]]
) -> None:
    k = Keeper(powers)
    reported = [k.add(*vote).thresholds for vote in votes]
    assert reported == expected
    every = [t for ts in reported for t in ts]
    assert len(every) == len(set(every))
    assert k.keeper.get_reached() == frozenset(every)
    assert all(k.keeper.is_reached(t) for t in every)


def test_power_not_count() -> None:
    """Total power 7: a skip needs more than 7/3, a quorum more than 14/3."""
    k = Keeper((1, 1, 1, 4))
    heavy = k.heaviest()
    light = [i for i in range(4) if i != heavy]
    assert [k.add(i, PREVOTE, 0, None).thresholds for i in light] == [(), (), (SkipRound(R0),)]  # 3 of 7
    assert k.add(heavy, PREVOTE, 1, V).thresholds == (SkipRound(R1),)  # 4 of 7: a skip, not a quorum
    assert k.add(light[0], PREVOTE, 1, V).thresholds == (PolkaValue(R1, V), PolkaAny(R1))  # 5 of 7


def test_a_duplicate_is_not_news() -> None:
    k = Keeper()
    assert k.add(0, PREVOTE, 0, V).stored
    assert k.add(0, PREVOTE, 0, V) == VoteOutcome(False, None, ())
    assert len(k.keeper.get_votes()) == 1


def test_an_equivocator_is_reported_and_counted_once_towards_any() -> None:
    k = Keeper()
    first = k.vote(0, PREVOTE, 0, V)
    k.keeper.apply_vote(first)
    second = k.vote(0, PREVOTE, 0, W)
    outcome = k.keeper.apply_vote(second)
    assert outcome.stored and outcome.evidence is not None
    assert (outcome.evidence.vote_a, outcome.evidence.vote_b) == (first, second)
    # Two validators have prevoted: a double count of the equivocator would make three of four.
    assert k.add(1, PREVOTE, 0, None).thresholds == (SkipRound(R0),)
    third = k.add(0, PREVOTE, 0, None)
    assert third.evidence is not None and third.evidence.vote_a == first  # always against the first vote
    assert third.thresholds == ()


def test_an_equivocating_vote_completes_a_polka() -> None:
    """Another node may have locked on the equivocator's second vote; it must count here too."""
    k = Keeper()
    k.add(0, PREVOTE, 0, None)
    k.add(1, PREVOTE, 0, V)
    k.add(2, PREVOTE, 0, V)
    assert k.add(0, PREVOTE, 0, V).thresholds == (PolkaValue(R0, V),)  # PolkaAny came with the third signer


def test_unbacked_values_are_capped_per_signer() -> None:
    k = Keeper()
    junk = [crypto.sha256(b"junk%d" % i) for i in range(MAX_VOTES_PER_SIGNER + 3)]
    stored = [k.add(0, PREVOTE, 0, h).stored for h in junk]
    assert stored == [True] * MAX_VOTES_PER_SIGNER + [False] * 3
    # Still reported as equivocation when dropped.
    assert k.add(0, PREVOTE, 0, crypto.sha256(b"more")).evidence is not None
    # A value another validator backs, nil and a proposed value are always kept.
    k.add(1, PREVOTE, 0, V)
    assert k.add(0, PREVOTE, 0, V).stored
    assert k.add(0, PREVOTE, 0, None).stored
    k.keeper.apply_proposal(R0, PublicKey(k.keys[2]), W)
    assert k.add(0, PREVOTE, 0, W).stored
    mine = [sv for sv in k.keeper.get_votes() if sv.vote.validator == k.keys[0]]
    assert len(mine) == MAX_VOTES_PER_SIGNER + 3


def test_the_cap_is_per_kind() -> None:
    k = Keeper()
    for i in range(MAX_VOTES_PER_SIGNER):
        k.add(0, PREVOTE, 0, crypto.sha256(b"junk%d" % i))
    assert k.add(0, PRECOMMIT, 0, crypto.sha256(b"junk0")).stored


def test_a_proposer_counts_towards_the_skip() -> None:
    """L55 counts messages of any kind: a proposal of the round and one vote are f+1 of four."""
    k = Keeper()
    assert k.keeper.apply_proposal(R1, PublicKey(k.keys[0]), V) == ()
    assert k.add(0, PREVOTE, 1, V).thresholds == ()  # the same sender again
    assert k.add(1, PREVOTE, 1, V).thresholds == (SkipRound(R1),)


def test_commit_votes_are_in_validator_order() -> None:
    k = Keeper()
    for who in (3, 1, 0):
        k.add(who, PRECOMMIT, 0, V)
    k.add(2, PRECOMMIT, 0, W)
    votes = k.keeper.get_commit_votes(R0, V)
    assert [sv.vote.validator for sv in votes] == sorted(k.keys[i] for i in (0, 1, 3))
    assert k.keeper.get_commit_votes(R1, V) == ()
