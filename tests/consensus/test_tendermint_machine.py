"""Table-driven tests of the pure round machine: pre-state, input, post-state and outputs.

Each row is one rule of Algorithm 1 of "The latest gossip on BFT consensus",
named by its lines, so the table doubles as a set of test vectors: the
machine is a function, and a row is its value at one point. The rows of the
second table are inputs no rule takes in the given state; they must come back
as the no-op transition, with the very same state and nothing to do.
"""

from __future__ import annotations

import ast
import inspect
import re
from dataclasses import replace

import pytest
from consensus_fixtures import CHAIN_ID

from consensus import crypto
from consensus.tendermint import machine
from consensus.tendermint.machine import (
    Decision,
    GetValue,
    InvalidProposal,
    InvalidProposalAndPolkaPrevious,
    NewRound,
    Precommit,
    Prevote,
    Proposal,
    ProposalAndPolkaCurrent,
    ProposalAndPolkaPrevious,
    ProposalAndPrecommitValue,
    Propose,
    ProposeValue,
    StartRound,
    StartTimer,
    TimeoutPrecommit,
    TimeoutPrevote,
    TimeoutPropose,
    Transition,
    apply,
)
from consensus.tendermint.state import RoundState
from consensus.tendermint.types import Step
from consensus.tendermint.votekeeper import PolkaAny, PolkaNil, PrecommitAny, SkipRound
from consensus.transition import compute_block_hash, compute_body_hash
from consensus.types import Block, BlockBody, BlockHeader, Height, PublicKey, Round

EMPTY = BlockBody((), (), (), (), (), None)


def _block(salt: bytes) -> Block:
    header = BlockHeader(
        chain_id=CHAIN_ID,
        height=Height(1),
        round=Round(0),
        parent_hash=crypto.sha256(b"parent"),
        proposer=PublicKey(bytes(32)),
        body_hash=compute_body_hash(EMPTY),
        state_root=crypto.sha256(b"root/" + salt),
        time_ms=1,
    )
    return Block(header, EMPTY)


V = _block(b"v")
W = _block(b"w")
VID = compute_block_hash(V.header)
WID = compute_block_hash(W.header)
R0, R1, R2, R3 = Round(0), Round(1), Round(2), Round(3)


def at(round_: int, step: Step, **fields: object) -> RoundState:
    """A round state of height 1; ``fields`` set the lock, valid value or decision."""
    return replace(RoundState(Height(1), Round(round_), step), **fields)  # type: ignore[arg-type]


PROPOSE, PREVOTE, PRECOMMIT = Step.PROPOSE, Step.PREVOTE, Step.PRECOMMIT
LOCKED_V0 = {"locked_value": V, "locked_round": 0, "valid_value": V, "valid_round": 0}
LOCKED_W0 = {"locked_value": W, "locked_round": 0, "valid_value": W, "valid_round": 0}
LOCKED_W1 = {"locked_value": W, "locked_round": 1, "valid_value": W, "valid_round": 1}

