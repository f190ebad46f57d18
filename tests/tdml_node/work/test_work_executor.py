"""The torch executor: determinism, replay, the thread-count profile, missing and invalid inputs."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import torch
from work_harness import (
    CHAIN_ID,
    TRAINER,
    advance,
    digits_job,
    job_state,
    local_job,
    make_executor,
    submission_for,
)

from consensus.crypto import sha256
from consensus.types import (
    FAILURE_NONE,
    FAILURE_REPLAY,
    Decimal,
    DecimalArg,
    Hash32,
    JobSpec,
    PipelineSpec,
)
from consensus.work import (
    PASSED,
    InvalidWork,
    WorkRejected,
    WorkUnavailable,
    check_unit,
    sign_submission,
    validate_submission,
)
from tdml_node.work.executor import TorchExecutor
from tdml_node.work.models import build_model, make_model_spec
from tdml_node.work.profile import local_profile
from tdml_node.work.state import encode_state
from tdml_node.work.tensors import bundle_digest, decode_bundle


def test_initial_root_is_the_seeded_model_and_is_stored() -> None:
    spec, data = digits_job()
    ex = make_executor(data)
    root = ex.initial_model_root(spec)
    model = build_model(spec.model, seed=spec.seed, dtype=torch.float32)
    assert root == bundle_digest(encode_state(model))
    assert ex.blobs.has(root)
    assert make_executor(data).initial_model_root(spec) == root
    other = dataclasses.replace(spec, seed=1)
    assert ex.initial_model_root(other) != root


def test_initial_root_rejects_bad_specs() -> None:
    spec, data = digits_job()
    ex = make_executor(data)
    with pytest.raises(InvalidWork):
        ex.initial_model_root(dataclasses.replace(spec, model=make_model_spec("mlp", in_dim=64)))
    bad_opt = dataclasses.replace(spec.optimizer, params=(*spec.optimizer.params, DecimalArg("zeta", Decimal("1"))))
    with pytest.raises(InvalidWork, match="zeta"):
        ex.initial_model_root(dataclasses.replace(spec, optimizer=bad_opt))
    with pytest.raises(InvalidWork, match="layer_bounds end at 5"):
        ex.initial_model_root(dataclasses.replace(spec, pipeline=PipelineSpec((0, 1, 5), 1)))


@pytest.mark.parametrize("make_job", [digits_job, local_job])
def test_training_is_deterministic_and_every_step_replays(make_job: Callable[[], tuple[JobSpec, bytes]]) -> None:
    spec, data = make_job()
    a, b = make_executor(data), make_executor(data)
    root = a.initial_model_root(spec)
    assert b.initial_model_root(spec) == root
    job = job_state(spec, root, 0)
    for shard in range(spec.shards):
        unit = a.train_unit(job, shard)
        again = b.train_unit(job, shard)
        assert unit == again
        assert len(unit.losses) == spec.inner_steps
        assert len(unit.checkpoint_digests) == (0 if spec.inner_steps == 1 else spec.inner_steps)
        sub = submission_for(job, shard, unit)
        for inner in range(spec.inner_steps):
            out = b.replay_step(job, sub, inner)
            claimed = unit.result_digest if spec.inner_steps == 1 else unit.checkpoint_digests[inner]
            assert (out.digest, out.loss) == (claimed, unit.losses[inner])
        assert check_unit(b, job, sub, range(spec.inner_steps)) == PASSED
        assert b.check_result(job, sub) == FAILURE_NONE
    # Nothing about a unit depends on the cache: a later step on a warm executor,
    # then the same step on a cold one.
    root1 = advance(a, spec, root, 0)
    job1 = job_state(spec, root1, 1)
    cold = make_executor(data)
    cold.initial_model_root(spec)
    cold.blobs.put(a.blobs.get(root1) or b"")
    assert a.train_unit(job1, 0) == cold.train_unit(job1, 0)


def test_result_bundle_contents() -> None:
    spec, data = digits_job()
    ex = make_executor(data)
    job = job_state(spec, ex.initial_model_root(spec), 0)
    unit = ex.train_unit(job, 1)
    t = decode_bundle(ex.blobs.get(unit.result_digest) or b"")
    assert sorted(t) == sorted(["meta/loss"] + [f"grad/net.{i}.{k}" for i in (0, 2, 4) for k in ("weight", "bias")])
    assert t["meta/loss"].shape == (1,) and t["meta/loss"].view(torch.int32).item() & 0xFFFFFFFF == unit.losses[0]
    assert unit.receipt == spec.profile


def test_step_outcome_is_deterministic_and_evaluates_on_schedule() -> None:
    spec, data = digits_job(steps=3)
    spec = dataclasses.replace(spec, eval_every=2)
    a, b = make_executor(data), make_executor(data)
    root = a.initial_model_root(spec)
    b.initial_model_root(spec)
    for step in range(3):
        job = job_state(spec, root, step)
        results = tuple(a.train_unit(job, k).result_digest for k in range(spec.shards))
        for digest in results:
            b.blobs.put(a.blobs.get(digest) or b"")
        out = a.step_outcome(job, results)
        assert b.step_outcome(job, results) == out
        evaluated = step in (1, 2)
        assert (out.eval_total == 360) == evaluated and (out.eval_total == 0) == (not evaluated)
        if evaluated:
            assert 0 < out.eval_correct <= 360 and out.eval_loss != 0
        root = out.model_root
        assert a.blobs.has(root)


def test_thread_count_changes_the_bits_and_the_receipt() -> None:
    """On this CPU the weight gradient of W's last layer is reduced differently with two threads."""
    spec, data = digits_job()
    honest = make_executor(data)
    root = honest.initial_model_root(spec)
    two = TorchExecutor(honest.blobs, profile=local_profile(threads=2))
    job = job_state(spec, root, 0)
    one_unit = honest.train_unit(job, 0)
    two_unit = two.train_unit(job, 0)
    assert two.train_unit(job, 0) == two_unit  # still deterministic at a fixed thread count
    assert two_unit.result_digest != one_unit.result_digest
    assert two_unit.receipt == dataclasses.replace(spec.profile, threads=2) != spec.profile
    a = decode_bundle(honest.blobs.get(one_unit.result_digest) or b"")
    b = decode_bundle(honest.blobs.get(two_unit.result_digest) or b"")
    differing = [name for name in a if not torch.equal(a[name], b[name])]
    assert differing and all(torch.allclose(a[n], b[n], rtol=1e-5, atol=1e-7) for n in differing)
    # The chain refuses the unit on its receipt alone...
    validate_submission(CHAIN_ID, job, sign_submission(TRAINER, CHAIN_ID, submission_for(job, 0, one_unit)))
    with pytest.raises(WorkRejected, match="profile"):
        validate_submission(CHAIN_ID, job, sign_submission(TRAINER, CHAIN_ID, submission_for(job, 0, two_unit)))
    # ...and a validator replaying under the job's profile would not reproduce it either.
    forged = submission_for(job, 0, two_unit, receipt=spec.profile)
    assert check_unit(honest, job, forged, [0]).failure == FAILURE_REPLAY


