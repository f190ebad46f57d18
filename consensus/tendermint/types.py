"""The words the shell and the Tendermint core speak: steps, inputs, actions, timeouts.

Each action's docstring is the shell's duty when it gets one. In short: sign
and send what ``Broadcast`` carries and feed it back, turn ``ScheduleTimeout``
into a timer that feeds ``TimeoutElapsed``, answer ``RequestValue`` and
``RequestValidation`` with ``ValueReady`` and ``ValidityResult``, commit on
``Decide`` and feed ``StartHeight`` for the next height.

Everything here is a frozen value. ``Step`` is the one encoding of a round's
step, used by the core, by the privval guard (a message is signed at the
step ``Step.of_message`` names) and by the simulation; nobody spells a step
as a bare number.

This module must never hold a rule of the algorithm: the rules are in
``machine``, the bookkeeping in ``votekeeper`` and ``driver``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from consensus.errors import FaultKind
from consensus.types import (
    PREVOTE,
    Block,
    CommitCertificate,
    Equivocation,
    Hash32,
    Height,
    Proposal,
    Round,
    SignedProposal,
    SignedVote,
    Vote,
)
from consensus.validators import ValidatorSet


class Step(enum.IntEnum):
    """A round's step (``step_p`` of the paper); ordered, so that a privval can refuse to go back."""

    PROPOSE = 0
    PREVOTE = 1
    PRECOMMIT = 2

    @property
    def label(self) -> str:
        """The lower-case name logs and metrics print."""
        return self.name.lower()

    @classmethod
    def of_message(cls, message: Proposal | Vote) -> Step:
        """The step at which ``message`` is signed: what a privval records against double signing."""
        if isinstance(message, Proposal):
            return cls.PROPOSE
        return cls.PREVOTE if message.kind == PREVOTE else cls.PRECOMMIT


# ---------------------------------------------------------------------------
# Inputs from the shell


@dataclass(frozen=True, slots=True)
class StartHeight:
    """Begin ``height`` with its validator set: after a decision, a block sync, or at boot."""

    height: Height
    validators: ValidatorSet


@dataclass(frozen=True, slots=True)
class ProposalReceived:
    """A signed proposal from a peer, or our own fed back after it was signed.

    ``timely`` is the shell's verdict on the block's time when the proposal
    arrived (proposer-based timestamps): an untimely fresh proposal is
    prevoted nil, though its block stays valid for re-proposals and decisions.
    The core never reads a clock.
    """

    signed: SignedProposal
    timely: bool = True


@dataclass(frozen=True, slots=True)
class VoteReceived:
    """A signed vote from a peer, or our own fed back after it was signed."""

    signed: SignedVote


@dataclass(frozen=True, slots=True)
class ValueReady:
    """``getValue()`` returned: the block we propose in (height, round)."""

    height: Height
    round: Round
    block: Block


@dataclass(frozen=True, slots=True)
class ValidityResult:
    """``valid(v)`` for a proposed block, computed by the shell's state transition and work checks."""

    height: Height
    block_hash: Hash32
    valid: bool


@dataclass(frozen=True, slots=True)
class TimeoutElapsed:
    """A timer the core asked for (``ScheduleTimeout``) went off; stale ones are ignored."""

    height: Height
    round: Round
    step: Step


Event = StartHeight | ProposalReceived | VoteReceived | ValueReady | ValidityResult | TimeoutElapsed

# ---------------------------------------------------------------------------
# Actions for the shell


@dataclass(frozen=True, slots=True)
class Broadcast:
    """Sign ``message``, send it to the peers and feed it back as received.

    The privval's record goes to disk before the signature leaves, so a restart never signs twice.
    """

    message: Proposal | Vote


@dataclass(frozen=True, slots=True)
class ScheduleTimeout:
    """Start a timer; when it fires, feed ``TimeoutElapsed`` with the same height, round and step."""

    height: Height
    round: Round
    step: Step
    duration_ms: int


@dataclass(frozen=True, slots=True)
class RequestValue:
    """Build a block to propose (the paper's ``getValue()``) and feed ``ValueReady``."""

    height: Height
    round: Round


@dataclass(frozen=True, slots=True)
class RequestValidation:
    """Check a proposed block (the paper's ``valid(v)``) and feed ``ValidityResult``."""

    height: Height
    round: Round
    block: Block


@dataclass(frozen=True, slots=True)
class Decide:
    """Commit ``block`` with its certificate, then feed ``StartHeight`` for the next height."""

    height: Height
    round: Round
    block: Block
    commit: CommitCertificate


@dataclass(frozen=True, slots=True)
class EvidenceFound:
    """A validator signed two votes for one height, round and kind: report it for slashing."""

    evidence: Equivocation


@dataclass(frozen=True, slots=True)
class Rejected:
    """The input broke a rule and changed nothing; ``kind`` says how to treat whoever sent it.

    ``reason`` is for logs only: a caller decides by ``kind``, never by the text.
    """

    kind: FaultKind
    reason: str


Action = Broadcast | ScheduleTimeout | RequestValue | RequestValidation | Decide | EvidenceFound | Rejected


@dataclass(frozen=True, slots=True)
class TimeoutConfig:
    """Timeouts grow linearly with the round so that a slow network eventually fits."""

    propose_ms: int = 3000
    propose_delta_ms: int = 500
    prevote_ms: int = 1000
    prevote_delta_ms: int = 500
    precommit_ms: int = 1000
    precommit_delta_ms: int = 500

    def duration(self, step: Step, round_: int) -> int:
        if step == Step.PROPOSE:
            return self.propose_ms + round_ * self.propose_delta_ms
        if step == Step.PREVOTE:
            return self.prevote_ms + round_ * self.prevote_delta_ms
        return self.precommit_ms + round_ * self.precommit_delta_ms
