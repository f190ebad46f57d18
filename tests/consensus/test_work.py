"""Proof-of-useful-work rules: sampling, assignment, checkers, and what a unit or verdict must be."""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
from consensus_fixtures import (
    CHAIN_ID,
    OUTSIDER,
    BodyParts,
    FakeOracle,
    advance,
    checkers_of,
    keypair,
    make_job_spec,
    make_submission,
    make_verdict_by,
    property_settings,
    state_with_job,
    validator_set,
)
from hypothesis import given
from hypothesis import strategies as st

from consensus import crypto
from consensus.state import LedgerState, get_validator_set
from consensus.types import (
    FAILURE_MALFORMED,
    FAILURE_NONE,
    FAILURE_PARENT,
    FAILURE_REPLAY,
    FAILURE_RESULT,
    Hash32,
    JobState,
    Signature,
    SignedVerdict,
    SignedWorkSubmission,
    WorkSubmission,
)
from consensus.work import (
    PASSED,
    CheckResult,
    InvalidWork,
    ReplayComparison,
    ReplayOutput,
    TrainedUnit,
    WorkRejected,
    check_unit,
    compute_checkers,
    compute_sampled_steps,
    failure_kinds,
    required_checkers,
    submission_id,
    validate_submission,
    validate_verdict,
)

# ---------------------------------------------------------------------------
# Sampling


@property_settings(200)
@given(sig=st.binary(min_size=64, max_size=64), h=st.integers(1, 256), c=st.integers(1, 300))
def test_sampled_steps_shape(sig: bytes, h: int, c: int) -> None:
    steps = compute_sampled_steps(sig, h, c)
    assert len(steps) == min(c, h)
    assert list(steps) == sorted(set(steps))
    assert all(0 <= s < h for s in steps)
    assert steps == compute_sampled_steps(sig, h, c)
    if c >= h:
        assert steps == tuple(range(h))


def test_sampled_steps_depend_on_the_signature_and_cover_every_step() -> None:
    h, c = 16, 2
    counts: Counter[int] = Counter()
    distinct = set()
    for i in range(2000):
        steps = compute_sampled_steps(crypto.sha256(b"sig%d" % i) * 2, h, c)
        counts.update(steps)
        distinct.add(steps)
    assert len(distinct) > 100
    # Each step is drawn with probability c/h = 1/8: 250 of 2000 expected.
    assert set(counts) == set(range(h))
    assert all(150 < n < 350 for n in counts.values()), counts


# ---------------------------------------------------------------------------
# Checkers


def test_checkers_exclude_the_trainer_unless_alone() -> None:
    _, job = state_with_job()
    vs, kps = validator_set([1, 1, 1, 1])
    trainer = kps[2].public_key
    ranked = compute_checkers(job, 0, trainer, vs)
    assert trainer not in ranked
    assert sorted(ranked) == sorted(k for k in vs.keys if k != trainer)
    assert ranked == compute_checkers(job, 0, trainer, vs)
    # Three checkers have six orders, so two steps may share one by chance; eight steps do not all.
    assert len({compute_checkers(job, step, trainer, vs) for step in range(8)}) > 1
    alone, (only,) = validator_set([5])
    assert compute_checkers(job, 0, only.public_key, alone) == (only.public_key,)


def test_checker_ranking_differs_across_units() -> None:
    _, job = state_with_job(make_job_spec(shards=8))
    vs, _ = validator_set([1] * 7)
    rankings = {compute_checkers(job, shard, keypair(50).public_key, vs) for shard in range(8)}
    assert len(rankings) > 1


@pytest.mark.parametrize(
    ("policy", "powers", "expected"),
    [(0, [1, 1, 1, 1], 2), (0, [1] * 7, 3), (3, [1, 1], 2), (1, [1] * 10, 1), (0, [9], 1)],
)
def test_required_checkers(policy: int, powers: list[int], expected: int) -> None:
    vs, _ = validator_set(powers)
    assert required_checkers(make_job_spec(checkers=policy), vs) == expected


