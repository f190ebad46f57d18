"""A deterministic simulation of a Tendermint network, driven by one seed.

Every validator is a ``TendermintCore`` in this process. The harness plays the
shell's part for all of them (see the duties in ``consensus.tendermint.types``):
it signs broadcasts with real Ed25519 keys through the node's own privval guard
(``tdml_node.node.privval``, its records kept in memory),
carries messages over a simulated network, turns ``ScheduleTimeout`` into
timer events on a simulated clock, answers ``RequestValue`` and
``RequestValidation``, and feeds ``StartHeight`` after each ``Decide``.

Everything random (the scenario, delays, drops, duplicates, partitions,
crashes, Byzantine choices) comes from ``random.Random(seed)``, and nothing
iterates over a hash-ordered set, so a seed replays exactly.

The network model is the partially synchronous one of the Tendermint paper:
before the global stabilisation time (GST) messages are delayed arbitrarily,
dropped, duplicated and cut by partitions; from GST on every message between
honest nodes arrives within ``delta_ms`` and nodes are up. The paper's
gossip assumption (a message one honest node has is eventually had by all)
is provided by the nodes themselves, as a real node's gossip does: every
``gossip_ms`` each honest node re-sends the messages of its height that a
peer has not yet received (peers announce what they have, as with CometBFT's
HasVote), and a node that has decided a height a peer is still on sends the
peer the block with its commit certificate (block sync).

Crashes: a crashed node loses its consensus state and restarts with a fresh
core at its last decided height + 1, keeping its decided chain, its privval
record and what it signed at that height, which it re-sends: without that, a
simultaneous restart of more than a third of the power deadlocks (the votes
they signed exist nowhere else and the privval will not sign them again).
Restarts come in two modes (``Scenario.wal_replay``). With a full write-ahead
log every input of the height is replayed into the fresh core, which, being
deterministic, comes back with exactly its old state, lock included; such a
node is as good as one that never crashed, and must never ask its privval for
a conflicting signature. With amnesia the core starts from scratch and forgets
its lock: for safety that is as bad as a Byzantine node that never
double-signs, so amnesia restarts stay inside the fault budget (Byzantine and
crashing power together below a third). The ``restart_all`` family restarts
every validator at once, which is safe only with the full log: seed 513447
run with amnesia shows a conflicting proof of lock after a commit quorum.

A node's gossip seen-cache records only messages its core could use (its
height, or the next, which the core buffers): a message dropped for being too
far ahead must be accepted when it comes again.

Invariants checked on every run (a breach raises ``SimulationFailure``, whose
message names the seed):

- agreement: no two honest nodes decide different blocks at one height;
- the lemma safety rests on, checked on every signature so that a broken lock
  shows even when no fork follows: once precommits for v in round r hold more
  than two thirds of the power, no later round of the height has a proof of
  lock (2f+1 prevotes) for another value, and no honest node that precommitted
  v in round r prevotes another value later (unless it restarted meanwhile and
  so forgot its lock);
- validity: every block an honest node decides is valid;
- certificates: every ``Decide`` carries a commit that ``validate_commit`` accepts;
- no double signing: an honest key never signs two different votes or
  proposals for one (height, round, step), and a core that has not been
  restarted never asks its privval to;
- honest messages are never ``Rejected`` and evidence never names an honest node;
- termination: every honest node decides ``target_height`` heights within
  ``termination_ms`` of GST.
"""

from __future__ import annotations

import dataclasses
import heapq
import os
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from consensus import crypto
from consensus.crypto import Keypair
from consensus.tendermint import (
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
)
from consensus.transition import (
    InvalidCommit,
    compute_block_hash,
    compute_body_hash,
    validate_commit,
)
from consensus.types import (
    PRECOMMIT,
    PREVOTE,
    Block,
    BlockBody,
    BlockHeader,
    CommitCertificate,
    Hash32,
    Height,
    Proposal,
    Round,
    SignedProposal,
    SignedVote,
    Vote,
)
from consensus.validators import ValidatorSet
from tdml_node.node.privval import DoubleSignRefused, PrivValidator

Signed = SignedProposal | SignedVote

# Timeouts scaled down from the defaults: simulated time is free, but each
# round costs events, and the ratio to the network delay is what matters.
SIM_TIMEOUTS = TimeoutConfig(
    propose_ms=400, propose_delta_ms=200, prevote_ms=200, prevote_delta_ms=100, precommit_ms=200, precommit_delta_ms=100
)

EMPTY_BODY = BlockBody((), (), (), (), (), None)
EMPTY_BODY_HASH = compute_body_hash(EMPTY_BODY)
SIM_EPOCH_MS = 1_700_000_000_000
"""Block times: the core never reads them, but every header has one."""

FAMILIES = ("calm", "lossy", "partition", "crash", "byzantine", "chaos", "restart_all", "adversarial", "adversarial")
BYZANTINE_STRATEGIES = ("equivocate", "split", "split", "invalid", "silent", "random", "fake_valid_round")
"""What a Byzantine validator does with what its (honest) core would send.

- equivocate: each vote also in a conflicting version, to a random part of the peers; two proposals;
- split: the lock attack. Per height it picks half the peers and backs the round's value towards
  them (prevote; a precommit to just one of them) and nil towards the rest, trying to make one
  node decide while the others move to the next round, where only their locks keep them safe;
- invalid: proposes blocks the validity oracle rejects and votes for such blocks;
- silent: sends nothing;
- random: a different vote to each peer, sometimes for a later round;
- fake_valid_round: re-proposes a block it saw with a made-up valid round (L28's proof of lock).
"""

