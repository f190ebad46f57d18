"""Scripted tests of the Tendermint driver, one paper rule at a time.

Each test feeds a ``TendermintCore`` a script of inputs (signed by test keys)
and checks the actions that come out and the public state (``core.state``,
``core.snapshot()``); line labels (L22, L36, ...) refer to Algorithm 1 of "The
latest gossip on BFT consensus". The pure round machine and the vote keeper
have table-driven tests of their own (``test_tendermint_machine``,
``test_tendermint_votekeeper``); the seeded network simulation in
``test_simulation`` checks the whole end to end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from consensus_fixtures import CHAIN_ID, validator_set

from consensus import crypto
from consensus.crypto import Keypair
from consensus.errors import FaultKind, InvariantViolation
from consensus.tendermint import (
    MAX_ROUND_AHEAD,
    MAX_VOTES_PER_SIGNER,
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
    TendermintCore,
    TimeoutConfig,
    TimeoutElapsed,
    ValidityResult,
    ValueReady,
    VoteReceived,
    machine,
)
from consensus.transition import compute_block_hash, compute_body_hash, validate_commit
from consensus.types import (
    PRECOMMIT,
    PREVOTE,
    Block,
    BlockBody,
    BlockHeader,
    Hash32,
    Height,
    Proposal,
    PublicKey,
    Round,
    Signature,
    SignedProposal,
    SignedVote,
    Vote,
)
from consensus.validators import ValidatorSet

TIMEOUTS = TimeoutConfig()
EMPTY = BlockBody((), (), (), (), (), None)


def make_block(height: int, round_: int, proposer: PublicKey, salt: bytes = b"") -> Block:
    header = BlockHeader(
        chain_id=CHAIN_ID,
        height=Height(height),
        round=Round(round_),
        parent_hash=crypto.sha256(b"parent/%d" % height),
        proposer=proposer,
        body_hash=compute_body_hash(EMPTY),
        state_root=crypto.sha256(b"root/" + salt),
        time_ms=1000 * height,
    )
    return Block(header, EMPTY)


def block_id(block: Block) -> Hash32:
    return compute_block_hash(block.header)


@dataclass
class Net:
    """A validator set, its keys, and one core under test (``me``) with helpers to script it."""

    vs: ValidatorSet
    keys: list[Keypair]  # in validator-set (key) order
    core: TendermintCore
    me: int | None

    @classmethod
    def make(cls, powers: Sequence[int] = (1, 1, 1, 1), *, me: int | None = 0, offset: int = 0) -> Net:
        vs, kps = validator_set(powers, offset=offset)
        keys = sorted(kps, key=lambda k: k.public_key)
        mine = keys[me].public_key if me is not None else None
        return cls(vs, keys, TendermintCore(CHAIN_ID, mine, TIMEOUTS), me)

    def index_of(self, key: bytes) -> int:
        return next(i for i, kp in enumerate(self.keys) if kp.public_key == key)

    def proposer(self, height: int, round_: int) -> int:
        return self.index_of(self.vs.get_proposer(CHAIN_ID, height, round_))

    def apply(self, event: Event) -> list[Action]:
        """Apply ``event``, then sign and feed back our own broadcasts as the shell does.

        The returned list holds every action, those of the fed-back messages included.
        """
        out = self.core.apply(event)
        i = 0
        while i < len(out):
            action = out[i]
            i += 1
            if isinstance(action, Broadcast) and self.me is not None:
                kp = self.keys[self.me]
                m = action.message
                if isinstance(m, Proposal):
                    out += self.core.apply(ProposalReceived(SignedProposal(m, kp.sign_value(crypto.DOMAIN_PROPOSAL, CHAIN_ID, m))))
                else:
                    out += self.core.apply(VoteReceived(SignedVote(m, kp.sign_value(crypto.DOMAIN_VOTE, CHAIN_ID, m))))
        return out

    def start(self, height: int = 1) -> list[Action]:
        return self.apply(StartHeight(Height(height), self.vs))

    def proposal(
        self, height: int, round_: int, block: Block, valid_round: int = -1, *, by: int | None = None
    ) -> SignedProposal:
        who = self.proposer(height, round_) if by is None else by
        p = Proposal(Height(height), Round(round_), block, valid_round, self.keys[who].public_key)
        return SignedProposal(p, self.keys[who].sign_value(crypto.DOMAIN_PROPOSAL, CHAIN_ID, p))

    def vote(self, who: int, kind: int, height: int, round_: int, target: Block | Hash32 | None) -> SignedVote:
        h = block_id(target) if isinstance(target, Block) else target
        v = Vote(kind, Height(height), Round(round_), h, self.keys[who].public_key)
        return SignedVote(v, self.keys[who].sign_value(crypto.DOMAIN_VOTE, CHAIN_ID, v))

    def propose(self, height: int, round_: int, block: Block, valid_round: int = -1, *, valid: bool = True) -> list[Action]:
        """Deliver a proposal and answer the validation request it triggers."""
        out = self.apply(ProposalReceived(self.proposal(height, round_, block, valid_round)))
        if any(isinstance(a, RequestValidation) for a in out):
            out += self.apply(ValidityResult(Height(height), block_id(block), valid))
        return out

    def votes(self, kind: int, height: int, round_: int, target: Block | Hash32 | None, who: Sequence[int]) -> list[Action]:
        out: list[Action] = []
        for i in who:
            out += self.apply(VoteReceived(self.vote(i, kind, height, round_, target)))
        return out

    def others(self, count: int) -> list[int]:
        return [i for i in range(len(self.keys)) if i != self.me][:count]


def broadcasts(actions: Sequence[Action]) -> list[Proposal | Vote]:
    return [a.message for a in actions if isinstance(a, Broadcast)]


def my_votes(actions: Sequence[Action], kind: int) -> list[Hash32 | None]:
    return [m.block_hash for m in broadcasts(actions) if isinstance(m, Vote) and m.kind == kind]


def timeouts(actions: Sequence[Action]) -> list[tuple[int, int, int]]:
    return [(a.height, a.round, a.step) for a in actions if isinstance(a, ScheduleTimeout)]


def prevotes_of(net: Net, who: int, round_: int = 0) -> list[Hash32 | None]:
    """The values of ``who``'s prevotes in ``round_`` that the core keeps."""
    key = net.keys[who].public_key
    return [
        sv.vote.block_hash
        for sv in net.core.snapshot().votes
        if sv.vote.validator == key and sv.vote.kind == PREVOTE and sv.vote.round == round_
    ]


