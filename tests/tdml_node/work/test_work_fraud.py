"""Faked work is caught by the checker's procedure and the evidence re-checks; honest work passes.

Each fake is what a cheating trainer could submit instead of the honest
unit: a tampered result (random, zeros, scaled, mean-shifted, noised), a
skipped inner step, another shard's batches, a stale parent state, lying
losses, unreadable blobs. The validator is a separate executor sharing the
blob store, as a peer would after fetching the blobs.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from work_harness import (
    advance,
    digits_job,
    job_state,
    local_job,
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
    Hash32,
    JobSpec,
    JobState,
    WorkSubmission,
)
from consensus.work import PASSED, CheckResult, check_unit, compute_sampled_steps
from tdml_node.work import unit
from tdml_node.work.datasets import Dataset
from tdml_node.work.executor import TorchExecutor, model_state_optimizer
from tdml_node.work.models import build_model
from tdml_node.work.optim import build_optimizer, compute_lr
from tdml_node.work.state import ModelState, encode_state, load_state, parse_state
from tdml_node.work.tensors import decode_bundle, encode_bundle

Tamper = Callable[[torch.Tensor], torch.Tensor]

TAMPERS: dict[str, Tamper] = {
    "random": lambda t: torch.randn(t.shape, dtype=t.dtype, generator=torch.Generator().manual_seed(1)),
    "zeros": torch.zeros_like,
    "scaled": lambda t: t * 2,
    "mean_shift": lambda t: t + 0.1,
    "noise": lambda t: t + 1e-3 * torch.randn(t.shape, dtype=t.dtype, generator=torch.Generator().manual_seed(2)),
}


def setup(spec: JobSpec, data: bytes) -> tuple[TorchExecutor, TorchExecutor, JobState]:
    trainer = make_executor(data)
    root = trainer.initial_model_root(spec)
    root = advance(trainer, spec, root, 0)
    validator = TorchExecutor(trainer.blobs)
    return trainer, validator, job_state(spec, root, 1)


def all_steps(spec: JobSpec) -> tuple[int, ...]:
    """The steps a checker samples under the job's policy; these jobs check every one."""
    steps = compute_sampled_steps(bytes(64), spec.inner_steps, spec.verification.checked_steps)
    assert steps == tuple(range(spec.inner_steps))
    return steps


def expect_caught(
    validator: TorchExecutor, job: JobState, sub: WorkSubmission, failure: int, failed_step: int = -1
) -> CheckResult:
    """The check fails the way expected, and re-checking the resulting verdict upholds it."""
    steps = all_steps(job.spec)
    result = check_unit(validator, job, sub, steps)
    assert (result.failure, result.failed_step) == (failure, failed_step)
    assert validator.recheck(job, sub, verdict_for(sub, result, steps)) is True
    return result


def tampered_result(ex: TorchExecutor, digest: Hash32, prefix: str, fn: Tamper) -> Hash32:
    tensors = decode_bundle(ex.blobs.get(digest) or b"")
    return ex.blobs.put(encode_bundle(map_tensors(tensors, prefix, fn)))


# ---------------------------------------------------------------------------
# Honest work, and verdicts that accuse it


@pytest.mark.parametrize("make_job", [digits_job, local_job])
def test_honest_unit_passes_and_false_accusations_do_not_recheck(
    make_job: Callable[[], tuple[JobSpec, bytes]],
) -> None:
    spec, data = make_job()
    trainer, validator, job = setup(spec, data)
    sub = submission_for(job, 1, trainer.train_unit(job, 1))
    steps = all_steps(spec)
    assert check_unit(validator, job, sub, steps) == PASSED
    for failure in (FAILURE_PARENT, FAILURE_RESULT, FAILURE_MALFORMED, FAILURE_NONE):
        fabricated = CheckResult(failure, -1, ZERO_HASH, 0)
        assert validator.recheck(job, sub, verdict_for(sub, fabricated, steps)) is False
    for inner in steps:
        fabricated = CheckResult(FAILURE_REPLAY, inner, ZERO_HASH, 0)
        assert validator.recheck(job, sub, verdict_for(sub, fabricated, steps)) is False


# ---------------------------------------------------------------------------
# H = 1: the result is the gradient, so any tampering is a replay mismatch