# ---------------------------------------------------------------------------
# Submissions


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"job": Hash32(bytes(32))}, "another job"),
        ({"step": 5}, "step 5"),
        ({"shard": 7}, "out of range"),
        ({"parent_model_root": Hash32(b"\x01" * 32)}, "committed model state"),
        ({"losses": ()}, "losses"),
        ({"checkpoint_digests": (Hash32(bytes(32)),)}, "checkpoint digests"),
    ],
)
def test_submission_rejections(changes: dict[str, object], message: str) -> None:
    _, job = state_with_job()
    signed = make_submission(job, 0, changes=changes)
    with pytest.raises(WorkRejected, match=message):
        validate_submission(CHAIN_ID, job, signed)


def test_valid_submission_passes_and_a_block_accepts_it() -> None:
    oracle = FakeOracle()
    state, job = state_with_job(oracle=oracle)
    units = tuple(make_submission(job, shard) for shard in range(job.spec.shards))
    for signed in units:
        assert validate_submission(CHAIN_ID, job, signed) is None
    # What passing means: a block that carries the units with their checkers' verdicts accepts every one.
    included = units[:-1]  # one shard left open, so the step stays in progress and its slots can be read
    verdicts = tuple(make_verdict_by(c, job, u) for u in included for c in checkers_of(state, job, u))
    after = advance(state, BodyParts(submissions=included, verdicts=verdicts), oracle)
    accepted = after.jobs[job.job_id].accepted
    assert accepted[:-1] == tuple(submission_id(u.submission) for u in units[:-1]) and accepted[-1] is None
    assert after.get_record(crypto.address_of(units[0].submission.trainer)).units_accepted >= 1


def test_submission_by_an_unassigned_trainer() -> None:
    _, job = state_with_job()
    other = next(k for k in (keypair(10), keypair(11), keypair(12)) if k.address != job.assignment[0])
    with pytest.raises(WorkRejected, match="not assigned"):
        validate_submission(CHAIN_ID, job, make_submission(job, 0, trainer=other))


def test_submission_signature_and_chain() -> None:
    _, job = state_with_job()
    signed = make_submission(job, 0)
    forged = dataclasses.replace(signed, signature=Signature(bytes(64)))
    with pytest.raises(WorkRejected, match="signature"):
        validate_submission(CHAIN_ID, job, forged)
    validate_submission(CHAIN_ID, job, forged, check_signature=False)
    with pytest.raises(WorkRejected, match="signature"):
        validate_submission(CHAIN_ID, job, make_submission(job, 0, chain_id="other-chain"))


def test_submission_for_an_accepted_shard() -> None:
    _, job = state_with_job()
    done = dataclasses.replace(job, accepted=(Hash32(bytes(32)), None))
    with pytest.raises(WorkRejected, match="already has an accepted unit"):
        validate_submission(CHAIN_ID, done, make_submission(done, 0))


def test_exact_jobs_need_the_job_profile() -> None:
    _, job = state_with_job()
    other_profile = dataclasses.replace(job.spec.profile, threads=4)
    with pytest.raises(WorkRejected, match="profile"):
        validate_submission(CHAIN_ID, job, make_submission(job, 0, changes={"receipt": other_profile}))
    _, tolerant = state_with_job(make_job_spec(tolerance="0.01"))
    validate_submission(CHAIN_ID, tolerant, make_submission(tolerant, 0, changes={"receipt": other_profile}))


def test_multi_step_units_carry_one_checkpoint_per_inner_step() -> None:
    _, job = state_with_job(make_job_spec(inner_steps=4, checked_steps=2))
    signed = make_submission(job, 0)
    assert len(signed.submission.checkpoint_digests) == 4
    validate_submission(CHAIN_ID, job, signed)


# ---------------------------------------------------------------------------
# Verdicts


def _verdict_case() -> tuple[LedgerState, JobState, SignedWorkSubmission, SignedVerdict]:
    state, job = state_with_job(make_job_spec(inner_steps=4, checked_steps=2))
    signed = make_submission(job, 0)
    checker = checkers_of(state, job, signed)[0]
    return state, job, signed, make_verdict_by(checker, job, signed)