def short(message: object) -> str:
    """A one-line description of a proposal or vote for failure messages and traces."""
    if isinstance(message, SignedProposal | SignedVote):
        message = message.proposal if isinstance(message, SignedProposal) else message.vote
    if isinstance(message, Proposal):
        block = compute_block_hash(message.block.header).hex()[:8]
        return f"Proposal(h={message.height} r={message.round} block={block} vr={message.valid_round})"
    if isinstance(message, Vote):
        kind = "prevote" if message.kind == PREVOTE else "precommit"
        target = message.block_hash.hex()[:8] if message.block_hash is not None else "nil"
        return f"{kind}(h={message.height} r={message.round} {target} by {message.validator.hex()[:6]})"
    return repr(message)


class SimulationFailure(AssertionError):
    """An invariant broke; the message carries the seed and how to replay it."""


@cache
def sim_keypair(index: int) -> Keypair:
    """Validator ``index``'s key, the same in every run: deriving keys per seed would cost more than the run."""
    return Keypair.from_seed(crypto.sha256(b"tdml-sim-key/" + index.to_bytes(4, "big")))


# ---------------------------------------------------------------------------
# Scenarios


@dataclass(frozen=True)
class Partition:
    start_ms: int
    end_ms: int
    side: frozenset[int]  # the nodes on one side; the rest are on the other


@dataclass(frozen=True)
class Crash:
    node: int
    at_ms: int
    down_ms: int


@dataclass(frozen=True)
class Scenario:
    seed: int
    family: str
    powers: tuple[int, ...]
    byzantine: tuple[tuple[int, str], ...]  # (node, strategy)
    crashers: tuple[int, ...]
    crashes: tuple[Crash, ...]
    partitions: tuple[Partition, ...]
    slow_links: frozenset[tuple[int, int]]  # (src, dst) links five times slower before GST
    gst_ms: int
    drop: float
    duplicate: float
    max_delay_ms: int  # before GST
    delta_ms: int  # after GST
    value_delay_ms: int  # how long getValue() may take; sometimes longer than the propose timeout
    validation_delay_ms: int  # how long valid(v) may take; sometimes longer than the propose timeout
    target_height: int = 3
    gossip_ms: int = 250
    sync_after_ms: int = 0  # how long a peer must be seen behind before it is sent blocks
    # How a crashed node comes back: True replays its whole input log of the
    # current height into the fresh core (a full WAL, as CometBFT's), so it keeps
    # its lock; False restores only its signed messages, so it forgets its lock.
    wal_replay: bool = False
    termination_ms: int = 60_000

    @property
    def n(self) -> int:
        return len(self.powers)

    def describe(self) -> str:
        parts = [f"family={self.family}", f"n={self.n}", f"powers={list(self.powers)}", f"gst={self.gst_ms}ms"]
        if self.byzantine:
            parts.append(f"byzantine={dict(self.byzantine)}")
        if self.crashes:
            parts.append(f"crashes={[(c.node, c.at_ms, c.down_ms) for c in self.crashes]}")
            parts.append("restart=full-wal" if self.wal_replay else "restart=amnesia")
        if self.partitions:
            parts.append(f"partitions={[(p.start_ms, p.end_ms, sorted(p.side)) for p in self.partitions]}")
        if self.drop or self.duplicate:
            parts.append(f"drop={self.drop:.2f} dup={self.duplicate:.2f}")
        return " ".join(parts)


