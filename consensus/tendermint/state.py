"""The round state of one validator at one height: the variables of Algorithm 1, L4-L9.

``RoundState`` is a frozen value. The round machine (``machine.apply``) takes
one and returns the next; nothing else builds a changed one, so every change
of step, lock or valid value can be found in a labelled arm of that one
``match``.

This module must never decide anything: it holds the state and names its
start; the rules that move it are in ``machine``.
"""

from __future__ import annotations

from dataclasses import dataclass

from consensus.tendermint.types import Step
from consensus.types import Block, Height, Round

NO_ROUND = -1
"""The paper's ``-1`` for "no round": no lock, no valid value, a proposal with no proof of lock."""


@dataclass(frozen=True, slots=True)
class RoundState:
    """Where one validator stands in a height; the paper's names in the comments."""

    height: Height  # h_p
    # round_p. -1 only in a height's state before L10 starts round 0, so that
    # starting round 0 is a round change like every later one (``NewRound``).
    round: Round
    step: Step  # step_p
    locked_value: Block | None = None  # L6 lockedValue_p
    locked_round: int = NO_ROUND  # L7 lockedRound_p
    valid_value: Block | None = None  # L8 validValue_p
    valid_round: int = NO_ROUND  # L9 validRound_p
    decision: Block | None = None  # L5 decision_p[h_p]: once set, the height is over

    @classmethod
    def initial(cls, height: Height) -> RoundState:
        """The state of ``height`` before L10: no round yet, nothing locked, nothing decided."""
        return cls(height=height, round=Round(NO_ROUND), step=Step.PROPOSE)
