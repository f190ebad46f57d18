"""Cross-profile verification: a tolerance job accepts honest units of another profile, and only those.

The trainer runs with two CPU threads, the validator with the job's profile
(one thread): on workload W the bits of a gradient differ between the two,
so an exact job refuses the unit while a job with the calibrated tolerance
accepts it. Every fake of ``test_work_fraud`` is still caught in tolerance
mode, evidence re-checks the same way, and the threshold is where the
tolerance says (a perturbation just under it passes, just over it is caught).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import pytest
import torch
from test_work_fraud import TAMPERS, fake_local_unit
from work_harness import (
    CHAIN_ID,
    TRAINER,
    advance,
    job_state,
    make_executor,
    map_tensors,
    submission_for,
    verdict_for,
)

from consensus.types import (
    FAILURE_MALFORMED,
    FAILURE_NONE,
    FAILURE_PARENT,
    FAILURE_REPLAY,
    FAILURE_RESULT,
    ZERO_HASH,
    Decimal,
    Hash32,
    JobSpec,
    JobState,
    WorkSubmission,
)
from consensus.work import (
    PASSED,
    CheckResult,
    WorkRejected,
    WorkUnavailable,
    check_unit,
    replay_tolerance,
    sign_submission,
    validate_submission,
)
from tdml_node.work import unit
from tdml_node.work.executor import TorchExecutor
from tdml_node.work.jobs import XPROFILE_TOLERANCE, get_job, optimizer_spec
from tdml_node.work.profile import local_profile
from tdml_node.work.tensors import decode_bundle, encode_bundle, f32_bits, f32_from_bits
from tdml_node.work.tolerance import bundle_distance, loss_distance, tensor_distance

TOLERANCE = float(XPROFILE_TOLERANCE)


@dataclasses.dataclass(frozen=True)
class Case:
    """A job one step in, a two-thread trainer and a one-thread validator sharing one blob store."""

    trainer: TorchExecutor
    validator: TorchExecutor
    job: JobState
    previous_root: Hash32

    @property
    def spec(self) -> JobSpec:
        return self.job.spec

    def steps(self) -> tuple[int, ...]:
        return tuple(range(self.spec.inner_steps))

    def with_tolerance(self, tolerance: str) -> JobState:
        verification = dataclasses.replace(self.spec.verification, tolerance=Decimal(tolerance))
        return dataclasses.replace(self.job, spec=dataclasses.replace(self.spec, verification=verification))


def make_case(spec: JobSpec, data: bytes) -> Case:
    validator = make_executor(data)
    trainer = TorchExecutor(validator.blobs, profile=local_profile(threads=2))
    root0 = validator.initial_model_root(spec)
    root1 = advance(validator, spec, root0, 0)
    return Case(trainer, validator, job_state(spec, root1, 1), root0)


@pytest.fixture(scope="module")
def single() -> Case:
    """H = 1: the ``digits-mlp-xprofile`` preset (workload W with the calibrated tolerance)."""
    return make_case(*get_job("digits-mlp-xprofile", steps=20))


@pytest.fixture(scope="module")
def local() -> Case:
    """H = 4 on W, inner SGD with momentum (checkpoints hold optimizer state), every step checked."""
    spec, data = get_job("digits-mlp-local", steps=20)
    spec = dataclasses.replace(
        spec,
        optimizer=optimizer_spec("sgd", lr="0.05", momentum="0.9"),
        verification=dataclasses.replace(spec.verification, checked_steps=4, tolerance=XPROFILE_TOLERANCE),
    )
    return make_case(spec, data)


def expect_caught(case: Case, sub: WorkSubmission, failure: int, failed_step: int = -1) -> CheckResult:
    """The check fails as expected, and re-checking the verdict upholds it."""
    result = check_unit(case.validator, case.job, sub, case.steps())
    assert (result.failure, result.failed_step) == (failure, failed_step)
    assert case.validator.recheck(case.job, sub, verdict_for(sub, result, case.steps())) is True
    return result


def tampered(case: Case, digest: Hash32, fn: Callable[[torch.Tensor], torch.Tensor]) -> Hash32:
    tensors = decode_bundle(case.validator.blobs.get(digest) or b"")
    return case.validator.blobs.put(encode_bundle(map_tensors(tensors, unit.result_prefix(case.spec), fn)))


# ---------------------------------------------------------------------------
# The distance and the tolerance


def test_distances() -> None:
    a = torch.tensor([3.0, 4.0])
    assert tensor_distance(a, a.clone()) == 0.0
    assert tensor_distance(torch.tensor([3.0, 4.5]), a) == pytest.approx(0.1)
    assert tensor_distance(torch.zeros(2), torch.zeros(2)) == 0.0
    assert tensor_distance(torch.ones(2), torch.zeros(2)) > 1e29
    assert tensor_distance(torch.ones(3), a) == math.inf
    nan = torch.tensor([float("nan"), 1.0])
    assert tensor_distance(nan, nan.clone()) == 0.0
    assert tensor_distance(nan, torch.tensor([0.0, 1.0])) == math.inf
    assert bundle_distance({"x": a}, {"x": a, "y": a}) == math.inf
    assert bundle_distance({"x": a.double()}, {"x": a}) == math.inf
    assert bundle_distance({"x": a * 1.01, "y": a}, {"x": a, "y": a}) == pytest.approx(0.01)
    two, three = f32_bits(torch.tensor(2.0)), f32_bits(torch.tensor(3.0))
    assert loss_distance(two, two) == 0.0
    assert loss_distance(three, two) == pytest.approx(0.5)
    nan_bits = f32_bits(torch.tensor(float("nan")))
    assert loss_distance(nan_bits, two) == math.inf


def test_tolerance_mode_is_any_tolerance_but_zero(single: Case) -> None:
    assert replay_tolerance(single.spec) == TOLERANCE == 1e-5
    assert replay_tolerance(single.with_tolerance("0").spec) is None
    assert replay_tolerance(single.with_tolerance("0.25").spec) == 0.25


# ---------------------------------------------------------------------------
# Honest units of another profile


@pytest.mark.parametrize("name", ["single", "local"])
def test_other_thread_count_passes_under_tolerance_and_not_when_exact(name: str, request: pytest.FixtureRequest) -> None:
    case: Case = request.getfixturevalue(name)
    exact = case.with_tolerance("0")
    differs = 0
    for shard in range(case.spec.shards):
        trained = case.trainer.train_unit(case.job, shard)
        assert trained.receipt.threads == 2
        sub = submission_for(case.job, shard, trained)
        validate_submission(CHAIN_ID, case.job, sign_submission(TRAINER, CHAIN_ID, sub))
        assert check_unit(case.validator, case.job, sub, case.steps()) == PASSED
        for inner in case.steps():
            assert case.validator.compare_step(case.job, sub, inner).distance < TOLERANCE / 10
        # Evidence against it does not re-check: not a replay, nor any other failure.
        for inner in case.steps():
            fabricated = CheckResult(FAILURE_REPLAY, inner, ZERO_HASH, 0)
            assert case.validator.recheck(case.job, sub, verdict_for(sub, fabricated, case.steps())) is False
        for failure in (FAILURE_PARENT, FAILURE_RESULT, FAILURE_MALFORMED, FAILURE_NONE):
            fabricated = CheckResult(failure, -1, ZERO_HASH, 0)
            assert case.validator.recheck(case.job, sub, verdict_for(sub, fabricated, case.steps())) is False
        # The same unit in an exact job: refused for its receipt, and its bits do not replay.
        exact_sub = submission_for(exact, shard, trained)
        with pytest.raises(WorkRejected, match="profile"):
            validate_submission(CHAIN_ID, exact, sign_submission(TRAINER, CHAIN_ID, exact_sub))
        result = check_unit(case.validator, exact, exact_sub, case.steps())
        if result.failure:
            differs += 1
            assert result.failure == FAILURE_REPLAY
            assert case.validator.recheck(exact, exact_sub, verdict_for(exact_sub, result, case.steps())) is True
    assert differs == case.spec.shards


# ---------------------------------------------------------------------------
# Attacks, in tolerance mode


@pytest.mark.parametrize("name", sorted(TAMPERS))
def test_tampered_gradient_is_caught(single: Case, name: str) -> None:
    honest = single.trainer.train_unit(single.job, 2)
    sub = submission_for(single.job, 2, honest, result_digest=tampered(single, honest.result_digest, TAMPERS[name]))
    result = expect_caught(single, sub, FAILURE_REPLAY, 0)
    assert result.observed_digest != honest.result_digest  # what the one-thread replay produced
    assert result.observed_loss == single.validator.replay_step(single.job, sub, 0).loss


def test_lying_loss_is_caught(single: Case) -> None:
    honest = single.trainer.train_unit(single.job, 0)
    loss = float(f32_from_bits(honest.losses)[0])
    bits = f32_bits(torch.tensor(loss * (1 + 10 * TOLERANCE)))
    expect_caught(single, submission_for(single.job, 0, honest, losses=(bits,)), FAILURE_REPLAY, 0)


@pytest.mark.parametrize("name", ["single", "local"])
def test_wrong_shard_and_stale_parent_are_caught(name: str, request: pytest.FixtureRequest) -> None:
    case: Case = request.getfixturevalue(name)
    other = case.trainer.train_unit(case.job, 1)
    expect_caught(case, submission_for(case.job, 0, other), FAILURE_REPLAY, 0)
    stale = case.trainer.train_unit(job_state(case.spec, case.previous_root, 1), 0)
    expect_caught(case, submission_for(case.job, 0, stale), FAILURE_REPLAY, 0)
    expect_caught(case, submission_for(case.job, 0, stale, parent_model_root=case.previous_root), FAILURE_PARENT)


@pytest.mark.parametrize("name", sorted(TAMPERS))
def test_tampered_delta_is_caught_exactly(local: Case, name: str) -> None:
    honest = local.trainer.train_unit(local.job, 1)
    sub = submission_for(local.job, 1, honest, result_digest=tampered(local, honest.result_digest, TAMPERS[name]))
    assert local.validator.check_result(local.job, sub) == FAILURE_RESULT
    expect_caught(local, sub, FAILURE_RESULT)


def test_delta_of_another_profile_is_checked_bit_exactly(local: Case) -> None:
    """θ0 − θH is a pure function of the trainer's own blobs: one flipped bit is a result failure."""
    honest = local.trainer.train_unit(local.job, 3)
    sub = submission_for(local.job, 3, honest)
    assert local.validator.check_result(local.job, sub) == FAILURE_NONE

    def flip_one_bit(t: torch.Tensor) -> torch.Tensor:
        out = t.clone()
        out.reshape(-1).view(torch.int32)[0] ^= 1
        return out

    flipped = submission_for(local.job, 3, honest, result_digest=tampered(local, honest.result_digest, flip_one_bit))
    expect_caught(local, flipped, FAILURE_RESULT)