def _resign(verdict: SignedVerdict, **changes: Any) -> SignedVerdict:
    v = dataclasses.replace(verdict.verdict, **changes)
    kp = next(keypair(i) for i in range(64) if keypair(i).public_key == v.validator)
    return SignedVerdict(v, kp.sign_value(crypto.DOMAIN_VERDICT, CHAIN_ID, v))


def test_valid_verdict_passes_and_designation_is_enforced() -> None:
    state, job, signed, verdict = _verdict_case()
    vs = get_validator_set(state)
    sub = signed.submission
    validate_verdict(CHAIN_ID, job, sub, verdict, vs)
    validate_verdict(CHAIN_ID, job, sub, verdict, vs, designated=[verdict.verdict.validator])
    with pytest.raises(WorkRejected, match="designated"):
        validate_verdict(CHAIN_ID, job, sub, verdict, vs, designated=[])


def test_verdict_rejections() -> None:
    state, job, signed, verdict = _verdict_case()
    vs = get_validator_set(state)
    sub = signed.submission
    v = verdict.verdict
    steps = v.checked_steps
    unchecked = next(i for i in range(4) if i not in steps)
    cases: list[tuple[SignedVerdict, str, WorkSubmission]] = [
        (_resign(verdict, checked_steps=tuple(reversed(steps))), "checked steps", sub),
        (_resign(verdict, checked_steps=(unchecked,)), "checked steps", sub),
        (_resign(verdict, failed_step=steps[0]), "passing verdict names no failed step", sub),
        (_resign(verdict, failure=FAILURE_REPLAY, failed_step=unchecked), "checked steps", sub),
        (_resign(verdict, failure=FAILURE_REPLAY, failed_step=-1), "checked steps", sub),
        (_resign(verdict, failure=FAILURE_PARENT, failed_step=steps[0]), "only a replay failure", sub),
        (dataclasses.replace(verdict, signature=Signature(bytes(64))), "bad verdict signature", sub),
        (_resign(verdict, sample_signature=Signature(bytes(64))), "bad sample signature", sub),
    ]
    other_sub = dataclasses.replace(sub, result_digest=crypto.sha256(b"other"))
    cases.append((verdict, "another submission", other_sub))
    for bad, message, against in cases:
        with pytest.raises(WorkRejected, match=message):
            validate_verdict(CHAIN_ID, job, against, bad, vs)
    # A replay failure at a checked step and other failures without a step are well formed.
    validate_verdict(CHAIN_ID, job, sub, _resign(verdict, failure=FAILURE_REPLAY, failed_step=steps[1]), vs)
    validate_verdict(CHAIN_ID, job, sub, _resign(verdict, failure=FAILURE_RESULT), vs)


def test_verdict_by_a_non_validator() -> None:
    state, job, signed, _ = _verdict_case()
    vs = get_validator_set(state)
    outsider = make_verdict_by(keypair(OUTSIDER), job, signed)
    with pytest.raises(WorkRejected, match="not a validator"):
        validate_verdict(CHAIN_ID, job, signed.submission, outsider, vs)


def test_verdict_on_another_chain() -> None:
    state, job, signed, _ = _verdict_case()
    vs = get_validator_set(state)
    checker = checkers_of(state, job, signed)[0]
    foreign = make_verdict_by(checker, job, signed, chain_id="other")
    with pytest.raises(WorkRejected, match="signature"):
        validate_verdict(CHAIN_ID, job, signed.submission, foreign, vs)


def test_submission_id_is_the_hash_of_the_submission() -> None:
    _, job = state_with_job()
    sub = make_submission(job, 0).submission
    assert submission_id(sub) == crypto.hash_value(sub)
    assert submission_id(dataclasses.replace(sub, losses=(1,))) != submission_id(sub)


# ---------------------------------------------------------------------------
# The checker's procedure, against a scripted executor


