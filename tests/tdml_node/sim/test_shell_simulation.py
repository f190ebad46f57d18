"""Seeded simulations of real nodes (the shell's own code) on a simulated network and clock.

Each seed fixes a whole run (see ``harness``): the validators, the network's
faults before GST, crashes and restarts on the same store, Byzantine seams,
and in the ``work`` families a training job from genesis.

- ``TDML_SHELL_SIM_SEEDS=N``: sweep N seeds instead of the default;
- ``TDML_SHELL_SIM_SEED=S``: replay seed S alone with a trace
  (``pytest tests/tdml_node/sim -k replay -s``).

A failure names its seed and scenario.
"""

from __future__ import annotations

import dataclasses
import os

import pytest

from consensus.types import SignedVote
from tdml_node.node import node as node_module

from .harness import (
    FAMILIES,
    HONEST_SKEW_MS,
    Crash,
    Simulation,
    SimulationFailure,
    make_scenario,
    run_seed,
)
from .network import NetworkModel

DEFAULT_SEEDS = 160
CHUNKS = 8
SEEDS = int(os.environ.get("TDML_SHELL_SIM_SEEDS", DEFAULT_SEEDS))


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_seed_sweep(chunk: int) -> None:
    failures: list[str] = []
    for seed in range(chunk, SEEDS, CHUNKS):
        try:
            run_seed(seed)
        except SimulationFailure as exc:
            failures.append(str(exc))
    assert not failures, f"{len(failures)} failing seed(s):\n" + "\n".join(failures)


@pytest.mark.skipif("TDML_SHELL_SIM_SEED" not in os.environ, reason="set TDML_SHELL_SIM_SEED to replay one seed")
def test_replay_seed() -> None:
    scenario = make_scenario(int(os.environ["TDML_SHELL_SIM_SEED"]))
    print(scenario.describe())
    print(Simulation(scenario, trace=print).run())


def test_every_family_is_swept() -> None:
    assert {make_scenario(s).family for s in range(len(FAMILIES))} == set(FAMILIES)


def test_a_seed_replays_exactly() -> None:
    for seed in (3, 6, 13):
        lines_a: list[str] = []
        lines_b: list[str] = []
        a = Simulation(make_scenario(seed), trace=lines_a.append).run()
        b = Simulation(make_scenario(seed), trace=lines_b.append).run()
        assert a == b and lines_a == lines_b


def test_faults_stay_within_the_budget() -> None:
    for seed in range(300):
        sc = make_scenario(seed)
        faulty = {i for i, _ in sc.byzantine} | {c.node for c in sc.crashes}
        assert 3 * len(faulty) < sc.n, sc.describe()


def test_a_node_whose_clock_runs_far_ahead_never_gets_its_blocks_in() -> None:
    """Proposer-based timestamps in real nodes: a validator 10 s ahead stamps its blocks 10 s in
    the others' future, they prevote nil for them, and the chain goes on with the others' blocks."""
    sc = dataclasses.replace(make_scenario(0, "calm"), n=4, target_height=8)
    control = Simulation(sc)
    control.run()
    assert control.nodes[0].keypair.public_key in control.proposers.values()  # on time, it does propose
    sim = Simulation(dataclasses.replace(sc, clock_skew_ms=(10_000, 0, 0, 0)))
    sim.run()
    assert len(sim.proposers) >= 8
    assert sim.nodes[0].keypair.public_key not in sim.proposers.values()


@pytest.mark.parametrize("hold_ahead", [node_module.HOLD_HEIGHTS_AHEAD, 1])
def test_a_lagging_validator_that_becomes_needed_gets_the_height_it_missed(
    hold_ahead: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (seen in a real 4-node run after a slashing shrank the set): a validator left
    heights behind by the others' quorums sees later heights' proposals and votes early. Once
    another validator is gone, no height ends without it, so it must still have them or get them
    again; dropping them stalled every node at the same height for good.

    With a hold window of 1 nothing ahead is kept, so only the peers' catch-up (they send their
    messages of the height again when it reports reaching it) can save the run."""
    monkeypatch.setattr(node_module, "HOLD_HEIGHTS_AHEAD", hold_ahead)
    for seed in range(4):
        sc = make_scenario(seed, "calm")
        network = dataclasses.replace(sc.network, gst_ms=5_000, lagging=frozenset({3}), lag_ms=4_000, max_delay_ms=20)
        sc = dataclasses.replace(
            sc, n=4, network=network, crashes=(Crash(2, 3_000, 0, restart=False),), target_height=4,
            termination_ms=60_000,
        )
        result = Simulation(sc).run()
        assert min(result["heights"][i] for i in (0, 1, 3)) >= 4, (seed, result)


def test_no_honest_stage_unit_misses_its_deadline_on_a_slow_network() -> None:
    """Regression: a stage unit starts as soon as the block accepting its inputs commits at its
    trainer. A checker that commits that block later must hold the unit until it does, not drop it
    (it never comes again): dropped, it went unchecked, missed its deadline and was moved, and one
    unit moved after another stalled a step for good."""
    for seed in range(3):
        sc = make_scenario(seed, "work_pipeline")
        sc = dataclasses.replace(sc, network=NetworkModel(gst_ms=0, delta_ms=100), crashes=())
        result = Simulation(sc).run()
        assert result["units_reassigned"] == [0] * sc.n, (seed, result)


# work_byzantine seeds whose faulty trainers behave, in turn: stale-parent, accuse, copy, lazy,
# zero, replay-old, withhold, random.
PIPELINE_BYZANTINE_SEEDS = (
    1,
    2, 3, 4, 5, 19, 22, 29,
)


@pytest.mark.parametrize("seed", PIPELINE_BYZANTINE_SEEDS)
def test_a_pipeline_job_with_a_byzantine_trainer_ends_at_the_reference(seed: int) -> None:
    """Stage units forged, withheld, copied or trained on a stale parent are caught like whole-model units,
    and the job still ends at the reference's root (the harness checks it)."""
    sc = dataclasses.replace(make_scenario(seed, "work_byzantine"), pipeline=True)
    assert sc.byzantine
    Simulation(sc).run()


def test_honest_clocks_are_skewed_in_the_sweep() -> None:
    skews = [s for seed in range(1, 40) for s in make_scenario(seed).clock_skew_ms]
    assert any(skews) and max(map(abs, skews)) <= HONEST_SKEW_MS


# ---------------------------------------------------------------------------
# The harness must be able to fail.


def test_a_halted_network_is_caught() -> None:
    sc = make_scenario(0, "calm")
    down = tuple(Crash(i, 100, 0, restart=False) for i in range(sc.n // 2 + 1))
    sc = dataclasses.replace(sc, crashes=down, termination_ms=5_000)
    with pytest.raises(SimulationFailure, match=r"seed 0: no termination"):
        Simulation(sc).run()


def test_double_signing_is_caught() -> None:
    """An honest key's conflicting votes, once they appear on the wire, fail the run."""
    sim = Simulation(make_scenario(2, "calm"))
    sim.run()
    first = next(m for _, m in sim.hub.signed if isinstance(m, SignedVote))
    forged = dataclasses.replace(first.vote, block_hash=None if first.vote.block_hash else b"\x01" * 32)
    sim.hub.signed.append((0, SignedVote(forged, first.signature)))
    with pytest.raises(SimulationFailure, match=r"seed 2: double signing"):
        sim._check()