def net_proposing_none_of(*rounds: int, height: int = 1, powers: Sequence[int] = (1, 1, 1, 1)) -> Net:
    """A net whose core proposes none of ``rounds`` at ``height``.

    The core's key is picked from the layout, so the layout a test needs
    always exists: three rounds have at most three proposers among four.
    """
    probe = Net.make(powers)
    proposers = {probe.proposer(height, r) for r in rounds}
    me = next(i for i in range(len(powers)) if i not in proposers)
    net = Net.make(powers, me=me)
    assert all(net.proposer(height, r) != me for r in rounds)
    return net


def net_where_proposer_is_not_me(height: int = 1, round_: int = 0, powers: Sequence[int] = (1, 1, 1, 1)) -> Net:
    return net_proposing_none_of(round_, height=height, powers=powers)


@pytest.fixture
def net_proposing_neither_round_0_nor_1() -> Net:
    return net_proposing_none_of(0, 1)


@pytest.fixture
def net_proposing_none_of_rounds_0_to_2() -> Net:
    return net_proposing_none_of(0, 1, 2)


# ---------------------------------------------------------------------------
# Happy paths


def test_single_validator_decides_at_round_zero() -> None:
    net = Net.make([10])
    out = net.start()
    assert RequestValue(Height(1), Round(0)) in out
    assert (1, 0, Step.PROPOSE) in timeouts(out)
    block = make_block(1, 0, net.keys[0].public_key)
    # The proposal, our prevote and precommit are each fed back (Net.apply plays the shell).
    out = net.apply(ValueReady(Height(1), Round(0), block))
    proposal = broadcasts(out)[0]
    assert isinstance(proposal, Proposal) and proposal.valid_round == -1 and proposal.block == block
    assert not any(isinstance(a, RequestValidation) for a in out)  # our own value is valid
    assert my_votes(out, PREVOTE) == [block_id(block)]  # L22-L24
    assert my_votes(out, PRECOMMIT) == [block_id(block)]  # L36-L40
    (decide,) = [a for a in out if isinstance(a, Decide)]  # L49
    assert decide.block == block and decide.round == 0
    validate_commit(decide.commit, net.vs, CHAIN_ID, Height(1), block_id(block))


def test_four_validators_happy_path() -> None:
    net = net_where_proposer_is_not_me()
    out = net.start()
    assert not any(isinstance(a, RequestValue) for a in out)
    assert timeouts(out) == [(1, 0, Step.PROPOSE)]
    block = make_block(1, 0, net.keys[net.proposer(1, 0)].public_key)
    out = net.apply(ProposalReceived(net.proposal(1, 0, block)))
    assert out == [RequestValidation(Height(1), Round(0), block)]
    out = net.apply(ValidityResult(Height(1), block_id(block), True))
    assert my_votes(out, PREVOTE) == [block_id(block)]
    assert net.core.step == Step.PREVOTE
    others = net.others(3)
    out = net.votes(PREVOTE, 1, 0, block, [net.me, *others[:1]])  # type: ignore[list-item]
    assert not my_votes(out, PRECOMMIT)  # 2 of 4 is not a quorum
    out = net.votes(PREVOTE, 1, 0, block, others[1:2])
    assert my_votes(out, PRECOMMIT) == [block_id(block)]
    assert net.core.state.locked_round == 0 and net.core.state.locked_value == block
    assert net.core.state.valid_round == 0 and net.core.state.valid_value == block
    # Our own precommit went out (and came back) with the lock: two more make a quorum.
    out = net.votes(PRECOMMIT, 1, 0, block, others[:1])
    assert not any(isinstance(a, Decide) for a in out)
    assert (1, 0, Step.PRECOMMIT) not in timeouts(out)
    out = net.votes(PRECOMMIT, 1, 0, block, others[1:2])
    (decide,) = [a for a in out if isinstance(a, Decide)]
    assert len(decide.commit.signatures) == 3
    validate_commit(decide.commit, net.vs, CHAIN_ID, Height(1), block_id(block))
    # Decided: inputs of the height change nothing more.
    assert net.votes(PRECOMMIT, 1, 0, block, others[2:]) == []