@pytest.mark.parametrize("name", ["zeros", "scaled", "noise"])
def test_delta_with_a_matching_final_checkpoint_is_caught_by_replay(local: Case, name: str) -> None:
    honest = local.trainer.train_unit(local.job, 1)
    blobs = local.validator.blobs
    fake = map_tensors(decode_bundle(blobs.get(honest.result_digest) or b""), unit.DELTA_PREFIX, TAMPERS[name])
    start = decode_bundle(blobs.get(local.job.model_root) or b"")
    final = decode_bundle(blobs.get(honest.checkpoint_digests[-1]) or b"")
    params = {}
    for key in final:
        if key.startswith("param/"):
            param = key[len("param/") :]
            final[key] = start[key] - fake[unit.DELTA_PREFIX + param]
            params[param] = final[key]
    result = unit.delta_result({p: start["param/" + p] for p in params}, params, honest.losses)
    checkpoints = (*honest.checkpoint_digests[:-1], blobs.put(encode_bundle(final)))
    sub = submission_for(local.job, 1, honest, checkpoint_digests=checkpoints, result_digest=blobs.put(result))
    assert local.validator.check_result(local.job, sub) == FAILURE_NONE
    expect_caught(local, sub, FAILURE_REPLAY, local.spec.inner_steps - 1)


