"""Whether a fresh proposal's block time is timely: the clock-dependent half of proposer-based timestamps.

After CometBFT's PBTS: a validator prevotes a proposal of a new value
(``valid_round`` -1) only if the block's time lies within
``[receive − precision − message_delay, receive + precision]`` of its own
clock when the proposal arrived. A re-proposal of a value that already had
a polka (``valid_round`` ≥ 0) keeps its original time and is not checked:
some correct validator already found it timely. An untimely proposal is no
evidence of misbehaviour (clocks drift, messages wait): the validator only
prevotes nil, and the round moves on.

The verdict travels to the consensus core on the ``ProposalReceived`` event
(``timely``), which the consensus log records, so a restarted node replays
the verdict it acted on rather than judging again with a later clock.

This module must never decide validity, nor punish anyone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from consensus.tendermint import ProposalReceived
from tdml_node.runtime.wallclock import WallClock

log = logging.getLogger("tdml.node")


@dataclass(frozen=True, slots=True)
class Synchrony:
    precision_ms: int
    """How far two correct validators' clocks may differ."""
    message_delay_ms: int
    """How long a proposal may take from its proposer to a validator."""


def is_timely(time_ms: int, receive_ms: int, synchrony: Synchrony) -> bool:
    low = receive_ms - synchrony.precision_ms - synchrony.message_delay_ms
    return low <= time_ms <= receive_ms + synchrony.precision_ms


class TimelinessCheck:
    """Marks each proposal a peer sends with its timeliness, read on arrival."""

    def __init__(self, synchrony: Synchrony, clock: WallClock) -> None:
        self.synchrony = synchrony
        self.clock = clock

    def mark(self, event: ProposalReceived) -> ProposalReceived:
        proposal = event.signed.proposal
        if proposal.valid_round >= 0:
            return event
        receive_ms = self.clock()
        time_ms = proposal.block.header.time_ms
        if is_timely(time_ms, receive_ms, self.synchrony):
            return event
        log.info(
            "proposal at height %d round %d is not timely: block time %d, received at %d; prevoting nil",
            proposal.height, proposal.round, time_ms, receive_ms,
        )
        return replace(event, timely=False)