def test_decision_needs_a_valid_block() -> None:
    net = net_where_proposer_is_not_me()
    net.start()
    block = make_block(1, 0, net.keys[net.proposer(1, 0)].public_key)
    net.apply(ProposalReceived(net.proposal(1, 0, block)))
    out = net.votes(PRECOMMIT, 1, 0, block, [0, 1, 2, 3])
    assert not any(isinstance(a, Decide) for a in out)  # validity still unknown (L50)
    out = net.apply(ValidityResult(Height(1), block_id(block), False))
    assert not any(isinstance(a, Decide) for a in out)
    assert my_votes(out, PREVOTE) == [None]  # L26: an invalid proposal gets a nil prevote


def test_decision_in_a_later_round_than_ours() -> None:
    """L49 holds for a proposal of any round: a node behind still decides."""
    net = net_where_proposer_is_not_me()
    net.start()
    r = 3
    block = make_block(1, r, net.keys[net.proposer(1, r)].public_key)
    net.propose(1, r, block)
    out = net.votes(PRECOMMIT, 1, r, block, [i for i in range(4) if i != net.me])
    (decide,) = [a for a in out if isinstance(a, Decide)]
    assert decide.round == r


def test_observer_decides_without_voting() -> None:
    net = Net.make(me=None)
    out = net.start()
    assert all(not isinstance(a, RequestValue) for a in out)
    block = make_block(1, 0, net.keys[net.proposer(1, 0)].public_key)
    out = net.propose(1, 0, block)
    assert broadcasts(out) == []
    out = net.votes(PREVOTE, 1, 0, block, [0, 1, 2]) + net.votes(PRECOMMIT, 1, 0, block, [0, 1, 2])
    assert broadcasts(out) == []
    assert any(isinstance(a, Decide) for a in out)


# ---------------------------------------------------------------------------
# Timeouts and round changes


def test_proposer_timeout_prevote_nil_then_next_round() -> None:
    net = net_where_proposer_is_not_me()
    net.start()
    out = net.apply(TimeoutElapsed(Height(1), Round(0), Step.PROPOSE))  # L57-L60
    assert my_votes(out, PREVOTE) == [None]
    others = net.others(3)
    out = net.votes(PREVOTE, 1, 0, None, others[:2])  # with ours: 3 nil prevotes
    assert my_votes(out, PRECOMMIT) == [None]  # L44-L46
    out = net.votes(PRECOMMIT, 1, 0, None, others[:2])
    assert (1, 0, Step.PRECOMMIT) in timeouts(out)  # L47-L48
    out = net.apply(TimeoutElapsed(Height(1), Round(0), Step.PRECOMMIT))  # L65-L67
    assert net.core.round == 1 and net.core.step == Step.PROPOSE
    assert (1, 1, Step.PROPOSE) in timeouts(out)
    expected = [RequestValue(Height(1), Round(1))] if net.proposer(1, 1) == net.me else []
    assert [a for a in out if isinstance(a, RequestValue)] == expected


def test_prevote_timeout_after_mixed_prevotes() -> None:
    net = net_where_proposer_is_not_me()
    net.start()
    block = make_block(1, 0, net.keys[net.proposer(1, 0)].public_key)
    net.propose(1, 0, block)
    others = net.others(3)
    out = net.votes(PREVOTE, 1, 0, None, others[:1]) + net.votes(PREVOTE, 1, 0, block, others[1:2])
    assert (1, 0, Step.PREVOTE) in timeouts(out)  # L34: 2f+1 prevotes of any kind
    assert not broadcasts(out)
    out = net.apply(TimeoutElapsed(Height(1), Round(0), Step.PREVOTE))  # L61-L64
    assert my_votes(out, PRECOMMIT) == [None]


def test_timeouts_grow_with_the_round() -> None:
    assert TIMEOUTS.duration(Step.PROPOSE, 3) > TIMEOUTS.duration(Step.PROPOSE, 0)
    assert TIMEOUTS.duration(Step.PREVOTE, 2) == TIMEOUTS.prevote_ms + 2 * TIMEOUTS.prevote_delta_ms
    assert TIMEOUTS.duration(Step.PRECOMMIT, 1) == TIMEOUTS.precommit_ms + TIMEOUTS.precommit_delta_ms


