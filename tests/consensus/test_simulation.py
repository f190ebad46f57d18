"""Seeded network simulations of Tendermint: safety always, liveness after the network heals.

Each seed fixes a whole run (see ``tendermint_sim``): the validator set, the
faults, every delay and drop. The sweep is split into chunks so that
``pytest -n 2`` spreads it over both cores.

- ``TDML_SIM_SEEDS=N``: sweep N seeds instead of the default (a long run:
  ``TDML_SIM_SEEDS=100000 pytest -n 2 tests/consensus/test_simulation.py``);
- ``TDML_SIM_SEED=S``: replay seed S alone with a trace of decisions, crashes
  and privval refusals (``pytest tests/consensus/test_simulation.py -k replay -s``).

A failure names its seed and scenario in the assertion message.
"""

from __future__ import annotations

import dataclasses
import os

import pytest
from tendermint_sim import (
    FAMILIES,
    SIM_TIMEOUTS,
    Crash,
    PrivVal,
    Simulation,
    SimulationFailure,
    make_scenario,
    run_seed,
    seeds_from_env,
    sim_keypair,
)

from consensus import crypto
from consensus.tendermint import TendermintCore
from consensus.transition import compute_block_hash
from consensus.types import (
    PRECOMMIT,
    PREVOTE,
    CommitCertificate,
    CommitSig,
    Hash32,
    Height,
    Round,
    Vote,
)

DEFAULT_SEEDS = 4000
CHUNKS = 40
SEEDS = seeds_from_env(DEFAULT_SEEDS)


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_seed_sweep(chunk: int) -> None:
    failures: list[str] = []
    for seed in range(chunk, SEEDS, CHUNKS):
        try:
            run_seed(seed)
        except SimulationFailure as exc:
            failures.append(str(exc))
    # Every failing seed of the chunk, not just the first: patterns help debugging.
    assert not failures, f"{len(failures)} failing seed(s):\n" + "\n".join(failures)


@pytest.mark.skipif("TDML_SIM_SEED" not in os.environ, reason="set TDML_SIM_SEED to replay one seed")
def test_replay_seed() -> None:
    seed = int(os.environ["TDML_SIM_SEED"])
    scenario = make_scenario(seed)
    print(f"seed {seed}: {scenario.describe()}")
    stats = Simulation(scenario, trace=print).run()
    print(stats)


def test_every_family_is_swept() -> None:
    assert {make_scenario(s).family for s in range(len(FAMILIES))} == set(FAMILIES)


def test_a_seed_replays_exactly() -> None:
    for seed in (3, 10, 11, 12):
        lines_a: list[str] = []
        lines_b: list[str] = []
        a = Simulation(make_scenario(seed), trace=lines_a.append).run()
        b = Simulation(make_scenario(seed), trace=lines_b.append).run()
        assert a == b
        assert lines_a == lines_b


def test_scenarios_respect_the_fault_budget() -> None:
    for seed in range(600):
        sc = make_scenario(seed)
        total = sum(sc.powers)
        assert 4 <= sc.n <= 10
        if sc.family != "restart_all":
            faulty = {i for i, _ in sc.byzantine} | set(sc.crashers)
            assert 3 * sum(sc.powers[i] for i in faulty) < total, sc.describe()
        assert all(c.at_ms + c.down_ms <= sc.gst_ms for c in sc.crashes), sc.describe()
        assert all(p.end_ms <= sc.gst_ms for p in sc.partitions)


# ---------------------------------------------------------------------------
# The harness must be able to fail: each check below breaks one invariant on
# purpose and expects the simulation to say so, with the seed.


def test_agreement_violation_is_caught() -> None:
    """Beyond the fault budget safety must break, and the harness must see it (agreement or its lemma)."""
    for seed in range(200):
        sc = make_scenario(seed, "byzantine")
        # Everyone but one equivocates, with every vote and proposal.
        sc = dataclasses.replace(sc, byzantine=tuple((i, "equivocate") for i in range(1, sc.n)))
        try:
            Simulation(sc, judge_all=True).run()
        except SimulationFailure as exc:
            # The lock lemma usually trips first, one step before the fork itself.
            if "agreement" in str(exc) or "lock:" in str(exc):
                assert f"seed {seed}" in str(exc) and "TDML_SIM_SEED" in str(exc)
                return
    pytest.fail("a Byzantine supermajority never broke safety in 200 seeds")