@dataclass
class ScriptedExecutor(FakeOracle):
    """Replays return what the script says; everything not scripted matches the claim."""

    replays: dict[int, ReplayOutput] = field(default_factory=dict)
    distances: dict[int, float] = field(default_factory=dict)  # (tolerance jobs) per inner step
    malformed: bool = False
    result_code: int = FAILURE_NONE
    replayed: list[int] = field(default_factory=list)

    def train_unit(self, job: JobState, shard: int) -> TrainedUnit:  # pragma: no cover - unused
        raise NotImplementedError

    def replay_step(self, job: JobState, submission: WorkSubmission, inner: int) -> ReplayOutput:
        self.replayed.append(inner)
        if self.malformed:
            raise InvalidWork("bad blob")
        if inner in self.replays:
            return self.replays[inner]
        claimed = submission.result_digest if job.spec.inner_steps == 1 else submission.checkpoint_digests[inner]
        return ReplayOutput(claimed, submission.losses[inner])

    def compare_step(self, job: JobState, submission: WorkSubmission, inner: int) -> ReplayComparison:
        self.replayed.append(inner)
        if self.malformed:
            raise InvalidWork("bad blob")
        return ReplayComparison(crypto.sha256(b"near/%d" % inner), 7, self.distances.get(inner, 0.0))

    def check_result(self, job: JobState, submission: WorkSubmission) -> int:
        return self.result_code


def test_check_unit_outcomes() -> None:
    _, job = state_with_job(make_job_spec(inner_steps=4, checked_steps=2))
    sub = make_submission(job, 0).submission
    assert check_unit(ScriptedExecutor(), job, sub, (1, 3)) == PASSED

    wrong = ScriptedExecutor(replays={1: ReplayOutput(crypto.sha256(b"x"), sub.losses[1])})
    assert check_unit(wrong, job, sub, (1, 3)) == CheckResult(FAILURE_REPLAY, 1, crypto.sha256(b"x"), sub.losses[1])
    assert wrong.replayed == [1]  # stops at the first failure

    loss = ScriptedExecutor(replays={3: ReplayOutput(sub.checkpoint_digests[3], 12345)})
    assert check_unit(loss, job, sub, (1, 3)).failed_step == 3

    assert check_unit(ScriptedExecutor(malformed=True), job, sub, (1,)).failure == FAILURE_MALFORMED
    assert check_unit(ScriptedExecutor(result_code=FAILURE_RESULT), job, sub, (1,)).failure == FAILURE_RESULT

    moved = dataclasses.replace(sub, parent_model_root=crypto.sha256(b"elsewhere"))
    parent = check_unit(ScriptedExecutor(), job, moved, (1,))
    assert parent == CheckResult(FAILURE_PARENT, -1, job.model_root, 0)


def test_check_unit_single_step_compares_the_result() -> None:
    _, job = state_with_job()
    sub = make_submission(job, 0).submission
    executor = ScriptedExecutor(result_code=FAILURE_RESULT)  # not consulted when H = 1
    assert check_unit(executor, job, sub, (0,)) == PASSED
    bad = ScriptedExecutor(replays={0: ReplayOutput(crypto.sha256(b"y"), sub.losses[0])})
    assert check_unit(bad, job, sub, (0,)).failure == FAILURE_REPLAY


def test_check_unit_with_a_tolerance_compares_distances() -> None:
    _, job = state_with_job(make_job_spec(inner_steps=4, checked_steps=2, tolerance="0.01"))
    sub = make_submission(job, 0).submission
    assert check_unit(ScriptedExecutor(distances={1: 0.01, 3: 0.0}), job, sub, (1, 3)) == PASSED
    far = ScriptedExecutor(distances={3: 0.02})
    assert check_unit(far, job, sub, (1, 3)) == CheckResult(FAILURE_REPLAY, 3, crypto.sha256(b"near/3"), 7)
    assert check_unit(ScriptedExecutor(distances={1: float("nan")}), job, sub, (1, 3)).failed_step == 1
    assert check_unit(ScriptedExecutor(malformed=True), job, sub, (1,)).failure == FAILURE_MALFORMED
    # The H > 1 result check stays exact even in a tolerance job.
    assert check_unit(ScriptedExecutor(result_code=FAILURE_RESULT), job, sub, (1,)).failure == FAILURE_RESULT


def test_failure_kinds_cover_every_code() -> None:
    assert set(failure_kinds()) == {FAILURE_NONE, FAILURE_PARENT, FAILURE_REPLAY, FAILURE_RESULT, FAILURE_MALFORMED}