@pytest.mark.parametrize(
    "stale",
    [
        TimeoutElapsed(Height(1), Round(0), Step.PROPOSE),  # an earlier round
        TimeoutElapsed(Height(1), Round(0), Step.PRECOMMIT),
        TimeoutElapsed(Height(2), Round(1), Step.PROPOSE),  # another height
        TimeoutElapsed(Height(1), Round(1), Step.PREVOTE),  # a step we are not in
        TimeoutElapsed(Height(1), Round(5), Step.PRECOMMIT),  # a later round
    ],
)
def test_stale_timeouts_are_ignored(stale: TimeoutElapsed) -> None:
    net = net_where_proposer_is_not_me(1, 1)
    net.start()
    net.votes(PREVOTE, 1, 1, None, net.others(2))  # f+1 in round 1: skip there (L55)
    assert net.core.round == 1 and net.core.step == Step.PROPOSE
    before = net.core.snapshot()
    assert net.apply(stale) == []
    assert net.core.snapshot() == before


def test_round_skip_on_f_plus_one_of_a_higher_round() -> None:
    net = net_where_proposer_is_not_me()
    net.start()
    others = net.others(3)
    out = net.votes(PREVOTE, 1, 5, None, others[:1])
    assert net.core.round == 0 and out == []  # one of four is not f+1
    out = net.votes(PRECOMMIT, 1, 5, None, others[1:2])  # any message kind of that round counts (L55)
    assert net.core.round == 5
    assert (1, 5, Step.PROPOSE) in timeouts(out)


def test_round_skip_by_power_not_count() -> None:
    powers = [1, 1, 1, 4]  # total 7: skip needs more than 7/3
    probe = Net.make(powers)
    heavy = next(i for i in range(4) if probe.vs.power_of(probe.keys[i].public_key) == 4)
    me = next(i for i in range(4) if i != heavy)
    net = Net.make(powers, me=me)
    net.start()
    light = [i for i in range(4) if i not in (heavy, me)]
    net.votes(PREVOTE, 1, 2, None, light)
    assert net.core.round == 0  # 2 of 7
    net.votes(PREVOTE, 1, 2, None, [heavy])
    assert net.core.round == 2


def test_proposals_from_far_future_rounds_are_ignored() -> None:
    net = net_where_proposer_is_not_me()
    net.start()
    r = 100
    block = make_block(1, r, net.keys[net.proposer(1, r)].public_key)
    before = net.core.snapshot()
    assert net.apply(ProposalReceived(net.proposal(1, r, block))) == []
    assert net.core.snapshot() == before
    # Just inside the window, the same kind of proposal is kept.
    r = MAX_ROUND_AHEAD
    block = make_block(1, r, net.keys[net.proposer(1, r)].public_key)
    net.apply(ProposalReceived(net.proposal(1, r, block)))
    assert net.core.get_proposal(r) is not None


# ---------------------------------------------------------------------------
# Locks and valid values


def _lock_in_round_zero(net: Net) -> Block:
    """Make ``net``'s core lock on the round-0 proposal, then fail the round with nil precommits."""
    net.start()
    block = make_block(1, 0, net.keys[net.proposer(1, 0)].public_key, b"v")
    net.propose(1, 0, block)
    others = net.others(3)
    out = net.votes(PREVOTE, 1, 0, block, others[:2])
    assert my_votes(out, PRECOMMIT) == [block_id(block)]
    net.votes(PRECOMMIT, 1, 0, None, others)
    net.apply(TimeoutElapsed(Height(1), Round(0), Step.PRECOMMIT))
    assert net.core.round == 1
    return block


def test_locked_node_prevotes_nil_for_another_value(net_proposing_neither_round_0_nor_1: Net) -> None:
    net = net_proposing_neither_round_0_nor_1
    locked = _lock_in_round_zero(net)
    other = make_block(1, 1, net.keys[net.proposer(1, 1)].public_key, b"w")
    out = net.propose(1, 1, other)
    assert my_votes(out, PREVOTE) == [None]  # L23: locked on another value
    assert net.core.state.locked_value == locked


def test_locked_node_prevotes_its_locked_value(net_proposing_neither_round_0_nor_1: Net) -> None:
    net = net_proposing_neither_round_0_nor_1
    locked = _lock_in_round_zero(net)
    out = net.propose(1, 1, locked, valid_round=-1)
    assert my_votes(out, PREVOTE) == [block_id(locked)]


def test_valid_round_proposal_needs_its_proof_of_lock() -> None:
    """L28: a re-proposal with valid round vr is prevoted only with 2f+1 prevotes of vr."""
    net = net_where_proposer_is_not_me(1, 1)
    net.start()
    v = make_block(1, 0, net.keys[net.proposer(1, 0)].public_key, b"v")
    net.votes(PREVOTE, 1, 1, None, net.others(2))  # move to round 1 (L55)
    assert net.core.round == 1
    out = net.propose(1, 1, v, valid_round=0)
    assert my_votes(out, PREVOTE) == []  # no proof of lock yet: wait (the timeout decides)
    out = net.votes(PREVOTE, 1, 0, v, net.others(3))
    assert my_votes(out, PREVOTE) == [block_id(v)]


