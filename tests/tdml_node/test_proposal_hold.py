"""A propose timeout waits for the check of a proposal in hand, once, and never for anything else."""

from __future__ import annotations

from consensus.tendermint import Step, TimeoutElapsed
from consensus.types import Height, Round
from tdml_node.node.proposal_hold import ProposalHold


def _timeout(height: int, round_: int, step: Step = Step.PROPOSE) -> TimeoutElapsed:
    return TimeoutElapsed(Height(height), Round(round_), step)


def test_a_timeout_with_no_check_in_flight_goes_through() -> None:
    hold = ProposalHold()
    assert not hold.hold(_timeout(5, 0))


def test_a_propose_timeout_waits_for_the_check_and_comes_back_when_it_ends() -> None:
    hold = ProposalHold()
    hold.check_started(5, 0)
    event = _timeout(5, 0)
    assert hold.hold(event)
    assert hold.is_held(5, 0)
    assert hold.check_ended(5, 0) is event
    assert not hold.is_held(5, 0)


def test_only_the_propose_step_of_the_checked_round_is_held() -> None:
    hold = ProposalHold()
    hold.check_started(5, 1)
    assert not hold.hold(_timeout(5, 1, Step.PREVOTE))
    assert not hold.hold(_timeout(5, 1, Step.PRECOMMIT))
    assert not hold.hold(_timeout(5, 0))
    assert not hold.hold(_timeout(6, 1))
    assert hold.check_ended(5, 1) is None


def test_the_timeout_comes_back_after_the_last_of_several_checks() -> None:
    hold = ProposalHold()
    hold.check_started(5, 0)
    hold.check_started(5, 0)  # a second proposal for the round (an equivocating proposer)
    event = _timeout(5, 0)
    assert hold.hold(event)
    assert hold.check_ended(5, 0) is None
    assert hold.check_ended(5, 0) is event


def test_a_released_timeout_is_never_held_again() -> None:
    hold = ProposalHold()
    hold.check_started(5, 0)
    event = _timeout(5, 0)
    assert hold.hold(event)
    assert hold.release((5, 0)) is event  # the hold's own deadline, while the check still runs
    assert hold.release((5, 0)) is None
    assert not hold.hold(event)
    assert hold.check_ended(5, 0) is None


def test_pruning_forgets_committed_heights_only() -> None:
    hold = ProposalHold()
    hold.check_started(5, 0)
    hold.check_started(6, 0)
    assert hold.hold(_timeout(5, 0))
    assert hold.hold(_timeout(6, 0))
    hold.prune(5)
    assert not hold.is_held(5, 0)
    assert hold.is_held(6, 0)
