"""Validator sets: quorum and skip thresholds by power, and weighted proposer choice."""

from __future__ import annotations

from collections import Counter

import pytest
from consensus_fixtures import CHAIN_ID, keypair, validator_set

from consensus.types import Amount, ValidatorEntry
from consensus.validators import ValidatorSet


@pytest.mark.parametrize(
    ("powers", "quorum", "skip"),
    [
        # total 4: quorum needs > 8/3, i.e. 3; skip needs > 4/3, i.e. 2
        ([1, 1, 1, 1], 3, 2),
        # total 3: quorum > 2 -> 3 (all); skip > 1 -> 2
        ([1, 1, 1], 3, 2),
        # total 10: quorum > 20/3 -> 7; skip > 10/3 -> 4
        ([1, 2, 3, 4], 7, 4),
        # total 100: quorum > 66.6 -> 67; skip > 33.3 -> 34
        ([97, 1, 1, 1], 67, 34),
        # total 9: quorum > 6 -> 7 (exactly two thirds is not enough); skip > 3 -> 4
        ([3, 3, 3], 7, 4),
        ([1], 1, 1),
    ],
)
def test_thresholds(powers: list[int], quorum: int, skip: int) -> None:
    vs, _ = validator_set(powers)
    assert vs.total_power == sum(powers)
    assert vs.is_quorum(quorum) and not vs.is_quorum(quorum - 1)
    assert vs.is_skip(skip) and not vs.is_skip(skip - 1)


def test_power_of_sets_counts_each_key_once_and_ignores_strangers() -> None:
    vs, kps = validator_set([1, 2, 3, 4])
    keys = [kp.public_key for kp in kps]
    assert vs.power_of(keys[3]) == 4
    assert vs.power_of(keypair(40).public_key) == 0
    assert vs.power_of_all([keys[3], keys[3], keys[2]]) == 7
    assert vs.power_of_all([keypair(40).public_key, keys[0]]) == 1
    assert keys[0] in vs and keypair(40).public_key not in vs


def test_heavy_validator_alone_is_a_quorum() -> None:
    vs, kps = validator_set([97, 1, 1, 1])
    assert vs.is_quorum(vs.power_of(kps[0].public_key))
    light = [kp.public_key for kp in kps[1:]]
    assert not vs.is_skip(vs.power_of_all(light))
    assert vs.max_faulty == 1  # a count, for policies that need "f + 1 validators"


def test_entries_must_be_sorted_unique_and_positive() -> None:
    a, b = sorted([keypair(1).public_key, keypair(2).public_key])
    with pytest.raises(ValueError, match="sorted"):
        ValidatorSet((ValidatorEntry(b, Amount(1)), ValidatorEntry(a, Amount(1))))
    with pytest.raises(ValueError, match="unique"):
        ValidatorSet((ValidatorEntry(a, Amount(1)), ValidatorEntry(a, Amount(1))))
    with pytest.raises(ValueError, match="positive"):
        ValidatorSet((ValidatorEntry(a, Amount(0)),))
    assert ValidatorSet.of([(b, 1), (a, 2)]).keys == (a, b)


def test_empty_set_has_no_proposer() -> None:
    with pytest.raises(ValueError, match="no proposer"):
        ValidatorSet(()).get_proposer(CHAIN_ID, 1, 0)


def test_proposer_is_deterministic_and_varies() -> None:
    vs, _ = validator_set([1, 1, 1, 1])
    picks = [vs.get_proposer(CHAIN_ID, h, r) for h in range(1, 30) for r in range(3)]
    again = [vs.get_proposer(CHAIN_ID, h, r) for h in range(1, 30) for r in range(3)]
    assert picks == again
    assert set(picks) == set(vs.keys)
    other_chain = [vs.get_proposer("other", h, r) for h in range(1, 30) for r in range(3)]
    assert other_chain != picks


def test_proposer_is_proportional_to_power() -> None:
    powers = [1, 2, 3, 4, 10]
    vs, kps = validator_set(powers)
    n = 20_000
    counts = Counter(vs.get_proposer(CHAIN_ID, h, 0) for h in range(1, n + 1))
    total = sum(powers)
    for kp, p in zip(kps, powers, strict=True):
        share = counts[kp.public_key] / n
        expected = p / total
        # Four standard deviations of a binomial share: a real bias shows, noise does not.
        sigma = (expected * (1 - expected) / n) ** 0.5
        assert abs(share - expected) < 4 * sigma + 1e-9, (p, share, expected)


def test_proposer_rounds_rotate_within_a_height() -> None:
    vs, _ = validator_set([1] * 7)
    proposers = {vs.get_proposer(CHAIN_ID, 5, r) for r in range(40)}
    assert len(proposers) == 7
