"""The duties alone, with fakes around them: what a node trains, checks and judges, and what it gossips.

The duties see the node through ``DutyContext``; here every collaborator
is a stand-in: a fixed chain view (a real ledger state with a job in it),
a network that records what is sent, seams that return canned units and
check results, an executor that answers re-checks as told. Spawned tasks
are run to the end by ``settle``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest
from sim.harness import InlineWorker

from consensus import crypto, pipeline
from consensus.crypto import Keypair
from consensus.state import LedgerState, get_validator_set
from consensus.transition import make_genesis_state
from consensus.types import (
    FAILURE_NONE,
    FAILURE_REPLAY,
    ExecutionProfile,
    FalsePass,
    FalseVerdict,
    Hash32,
    JobSpec,
    JobState,
    Signature,
    SignedVerdict,
    SignedWorkSubmission,
    Verdict,
    WorkFraud,
    WorkSubmission,
)
from consensus.validators import ValidatorSet
from consensus.work import (
    PASSED,
    CheckResult,
    TrainedUnit,
    WorkView,
    compute_checker_slots,
    make_verdict,
    sample_for,
    sign_submission,
    submission_id,
)
from p2p.messages import GossipPayload
from tdml_node.client import make_submit_job
from tdml_node.duties import Duties, DutyContext
from tdml_node.genesis import compose_genesis
from tdml_node.metrics import NodeMetrics
from tdml_node.pools import WorkPool, open_unit_keys
from tdml_node.runtime.netlink import BlobFetcher, NoNetwork
from tdml_node.runtime.runner import WorkRunner
from tdml_node.runtime.seams import HONEST, Seams
from tdml_node.storage import MemoryBlobStore
from tdml_node.work.jobs import get_job

CHAIN = "duties-test"
KEYS = [Keypair.from_seed(bytes([i + 1]) * 32) for i in range(4)]
ROOT = Hash32(b"\x07" * 32)
PROFILE: ExecutionProfile = get_job("digits-mlp")[0].profile


class FakeOracle:
    def initial_model_root(self, spec: JobSpec) -> Hash32:
        return ROOT


@dataclass
class FakeChain:
    state: LedgerState
    chain_id: str = CHAIN

    def validators(self) -> ValidatorSet:
        return get_validator_set(self.state)


@dataclass
class RecordingNetwork(NoNetwork):
    sent: list[GossipPayload] = field(default_factory=list)
    penalties: list[tuple[bytes, str, int]] = field(default_factory=list)
    connected: frozenset[bytes] = frozenset(k.public_key for k in KEYS)

    async def broadcast(self, payload: GossipPayload, exclude: object = None) -> None:
        self.sent.append(payload)

    def penalize(self, peer_id: bytes, reason: str, severity: int) -> None:
        self.penalties.append((peer_id, reason, severity))

    def connected_keys(self) -> frozenset[bytes]:
        return self.connected


@dataclass
class FakeExecutor:
    """Answers re-checks as told; the unit work itself comes through the seams."""

    upheld: bool = True
    false_pass: bool = True
    rechecks: list[Verdict] = field(default_factory=list)

    def can_run(self, spec: JobSpec) -> bool:
        return True

    def receipt(self, spec: JobSpec) -> ExecutionProfile:
        return PROFILE

    def recheck(self, job: WorkView, submission: WorkSubmission, verdict: Verdict) -> bool:
        self.rechecks.append(verdict)
        return self.upheld

    def recheck_pass(self, job: WorkView, submission: WorkSubmission, verdict: Verdict) -> bool:
        self.rechecks.append(verdict)
        return self.false_pass

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the duties must not call executor.{name} here")


def _unit(job: JobState, shard: int) -> TrainedUnit:
    return TrainedUnit((), Hash32(bytes([shard + 1]) * 32), (0x3F800000,), PROFILE)


@dataclass
class Harness:
    me: Keypair
    duties: Duties
    chain: FakeChain
    pool: WorkPool
    network: RecordingNetwork
    executor: FakeExecutor
    now: list[float]
    tasks: list[asyncio.Task[Any]]

    @property
    def job(self) -> JobState:
        return next(iter(self.chain.state.jobs.values()))

    async def settle(self) -> None:
        """Run every task the duties spawned (and the ones those spawn) to the end."""
        for _ in range(100):
            pending = [t for t in self.tasks if not t.done()]
            if not pending:
                return
            await asyncio.gather(*pending)
        raise AssertionError("the duties kept spawning tasks")

    def shard_of(self, key: Keypair) -> int:
        return self.job.assignment.index(key.address)

    def unit_by(self, key: Keypair) -> SignedWorkSubmission:
        job, shard = self.job, self.shard_of(key)
        unit = _unit(job, shard)
        sub = WorkSubmission(
            job.job_id, job.step, shard, key.public_key, job.model_root, unit.checkpoint_digests,
            unit.result_digest, unit.losses, unit.receipt,
        )
        return sign_submission(key, CHAIN, sub)

    def verdict_by(self, key: Keypair, signed: SignedWorkSubmission, result: CheckResult = PASSED) -> SignedVerdict:
        sig, steps = sample_for(key, CHAIN, self.job, signed.submission)
        return make_verdict(key, CHAIN, signed.submission, result, steps, sig, PROFILE)

    def slots_of(self, signed: SignedWorkSubmission) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
        sub = signed.submission
        slots = compute_checker_slots(self.job, sub.shard, sub.trainer, self.chain.validators())
        return slots.designated, slots.standins

    def sent(self, kind: type) -> list[Any]:
        return [p for p in self.network.sent if isinstance(p, kind)]


def _state(preset: str = "digits-mlp") -> LedgerState:
    spec = get_job(preset, steps=3)[0]
    client = Keypair.from_seed(b"\x09" * 32)
    tx = make_submit_job(client, CHAIN, 0, spec, 10**9, ROOT)
    genesis = compose_genesis(CHAIN, [(k.public_key, "") for k in KEYS], clients=[client.public_key], transactions=(tx,))
    return make_genesis_state(genesis, FakeOracle())  # type: ignore[arg-type]


def make_harness(
    me: Keypair, *, seams: Seams = HONEST, executor: FakeExecutor | None = None, standin_after: float = 3.0
) -> Harness:
    chain = FakeChain(_state())
    pool = WorkPool()
    network = RecordingNetwork()
    executor = executor or FakeExecutor()
    now = [100.0]
    tasks: list[asyncio.Task[Any]] = []

    def spawn(coro: Coroutine[Any, Any, Any], name: str) -> None:
        tasks.append(asyncio.get_running_loop().create_task(coro, name=name))

    runner = WorkRunner(InlineWorker(), BlobFetcher(MemoryBlobStore(), network))  # type: ignore[arg-type]
    ctx = DutyContext(
        keypair=me, chain=chain, pool=pool, runner=runner, network=network, executor=executor,  # type: ignore[arg-type]
        seams=seams, metrics=NodeMetrics(), spawn=spawn, wake=lambda: None, clock=lambda: now[0],
    )
    return Harness(me, Duties(ctx, standin_after=standin_after), chain, pool, network, executor, now, tasks)


CANNED = dataclasses.replace(HONEST, train=lambda executor, job, shard: _unit(job, shard))


def _checking(result: CheckResult) -> Seams:
    return dataclasses.replace(CANNED, check=lambda executor, job, sub, steps: result)


# ---------------------------------------------------------------------------
# Training


async def test_a_unit_assigned_to_us_is_trained_signed_admitted_and_gossiped_once() -> None:
    h = make_harness(KEYS[0], seams=_checking(PASSED))
    h.duties.schedule()
    h.duties.schedule()  # already training: not started twice
    await h.settle()
    mine = [s for s in h.sent(SignedWorkSubmission) if s.submission.trainer == KEYS[0].public_key]
    assert len(mine) == 1
    sub = mine[0].submission
    assert sub.shard == h.shard_of(KEYS[0]) and sub.parent_model_root == ROOT and sub.step == 0
    assert crypto.verify_value(sub.trainer, crypto.DOMAIN_WORK, CHAIN, sub, mine[0].signature)
    assert h.pool.get(submission_id(sub)) is not None
    h.duties.schedule()  # in the pool: not trained again
    await h.settle()
    assert len(h.sent(SignedWorkSubmission)) == 1


async def test_a_unit_whose_step_moved_on_while_training_is_dropped() -> None:
    harness: list[Harness] = []

    def train_then_advance(executor: Any, job: JobState, shard: int) -> TrainedUnit:
        chain = harness[0].chain
        chain.state = dataclasses.replace(chain.state, jobs={job.job_id: dataclasses.replace(job, step=job.step + 1)})
        return _unit(job, shard)

    harness.append(make_harness(KEYS[0], seams=dataclasses.replace(CANNED, train=train_then_advance)))
    h = harness[0]
    h.duties.schedule()
    await h.settle()
    assert h.sent(SignedWorkSubmission) == [] and not h.pool.units


async def test_the_node_is_pending_while_it_trains_and_until_its_check_is_done() -> None:
    release = asyncio.Event()
    h = make_harness(KEYS[0], seams=_checking(PASSED))
    open_keys = {(h.job.job_id, 0, s) for s in range(h.job.spec.shards)}
    assert not h.duties.pending(open_keys)

    async def slow_run(priority: int, fn: Any, *args: Any) -> Any:
        await release.wait()
        return fn(*args)

    h.duties.ctx.runner.run = slow_run  # type: ignore[method-assign]
    h.duties.schedule()
    await asyncio.sleep(0)
    assert h.duties.pending(open_keys)  # training
    release.set()
    await h.settle()
    assert not h.duties.pending(open_keys)


# ---------------------------------------------------------------------------
# Checking


def _designated_case(seams: Seams) -> tuple[Harness, SignedWorkSubmission]:
    """A harness and a peer's unit that its node is a designated checker of (which depends on the job's id)."""
    for me in KEYS:
        h = make_harness(me, seams=seams)
        for key in KEYS:
            if key is me:
                continue
            signed = h.unit_by(key)
            if me.public_key in h.slots_of(signed)[0]:
                return h, signed
    raise AssertionError("no validator is a designated checker of another's unit")


def _standin_case(h: Harness) -> SignedWorkSubmission | None:
    """A peer's unit that ``h.me`` is a stand-in checker of, if there is one."""
    for key in KEYS:
        if key is h.me:
            continue
        signed = h.unit_by(key)
        if h.me.public_key in h.slots_of(signed)[1]:
            return signed
    return None