def test_lock_is_released_by_a_later_proof_of_lock(net_proposing_none_of_rounds_0_to_2: Net) -> None:
    """L29: locked in round 0 on v, a round-2 proposal of w with a round-1 proof of lock gets our prevote."""
    net = net_proposing_none_of_rounds_0_to_2
    _lock_in_round_zero(net)
    w = make_block(1, 1, net.keys[net.proposer(1, 1)].public_key, b"w")
    net.votes(PREVOTE, 1, 1, w, net.others(3))  # others' round-1 prevotes for w
    net.votes(PRECOMMIT, 1, 1, None, net.others(3))
    net.apply(TimeoutElapsed(Height(1), Round(1), Step.PRECOMMIT))
    assert net.core.round == 2
    out = net.propose(1, 2, w, valid_round=1)
    assert my_votes(out, PREVOTE) == [block_id(w)]


def test_old_proof_of_lock_does_not_release_a_newer_lock(net_proposing_none_of_rounds_0_to_2: Net) -> None:
    """L29 with lockedRound > vr: prevote nil."""
    net = net_proposing_none_of_rounds_0_to_2
    net.start()
    w = make_block(1, 0, net.keys[net.proposer(1, 0)].public_key, b"w")
    net.votes(PREVOTE, 1, 0, w, net.others(3))  # a proof of lock for w in round 0 (we missed the proposal)
    net.votes(PREVOTE, 1, 1, None, net.others(2))  # on to round 1
    v = make_block(1, 1, net.keys[net.proposer(1, 1)].public_key, b"v")
    net.propose(1, 1, v)
    out = net.votes(PREVOTE, 1, 1, v, net.others(2))
    assert my_votes(out, PRECOMMIT) == [block_id(v)]  # locked on v in round 1
    net.votes(PRECOMMIT, 1, 1, None, net.others(3))
    net.apply(TimeoutElapsed(Height(1), Round(1), Step.PRECOMMIT))
    out = net.propose(1, 2, w, valid_round=0)
    assert my_votes(out, PREVOTE) == [None]


def test_valid_value_is_reproposed() -> None:
    """L15-L16: a proposer that saw a proof of lock proposes that value with its valid round."""
    probe = Net.make()
    r = next(r for r in range(1, 50) if probe.proposer(1, r) != probe.proposer(1, 0))
    net = Net.make(me=probe.proposer(1, r))
    net.start()
    v = make_block(1, 0, net.keys[net.proposer(1, 0)].public_key, b"v")
    net.propose(1, 0, v)
    net.votes(PREVOTE, 1, 0, v, [i for i in range(4) if i != net.me][:3])  # L36: valid value v, round 0
    assert net.core.state.valid_value == v and net.core.state.valid_round == 0
    out = net.votes(PREVOTE, 1, r, None, [i for i in range(4) if i != net.me][:2])  # skip to r
    assert net.core.round == r
    props = [m for m in broadcasts(out) if isinstance(m, Proposal)]
    assert props == [Proposal(Height(1), Round(r), v, 0, net.keys[net.me].public_key)]  # type: ignore[index]
    assert not any(isinstance(a, RequestValue) for a in out)


def test_valid_value_updates_after_we_precommitted() -> None:
    """L36 at step precommit: no lock and no second precommit, but the valid value moves (L42-L43)."""
    net = net_where_proposer_is_not_me()
    net.start()
    v = make_block(1, 0, net.keys[net.proposer(1, 0)].public_key, b"v")
    net.apply(ProposalReceived(net.proposal(1, 0, v)))  # validation still pending
    out = net.apply(TimeoutElapsed(Height(1), Round(0), Step.PROPOSE))
    assert my_votes(out, PREVOTE) == [None]
    o = net.others(3)
    out = net.votes(PREVOTE, 1, 0, v, o[:2])
    assert (1, 0, Step.PREVOTE) in timeouts(out)  # L34
    out = net.apply(TimeoutElapsed(Height(1), Round(0), Step.PREVOTE))
    assert my_votes(out, PRECOMMIT) == [None]
    net.votes(PREVOTE, 1, 0, v, o[2:])  # a quorum for v, but its validity is unknown yet
    assert net.core.state.valid_round == -1
    out = net.apply(ValidityResult(Height(1), block_id(v), True))
    assert my_votes(out, PRECOMMIT) == []
    assert net.core.state.locked_round == -1 and net.core.state.locked_value is None
    assert net.core.state.valid_round == 0 and net.core.state.valid_value == v