@pytest.mark.parametrize("name", sorted(TAMPERS))
def test_tampered_gradient_is_caught(name: str) -> None:
    spec, data = digits_job()
    trainer, validator, job = setup(spec, data)
    honest = trainer.train_unit(job, 2)
    fake = tampered_result(trainer, honest.result_digest, unit.GRAD_PREFIX, TAMPERS[name])
    sub = submission_for(job, 2, honest, result_digest=fake)
    result = expect_caught(validator, job, sub, FAILURE_REPLAY, 0)
    assert result.observed_digest == honest.result_digest


def test_lying_loss_is_caught() -> None:
    spec, data = digits_job()
    trainer, validator, job = setup(spec, data)
    honest = trainer.train_unit(job, 0)
    sub = submission_for(job, 0, honest, losses=(honest.losses[0] ^ 1,))
    expect_caught(validator, job, sub, FAILURE_REPLAY, 0)


@pytest.mark.parametrize("make_job", [digits_job, local_job])
def test_wrong_shard_is_caught(make_job: Callable[[], tuple[JobSpec, bytes]]) -> None:
    spec, data = make_job()
    trainer, validator, job = setup(spec, data)
    other = trainer.train_unit(job, 1)
    sub = submission_for(job, 0, other)
    expect_caught(validator, job, sub, FAILURE_REPLAY, 0)


@pytest.mark.parametrize("make_job", [digits_job, local_job])
def test_stale_parent_is_caught(make_job: Callable[[], tuple[JobSpec, bytes]]) -> None:
    spec, data = make_job()
    trainer = make_executor(data)
    root0 = trainer.initial_model_root(spec)
    root1 = advance(trainer, spec, root0, 0)
    validator = TorchExecutor(trainer.blobs)
    job = job_state(spec, root1, 1)
    stale = trainer.train_unit(job_state(spec, root0, 1), 0)
    # Claiming the committed parent while computing from the old one: replay differs.
    expect_caught(validator, job, submission_for(job, 0, stale), FAILURE_REPLAY, 0)
    # Owning up to the old parent: refused before any replay.
    sub = submission_for(job, 0, stale, parent_model_root=root0)
    expect_caught(validator, job, sub, FAILURE_PARENT)


# ---------------------------------------------------------------------------
# H > 1: checkpoints are replayed step by step, the result checked against the last


@pytest.mark.parametrize("name", sorted(TAMPERS))
def test_tampered_delta_is_caught_by_the_result_check(name: str) -> None:
    spec, data = local_job()
    trainer, validator, job = setup(spec, data)
    honest = trainer.train_unit(job, 1)
    fake = tampered_result(trainer, honest.result_digest, unit.DELTA_PREFIX, TAMPERS[name])
    sub = submission_for(job, 1, honest, result_digest=fake)
    assert validator.check_result(job, sub) == FAILURE_RESULT
    expect_caught(validator, job, sub, FAILURE_RESULT)


@pytest.mark.parametrize("name", sorted(TAMPERS))
def test_tampered_delta_with_matching_final_checkpoint_is_caught_by_replay(name: str) -> None:
    """The cheater rewrites the last checkpoint to agree with the fake delta; replaying it fails."""
    spec, data = local_job()
    trainer, validator, job = setup(spec, data)
    honest = trainer.train_unit(job, 1)
    fake_tensors = map_tensors(
        decode_bundle(trainer.blobs.get(honest.result_digest) or b""), unit.DELTA_PREFIX, TAMPERS[name]
    )
    start = decode_bundle(trainer.blobs.get(job.model_root) or b"")
    final = decode_bundle(trainer.blobs.get(honest.checkpoint_digests[-1]) or b"")
    params = {}
    for key in final:
        if key.startswith("param/"):
            param = key[len("param/") :]
            final[key] = start[key] - fake_tensors[unit.DELTA_PREFIX + param]
            params[param] = final[key]
    # Recomputed from the rewritten checkpoint so the two agree to the last bit.
    result = unit.delta_result({p: start["param/" + p] for p in params}, params, honest.losses)
    checkpoints = (*honest.checkpoint_digests[:-1], trainer.blobs.put(encode_bundle(final)))
    sub = submission_for(job, 1, honest, checkpoint_digests=checkpoints, result_digest=trainer.blobs.put(result))
    assert validator.check_result(job, sub) == FAILURE_NONE  # consistent on its face
    expect_caught(validator, job, sub, FAILURE_REPLAY, spec.inner_steps - 1)