async def test_a_designated_checker_replays_and_gossips_a_passing_verdict() -> None:
    h, unit = _designated_case(_checking(PASSED))
    await h.duties.on_submission(unit, origin=unit.submission.trainer)
    await h.settle()
    verdicts = [v for v in h.sent(SignedVerdict) if v.verdict.submission_id == submission_id(unit.submission)]
    assert len(verdicts) == 1 and verdicts[0].verdict.failure == FAILURE_NONE
    assert verdicts[0].verdict.validator == h.me.public_key
    assert unit in h.sent(SignedWorkSubmission)  # relayed on


async def test_a_failing_replay_becomes_fraud_evidence_and_a_failing_verdict() -> None:
    failed = CheckResult(FAILURE_REPLAY, 0, Hash32(b"\xee" * 32), 1)
    h, unit = _designated_case(_checking(failed))
    await h.duties.on_submission(unit, origin=None)
    await h.settle()
    (verdict,) = [v for v in h.sent(SignedVerdict) if v.verdict.submission_id == submission_id(unit.submission)]
    assert verdict.verdict.failure == FAILURE_REPLAY
    assert [type(e) for e in h.pool.evidence.values()] == [WorkFraud]


async def test_a_stand_in_waits_for_the_designated_checkers_then_steps_in() -> None:
    for me in KEYS:
        h = make_harness(me, seams=_checking(PASSED), standin_after=3.0)
        unit = _standin_case(h)
        if unit is None:
            continue
        h.duties.checking.started_at = 0.0  # up long enough to have connected to the peers
        await h.duties.on_submission(unit, origin=None)
        await h.settle()
        assert not h.sent(SignedVerdict), "a stand-in checked before the designated checkers had their time"
        h.now[0] += 3.0
        h.duties.schedule()
        await h.settle()
        assert [v.verdict.validator for v in h.sent(SignedVerdict)] == [me.public_key]
        return
    pytest.fail("no layout with a stand-in")


