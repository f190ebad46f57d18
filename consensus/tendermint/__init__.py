"""Tendermint BFT (Buchman, Kwon, Milosevic 2018) in Malachite's layers, as pure code.

- ``types``: ``Step``, the shell's inputs (``Event``) and actions (``Action``), ``TimeoutConfig``;
- ``votekeeper``: the votes of a height and the thresholds they cross, each reported once;
- ``state``: the frozen ``RoundState`` (round, step, lock, valid value, decision);
- ``machine``: the pure ``apply(state, input) -> Transition``, one ``match`` labelled by paper line;
- ``driver``: ``TendermintCore``, which checks inputs, feeds the keeper and the machine,
  and turns the machine's outputs into actions; the shell talks to it alone.

Line numbers in comments (``# L22``) refer to Algorithm 1 of "The latest
gossip on BFT consensus" (arXiv:1807.04938). The shell's duties are the
docstrings of the actions in ``types``.

This package must never perform I/O, read a clock, draw randomness or log.
"""

from __future__ import annotations

from consensus.tendermint.driver import MAX_BUFFERED, MAX_ROUND_AHEAD, Snapshot, TendermintCore
from consensus.tendermint.state import NO_ROUND, RoundState
from consensus.tendermint.types import (
    Action,
    Broadcast,
    Decide,
    Event,
    EvidenceFound,
    ProposalReceived,
    Rejected,
    RequestValidation,
    RequestValue,
    ScheduleTimeout,
    StartHeight,
    Step,
    TimeoutConfig,
    TimeoutElapsed,
    ValidityResult,
    ValueReady,
    VoteReceived,
)
from consensus.tendermint.votekeeper import MAX_VOTES_PER_SIGNER, VoteKeeper

__all__ = [
    "MAX_BUFFERED",
    "MAX_ROUND_AHEAD",
    "MAX_VOTES_PER_SIGNER",
    "NO_ROUND",
    "Action",
    "Broadcast",
    "Decide",
    "Event",
    "EvidenceFound",
    "ProposalReceived",
    "Rejected",
    "RequestValidation",
    "RequestValue",
    "RoundState",
    "ScheduleTimeout",
    "Snapshot",
    "StartHeight",
    "Step",
    "TendermintCore",
    "TimeoutConfig",
    "TimeoutElapsed",
    "ValidityResult",
    "ValueReady",
    "VoteKeeper",
    "VoteReceived",
]
