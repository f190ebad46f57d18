"""The names of the Byzantine behaviours a dev node can play, without importing them.

The command line lists these in ``tdml-node run --help``; importing the
behaviours themselves would load torch for every command. A test keeps this
list equal to the behaviours' own names.

This module must never import anything heavy.
"""

from __future__ import annotations

TRAINER_BEHAVIOURS = (
    "zero", "random", "scale", "shift", "noise", "skip-steps", "wrong-shard",
    "stale-parent", "copy", "replay-old", "withhold", "forge-gradient", "forge-inputs", "skip-micro",
)
VALIDATOR_BEHAVIOURS = ("lazy", "accuse", "equivocate", "approve-invalid")
ALL_BEHAVIOURS = ("honest", *TRAINER_BEHAVIOURS, *VALIDATOR_BEHAVIOURS)