async def test_a_stand_in_checks_at_once_for_a_designated_checker_that_is_not_connected() -> None:
    for me in KEYS:
        h = make_harness(me, seams=_checking(PASSED))
        unit = _standin_case(h)
        if unit is None:
            continue
        h.duties.checking.started_at = 0.0
        h.network.connected = frozenset(k for k in h.network.connected if k not in h.slots_of(unit)[0])
        await h.duties.on_submission(unit, origin=None)
        await h.settle()
        assert [v.verdict.validator for v in h.sent(SignedVerdict)] == [me.public_key]
        return
    pytest.fail("no layout with a stand-in")


# ---------------------------------------------------------------------------
# Judging


async def _failing_verdict_case(executor: FakeExecutor) -> tuple[Harness, SignedWorkSubmission, SignedVerdict]:
    """A node, a peer's unit that node does not check itself, and another validator's failing verdict on it."""
    for me in KEYS:
        h = make_harness(me, seams=_checking(PASSED), executor=executor)
        for key in KEYS:
            if key is me:
                continue
            unit = h.unit_by(key)
            designated, _ = h.slots_of(unit)
            if me.public_key in designated:
                continue
            accuser = next(k for k in KEYS if k.public_key in designated)
            await h.duties.on_submission(unit, origin=None)
            failed = CheckResult(FAILURE_REPLAY, 0, Hash32(b"\xee" * 32), 1)
            return h, unit, h.verdict_by(accuser, unit, failed)
    raise AssertionError("no layout where a node does not check a unit")