def make_scenario(seed: int, family: str | None = None) -> Scenario:
    """The scenario of a seed. Its family, unless given, is also drawn from the seed."""
    rng = random.Random(seed)
    family = family or FAMILIES[seed % len(FAMILIES)]
    if family == "adversarial":
        n = rng.randint(4, 5)  # a split is cheapest with few validators
        unequal = rng.random() < 0.2
    else:
        n = rng.randint(8, 10) if rng.random() < 0.15 else rng.randint(4, 7)
        unequal = rng.random() < 0.5
    powers = tuple(rng.randint(1, 10) if unequal else 1 for _ in range(n))
    total = sum(powers)

    # Faulty nodes (Byzantine or crashing) together hold less than a third of the power.
    faulty: list[int] = []
    if family in ("crash", "byzantine", "chaos", "adversarial"):
        order = list(range(n))
        rng.shuffle(order)
        for i in order:
            if 3 * (sum(powers[j] for j in faulty) + powers[i]) < total:
                faulty.append(i)
        if family not in ("chaos", "adversarial"):
            faulty = faulty[: rng.randint(1, max(1, len(faulty)))] if faulty else []

    byzantine: list[tuple[int, str]] = []
    crashers: list[int] = []
    for i in faulty:
        if family == "adversarial":
            # The lock attackers, with the whole fault budget and a hostile network.
            byzantine.append((i, rng.choice(("split", "split", "fake_valid_round", "equivocate"))))
        elif family == "byzantine" or (family == "chaos" and rng.random() < 0.6):
            byzantine.append((i, rng.choice(BYZANTINE_STRATEGIES)))
        else:
            crashers.append(i)

    calm = family == "calm"
    gst = 0 if calm else rng.randint(500, 4000) if rng.random() < 0.7 else rng.randint(4000, 10_000)
    hostile = ("lossy", "chaos", "partition", "restart_all", "adversarial")
    drop = rng.uniform(0.05, 0.4) if family in hostile else 0.0
    duplicate = rng.uniform(0.0, 0.2) if family in ("lossy", "chaos") else 0.0
    max_delay = rng.randint(5, 60) if calm else rng.randint(50, 1500)
    delta = rng.randint(5, 60) if calm else rng.randint(10, 150)

    slow_links = frozenset(
        (a, b) for a in range(n) for b in range(n) if a != b and not calm and rng.random() < 0.15
    )
    partitions: list[Partition] = []
    if family in ("partition", "chaos") or (family == "adversarial" and rng.random() < 0.5):
        for _ in range(rng.randint(1, 2)):
            start = rng.randint(0, max(1, gst - 200))
            end = rng.randint(start + 100, gst)
            side = frozenset(i for i in range(n) if rng.random() < 0.5)
            partitions.append(Partition(start, end, side))

    crashes: list[Crash] = []
    if family == "restart_all":
        # Every validator crashes at once, up to three times: beyond the fault
        # budget, survivable only because restarts replay their own signed
        # messages (see ``Simulation._restart``).
        crashers = list(range(n))
        at = 0
        for _ in range(rng.randint(1, 3)):
            at = rng.randint(at + 50, at + 600)
            down = rng.randint(10, 300)
            crashes += [Crash(i, at, down) for i in range(n)]
            at += down
        gst = max(gst, at + 1)
    for i in crashers if family != "restart_all" else ():
        at = 0
        for _ in range(rng.randint(1, 2)):
            if at >= gst - 60:
                break  # every node is up again by GST
            at = rng.randint(at, gst - 60)
            down = rng.randint(50, gst - at)
            crashes.append(Crash(i, at, down))
            at += down + 1

    return Scenario(
        seed=seed,
        family=family,
        powers=powers,
        byzantine=tuple(byzantine),
        crashers=tuple(crashers),
        crashes=tuple(crashes),
        partitions=tuple(partitions),
        slow_links=slow_links,
        gst_ms=gst,
        drop=drop,
        duplicate=duplicate,
        max_delay_ms=max_delay,
        delta_ms=delta,
        value_delay_ms=rng.choice((5, 50, 700)),
        validation_delay_ms=rng.choice((5, 30, 30, 600)),
        target_height=rng.randint(3, 5),
        sync_after_ms=rng.choice((0, 1000, 3000)) if family == "adversarial" else 0,
        # Restarting everyone at once is safe only if they keep their locks.
        wal_replay=family == "restart_all" or rng.random() < 0.5,
    )


# ---------------------------------------------------------------------------
# The privval guard: the node's own (``tdml_node.node.privval``), its records in memory


