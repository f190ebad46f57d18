"""The round state machine: Algorithm 1 of "The latest gossip on BFT consensus" as one ``match``.

``apply(state, input)`` is a pure function from a ``RoundState`` and one
round-machine input to a ``Transition``: the next state and what to do. Each
arm of its one ``match`` is labelled with the lines of the paper
(arXiv:1807.04938) it implements; an input that no rule takes in the given
state falls through to the explicit no-op arm at the end, whose transition
says ``applied=False``.

The inputs are the paper's "upon" conditions, already established: the
driver checks signatures and proposers, counts votes (``votekeeper``) and
asks for validity, and only then says, for instance, "the proposal of this
round and 2f+1 prevotes for it" (``ProposalAndPolkaCurrent``). The outputs are
intentions without identity or clock (prevote this, start that timer); the
driver turns them into signed-message broadcasts and timeouts with
durations. Moving to another round is split in two, as in Malachite: a
rule says which round to go to (``StartRound``), and the driver, which knows
the proposer schedule, feeds back ``NewRound`` with whether we propose it.

This module must never validate a message, count a vote, know whose node it
runs on, or read anything but its arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from consensus.tendermint.state import NO_ROUND, RoundState
from consensus.tendermint.types import Step
from consensus.tendermint.votekeeper import PolkaAny, PolkaNil, PrecommitAny, SkipRound
from consensus.transition import compute_block_hash
from consensus.types import Block, Hash32, Round

# ---------------------------------------------------------------------------
# Inputs. ``PolkaAny``, ``PolkaNil``, ``PrecommitAny`` and ``SkipRound`` are the
# vote keeper's thresholds, taken as they are.


@dataclass(frozen=True, slots=True)
class NewRound:
    """Enter ``round``, as its proposer or not (L11)."""

    round: Round
    is_proposer: bool


@dataclass(frozen=True, slots=True)
class ProposeValue:
    """``getValue()`` returned ``value`` for ``round`` (L18)."""

    round: Round
    value: Block


@dataclass(frozen=True, slots=True)
class Proposal:
    """The proposal of ``round``, with no proof of lock (valid round -1), and valid (L22)."""

    round: Round
    value: Block
    value_id: Hash32


@dataclass(frozen=True, slots=True)
class InvalidProposal:
    """The proposal of ``round``, with no proof of lock, and invalid (L22, L26)."""

    round: Round


@dataclass(frozen=True, slots=True)
class ProposalAndPolkaPrevious:
    """The proposal of ``round`` with 2f+1 prevotes for it in its earlier ``valid_round``, valid (L28)."""

    round: Round
    value: Block
    value_id: Hash32
    valid_round: int


@dataclass(frozen=True, slots=True)
class InvalidProposalAndPolkaPrevious:
    """As ``ProposalAndPolkaPrevious``, but the value is invalid (L28, L32)."""

    round: Round
    valid_round: int


@dataclass(frozen=True, slots=True)
class ProposalAndPolkaCurrent:
    """The proposal of ``round``, valid, and 2f+1 prevotes for it in ``round`` (L36)."""

    round: Round
    value: Block
    value_id: Hash32


@dataclass(frozen=True, slots=True)
class ProposalAndPrecommitValue:
    """The proposal of ``round``, valid, and 2f+1 precommits for it in ``round``: any round (L49)."""

    round: Round
    value: Block
    value_id: Hash32


@dataclass(frozen=True, slots=True)
class TimeoutPropose:
    round: Round  # L57


@dataclass(frozen=True, slots=True)
class TimeoutPrevote:
    round: Round  # L61


@dataclass(frozen=True, slots=True)
class TimeoutPrecommit:
    round: Round  # L65


Input = (
    NewRound
    | ProposeValue
    | Proposal
    | InvalidProposal
    | ProposalAndPolkaPrevious
    | InvalidProposalAndPolkaPrevious
    | ProposalAndPolkaCurrent
    | PolkaAny
    | PolkaNil
    | PrecommitAny
    | ProposalAndPrecommitValue
    | SkipRound
    | TimeoutPropose
    | TimeoutPrevote
    | TimeoutPrecommit
)

# ---------------------------------------------------------------------------
# Outputs


@dataclass(frozen=True, slots=True)
class Propose:
    """broadcast ⟨PROPOSAL, h_p, round, value, valid_round⟩ (L19)."""

    round: Round
    value: Block
    valid_round: int


@dataclass(frozen=True, slots=True)
class GetValue:
    """Ask for a value to propose in ``round`` (L18); it comes back as ``ProposeValue``."""

    round: Round


@dataclass(frozen=True, slots=True)
class Prevote:
    """broadcast ⟨PREVOTE, h_p, round, value_id⟩, nil as None."""

    round: Round
    value_id: Hash32 | None


@dataclass(frozen=True, slots=True)
class Precommit:
    """broadcast ⟨PRECOMMIT, h_p, round, value_id⟩, nil as None."""

    round: Round
    value_id: Hash32 | None


@dataclass(frozen=True, slots=True)
class StartTimer:
    """schedule OnTimeout<step>(h_p, round) (L21, L35, L48); it comes back as a ``Timeout*`` input."""

    round: Round
    step: Step


@dataclass(frozen=True, slots=True)
class StartRound:
    """StartRound(round) (L56, L67); the driver answers with ``NewRound``."""

    round: Round


@dataclass(frozen=True, slots=True)
class Decision:
    """decision_p[h_p] = value (L51): decided in ``round``, the height is over."""

    round: Round
    value: Block
    value_id: Hash32


Output = Propose | GetValue | Prevote | Precommit | StartTimer | StartRound | Decision


@dataclass(frozen=True, slots=True)
class Transition:
    """The next state and what to do, in order; a named result rather than a tuple."""

    state: RoundState
    outputs: tuple[Output, ...] = ()
    applied: bool = True  # False only from the no-op arm: no rule takes the input in this state


def apply(state: RoundState, input_: Input) -> Transition:
    """The next state and outputs for ``input_``; ``state`` itself is never changed."""
    this_round = input_.round == state.round
    step = state.step
    match input_:
        case _ if state.decision is not None:
            # L49 ended the height: its later messages and timers change nothing.
            return Transition(state, applied=False)

        case NewRound(round=r, is_proposer=True) if r > state.round:  # L11-L16, L18-L19, L21
            entered = replace(state, round=r, step=Step.PROPOSE)
            if state.valid_value is not None:  # L15-L16: repropose the value with a proof of lock
                first: Output = Propose(r, state.valid_value, state.valid_round)
            else:  # L17-L18
                first = GetValue(r)
            # L21 for the proposer too, so that a slow getValue() cannot stall the round.
            return Transition(entered, (first, StartTimer(r, Step.PROPOSE)))

        case NewRound(round=r) if r > state.round:  # L11, L20-L21
            return Transition(replace(state, round=r, step=Step.PROPOSE), (StartTimer(r, Step.PROPOSE),))

        case ProposeValue(value=v) if this_round and step is Step.PROPOSE:  # L18-L19
            return Transition(state, (Propose(state.round, v, NO_ROUND),))

        case Proposal(value_id=vid) if this_round and step is Step.PROPOSE:  # L22-L24, L26-L27
            ok = state.locked_round == NO_ROUND or _is_locked_on(state, vid)
            return _prevote(state, vid if ok else None)

        case InvalidProposal() if this_round and step is Step.PROPOSE:  # L22, L26-L27
            return _prevote(state, None)

        case ProposalAndPolkaPrevious(value_id=vid, valid_round=vr) if (
            this_round and step is Step.PROPOSE and 0 <= vr < state.round
        ):  # L28-L30, L32-L33
            ok = state.locked_round <= vr or _is_locked_on(state, vid)
            return _prevote(state, vid if ok else None)

        case InvalidProposalAndPolkaPrevious(valid_round=vr) if (
            this_round and step is Step.PROPOSE and 0 <= vr < state.round
        ):  # L28, L32-L33
            return _prevote(state, None)

        case ProposalAndPolkaCurrent(value=v, value_id=vid) if this_round and step is Step.PREVOTE:  # L36-L43
            r = state.round
            locked = replace(state, step=Step.PRECOMMIT, locked_value=v, locked_round=r, valid_value=v, valid_round=r)
            return Transition(locked, (Precommit(r, vid),))

        case ProposalAndPolkaCurrent(value=v) if this_round and step is Step.PRECOMMIT:  # L36, L42-L43
            return Transition(replace(state, valid_value=v, valid_round=state.round))

        case PolkaNil() if this_round and step is Step.PREVOTE:  # L44-L46
            return _precommit(state, None)

        case PolkaAny() if this_round and step is Step.PREVOTE:  # L34-L35
            return Transition(state, (StartTimer(state.round, Step.PREVOTE),))

        case PrecommitAny() if this_round:  # L47-L48
            return Transition(state, (StartTimer(state.round, Step.PRECOMMIT),))

        case ProposalAndPrecommitValue(round=r, value=v, value_id=vid):  # L49-L54, for a proposal of any round
            return Transition(replace(state, decision=v), (Decision(r, v, vid),))

        case SkipRound(round=r) if r > state.round:  # L55-L56
            return Transition(state, (StartRound(r),))

        case TimeoutPropose() if this_round and step is Step.PROPOSE:  # L57-L60
            return _prevote(state, None)

        case TimeoutPrevote() if this_round and step is Step.PREVOTE:  # L61-L64
            return _precommit(state, None)

        case TimeoutPrecommit() if this_round:  # L65-L67
            return Transition(state, (StartRound(Round(state.round + 1)),))

        case _:
            # Stale (another round or step) or premature: the paper has no rule for it here.
            return Transition(state, applied=False)


def _prevote(state: RoundState, value_id: Hash32 | None) -> Transition:
    return Transition(replace(state, step=Step.PREVOTE), (Prevote(state.round, value_id),))


def _precommit(state: RoundState, value_id: Hash32 | None) -> Transition:
    return Transition(replace(state, step=Step.PRECOMMIT), (Precommit(state.round, value_id),))


def _is_locked_on(state: RoundState, value_id: Hash32) -> bool:
    return state.locked_value is not None and compute_block_hash(state.locked_value.header) == value_id