# (label, pre-state, input, post-state, outputs)
RULES: list[tuple[str, RoundState, machine.Input, RoundState, tuple[machine.Output, ...]]] = [
    (
        "L10-L11,L17-L18,L21 round 0, we propose, no valid value: ask for one",
        RoundState.initial(Height(1)),
        NewRound(R0, is_proposer=True),
        at(0, PROPOSE),
        (GetValue(R0), StartTimer(R0, PROPOSE)),
    ),
    (
        "L11,L15-L16,L19,L21 we propose a later round and have a valid value: repropose it",
        at(1, PRECOMMIT, valid_value=V, valid_round=0),
        NewRound(R2, is_proposer=True),
        at(2, PROPOSE, valid_value=V, valid_round=0),
        (Propose(R2, V, 0), StartTimer(R2, PROPOSE)),
    ),
    (
        "L11,L20-L21 not the proposer: only the propose timeout; the lock stays",
        at(1, PREVOTE, **LOCKED_V0),
        NewRound(R3, is_proposer=False),
        at(3, PROPOSE, **LOCKED_V0),
        (StartTimer(R3, PROPOSE),),
    ),
    (
        "L18-L19 getValue() returned: propose it with no proof of lock",
        at(0, PROPOSE),
        ProposeValue(R0, V),
        at(0, PROPOSE),
        (Propose(R0, V, -1),),
    ),
    (
        "L22-L24 a valid proposal, not locked: prevote it",
        at(0, PROPOSE),
        Proposal(R0, V, VID),
        at(0, PREVOTE),
        (Prevote(R0, VID),),
    ),
    (
        "L22-L24 a valid proposal of the value we are locked on: prevote it",
        at(1, PROPOSE, **LOCKED_V0),
        Proposal(R1, V, VID),
        at(1, PREVOTE, **LOCKED_V0),
        (Prevote(R1, VID),),
    ),
    (
        "L22-L23,L26 a valid proposal while locked on another value: prevote nil",
        at(1, PROPOSE, **LOCKED_W0),
        Proposal(R1, V, VID),
        at(1, PREVOTE, **LOCKED_W0),
        (Prevote(R1, None),),
    ),
    (
        "L22,L26 an invalid proposal: prevote nil",
        at(0, PROPOSE),
        InvalidProposal(R0),
        at(0, PREVOTE),
        (Prevote(R0, None),),
    ),
    (
        "L28-L30 a proof of lock from round 1, locked in round 0 on another value: prevote it",
        at(2, PROPOSE, **LOCKED_W0),
        ProposalAndPolkaPrevious(R2, V, VID, 1),
        at(2, PREVOTE, **LOCKED_W0),
        (Prevote(R2, VID),),
    ),
    (
        "L28-L30 an older proof of lock for the value we are locked on: prevote it",
        at(2, PROPOSE, locked_value=V, locked_round=1, valid_value=V, valid_round=1),
        ProposalAndPolkaPrevious(R2, V, VID, 0),
        at(2, PREVOTE, locked_value=V, locked_round=1, valid_value=V, valid_round=1),
        (Prevote(R2, VID),),
    ),
    (
        "L28-L29,L32 a proof of lock older than our lock on another value: prevote nil",
        at(2, PROPOSE, **LOCKED_W1),
        ProposalAndPolkaPrevious(R2, V, VID, 0),
        at(2, PREVOTE, **LOCKED_W1),
        (Prevote(R2, None),),
    ),
    (
        "L28,L32 a proof of lock for an invalid value: prevote nil",
        at(2, PROPOSE),
        InvalidProposalAndPolkaPrevious(R2, 1),
        at(2, PREVOTE),
        (Prevote(R2, None),),
    ),
    (
        "L34-L35 2f+1 prevotes of any kind in prevote: start the prevote timer",
        at(1, PREVOTE),
        PolkaAny(R1),
        at(1, PREVOTE),
        (StartTimer(R1, PREVOTE),),
    ),
    (
        "L36-L41,L42-L43 a polka for the valid proposal in prevote: lock, precommit, valid value",
        at(1, PREVOTE, **LOCKED_W0),
        ProposalAndPolkaCurrent(R1, V, VID),
        at(1, PRECOMMIT, locked_value=V, locked_round=1, valid_value=V, valid_round=1),
        (Precommit(R1, VID),),
    ),
    (
        "L36,L42-L43 the same after we precommitted: only the valid value moves",
        at(1, PRECOMMIT, **LOCKED_W0),
        ProposalAndPolkaCurrent(R1, V, VID),
        at(1, PRECOMMIT, locked_value=W, locked_round=0, valid_value=V, valid_round=1),
        (),
    ),
    (
        "L44-L46 2f+1 nil prevotes in prevote: precommit nil",
        at(0, PREVOTE),
        PolkaNil(R0),
        at(0, PRECOMMIT),
        (Precommit(R0, None),),
    ),
    (
        "L47-L48 2f+1 precommits of any kind, in any step: start the precommit timer",
        at(1, PROPOSE),
        PrecommitAny(R1),
        at(1, PROPOSE),
        (StartTimer(R1, PRECOMMIT),),
    ),
    (
        "L49-L54 a valid proposal with 2f+1 precommits decides, whatever round it is of",
        at(0, PREVOTE, **LOCKED_W0),
        ProposalAndPrecommitValue(R3, V, VID),
        at(0, PREVOTE, decision=V, **LOCKED_W0),
        (Decision(R3, V, VID),),
    ),
    (
        "L55-L56 f+1 of a higher round: start that round",
        at(1, PRECOMMIT),
        SkipRound(R3),
        at(1, PRECOMMIT),
        (StartRound(R3),),
    ),
    (
        "L57-L60 the propose timer of our round in propose: prevote nil",
        at(2, PROPOSE),
        TimeoutPropose(R2),
        at(2, PREVOTE),
        (Prevote(R2, None),),
    ),
    (
        "L61-L64 the prevote timer of our round in prevote: precommit nil",
        at(2, PREVOTE),
        TimeoutPrevote(R2),
        at(2, PRECOMMIT),
        (Precommit(R2, None),),
    ),
    (
        "L65-L67 the precommit timer of our round, in any step: the next round",
        at(2, PREVOTE),
        TimeoutPrecommit(R2),
        at(2, PREVOTE),
        (StartRound(R3),),
    ),
]