@pytest.mark.parametrize(("upheld", "evidence"), [(True, WorkFraud), (False, FalseVerdict)])
async def test_another_validators_failing_verdict_is_rechecked_and_becomes_evidence(upheld: bool, evidence: type) -> None:
    h, _, verdict = await _failing_verdict_case(FakeExecutor(upheld=upheld))
    await h.duties.on_verdict(verdict, origin=KEYS[1].public_key)
    await h.settle()
    assert h.executor.rechecks == [verdict.verdict]
    assert [type(e) for e in h.pool.evidence.values()] == [evidence]
    assert verdict in h.sent(SignedVerdict)


async def test_a_pass_on_a_unit_known_to_fail_is_rechecked_and_exposed() -> None:
    h, unit, failing = await _failing_verdict_case(FakeExecutor(upheld=True, false_pass=True))
    designated, standins = h.slots_of(unit)
    liar = next(k for k in KEYS if k.public_key in designated + standins and k.public_key != failing.verdict.validator)
    await h.duties.on_verdict(failing, origin=None)
    await h.settle()
    await h.duties.on_verdict(h.verdict_by(liar, unit), origin=None)
    await h.settle()
    kinds = sorted(type(e).__name__ for e in h.pool.evidence.values())
    assert kinds == ["FalsePass", "WorkFraud"], kinds
    assert any(isinstance(e, FalsePass) and e.verdict.verdict.validator == liar.public_key for e in h.pool.evidence.values())


