"""Sample order: permutations per epoch, and disjoint batches across shards and steps."""

from __future__ import annotations

import hashlib

import pytest
from consensus_fixtures import property_settings
from hypothesis import given
from hypothesis import strategies as st

from consensus.batches import PERMUTATION_DOMAIN, compute_batch_indices, compute_permutation


@property_settings(100)
@given(seed=st.integers(0, 2**64 - 1), epoch=st.integers(0, 1000), n=st.integers(1, 300))
def test_permutation_is_a_permutation(seed: int, epoch: int, n: int) -> None:
    perm = compute_permutation(seed, epoch, n)
    assert sorted(perm) == list(range(n))
    assert compute_permutation.__wrapped__(seed, epoch, n) == perm  # the cache returns what it computes


def test_permutation_is_deterministic_and_epochs_and_seeds_differ() -> None:
    n = 50
    base = compute_permutation(1, 0, n)
    assert compute_permutation.__wrapped__(1, 0, n) == base
    assert compute_permutation(1, 1, n) != base
    assert compute_permutation(2, 0, n) != base
    assert len({compute_permutation(1, e, n) for e in range(20)}) == 20


def test_permutation_matches_its_documented_construction() -> None:
    # Written out from the docstring, independently of the implementation's loop.
    seed, epoch, n = 9, 4, 10
    stream = hashlib.shake_256(
        PERMUTATION_DOMAIN + seed.to_bytes(8, "big") + epoch.to_bytes(8, "big") + n.to_bytes(8, "big")
    ).digest(8 * (n - 1))
    draws = [int.from_bytes(stream[8 * i : 8 * i + 8], "big") for i in range(n - 1)]
    order = list(range(n))
    for i in range(n - 1, 0, -1):
        j = draws[n - 1 - i] % (i + 1)
        order[i], order[j] = order[j], order[i]
    assert compute_permutation(seed, epoch, n) == tuple(order)


def test_permutation_edge_cases() -> None:
    assert compute_permutation(0, 0, 1) == (0,)
    with pytest.raises(ValueError, match="at least one sample"):
        compute_permutation(0, 0, 0)


def _indices(seed: int, n: int, batch: int, shards: int, inner: int, step: int, shard: int, k: int) -> tuple[int, ...]:
    return compute_batch_indices(
        seed=seed, n=n, global_batch=batch, shards=shards, inner_steps=inner, step=step, shard=shard, inner=k
    )


@pytest.mark.parametrize(("n", "batch", "shards", "inner"), [(1000, 32, 4, 2), (97, 12, 3, 1), (64, 16, 16, 4)])
def test_batches_within_an_epoch_are_disjoint(n: int, batch: int, shards: int, inner: int) -> None:
    """Positions never repeat, so while they stay inside one epoch no sample is read twice."""
    seen: list[int] = []
    positions_per_epoch = n - n % batch
    for step in range(positions_per_epoch // (batch * inner)):
        for shard in range(shards):
            for k in range(inner):
                got = _indices(5, n, batch, shards, inner, step, shard, k)
                assert len(got) == batch // shards
                assert all(0 <= i < n for i in got)
                seen.extend(got)
    assert len(seen) == len(set(seen))


def test_batches_cross_epoch_boundaries_into_the_next_permutation() -> None:
    n, batch = 10, 4
    flat = [i for step in range(5) for i in _indices(3, n, batch, 1, 1, step, 0, 0)]
    assert flat[:10] == list(compute_permutation(3, 0, n))
    assert flat[10:20] == list(compute_permutation(3, 1, n))


def test_batch_indices_are_deterministic_and_depend_on_the_seed() -> None:
    a = _indices(1, 500, 32, 4, 2, 3, 1, 1)
    assert a == _indices(1, 500, 32, 4, 2, 3, 1, 1)
    assert a != _indices(2, 500, 32, 4, 2, 3, 1, 1)


@pytest.mark.parametrize(
    ("batch", "shards", "inner", "shard", "k", "message"),
    [
        (10, 3, 1, 0, 0, "divide evenly"),
        (12, 3, 1, 3, 0, "out of range"),
        (12, 3, 1, -1, 0, "out of range"),
        (12, 3, 2, 0, 2, "out of range"),
    ],
)
def test_batch_index_argument_errors(batch: int, shards: int, inner: int, shard: int, k: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _indices(1, 100, batch, shards, inner, 0, shard, k)