def test_missing_blobs_are_unavailable() -> None:
    spec, data = local_job(steps=1, inner_steps=2)
    ex = make_executor(data)
    root = ex.initial_model_root(spec)
    job = job_state(spec, root, 0)
    unit = ex.train_unit(job, 0)
    sub = submission_for(job, 0, unit)
    bare = TorchExecutor(type(ex.blobs)())
    with pytest.raises(WorkUnavailable, match="blob"):
        bare.train_unit(job, 0)  # no dataset
    bare.blobs.put(data)
    with pytest.raises(WorkUnavailable):
        bare.train_unit(job, 0)  # no model state
    bare.blobs.put(ex.blobs.get(root) or b"")
    with pytest.raises(WorkUnavailable):
        bare.replay_step(job, sub, 1)  # no checkpoint 1
    with pytest.raises(WorkUnavailable):
        bare.check_result(job, sub)  # no result
    with pytest.raises(WorkUnavailable):
        bare.step_outcome(job, (unit.result_digest, Hash32(sha256(b"x"))))
    assert bare.replay_step(job, sub, 0).digest == unit.checkpoint_digests[0]


def test_dataset_must_fit_the_model() -> None:
    spec, data = digits_job()
    ex = make_executor(data)
    wrong = dataclasses.replace(spec, model=make_model_spec("mlp", in_dim=32, hidden=8, layers=1, classes=10))
    root = ex.initial_model_root(wrong)
    with pytest.raises(InvalidWork, match="features"):
        ex.train_unit(job_state(wrong, root, 0), 0)
    few = dataclasses.replace(spec, model=make_model_spec("mlp", in_dim=64, hidden=8, layers=1, classes=5))
    with pytest.raises(InvalidWork, match="classes"):
        ex.train_unit(job_state(few, ex.initial_model_root(few), 0), 0)


def test_malformed_model_state_is_invalid() -> None:
    spec, data = digits_job()
    ex = make_executor(data)
    ex.initial_model_root(spec)
    root = ex.blobs.put(b"not a bundle")
    with pytest.raises(InvalidWork):
        ex.train_unit(job_state(spec, root, 0), 0)
    other = build_model(make_model_spec("mlp", in_dim=64, hidden=16, layers=2, classes=10), seed=0, dtype=torch.float32)
    with pytest.raises(InvalidWork, match="state tensor"):
        ex.train_unit(job_state(spec, ex.blobs.put(encode_state(other)), 0), 0)