def test_late_value_after_the_propose_timeout_is_not_proposed() -> None:
    """getValue() slower than timeoutPropose: we prevoted nil, so proposing now would sign a step backwards."""
    net = Net.make(me=Net.make().proposer(1, 0))
    out = net.start()
    assert RequestValue(Height(1), Round(0)) in out
    out = net.apply(TimeoutElapsed(Height(1), Round(0), Step.PROPOSE))
    assert my_votes(out, PREVOTE) == [None]
    block = make_block(1, 0, net.keys[net.me].public_key)  # type: ignore[index]
    assert net.apply(ValueReady(Height(1), Round(0), block)) == []


def test_value_for_another_round_is_ignored() -> None:
    net = Net.make(me=Net.make().proposer(1, 0))
    net.start()
    block = make_block(1, 0, net.keys[net.me].public_key)  # type: ignore[index]
    assert net.apply(ValueReady(Height(1), Round(1), block)) == []
    assert net.apply(ValueReady(Height(2), Round(0), block)) == []


# ---------------------------------------------------------------------------
# Equivocation and bad input


def test_equivocation_is_reported_and_each_vote_counts_once() -> None:
    net = net_where_proposer_is_not_me()
    net.start()
    out = net.apply(TimeoutElapsed(Height(1), Round(0), Step.PROPOSE))
    assert my_votes(out, PREVOTE) == [None]  # we are in the prevote step with our own nil prevote
    v = make_block(1, 0, net.keys[net.proposer(1, 0)].public_key, b"v")
    w = make_block(1, 0, net.keys[net.proposer(1, 0)].public_key, b"w")
    cheat = net.others(1)[0]
    first = net.vote(cheat, PREVOTE, 1, 0, v)
    second = net.vote(cheat, PREVOTE, 1, 0, w)
    assert net.apply(VoteReceived(first)) == []
    out = net.apply(VoteReceived(second))
    (found,) = [a for a in out if isinstance(a, EvidenceFound)]
    assert found.evidence.vote_a == first and found.evidence.vote_b == second
    # Two validators have prevoted (us and the cheat): a double count would make
    # three of four and schedule the prevote timeout (L34).
    assert (1, 0, Step.PREVOTE) not in timeouts(out)
    # A duplicate of either is not news.
    assert net.apply(VoteReceived(first)) == []
    assert net.apply(VoteReceived(second)) == []


def test_equivocating_vote_completes_a_proof_of_lock() -> None:
    """Another node may have locked on the equivocator's second vote; it must count here too."""
    net = net_where_proposer_is_not_me()
    net.start()
    v = make_block(1, 0, net.keys[net.proposer(1, 0)].public_key, b"v")
    net.propose(1, 0, v)  # we prevote v
    cheat, honest = net.others(2)
    net.votes(PREVOTE, 1, 0, None, [cheat])
    out = net.votes(PREVOTE, 1, 0, v, [honest, cheat])
    assert any(isinstance(a, EvidenceFound) for a in out)
    assert my_votes(out, PRECOMMIT) == [block_id(v)]


def test_votes_per_signer_are_capped_for_unbacked_values_only() -> None:
    net = net_where_proposer_is_not_me()
    net.start()
    cheat, honest = net.others(2)
    for i in range(MAX_VOTES_PER_SIGNER + 3):
        net.apply(VoteReceived(net.vote(cheat, PREVOTE, 1, 0, crypto.sha256(b"junk%d" % i))))
    assert len(prevotes_of(net, cheat)) == MAX_VOTES_PER_SIGNER
    # A value someone else voted for still counts, however much junk came first:
    # it may be the vote that completes another node's proof of lock (seed 313024).
    v = make_block(1, 0, net.keys[net.proposer(1, 0)].public_key, b"v")
    net.votes(PREVOTE, 1, 0, v, [honest])
    net.votes(PREVOTE, 1, 0, v, [cheat])
    assert block_id(v) in prevotes_of(net, cheat)
    # So do nil and a proposed block.
    net.votes(PREVOTE, 1, 0, None, [cheat])
    w = make_block(1, 0, net.keys[net.proposer(1, 0)].public_key, b"w")
    net.apply(ProposalReceived(net.proposal(1, 0, w)))
    net.votes(PREVOTE, 1, 0, w, [cheat])
    assert len(prevotes_of(net, cheat)) == MAX_VOTES_PER_SIGNER + 3


