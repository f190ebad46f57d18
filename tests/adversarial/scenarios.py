"""The adversarial suite's scenarios: every Byzantine behaviour the node can play, one run each.

Node 1 (and node 2 where two behaviours combine) misbehaves; the others are
honest. Floods and malformed frames come from a rogue wire client
(``wire.py``) with a stranger's key, or with node 1's key while node 1 itself
is not started. Jobs are the presets, shortened; ``checked_steps`` and
``checkers_per_unit`` override the job's verification policy where a
scenario measures a policy. The pipeline scenarios run ``digits-mlp-pipeline``
(4 stages, 4 shards, 4 micro-batches: 28 stage units a step), shortened to a
few steps.
"""

from __future__ import annotations

from tests.adversarial.harness import Scenario

LOCAL = "digits-mlp-local"
PIPE = "digits-mlp-pipeline"
PIPE_STEPS = 6

BYZANTINE: tuple[Scenario, ...] = (
    Scenario("zero result", {1: "zero"}),
    Scenario("random result", {1: "random"}),
    Scenario("scaled result (x10)", {1: "scale"}),
    Scenario("mean-shifted result (+0.1 rms)", {1: "shift"}),
    Scenario("Gaussian-noised result (0.01 rms)", {1: "noise"}),
    Scenario("Gaussian-noised result, H=4", {1: "noise"}, job=LOCAL, steps=20),
    Scenario("skipped inner step, H=4, c=1", {1: "skip-steps"}, job=LOCAL, steps=30),
    Scenario("skipped inner step, H=4, c=4", {1: "skip-steps"}, job=LOCAL, steps=20, checked_steps=4),
    Scenario("wrong shard", {1: "wrong-shard"}),
    Scenario("stale parent state", {1: "stale-parent"}),
    Scenario("copied another trainer's unit", {1: "copy"}),
    Scenario("replayed its old submission", {1: "replay-old"}),
    Scenario("withheld blobs, H=4", {1: "withhold"}, job=LOCAL, steps=20),
    Scenario("withheld blobs, H=1", {1: "withhold"}),
    Scenario("lazy validator + zero-result trainer", {1: "lazy", 2: "zero"}, nodes=5, checkers_per_unit=4),
    Scenario("approve-invalid validator + zero-result trainer", {1: "approve-invalid", 2: "zero"}, nodes=5),
    Scenario("false accusations against honest units", {1: "accuse"}),
    Scenario("equivocating validator", {1: "equivocate"}),
    Scenario("message flood (an outside peer)", {}, rogue="flood"),
    Scenario("malformed frames (an outside peer)", {}, rogue="malformed"),
    Scenario("message flood (a validator)", {}, rogue="flood", rogue_as=1),
    Scenario("pipeline: forged stage outputs (random)", {1: "random"}, job=PIPE, steps=PIPE_STEPS),
    Scenario("pipeline: forged gradient handed to the stage before", {1: "forge-gradient"}, job=PIPE, steps=PIPE_STEPS),
    Scenario("pipeline: forged input named as handed on", {1: "forge-inputs"}, job=PIPE, steps=PIPE_STEPS),
    Scenario("pipeline: skipped micro-batch", {1: "skip-micro"}, job=PIPE, steps=PIPE_STEPS),
    Scenario("pipeline: stale stage parameters", {1: "stale-parent"}, job=PIPE, steps=PIPE_STEPS),
    Scenario("pipeline: copied another trainer's outputs", {1: "copy"}, job=PIPE, steps=PIPE_STEPS),
    Scenario("pipeline: withheld stage outputs", {1: "withhold"}, job=PIPE, steps=PIPE_STEPS),
)

PIPELINE = tuple(s.name for s in BYZANTINE if s.job == PIPE)

CI_SUBSET = ("zero result", "false accusations against honest units", "equivocating validator")
CI_PIPELINE = ("pipeline: forged gradient handed to the stage before",)
"""Run at the scenario's own (few) steps: a pipeline step is 28 units."""


def by_name(name: str) -> Scenario:
    for s in BYZANTINE:
        if s.name == name:
            return s
    raise KeyError(name)