@pytest.mark.parametrize("skip", [1, 2, 3])
def test_skipped_inner_step_is_caught(local: Case, skip: int) -> None:
    sub = fake_local_unit(local.trainer, local.job, 0, skip)
    assert local.validator.check_result(local.job, sub) == FAILURE_NONE
    expect_caught(local, sub, FAILURE_REPLAY, skip)


def test_skipped_first_step_is_caught(local: Case) -> None:
    """Skipping step 0 leaves checkpoint 1 without the optimizer state it must hold: malformed."""
    sub = fake_local_unit(local.trainer, local.job, 0, 0)
    expect_caught(local, sub, FAILURE_MALFORMED)


# ---------------------------------------------------------------------------
# The threshold is the tolerance


@pytest.mark.parametrize("name", ["single", "local"])
def test_perturbation_below_the_tolerance_passes_and_above_is_caught(name: str, request: pytest.FixtureRequest) -> None:
    case: Case = request.getfixturevalue(name)
    h = case.spec.inner_steps
    honest = case.trainer.train_unit(case.job, 2)
    blobs = case.validator.blobs

    def scaled(factor: float) -> WorkSubmission:
        """Every tensor of the claim the checker compares (gradients, or checkpoint 2) times ``factor``."""
        def fn(t: torch.Tensor) -> torch.Tensor:
            return (t.double() * factor).to(t.dtype)
        if h == 1:
            return submission_for(case.job, 2, honest, result_digest=tampered(case, honest.result_digest, fn))
        ck = decode_bundle(blobs.get(honest.checkpoint_digests[1]) or b"")
        checkpoints = list(honest.checkpoint_digests)
        checkpoints[1] = blobs.put(encode_bundle({k: fn(t) for k, t in ck.items()}))
        return submission_for(case.job, 2, honest, checkpoint_digests=tuple(checkpoints))

    steps = (0,) if h == 1 else (1,)
    below = scaled(1 + 0.5 * TOLERANCE)
    assert check_unit(case.validator, case.job, below, steps) == PASSED
    fabricated = CheckResult(FAILURE_REPLAY, steps[0], ZERO_HASH, 0)
    assert case.validator.recheck(case.job, below, verdict_for(below, fabricated, steps)) is False
    above = scaled(1 + 2 * TOLERANCE)
    result = check_unit(case.validator, case.job, above, steps)
    assert (result.failure, result.failed_step) == (FAILURE_REPLAY, steps[0])
    assert case.validator.recheck(case.job, above, verdict_for(above, result, steps)) is True
    # The same perturbation passes a job that tolerates more.
    lax = case.with_tolerance("1e-3")
    assert check_unit(case.validator, lax, submission_for(lax, 2, honest, **_claims(above)), steps) == PASSED