def _bad_inputs(net: Net) -> list[tuple[Event, FaultKind]]:
    block = make_block(1, 0, net.keys[net.proposer(1, 0)].public_key)
    not_proposer = next(i for i in range(4) if i != net.proposer(1, 0))
    good_vote = net.vote(1, PREVOTE, 1, 0, block)
    v = good_vote.vote
    stranger = Keypair.from_seed(crypto.sha256(b"stranger"))
    stranger_vote = Vote(PREVOTE, Height(1), Round(0), None, stranger.public_key)
    proposal = net.proposal(1, 0, block)
    return [
        (
            VoteReceived(SignedVote(stranger_vote, stranger.sign_value(crypto.DOMAIN_VOTE, CHAIN_ID, stranger_vote))),
            FaultKind.NOT_AUTHORISED,
        ),
        (VoteReceived(SignedVote(v, Signature(bytes(64)))), FaultKind.BAD_SIGNATURE),
        (VoteReceived(SignedVote(v, net.keys[2].sign_value(crypto.DOMAIN_VOTE, CHAIN_ID, v))), FaultKind.BAD_SIGNATURE),
        (VoteReceived(SignedVote(v, net.keys[1].sign_value(crypto.DOMAIN_VOTE, "other-chain", v))), FaultKind.BAD_SIGNATURE),
        (VoteReceived(SignedVote(v, net.keys[1].sign_value(crypto.DOMAIN_TX, CHAIN_ID, v))), FaultKind.BAD_SIGNATURE),
        (ProposalReceived(net.proposal(1, 0, block, by=not_proposer)), FaultKind.NOT_AUTHORISED),
        (ProposalReceived(SignedProposal(proposal.proposal, Signature(bytes(64)))), FaultKind.BAD_SIGNATURE),
        (ProposalReceived(net.proposal(1, 0, block, valid_round=0)), FaultKind.MALFORMED),
        (ProposalReceived(net.proposal(1, 0, make_block(2, 0, block.header.proposer))), FaultKind.MALFORMED),
    ]


@pytest.mark.parametrize("case", range(9))
def test_bad_input_is_rejected_and_changes_nothing(case: int) -> None:
    net = net_where_proposer_is_not_me()
    net.start()
    event, kind = _bad_inputs(net)[case]
    before = net.core.snapshot()
    out = net.apply(event)
    assert len(out) == 1 and isinstance(out[0], Rejected), out
    assert out[0].kind is kind
    assert net.core.snapshot() == before


def test_rules_that_never_settle_halt_the_core(monkeypatch: pytest.MonkeyPatch) -> None:
    """A rule firing forever is our bug, not a peer's: the core stops rather than sign on."""
    net = net_where_proposer_is_not_me()
    net.start()
    block = make_block(1, 0, net.keys[net.proposer(1, 0)].public_key)
    net.apply(ProposalReceived(net.proposal(1, 0, block)))
    monkeypatch.setattr(machine, "apply", lambda state, input_: machine.Transition(state))
    with pytest.raises(InvariantViolation, match="did not settle"):
        net.apply(ValidityResult(Height(1), block_id(block), True))


def test_second_proposal_of_a_round_is_ignored() -> None:
    net = net_where_proposer_is_not_me()
    net.start()
    v = make_block(1, 0, net.keys[net.proposer(1, 0)].public_key, b"v")
    w = make_block(1, 0, net.keys[net.proposer(1, 0)].public_key, b"w")
    net.propose(1, 0, v)
    before = net.core.snapshot()
    assert net.apply(ProposalReceived(net.proposal(1, 0, w))) == []
    assert net.core.snapshot() == before


def test_validity_is_requested_once_per_block() -> None:
    net = net_where_proposer_is_not_me(1, 1)
    net.start()
    v = make_block(1, 0, net.keys[net.proposer(1, 0)].public_key)
    out = net.apply(ProposalReceived(net.proposal(1, 0, v)))
    assert len([a for a in out if isinstance(a, RequestValidation)]) == 1
    net.votes(PREVOTE, 1, 1, None, net.others(2))
    out = net.apply(ProposalReceived(net.proposal(1, 1, v, valid_round=-1)))
    assert not any(isinstance(a, RequestValidation) for a in out)


# ---------------------------------------------------------------------------
# Heights


def _decide_height_one(net: Net) -> Block:
    net.start()
    block = make_block(1, 0, net.keys[net.proposer(1, 0)].public_key)
    net.propose(1, 0, block)
    out = net.votes(PRECOMMIT, 1, 0, block, net.others(3))
    assert any(isinstance(a, Decide) for a in out)
    return block


def test_next_height_messages_are_buffered_and_replayed() -> None:
    net = net_where_proposer_is_not_me()
    _decide_height_one(net)
    block2 = make_block(2, 0, net.keys[net.proposer(2, 0)].public_key)
    early = [ProposalReceived(net.proposal(2, 0, block2))] + [
        VoteReceived(net.vote(i, PREVOTE, 2, 0, block2)) for i in net.others(3)
    ]
    for event in early:
        assert net.apply(event) == []
    far = VoteReceived(net.vote(1, PREVOTE, 3, 0, None))
    assert net.apply(far) == []  # two heights ahead: dropped, gossip will bring it again
    out = net.start(2)
    assert RequestValidation(Height(2), Round(0), block2) in out
    out = net.apply(ValidityResult(Height(2), block_id(block2), True))
    assert my_votes(out, PREVOTE) == [block_id(block2)]
    assert my_votes(out, PRECOMMIT) == [block_id(block2)]  # the buffered prevotes already made a quorum
    # Nothing of height 1 came along: only the buffered votes and our own are counted.
    votes = net.core.snapshot().votes
    assert {sv.vote.height for sv in votes} == {2}
    assert {sv.vote.block_hash for sv in votes} == {block_id(block2)}