def test_forged_disagreement_is_caught() -> None:
    """A second block at a decided height, even with a valid certificate, is an agreement failure."""
    sc = make_scenario(6, "calm")
    sim = Simulation(sc)
    sim.run()
    sim.nodes[0].chain.pop()  # make node 0 decide its last height again, differently
    height = sim.nodes[0].next_height
    other = sim._make_block(sim.nodes[0], height, 0, valid=True)
    block_hash = compute_block_hash(other.header)
    sigs = []
    for i in range(sc.n):
        kp = sim_keypair(i)
        v = Vote(PRECOMMIT, Height(height), Round(0), block_hash, kp.public_key)
        sigs.append(CommitSig(kp.public_key, kp.sign_value(crypto.DOMAIN_VOTE, sim.chain_id, v)))
    cert = CommitCertificate(Height(height), Round(0), block_hash, tuple(sorted(sigs, key=lambda c: c.validator)))
    with pytest.raises(SimulationFailure, match=rf"seed 6: agreement: n\d and n0 decided different blocks at height {height}"):
        sim._on_decide(sim.nodes[0], height, other, cert, synced=True)


def test_termination_failure_is_caught() -> None:
    sc = make_scenario(0, "calm")
    # Crash more than a third of the power for good: nothing can be decided.
    down = tuple(Crash(i, 1, 10**9) for i in range(sc.n // 2 + 1))
    sc = dataclasses.replace(sc, crashes=down, crashers=tuple(range(sc.n // 2 + 1)), termination_ms=5_000)
    with pytest.raises(SimulationFailure, match=r"seed 0: no termination"):
        Simulation(sc).run()


def test_double_sign_guard() -> None:
    kp = sim_keypair(0)
    pv = PrivVal(kp, "c")

    def vote(kind: int, r: int, h: bytes | None) -> Vote:
        return Vote(kind, Height(1), Round(r), Hash32(h) if h else None, kp.public_key)

    first = pv.sign(vote(PREVOTE, 1, b"a" * 32))
    assert first is not None
    assert pv.sign(vote(PREVOTE, 1, b"a" * 32)) == first  # the same vote again: the same signature
    assert pv.sign(vote(PREVOTE, 1, None)) is None  # conflicting
    assert pv.sign(vote(PREVOTE, 0, None)) is None  # earlier round
    assert pv.sign(vote(PRECOMMIT, 1, None)) is not None  # a later step
    # An earlier step: the identical vote gets its signature again (a restarted
    # node re-sending what it signed), anything else is refused.
    assert pv.sign(vote(PREVOTE, 1, b"a" * 32)) == first
    assert pv.sign(vote(PREVOTE, 1, b"b" * 32)) is None
    assert pv.refusals == 3


def test_restarted_core_is_stopped_by_the_privval() -> None:
    """A fresh core at round 0 after signing in round 2 has all its earlier-round votes refused."""
    sc = make_scenario(5, "calm")
    sim = Simulation(sc)
    node = sim.nodes[0]
    node.privval.sign(Vote(PREVOTE, Height(1), Round(2), None, node.keypair.public_key))
    node.incarnation = 1  # as after a restart: refusals are expected, not a bug
    node.core = TendermintCore(sim.chain_id, node.keypair.public_key, SIM_TIMEOUTS)
    sim.run()
    assert node.privval.refusals >= 1


def test_simultaneous_amnesia_breaks_the_lock_lemma() -> None:
    """Why restarts must replay the whole input log, not only what the node signed.

    Seed 513447: every validator restarts at once after 23 of 32 power
    precommitted a block in round 0. Restarted with only their own signed
    messages they forget their locks, and in round 1 22 of 32 prevote a new
    value, a proof of lock that conflicts with the commit quorum (one
    precommit short of a fork). With the full log replayed they keep their
    locks and the run is safe.
    """
    scenario = make_scenario(513447)
    assert scenario.family == "restart_all" and scenario.wal_replay
    Simulation(scenario).run()
    with pytest.raises(SimulationFailure, match=r"seed 513447: lock: a proof of lock for \w+ in round 1"):
        Simulation(dataclasses.replace(scenario, wal_replay=False)).run()