# ---------------------------------------------------------------------------
# Bad and early gossip


async def test_a_unit_with_a_bad_signature_bans_the_peer_that_sent_it() -> None:
    h = make_harness(KEYS[0])
    unit = h.unit_by(KEYS[1])
    forged = dataclasses.replace(unit, signature=Signature(b"\x00" * 64))
    await h.duties.on_submission(forged, origin=KEYS[2].public_key)
    assert h.network.penalties and h.network.penalties[0][0] == KEYS[2].public_key
    assert h.network.penalties[0][2] == 100 and not h.pool.units and not h.sent(SignedWorkSubmission)


async def test_a_verdict_before_its_unit_waits_and_is_taken_after_the_next_commit() -> None:
    h = make_harness(KEYS[0], seams=_checking(PASSED))
    unit = h.unit_by(KEYS[1])
    checker = next(k for k in KEYS if k.public_key in h.slots_of(unit)[0] and k is not KEYS[0])
    verdict = h.verdict_by(checker, unit)
    await h.duties.on_verdict(verdict, origin=None)
    assert not h.sent(SignedVerdict) and len(h.pool.early_verdicts) == 1
    h.pool.add_submission(CHAIN, unit, h.chain.state)
    await h.duties.retry_early()
    await h.settle()
    assert verdict in h.sent(SignedVerdict)
    assert checker.public_key in h.pool.get(submission_id(unit.submission)).verdicts  # type: ignore[union-attr]



async def test_a_unit_whose_shard_moves_away_is_handed_back_to_be_forgotten_with_its_verdicts() -> None:
    """The shard may come back to the same trainer, which signs the same bytes again: the node must
    take the unit and its verdicts out of the network's seen-cache, or every peer drops the copy."""
    h = make_harness(KEYS[0], seams=_checking(PASSED))
    unit = h.unit_by(KEYS[1])
    checker = next(k for k in KEYS if k.public_key in h.slots_of(unit)[0])
    verdict = h.verdict_by(checker, unit)
    h.pool.add_submission(CHAIN, unit, h.chain.state)
    h.pool.add_verdict(CHAIN, verdict, h.chain.state, h.chain.validators())
    assert h.pool.prune(h.chain.state) == []  # still wanted: nothing to forget
    job, shard = h.job, h.shard_of(KEYS[1])
    moved = list(job.assignment)
    moved[shard] = KEYS[2].address
    h.chain.state = dataclasses.replace(h.chain.state, jobs={job.job_id: dataclasses.replace(job, assignment=tuple(moved))})
    assert h.pool.prune(h.chain.state) == [unit, verdict]
    assert not h.pool.units


def test_only_the_stage_units_whose_inputs_are_accepted_are_open() -> None:
    """What a proposer waits for: with every unit of the step counted, it waited its whole patience at
    every phase of a pipeline step (2 s a phase in a real devnet) for units nobody could train yet."""
    state = _state("digits-mlp-pipeline")
    job = next(iter(state.jobs.values()))
    spec = job.spec
    first = {(job.job_id, 0, pipeline.unit_index(spec, k, 0)) for k in range(spec.shards)}
    assert open_unit_keys(state) == first
    results = list(job.results)
    results[pipeline.unit_index(spec, 0, 0)] = Hash32(b"\x01" * 32)
    accepted = list(job.accepted)
    accepted[pipeline.unit_index(spec, 0, 0)] = Hash32(b"\x02" * 32)
    advanced = dataclasses.replace(job, results=tuple(results), accepted=tuple(accepted))
    state = dataclasses.replace(state, jobs={job.job_id: advanced})
    later = (first - {(job.job_id, 0, pipeline.unit_index(spec, 0, 0))}) | {(job.job_id, 0, pipeline.unit_index(spec, 0, 1))}
    assert open_unit_keys(state) == later