def _claims(sub: WorkSubmission) -> dict[str, object]:
    return {"checkpoint_digests": sub.checkpoint_digests, "result_digest": sub.result_digest}


# ---------------------------------------------------------------------------
# Malformed and missing claims


def test_malformed_claimed_checkpoint_is_malformed_and_rechecks(local: Case) -> None:
    honest = local.trainer.train_unit(local.job, 0)
    blobs = local.validator.blobs
    checkpoints = list(honest.checkpoint_digests)
    ck = decode_bundle(blobs.get(checkpoints[2]) or b"")
    ck["param/net.0.bias"] = ck["param/net.0.bias"][:-1]
    checkpoints[2] = blobs.put(encode_bundle(ck))  # checkpoint 3: what step 2 claims to produce
    sub = submission_for(local.job, 0, honest, checkpoint_digests=tuple(checkpoints))
    # A checker sampling step 1 reads checkpoints 1 (its start) and 2 (the claim): both fine.
    assert check_unit(local.validator, local.job, sub, (1,)) == PASSED
    result = check_unit(local.validator, local.job, sub, (2,))
    assert result.failure == FAILURE_MALFORMED
    assert local.validator.recheck(local.job, sub, verdict_for(sub, result, (2,))) is True
    assert local.validator.recheck(local.job, sub, verdict_for(sub, result, (0,))) is False
    garbage = blobs.put(b"\x00garbage")
    bad_result = submission_for(local.job, 0, honest, result_digest=garbage)
    assert check_unit(local.validator, local.job, bad_result, (0,)).failure == FAILURE_MALFORMED


def test_malformed_gradient_is_malformed(single: Case) -> None:
    honest = single.trainer.train_unit(single.job, 0)
    tensors = decode_bundle(single.validator.blobs.get(honest.result_digest) or b"")
    del tensors[unit.LOSS_KEY]
    sub = submission_for(single.job, 0, honest, result_digest=single.validator.blobs.put(encode_bundle(tensors)))
    expect_caught(single, sub, FAILURE_MALFORMED)


def test_missing_claim_is_unavailable(single: Case, local: Case) -> None:
    missing = Hash32(bytes([9]) * 32)
    honest = single.trainer.train_unit(single.job, 0)
    with pytest.raises(WorkUnavailable) as info:
        check_unit(single.validator, single.job, submission_for(single.job, 0, honest, result_digest=missing), (0,))
    assert info.value.digest == missing
    honest = local.trainer.train_unit(local.job, 0)
    checkpoints = (missing, *honest.checkpoint_digests[1:])  # what step 0 claims to produce
    with pytest.raises(WorkUnavailable) as info:
        check_unit(local.validator, local.job, submission_for(local.job, 0, honest, checkpoint_digests=checkpoints), (0,))
    assert info.value.digest == missing