def test_messages_before_the_first_start_are_buffered() -> None:
    net = net_where_proposer_is_not_me()
    block = make_block(1, 0, net.keys[net.proposer(1, 0)].public_key)
    assert net.apply(ProposalReceived(net.proposal(1, 0, block))) == []
    assert net.apply(TimeoutElapsed(Height(1), Round(0), Step.PROPOSE)) == []
    out = net.start()
    assert RequestValidation(Height(1), Round(0), block) in out


def test_start_height_cannot_go_back_or_repeat() -> None:
    net = net_where_proposer_is_not_me()
    _decide_height_one(net)
    # Restarting a decided height would vote on it again and could sign a conflicting vote.
    # Only the shell sends StartHeight, and a height already started is stale, nobody's fault.
    stale = FaultKind.STALE
    before = net.core.snapshot()
    out = net.start(1)
    assert len(out) == 1 and isinstance(out[0], Rejected) and out[0].kind is stale
    assert net.core.snapshot() == before
    net.start(2)
    before = net.core.snapshot()
    out = net.start(2)
    assert len(out) == 1 and isinstance(out[0], Rejected) and out[0].kind is stale
    out = net.start(1)
    assert len(out) == 1 and isinstance(out[0], Rejected) and out[0].kind is stale
    assert net.core.snapshot() == before


def test_start_height_may_jump_ahead() -> None:
    """After block sync the shell starts a height far ahead of the last one the core saw."""
    net = net_where_proposer_is_not_me(7, 0)
    net.start()
    out = net.start(7)
    assert net.core.height == 7 and net.core.round == 0
    assert (7, 0, Step.PROPOSE) in timeouts(out)


def test_late_messages_of_a_decided_height_are_ignored() -> None:
    net = net_where_proposer_is_not_me()
    block = _decide_height_one(net)
    net.start(2)
    before = net.core.snapshot()
    assert net.votes(PRECOMMIT, 1, 0, block, net.others(3)) == []
    assert net.core.snapshot() == before


# ---------------------------------------------------------------------------
# Proposer-based timestamps: the shell's timeliness verdict on a proposal


def test_an_untimely_fresh_proposal_gets_a_nil_prevote_though_its_block_is_valid() -> None:
    net = net_where_proposer_is_not_me()
    net.start()
    v = make_block(1, 0, net.keys[net.proposer(1, 0)].public_key)
    out = net.apply(ProposalReceived(net.proposal(1, 0, v), timely=False))
    assert any(isinstance(a, RequestValidation) for a in out)  # validity is still asked: it is per block
    out = net.apply(ValidityResult(Height(1), block_id(v), True))
    assert my_votes(out, PREVOTE) == [None]
    assert net.core.snapshot().untimely == frozenset({0})
    assert dict(net.core.snapshot().validity)[block_id(v)] is True


def test_the_same_proposal_on_time_gets_our_prevote() -> None:
    net = net_where_proposer_is_not_me()
    net.start()
    v = make_block(1, 0, net.keys[net.proposer(1, 0)].public_key)
    assert my_votes(net.propose(1, 0, v), PREVOTE) == [block_id(v)]
    assert net.core.snapshot().untimely == frozenset()


def test_a_block_untimely_to_us_is_still_decided_by_a_quorum_of_precommits() -> None:
    """Timeliness only gates our prevote: a block the others found timely commits here too."""
    net = net_where_proposer_is_not_me()
    net.start()
    v = make_block(1, 0, net.keys[net.proposer(1, 0)].public_key)
    net.apply(ProposalReceived(net.proposal(1, 0, v), timely=False))
    net.apply(ValidityResult(Height(1), block_id(v), True))
    out = net.votes(PRECOMMIT, 1, 0, v, net.others(3))
    assert [a.block for a in out if isinstance(a, Decide)] == [v]


def test_a_re_proposal_with_a_polka_keeps_its_old_time_and_gets_our_prevote(
    net_proposing_neither_round_0_nor_1: Net,
) -> None:
    """PBTS checks timeliness only for a fresh value (valid_round -1): a re-proposed one carries
    the time of the round it was first proposed in, which some correct validator found timely."""
    net = net_proposing_neither_round_0_nor_1
    net.start()
    v = make_block(1, 0, net.keys[net.proposer(1, 0)].public_key)
    net.apply(ProposalReceived(net.proposal(1, 0, v), timely=False))
    assert my_votes(net.apply(ValidityResult(Height(1), block_id(v), True)), PREVOTE) == [None]
    others = net.others(3)
    net.votes(PREVOTE, 1, 1, None, others[:2])  # f+1 of round 1: we move there
    assert net.core.round == 1
    net.votes(PREVOTE, 1, 0, v, others)  # the polka for v in round 0, seen late
    # Even marked untimely (an old time is what a re-proposal has), it is prevoted.
    out = net.apply(ProposalReceived(net.proposal(1, 1, v, valid_round=0), timely=False))
    assert my_votes(out, PREVOTE) == [block_id(v)]
