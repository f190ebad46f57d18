"""Proposer-based timestamps in the shell: the timeliness verdict, read from an injected wall clock.

A fresh proposal (valid_round -1) whose block time is outside
``[receive − precision − delay, receive + precision]`` is marked untimely on
arrival, and the real consensus core then prevotes nil for it; a
re-proposal keeps its old time and is not judged. The verdict survives the
consensus log's encoding, so a restart replays it instead of judging again.
"""

from __future__ import annotations

from pathlib import Path

from consensus import crypto
from consensus.codec import decode, encode
from consensus.crypto import Keypair
from consensus.tendermint import (
    Broadcast,
    ProposalReceived,
    StartHeight,
    TendermintCore,
    ValidityResult,
)
from consensus.transition import compute_block_hash, compute_body_hash
from consensus.types import (
    PREVOTE,
    Block,
    BlockBody,
    BlockHeader,
    Height,
    Proposal,
    Round,
    SignedProposal,
    Vote,
)
from consensus.validators import ValidatorSet
from tdml_node.config import NodeConfig
from tdml_node.node.timeliness import Synchrony, TimelinessCheck, is_timely
from tdml_node.node.wal import MAX_WAL_RECORD, WalRecord, to_event, to_record

CHAIN = "tdml-timely"
SYNC = Synchrony(precision_ms=500, message_delay_ms=2000)
NOW = 1_764_743_899_000
KEYS = sorted((Keypair.from_seed(crypto.sha256(b"timely/%d" % i)) for i in range(4)), key=lambda k: k.public_key)
VALIDATORS = ValidatorSet.of((k.public_key, 1) for k in KEYS)
EMPTY = BlockBody((), (), (), (), (), None)


class FakeWallClock:
    """The wall clock a test sets by hand (the node takes any ``() -> ms``)."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


def _key_of(public_key: bytes) -> Keypair:
    return next(k for k in KEYS if k.public_key == public_key)


def _proposal(time_ms: int, round_: int = 0, valid_round: int = -1) -> SignedProposal:
    proposer = _key_of(VALIDATORS.get_proposer(CHAIN, Height(1), Round(round_)))
    header = BlockHeader(
        CHAIN, Height(1), Round(round_), crypto.sha256(b"parent"), proposer.public_key,
        compute_body_hash(EMPTY), crypto.sha256(b"root"), time_ms,
    )
    p = Proposal(Height(1), Round(round_), Block(header, EMPTY), valid_round, proposer.public_key)
    return SignedProposal(p, proposer.sign_value(crypto.DOMAIN_PROPOSAL, CHAIN, p))


def _prevote_of_a_validator(event: ProposalReceived) -> list[bytes | None]:
    """What a real core that is not round 0's proposer prevotes after this (valid) proposal."""
    proposer = VALIDATORS.get_proposer(CHAIN, Height(1), Round(0))
    me = next(k for k in KEYS if k.public_key != proposer)
    core = TendermintCore(CHAIN, me.public_key)
    core.apply(StartHeight(Height(1), VALIDATORS))
    out = core.apply(event)
    out += core.apply(ValidityResult(Height(1), compute_block_hash(event.signed.proposal.block.header), True))
    votes = [a.message for a in out if isinstance(a, Broadcast) and isinstance(a.message, Vote)]
    return [v.block_hash for v in votes if v.kind == PREVOTE]


def test_the_window_is_precision_ahead_and_precision_plus_delay_behind() -> None:
    assert is_timely(NOW, NOW, SYNC)
    assert is_timely(NOW + 500, NOW, SYNC) and not is_timely(NOW + 501, NOW, SYNC)
    assert is_timely(NOW - 2500, NOW, SYNC) and not is_timely(NOW - 2501, NOW, SYNC)


def test_the_node_config_defaults_are_the_documented_ones() -> None:
    config = NodeConfig(home=Path("/nonexistent"))
    assert (config.timely_precision_ms, config.timely_message_delay_ms) == (500, 15000)


def test_a_proposal_from_the_future_gets_a_nil_prevote() -> None:
    clock = FakeWallClock(NOW)
    event = TimelinessCheck(SYNC, clock).mark(ProposalReceived(_proposal(NOW + 5_000)))
    assert event.timely is False
    assert _prevote_of_a_validator(event) == [None]


def test_a_proposal_from_the_past_gets_a_nil_prevote() -> None:
    clock = FakeWallClock(NOW)
    event = TimelinessCheck(SYNC, clock).mark(ProposalReceived(_proposal(NOW - 60_000)))
    assert event.timely is False
    assert _prevote_of_a_validator(event) == [None]


def test_a_proposal_on_time_is_prevoted() -> None:
    signed = _proposal(NOW - 1_000)  # built a second ago, within the message delay
    event = TimelinessCheck(SYNC, FakeWallClock(NOW)).mark(ProposalReceived(signed))
    assert event.timely is True
    assert _prevote_of_a_validator(event) == [compute_block_hash(signed.proposal.block.header)]


def test_the_verdict_is_read_from_the_clock_on_arrival() -> None:
    clock = FakeWallClock(NOW)
    check = TimelinessCheck(SYNC, clock)
    signed = _proposal(NOW)
    assert check.mark(ProposalReceived(signed)).timely
    clock.now_ms = NOW + 10_000  # the same proposal, delivered ten seconds later
    assert not check.mark(ProposalReceived(signed)).timely


def test_a_re_proposal_with_an_old_time_is_not_judged() -> None:
    signed = _proposal(NOW - 3_600_000, round_=1, valid_round=0)
    event = TimelinessCheck(SYNC, FakeWallClock(NOW)).mark(ProposalReceived(signed))
    assert event.timely is True


def test_the_consensus_log_keeps_the_verdict() -> None:
    for timely in (True, False):
        event = ProposalReceived(_proposal(NOW), timely=timely)
        raw = encode(to_record(event))
        assert to_event(decode(raw, WalRecord, max_size=MAX_WAL_RECORD)) == event