def fake_local_unit(ex: TorchExecutor, job: JobState, shard: int, skip: int) -> WorkSubmission:
    """A local-SGD unit whose inner step ``skip`` was never computed (its checkpoint repeats the last)."""
    spec = job.spec
    dataset = Dataset.decode(ex.blobs.get(spec.dataset) or b"", task=spec.task, seq_len=spec.seq_len)
    model = build_model(spec.model, seed=0, dtype=torch.float32)
    start = parse_state(decode_bundle(ex.blobs.get(job.model_root) or b""), model, model_state_optimizer(spec))
    load_state(model, ModelState(start.params, {}))
    optimizer = build_optimizer(spec.optimizer, model.parameters(), lr=compute_lr(spec, job.step))
    checkpoints, losses = [], []
    for inner in range(spec.inner_steps):
        if inner == skip:
            losses.append(losses[-1] if losses else 0x3F800000)
        else:
            losses.append(unit.inner_step(model, optimizer, dataset, spec, job.step, shard, inner))
        checkpoints.append(ex.blobs.put(encode_state(model, optimizer)))
    result = unit.delta_result(start.params, dict(model.named_parameters()), losses)
    honest = ex.train_unit(job, shard)
    return submission_for(
        job,
        shard,
        honest,
        checkpoint_digests=tuple(checkpoints),
        result_digest=ex.blobs.put(result),
        losses=tuple(losses),
    )


@pytest.mark.parametrize("skip", [0, 1, 2, 3])
def test_skipped_inner_step_is_caught(skip: int) -> None:
    spec, data = local_job()
    trainer, validator, job = setup(spec, data)
    sub = fake_local_unit(trainer, job, 0, skip)
    assert validator.check_result(job, sub) == FAILURE_NONE  # the result matches its own checkpoints
    expect_caught(validator, job, sub, FAILURE_REPLAY, skip)


def test_skipped_step_with_adamw_is_caught() -> None:
    spec, data = local_job(optimizer="adamw")
    trainer, validator, job = setup(spec, data)
    assert check_unit(validator, job, submission_for(job, 0, trainer.train_unit(job, 0)), all_steps(spec)) == PASSED
    expect_caught(validator, job, fake_local_unit(trainer, job, 0, 2), FAILURE_REPLAY, 2)


def test_unreadable_checkpoint_and_result_are_malformed() -> None:
    spec, data = local_job()
    trainer, validator, job = setup(spec, data)
    honest = trainer.train_unit(job, 0)
    garbage = trainer.blobs.put(b"\x00garbage")
    checkpoints = list(honest.checkpoint_digests)
    checkpoints[1] = garbage  # the state before inner step 2
    sub = submission_for(job, 0, honest, checkpoint_digests=tuple(checkpoints))
    # Checking every step, the replay of step 1 (which should produce it) fails first.
    expect_caught(validator, job, sub, FAILURE_REPLAY, 1)
    # A checker sampling only step 2 reads it as its starting point.
    result = check_unit(validator, job, sub, [2])
    assert result.failure == FAILURE_MALFORMED
    assert validator.recheck(job, sub, verdict_for(sub, result, [2])) is True
    assert validator.recheck(job, sub, verdict_for(sub, result, [0])) is False
    # A replay verdict at that step is upheld too: the claim cannot be reproduced.
    replay = CheckResult(FAILURE_REPLAY, 2, ZERO_HASH, 0)
    assert validator.recheck(job, sub, verdict_for(sub, replay, [2])) is True
    bad_result = submission_for(job, 0, honest, result_digest=garbage)
    assert validator.check_result(job, bad_result) == FAILURE_MALFORMED
    expect_caught(validator, job, bad_result, FAILURE_MALFORMED)
    # A checkpoint of the wrong model shape is malformed as well.
    final = decode_bundle(trainer.blobs.get(honest.checkpoint_digests[-1]) or b"")
    final["param/net.0.bias"] = final["param/net.0.bias"][:-1]
    checkpoints = (*honest.checkpoint_digests[:-1], trainer.blobs.put(encode_bundle(final)))
    sub = submission_for(job, 0, honest, checkpoint_digests=checkpoints)
    assert validator.check_result(job, sub) == FAILURE_MALFORMED


def test_replay_reports_what_it_observed() -> None:
    spec, data = local_job()
    trainer, validator, job = setup(spec, data)
    honest = trainer.train_unit(job, 0)
    sub = fake_local_unit(trainer, job, 0, 1)
    result = check_unit(validator, job, sub, all_steps(spec))
    assert result.observed_digest == honest.checkpoint_digests[1]
    assert result.observed_loss == honest.losses[1]
