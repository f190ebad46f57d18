"""Dealing units to trainers and taking one over: balanced, deterministic, seeded by the step."""

from __future__ import annotations

from collections import Counter

from consensus_fixtures import keypair, property_settings
from hypothesis import given
from hypothesis import strategies as st

from consensus import crypto
from consensus.assignment import compute_assignment, compute_reassignment, compute_stage_assignment
from consensus.types import Address


def _addrs(n: int) -> list[Address]:
    return [keypair(40 + i).address for i in range(n)]


@property_settings(100)
@given(shards=st.integers(1, 64), n=st.integers(1, 10), salt=st.binary(min_size=1, max_size=8))
def test_assignment_is_balanced_and_deterministic(shards: int, n: int, salt: bytes) -> None:
    trainers = _addrs(n)
    seed, job = crypto.sha256(salt), crypto.sha256(b"job" + salt)
    got = compute_assignment(seed, job, 3, shards, trainers)
    assert len(got) == shards
    assert set(got) <= set(trainers)
    counts = Counter(got)
    assert max(counts.values()) - min(counts.get(t, 0) for t in trainers) <= 1
    assert got == compute_assignment(seed, job, 3, shards, list(reversed(trainers)))


@property_settings(100)
@given(shards=st.integers(1, 8), stages=st.integers(1, 6), n=st.integers(1, 12), salt=st.binary(min_size=1, max_size=8))
def test_a_pipeline_step_deals_each_trainer_as_few_stages_as_it_can(shards: int, stages: int, n: int, salt: bytes) -> None:
    trainers = _addrs(n)
    seed, job = crypto.sha256(salt), crypto.sha256(b"job" + salt)
    got = compute_stage_assignment(seed, job, 3, shards, stages, trainers)
    assert len(got) == shards * stages and set(got) <= set(trainers)
    held: dict[Address, set[int]] = {}
    for slot, holder in enumerate(got):
        held.setdefault(holder, set()).add(slot % stages)
    # A stage's memory is its range: with T >= S every trainer holds one stage, with fewer ceil(S/T) at most.
    assert max(len(h) for h in held.values()) == -(-stages // n) if n < stages else all(len(h) == 1 for h in held.values())
    used = min(n, stages * shards)
    assert len(held) == used  # nobody idles while a slot could use them
    for s in range(stages):  # within a stage, shards are dealt evenly among its trainers
        counts = Counter(got[k * stages + s] for k in range(shards))
        assert max(counts.values()) - min(counts.values()) <= 1
    assert got == compute_stage_assignment(seed, job, 3, shards, stages, list(reversed(trainers)))


def test_assignment_varies_with_seed_and_step_and_handles_no_trainers() -> None:
    trainers = _addrs(5)
    a = compute_assignment(crypto.sha256(b"a"), crypto.sha256(b"j"), 0, 5, trainers)
    b = compute_assignment(crypto.sha256(b"b"), crypto.sha256(b"j"), 0, 5, trainers)
    c = compute_assignment(crypto.sha256(b"a"), crypto.sha256(b"j"), 1, 5, trainers)
    assert a != b and a != c
    assert compute_assignment(crypto.sha256(b"a"), crypto.sha256(b"j"), 0, 5, []) == ()


def test_reassignment_prefers_the_least_loaded_other_trainer() -> None:
    t = _addrs(3)
    seed = crypto.sha256(b"s")
    assignment = (t[0], t[0], t[1], t[2], t[2])
    # t[1] holds one shard, t[2] two: t[1] takes the shard of t[0].
    assert compute_reassignment(assignment, 0, t, seed) == t[1]
    # Nobody else is eligible: the current holder keeps it.
    assert compute_reassignment(assignment, 0, [t[0]], seed) == t[0]
    # Nobody at all: None.
    assert compute_reassignment(assignment, 0, [], seed) is None
    # A newcomer with no shards beats everyone.
    newcomer = keypair(60).address
    assert compute_reassignment(assignment, 2, [*t, newcomer], seed) == newcomer


def test_reassignment_breaks_ties_by_hash_deterministically() -> None:
    t = _addrs(4)
    assignment = (t[0], t[1], t[2], t[3])
    picks = {compute_reassignment(assignment, 0, t, crypto.sha256(b"s%d" % i)) for i in range(40)}
    assert t[0] not in picks
    assert len(picks) > 1  # the tie among equally loaded trainers is broken by the seed