class MemoryRecords:
    """The privval's records as the chain store's metadata holds them, in memory; they survive a crash."""

    def __init__(self) -> None:
        self._meta: dict[bytes, bytes] = {}

    def get_meta(self, name: bytes) -> bytes | None:
        return self._meta.get(name)

    def write_meta_synced(self, values: dict[bytes, bytes], delete: Iterable[bytes] = ()) -> None:
        for name in delete:
            self._meta.pop(name, None)
        self._meta.update(values)

    def iter_meta(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        for name in sorted(self._meta):
            if name.startswith(prefix):
                yield name, self._meta[name]


@dataclass
class PrivVal:
    """The node's double-sign guard over in-memory records; a refusal is counted and answered with None."""

    keypair: Keypair
    chain_id: str
    refusals: int = 0
    guard: PrivValidator = field(init=False)

    def __post_init__(self) -> None:
        self.guard = PrivValidator(MemoryRecords(), self.keypair, self.chain_id)

    def sign(self, message: Proposal | Vote) -> Signed | None:
        try:
            if isinstance(message, Proposal):
                return SignedProposal(message, self.guard.sign_proposal(message))
            return SignedVote(message, self.guard.sign_vote(message))
        except DoubleSignRefused:
            self.refusals += 1
            return None

    def signed_at(self, height: int) -> list[Signed]:
        """Everything signed at ``height``: what a restarted node re-sends (the records double as the WAL)."""
        return self.guard.replay(height)


# ---------------------------------------------------------------------------
# Nodes and the network


def _event_height(event: Event) -> int:
    if isinstance(event, ProposalReceived | VoteReceived):
        return _height_of(event.signed)
    return -1


def _height_of(signed: Signed) -> int:
    return signed.proposal.height if isinstance(signed, SignedProposal) else signed.vote.height


@dataclass
class Envelope:
    id: int
    signed: Signed
    sender: int

    @property
    def height(self) -> int:
        return _height_of(self.signed)


@dataclass
class Sync:
    """Block sync: a decided block and its commit certificate."""

    height: int
    block: Block
    commit: CommitCertificate


@dataclass
class SimNode:
    index: int
    keypair: Keypair
    privval: PrivVal
    strategy: str | None  # None for an honest node
    core: TendermintCore
    up: bool = True
    incarnation: int = 0
    chain: list[Block] = field(default_factory=list)  # decided blocks, index h - 1
    seen: set[int] = field(default_factory=set)
    log: dict[int, dict[int, Envelope]] = field(default_factory=dict)  # height -> id -> message
    sync_sent: dict[tuple[int, int], int] = field(default_factory=dict)  # (peer, height) -> time
    behind_since: dict[tuple[int, int], int] = field(default_factory=dict)  # (peer, height) -> time
    inputs: list[Event] = field(default_factory=list)  # every input of the current height: the WAL
    replaying: bool = False
    proposals_seen: dict[int, list[Block]] = field(default_factory=dict)  # height -> blocks (Byzantine use)
    split_groups: dict[int, list[int]] = field(default_factory=dict)  # height -> peers backed ("split")
    # (height, round) -> (value the backed peers got, value the others got), for "equivocate"
    two_faced: dict[tuple[int, int], tuple[Hash32, Hash32]] = field(default_factory=dict)

    @property
    def honest(self) -> bool:
        return self.strategy is None

    @property
    def next_height(self) -> int:
        return len(self.chain) + 1


@dataclass
class Stats:
    events: int = 0
    deliveries: int = 0
    max_round: int = 0
    refusals: int = 0
    syncs: int = 0
    evidence: int = 0
    reproposals: int = 0  # honest proposals of a valid value from an earlier round (L15-L16)
    late_decisions: int = 0  # honest decisions in a round after 0
    end_ms: int = 0


# Event kinds in the queue.
_DELIVER, _TIMER, _VALUE, _VALIDITY, _GOSSIP, _CRASH, _RESTART, _SYNC = range(8)


class Simulation:
    def __init__(
        self, scenario: Scenario, *, trace: Callable[[str], None] | None = None, judge_all: bool = False
    ) -> None:
        self.sc = scenario
        # Hold Byzantine nodes' decisions to agreement too: their cores are
        # honest, only what they send is not, so this shows the harness catching
        # a break of safety when the fault budget is exceeded on purpose.
        self.judge_all = judge_all
        self.rng = random.Random(scenario.seed ^ 0x5EED)
        self.chain_id = f"sim-{scenario.seed}"
        self.trace = trace
        self.now = 0
        self._queue: list[tuple[int, int, int, Any]] = []
        self._seq = 0
        self._ids: dict[Signed, int] = {}
        self.stats = Stats()
        byzantine = dict(scenario.byzantine)
        keys = [sim_keypair(i) for i in range(scenario.n)]
        self.validators = ValidatorSet.of((kp.public_key, p) for kp, p in zip(keys, scenario.powers, strict=True))
        self.index_of = {kp.public_key: i for i, kp in enumerate(keys)}
        self.genesis_hash = crypto.sha256(b"sim-genesis/" + self.chain_id.encode())
        self.nodes = [
            SimNode(
                index=i,
                keypair=kp,
                privval=PrivVal(kp, self.chain_id),
                strategy=byzantine.get(i),
                core=TendermintCore(self.chain_id, kp.public_key, SIM_TIMEOUTS),
            )
            for i, kp in enumerate(keys)
        ]
        self.valid_blocks: set[bytes] = set()
        self.decided: dict[int, tuple[Hash32, int]] = {}  # height -> (block hash, first honest decider)
        self.signed_by_honest: dict[tuple[int, int, int, int], Proposal | Vote] = {}
        self._verified_certs: set[CommitCertificate] = set()
        self._commits: dict[tuple[int, int], CommitCertificate] = {}  # (node, height) -> its commit
        # Every vote signed by anyone: height -> (round, kind) -> value -> signer indices.
        self.ledger: dict[int, dict[tuple[int, int], dict[Hash32 | None, set[int]]]] = {}
        self.restarted_in: set[tuple[int, int]] = set()  # (node, height): forgot its lock at that height
        self._block_salt = 0

    # ------------------------------------------------------------- plumbing

    def fail(self, what: str) -> SimulationFailure:
        return SimulationFailure(
            f"seed {self.sc.seed}: {what} at t={self.now}ms [{self.sc.describe()}]; "
            f"replay with TDML_SIM_SEED={self.sc.seed} pytest tests/consensus/test_simulation.py -k replay -s"
        )

    def _push(self, at: int, kind: int, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, kind, payload))

    def _log(self, text: str) -> None:
        if self.trace is not None:
            self.trace(f"{self.now:>7} {text}")

    def _envelope(self, signed: Signed, sender: int) -> Envelope:
        ident = self._ids.get(signed)
        if ident is None:
            ident = self._ids[signed] = len(self._ids)
        return Envelope(ident, signed, sender)

    # ----------------------------------------------------------------- run

    def run(self) -> Stats:
        sc = self.sc
        for c in sc.crashes:
            self._push(c.at_ms, _CRASH, c.node)
            self._push(c.at_ms + c.down_ms, _RESTART, c.node)
        for node in self.nodes:
            self._push(self.rng.randint(0, sc.gossip_ms), _GOSSIP, node.index)
            self._feed(node, StartHeight(Height(1), self.validators))
        deadline = sc.gst_ms + sc.termination_ms
        honest = [n for n in self.nodes if n.honest]
        while self._queue:
            at, _, kind, payload = heapq.heappop(self._queue)
            if at > deadline:
                break
            self.now = at
            self.stats.events += 1
            self._dispatch(kind, payload)
            if all(len(n.chain) >= sc.target_height for n in honest):
                break
        self.stats.end_ms = self.now
        lagging = [(n.index, len(n.chain)) for n in honest if len(n.chain) < sc.target_height]
        if lagging:
            rounds = {n.index: (n.core.height, n.core.round, n.core.step.label) for n in honest}
            raise self.fail(f"no termination: (node, decided heights) {lagging}; (height, round, step) {rounds}")
        return self.stats

    def _dispatch(self, kind: int, payload: Any) -> None:
        if kind == _DELIVER:
            dst, env = payload
            self._deliver(self.nodes[dst], env)
        elif kind == _TIMER:
            index, incarnation, event = payload
            node = self.nodes[index]
            if node.up and node.incarnation == incarnation:
                self._feed(node, event)
        elif kind in (_VALUE, _VALIDITY):
            index, incarnation, event = payload
            node = self.nodes[index]
            if node.up and node.incarnation == incarnation:
                self._feed(node, event)
        elif kind == _GOSSIP:
            node = self.nodes[payload]
            self._gossip(node)
            self._push(self.now + self.sc.gossip_ms, _GOSSIP, payload)
        elif kind == _CRASH:
            node = self.nodes[payload]
            node.up = False
            node.incarnation += 1
            self._log(f"n{node.index} crashes at height {node.next_height}")
        elif kind == _RESTART:
            self._restart(self.nodes[payload])
        elif kind == _SYNC:
            dst, sync = payload
            self._on_sync(self.nodes[dst], sync)

    def _restart(self, node: SimNode) -> None:
        node.up = True
        node.incarnation += 1
        node.core = TendermintCore(self.chain_id, node.keypair.public_key, SIM_TIMEOUTS)
        node.seen = set()
        node.log = {}
        node.sync_sent = {}
        node.behind_since = {}
        logged = node.inputs
        node.inputs = []
        if self.sc.wal_replay and logged and isinstance(logged[0], StartHeight) and logged[0].height == node.next_height:
            # Full WAL: the core is deterministic, so replaying every input of the
            # height rebuilds exactly the state it had, lock included. What it
            # broadcast then was sent already (and is re-sent below).
            self._log(f"n{node.index} restarts at height {node.next_height}, replaying {len(logged)} inputs")
            node.replaying = True
            for event in logged:
                self._feed(node, event)
            node.replaying = False
        else:
            # Amnesia: a fresh core that has forgotten its lock.
            self.restarted_in.add((node.index, node.next_height))
            self._log(f"n{node.index} restarts at height {node.next_height}")
            self._feed(node, StartHeight(Height(node.next_height), self.validators))
        # Re-feed and re-send every message signed at this height. A fresh core
        # starts at round 0, where the privval refuses what it would sign again;
        # if more than a third of the power restarts together, the votes they
        # signed before the crash exist nowhere else, no quorum can form without
        # them and nothing says which round to skip to (L55): the chain
        # deadlocks. Re-sending only the last signed message is not enough (the
        # prevote before a precommit is lost the same way).
        for signed in node.privval.signed_at(node.next_height):
            env = self._envelope(signed, node.index)
            node.log.setdefault(env.height, {})[env.id] = env
            self._push(self.now, _DELIVER, (node.index, env))
            for peer in self.nodes:
                if peer is not node:
                    self._send(node, peer.index, env)

    # ------------------------------------------------------------ the shell

    def _feed(self, node: SimNode, event: Event) -> list[Action]:
        actions = self._apply(node, event)
        self._carry_out(node, actions)
        return actions

    def _apply(self, node: SimNode, event: Event) -> list[Action]:
        """Log the input (the write-ahead log), then apply it."""
        if isinstance(event, StartHeight):
            # A new height's log starts with it, followed by the next-height
            # messages the core buffered before it (it replays them on start).
            carried = [e for e in node.inputs if _event_height(e) == event.height]
            node.inputs = [event, *carried]
        else:
            node.inputs.append(event)
        return node.core.apply(event)

    def _carry_out(self, node: SimNode, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Broadcast):
                if not node.replaying:  # a replayed broadcast was signed and sent before the crash
                    self._broadcast(node, action.message)
            elif isinstance(action, ScheduleTimeout):
                event = TimeoutElapsed(action.height, action.round, action.step)
                self._push(self.now + action.duration_ms, _TIMER, (node.index, node.incarnation, event))
                self.stats.max_round = max(self.stats.max_round, action.round)
            elif isinstance(action, RequestValue):
                block = self._make_block(node, action.height, action.round, valid=node.strategy != "invalid")
                delay = self.rng.randint(0, self.sc.value_delay_ms)
                event_v = ValueReady(action.height, action.round, block)
                self._push(self.now + delay, _VALUE, (node.index, node.incarnation, event_v))
            elif isinstance(action, RequestValidation):
                block = action.block
                ok = self._is_valid(node, block)
                node.proposals_seen.setdefault(action.height, []).append(block)
                result = ValidityResult(action.height, compute_block_hash(block.header), ok)
                delay = self.rng.randint(0, self.sc.validation_delay_ms)
                self._push(self.now + delay, _VALIDITY, (node.index, node.incarnation, result))
            elif isinstance(action, Decide):
                self._on_decide(node, action.height, action.block, action.commit, synced=False)
            elif isinstance(action, EvidenceFound):
                self.stats.evidence += 1
                a, b = action.evidence.vote_a, action.evidence.vote_b
                if self.trace is not None:
                    self._log(f"n{node.index} finds equivocation {short(a)} / {short(b)}")
                offender = self.index_of[a.vote.validator]
                if node.honest and self.nodes[offender].honest:
                    raise self.fail(f"n{node.index} found evidence against honest n{offender}: {short(a)} / {short(b)}")
                if a.vote == b.vote or (a.vote.kind, a.vote.height, a.vote.round) != (
                    b.vote.kind,
                    b.vote.height,
                    b.vote.round,
                ):
                    raise self.fail(f"malformed equivocation evidence {short(a)} / {short(b)}")
            elif isinstance(action, Rejected):
                pass  # judged in _deliver, which knows who sent the message

    def _is_valid(self, node: SimNode, block: Block) -> bool:
        """The validity oracle: made by the honest builder, on this node's chain."""
        h = block.header.height
        if not 1 <= h <= len(node.chain) + 1:
            return False
        parent = self.genesis_hash if h == 1 else compute_block_hash(node.chain[h - 2].header)
        return compute_block_hash(block.header) in self.valid_blocks and block.header.parent_hash == parent

    def _make_block(self, node: SimNode, height: int, round_: int, *, valid: bool) -> Block:
        self._block_salt += 1
        parent = self.genesis_hash if height == 1 else compute_block_hash(node.chain[height - 2].header)
        root = crypto.sha256(b"%d/%d/%d/%d/%d" % (self.sc.seed, height, round_, node.index, self._block_salt))
        header = BlockHeader(
            chain_id=self.chain_id,
            height=Height(height),
            round=Round(round_),
            parent_hash=parent,
            proposer=node.keypair.public_key,
            body_hash=EMPTY_BODY_HASH,
            state_root=root,
            time_ms=SIM_EPOCH_MS + 1000 * height + round_,
        )
        if valid:
            self.valid_blocks.add(compute_block_hash(header))
        return Block(header, EMPTY_BODY)

    def _on_decide(self, node: SimNode, height: int, block: Block, commit: CommitCertificate, *, synced: bool) -> None:
        if height != node.next_height:
            raise self.fail(f"n{node.index} decided height {height} while at {node.next_height}")
        block_hash = compute_block_hash(block.header)
        if commit.block_hash != block_hash or commit.height != height:
            raise self.fail(f"n{node.index}'s commit is not for the block it decided at height {height}")
        self._check_commit(commit, block_hash)
        if node.honest or self.judge_all:
            if node.honest and not self._is_valid(node, block):
                raise self.fail(f"validity: honest n{node.index} decided an invalid block at height {height}")
            first = self.decided.get(height)
            if first is None:
                self.decided[height] = (block_hash, node.index)
            elif first[0] != block_hash:
                raise self.fail(
                    f"agreement: n{first[1]} and n{node.index} decided different blocks at height {height}"
                )
        node.chain.append(block)
        if node.honest and commit.round > 0:
            self.stats.late_decisions += 1
        self._commits[(node.index, height)] = commit
        node.log.pop(height, None)
        node.proposals_seen.pop(height, None)
        self._log(f"n{node.index} decides height {height} round {commit.round}{' (sync)' if synced else ''}")
        self._feed(node, StartHeight(Height(height + 1), self.validators))

    def _check_commit(self, commit: CommitCertificate, block_hash: Hash32) -> None:
        if commit in self._verified_certs:
            return
        try:
            validate_commit(commit, self.validators, self.chain_id, commit.height, block_hash)
        except InvalidCommit as exc:
            raise self.fail(f"a decision's commit certificate is invalid: {exc}") from exc
        self._verified_certs.add(commit)

    # ---------------------------------------------------------- messaging

    def _broadcast(self, node: SimNode, message: Proposal | Vote) -> None:
        if not node.honest:
            self._byzantine_broadcast(node, message)
            return
        signed = node.privval.sign(message)
        if signed is None:
            self.stats.refusals += 1
            if node.incarnation == 0 or self.sc.wal_replay:
                # Only a core that forgot what it signed (an amnesia restart) may ask.
                raise self.fail(
                    f"n{node.index}'s core asked to sign a conflicting {short(message)} "
                    f"({'after a full WAL replay' if node.incarnation else 'without a restart'})"
                )
            self._log(f"n{node.index} privval refuses {short(message)}")
            return
        self._record_signature(node, message)
        if self.trace is not None:
            self._log(f"n{node.index} signs {short(message)}")
        if isinstance(message, Vote):
            self._note_vote(node.index, message)
        if isinstance(message, Proposal) and message.valid_round >= 0:
            self.stats.reproposals += 1
        env = self._envelope(signed, node.index)
        node.log.setdefault(env.height, {})[env.id] = env
        self._push(self.now, _DELIVER, (node.index, env))
        for peer in self.nodes:
            if peer is not node:
                self._send(node, peer.index, env)

    def _record_signature(self, node: SimNode, message: Proposal | Vote) -> None:
        key = (node.index, message.height, message.round, Step.of_message(message))
        prior = self.signed_by_honest.setdefault(key, message)
        if prior != message:
            raise self.fail(f"honest n{node.index} signed two different messages at {key[1:]}: {short(prior)} / {short(message)}")

    def _note_vote(self, index: int, vote: Vote) -> None:
        book = self.ledger.setdefault(vote.height, {})
        book.setdefault((vote.round, vote.kind), {}).setdefault(vote.block_hash, set()).add(index)
        if vote.kind == PRECOMMIT or vote.block_hash is not None:
            self._check_locks(vote.height)

    def _power(self, signers: set[int]) -> int:
        return sum(self.sc.powers[i] for i in signers)

    def _check_locks(self, height: int) -> None:
        book = self.ledger[height]
        total = sum(self.sc.powers)
        for (r, kind), values in book.items():
            if kind != PRECOMMIT:
                continue
            for v, committers in values.items():
                if v is None or 3 * self._power(committers) <= 2 * total:
                    continue
                for (r2, kind2), later in book.items():
                    if kind2 != PREVOTE or r2 <= r:
                        continue
                    for w, prevoters in later.items():
                        if w is None or w == v:
                            continue
                        if 3 * self._power(prevoters) > 2 * total:
                            raise self.fail(
                                f"lock: a proof of lock for {w.hex()[:8]} in round {r2} after a commit quorum "
                                f"for {v.hex()[:8]} in round {r} at height {height}"
                            )
                        for i in sorted(prevoters & committers):
                            if self.nodes[i].honest and (i, height) not in self.restarted_in:
                                raise self.fail(
                                    f"lock: honest n{i} precommitted {v.hex()[:8]} in round {r}, which has a commit "
                                    f"quorum, then prevoted {w.hex()[:8]} in round {r2} at height {height}"
                                )

    def _send(self, src: SimNode, dst: int, env: Envelope | Sync) -> None:
        sc = self.sc
        now = self.now
        if now < sc.gst_ms:
            for p in sc.partitions:
                if p.start_ms <= now < p.end_ms and ((src.index in p.side) != (dst in p.side)):
                    return
            if self.rng.random() < sc.drop:
                return
            delay = self.rng.randint(1, sc.max_delay_ms)
            if (src.index, dst) in sc.slow_links:
                delay *= 5
        else:
            delay = self.rng.randint(1, sc.delta_ms)
        kind = _SYNC if isinstance(env, Sync) else _DELIVER
        self._push(now + delay, kind, (dst, env))
        if now < sc.gst_ms and self.rng.random() < sc.duplicate:
            self._push(now + self.rng.randint(1, sc.max_delay_ms), kind, (dst, env))

    def _deliver(self, node: SimNode, env: Envelope) -> None:
        if not node.up:
            return
        if env.height not in (node.next_height, node.next_height + 1):
            # The core drops it (it keeps only this height and buffers the next), so
            # it must not enter the seen-cache either: it has to come again later.
            return
        if env.id in node.seen and self.rng.random() >= self.sc.duplicate:
            # The gossip layer's seen-cache; a few duplicates slip through to exercise the core's own dedupe.
            return
        node.seen.add(env.id)
        self.stats.deliveries += 1
        signed = env.signed
        event: Event = ProposalReceived(signed) if isinstance(signed, SignedProposal) else VoteReceived(signed)
        actions = self._apply(node, event)
        rejected = [f"{a.kind.value}: {a.reason}" for a in actions if isinstance(a, Rejected)]
        if rejected and self.nodes[env.sender].honest:
            raise self.fail(f"n{node.index} rejected honest n{env.sender}'s message: {rejected}")
        if not rejected:
            node.log.setdefault(env.height, {})[env.id] = env
        self._carry_out(node, actions)

    def _gossip(self, node: SimNode) -> None:
        if not node.up or not node.honest:
            return
        h = node.next_height
        mine = node.log.get(h, {})
        for peer in self.nodes:
            if peer is node or not peer.up:
                continue
            if peer.next_height == h:
                for ident, env in mine.items():
                    if ident not in peer.seen:
                        self._send(node, peer.index, env)
            elif peer.next_height < h:
                ph = peer.next_height
                since = node.behind_since.setdefault((peer.index, ph), self.now)
                if self.now - since < self.sc.sync_after_ms:
                    continue
                last = node.sync_sent.get((peer.index, ph))
                if last is None or self.now - last >= 4 * self.sc.gossip_ms:
                    node.sync_sent[(peer.index, ph)] = self.now
                    block = node.chain[ph - 1]
                    cert = self._commit_of(node, ph)
                    if cert is not None:
                        self._send(node, peer.index, Sync(ph, block, cert))

    def _commit_of(self, node: SimNode, height: int) -> CommitCertificate | None:
        return self._commits.get((node.index, height))

    def _on_sync(self, node: SimNode, sync: Sync) -> None:
        if not node.up or sync.height != node.next_height:
            return
        self.stats.syncs += 1
        self._on_decide(node, sync.height, sync.block, sync.commit, synced=True)

    # -------------------------------------------------------- Byzantine

    def _byzantine_broadcast(self, node: SimNode, message: Proposal | Vote) -> None:
        strategy = node.strategy
        peers = [p.index for p in self.nodes if p is not node]
        if strategy == "silent":
            return
        if isinstance(message, Proposal):
            if strategy == "split":
                # Fresh values, never the valid value: what tests the others' locks.
                a = self._make_block(node, message.height, message.round, valid=True)
                b = self._make_block(node, message.height, message.round, valid=True)
                fresh = dataclasses.replace(message, block=a, valid_round=-1)
                self._split_send(node, peers, fresh, dataclasses.replace(fresh, block=b))
                return
            if strategy == "equivocate":
                other = self._make_block(node, message.height, message.round, valid=True)
                alt = dataclasses.replace(message, block=other, valid_round=-1)
                group = self._group(node, message.height, peers)
                self._sign_and_send(node, group, message, self_too=True)
                self._sign_and_send(node, [p for p in peers if p not in group], alt, self_too=False)
                node.two_faced[(message.height, message.round)] = (
                    compute_block_hash(message.block.header),
                    compute_block_hash(other.header),
                )
                return
            if strategy == "fake_valid_round" and message.round > 0:
                seen = node.proposals_seen.get(message.height) or [message.block]
                block = self.rng.choice(seen)
                vr = self.rng.randint(0, message.round - 1)
                self._sign_and_send(node, peers, dataclasses.replace(message, block=block, valid_round=vr), self_too=True)
                return
            self._sign_and_send(node, peers, message, self_too=True)
            return
        # Votes.
        if strategy == "split":
            self._split_vote(node, peers, message)
        elif strategy == "equivocate":
            group = self._group(node, message.height, peers)
            faces = node.two_faced.get((message.height, message.round))
            vote_a: Vote
            vote_b: Vote
            if faces is not None:
                # Back each half's proposal towards that half: two quorums may form
                # if the quorum arithmetic is wrong.
                vote_a = dataclasses.replace(message, block_hash=faces[0])
                vote_b = dataclasses.replace(message, block_hash=faces[1])
            else:
                vote_a = message
                vote_b = dataclasses.replace(message, block_hash=self._other_hash(node, message.height, message.block_hash))
            self._sign_and_send(node, group, vote_a, self_too=True)
            self._sign_and_send(node, [p for p in peers if p not in group], vote_b, self_too=False)
        elif strategy == "invalid":
            bad = self._make_block(node, message.height, message.round, valid=False)
            forged = dataclasses.replace(message, block_hash=compute_block_hash(bad.header))
            self._sign_and_send(node, peers, message, self_too=True, peers_too=False)
            self._sign_and_send(node, peers, forged, self_too=False)
        elif strategy == "random":
            for peer in peers:
                choice = self.rng.random()
                vote = message
                if choice < 0.4:
                    vote = dataclasses.replace(message, block_hash=self._other_hash(node, message.height, message.block_hash))
                elif choice < 0.5:
                    vote = dataclasses.replace(message, round=Round(message.round + self.rng.randint(1, 3)))
                self._sign_and_send(node, [peer], vote, self_too=False)
            self._sign_and_send(node, peers, message, self_too=True, peers_too=False)
        else:
            self._sign_and_send(node, peers, message, self_too=True)

    def _group(self, node: SimNode, height: int, peers: list[int]) -> list[int]:
        """The half of the peers a two-faced node favours at ``height`` (fixed for the height)."""
        group = node.split_groups.get(height)
        if group is None:
            shuffled = list(peers)
            self.rng.shuffle(shuffled)
            group = node.split_groups[height] = shuffled[: max(1, len(shuffled) // 2)]
        return group

    def _split_vote(self, node: SimNode, peers: list[int], message: Vote) -> None:
        group = self._group(node, message.height, peers)
        proposal = node.core.get_proposal(message.round)
        target = compute_block_hash(proposal.proposal.block.header) if proposal else message.block_hash
        if target is None:
            self._sign_and_send(node, peers, message, self_too=True)
            return
        backed = dataclasses.replace(message, block_hash=target)
        nil = dataclasses.replace(message, block_hash=None)
        favoured = group if message.kind == PREVOTE else [self.rng.choice(group)]
        self._sign_and_send(node, peers, message, self_too=True, peers_too=False)
        self._sign_and_send(node, favoured, backed, self_too=False)
        self._sign_and_send(node, [p for p in peers if p not in favoured], nil, self_too=False)

    def _other_hash(self, node: SimNode, height: int, current: Hash32 | None) -> Hash32 | None:
        seen = [compute_block_hash(b.header) for b in node.proposals_seen.get(height, [])]
        options: list[Hash32 | None] = [h for h in seen if h != current]
        if current is not None:
            options.append(None)
        if not options:
            options.append(crypto.sha256(b"junk/%d" % self.rng.randint(0, 1 << 30)))
        return self.rng.choice(options)

    def _sign(self, node: SimNode, message: Proposal | Vote) -> Signed:
        if self.trace is not None:
            self._log(f"n{node.index} ({node.strategy}) signs {short(message)}")
        if isinstance(message, Vote):
            self._note_vote(node.index, message)
        if isinstance(message, Proposal):
            return SignedProposal(message, node.keypair.sign_value(crypto.DOMAIN_PROPOSAL, self.chain_id, message))
        return SignedVote(message, node.keypair.sign_value(crypto.DOMAIN_VOTE, self.chain_id, message))

    def _sign_and_send(
        self, node: SimNode, peers: list[int], message: Proposal | Vote, *, self_too: bool, peers_too: bool = True
    ) -> None:
        env = self._envelope(self._sign(node, message), node.index)
        if self_too:
            self._push(self.now, _DELIVER, (node.index, env))
        if peers_too:
            for peer in peers:
                self._send(node, peer, env)

    def _split_send(self, node: SimNode, peers: list[int], a: Proposal | Vote, b: Proposal | Vote) -> None:
        shuffled = list(peers)
        self.rng.shuffle(shuffled)
        cut = self.rng.randint(0, len(shuffled))
        self._sign_and_send(node, shuffled[:cut], a, self_too=True)
        self._sign_and_send(node, shuffled[cut:], b, self_too=False)


def run_seed(seed: int, *, family: str | None = None, trace: Callable[[str], None] | None = None) -> Stats:
    """Run one seed's scenario and check every invariant; raises ``SimulationFailure``."""
    return Simulation(make_scenario(seed, family), trace=trace).run()


def seeds_from_env(default: int) -> int:
    """How many seeds the seed sweep runs: ``TDML_SIM_SEEDS`` or ``default``."""
    return int(os.environ.get("TDML_SIM_SEEDS", default))