@pytest.mark.parametrize(("pre", "input_", "post", "outputs"), [row[1:] for row in RULES], ids=[r[0] for r in RULES])
def test_rule(pre: RoundState, input_: machine.Input, post: RoundState, outputs: tuple[machine.Output, ...]) -> None:
    assert apply(pre, input_) == Transition(post, outputs)


# (why no rule takes it, pre-state, input)
NO_OPS: list[tuple[str, RoundState, machine.Input]] = [
    ("a round that is not higher", at(2, PREVOTE), NewRound(R2, is_proposer=True)),
    ("a value after the propose timer made us prevote (L18 needs propose)", at(0, PREVOTE), ProposeValue(R0, V)),
    ("a value for another round", at(1, PROPOSE), ProposeValue(R0, V)),
    ("a proposal once we prevoted (L22 needs propose)", at(0, PREVOTE), Proposal(R0, V, VID)),
    ("a proposal of another round", at(1, PROPOSE), Proposal(R0, V, VID)),
    ("an invalid proposal once we prevoted", at(0, PRECOMMIT), InvalidProposal(R0)),
    ("a proof of lock from our own round (L28 needs vr < round)", at(1, PROPOSE), ProposalAndPolkaPrevious(R1, V, VID, 1)),
    ("a proof of lock once we prevoted", at(2, PREVOTE), ProposalAndPolkaPrevious(R2, V, VID, 1)),
    ("an invalid proof of lock once we prevoted", at(2, PREVOTE), InvalidProposalAndPolkaPrevious(R2, 1)),
    ("a polka before we prevoted (L36 needs prevote or later)", at(1, PROPOSE), ProposalAndPolkaCurrent(R1, V, VID)),
    ("a polka of another round", at(1, PREVOTE), ProposalAndPolkaCurrent(R0, V, VID)),
    ("a nil polka before we prevoted", at(0, PROPOSE), PolkaNil(R0)),
    ("a nil polka after we precommitted", at(0, PRECOMMIT), PolkaNil(R0)),
    ("any polka after we precommitted (L34 needs prevote)", at(0, PRECOMMIT), PolkaAny(R0)),
    ("any polka of another round", at(1, PREVOTE), PolkaAny(R2)),
    ("precommits of another round", at(1, PRECOMMIT), PrecommitAny(R0)),
    ("a skip to our own round", at(2, PROPOSE), SkipRound(R2)),
    ("a skip to an earlier round", at(2, PROPOSE), SkipRound(R1)),
    ("the propose timer after we prevoted", at(0, PREVOTE), TimeoutPropose(R0)),
    ("the propose timer of an earlier round", at(1, PROPOSE), TimeoutPropose(R0)),
    ("the prevote timer in propose", at(1, PROPOSE), TimeoutPrevote(R1)),
    ("the prevote timer after we precommitted", at(1, PRECOMMIT), TimeoutPrevote(R1)),
    ("the precommit timer of an earlier round", at(2, PROPOSE), TimeoutPrecommit(R1)),
    ("the precommit timer of a later round", at(2, PROPOSE), TimeoutPrecommit(R3)),
    ("after a decision: a timer", at(0, PRECOMMIT, decision=V), TimeoutPrecommit(R0)),
    ("after a decision: a new round", at(0, PRECOMMIT, decision=V), NewRound(R1, is_proposer=False)),
    ("after a decision: another decision", at(0, PRECOMMIT, decision=V), ProposalAndPrecommitValue(R0, W, WID)),
]


@pytest.mark.parametrize(("pre", "input_"), [row[1:] for row in NO_OPS], ids=[r[0] for r in NO_OPS])
def test_no_rule_takes_it(pre: RoundState, input_: machine.Input) -> None:
    transition = apply(pre, input_)
    assert transition == Transition(pre, (), applied=False)
    assert transition.state is pre


def test_every_input_kind_has_a_rule_and_a_no_op() -> None:
    taken = {type(row[2]) for row in RULES}
    refused = {type(row[2]) for row in NO_OPS}
    every = set(machine.Input.__args__)
    assert taken == every
    assert refused == every


def test_every_arm_is_labelled_by_paper_line() -> None:
    """The one ``match`` of ``apply``: each arm names its lines, the last is the bare no-op."""
    source = inspect.getsource(machine)
    lines = source.splitlines()
    (function,) = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef) and n.name == "apply"]
    (match,) = [n for n in ast.walk(function) if isinstance(n, ast.Match)]
    *arms, fallback = match.cases
    for arm in arms:
        head = "\n".join(lines[arm.pattern.lineno - 1 : arm.body[0].lineno - 1])
        assert re.search(r"# .*L\d+", head), head
    assert isinstance(fallback.pattern, ast.MatchAs) and fallback.pattern.pattern is None and fallback.guard is None
