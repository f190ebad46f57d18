"""Shared helpers of the executor tests: small jobs, job states, submissions and verdicts.

Imported by the test modules beside it (pytest puts this directory on the
path); it holds no tests and no fixtures of its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache

import torch

from consensus import crypto
from consensus.types import (
    JOB_ACTIVE,
    ZERO_HASH,
    Address,
    Amount,
    Hash32,
    Height,
    JobSpec,
    JobState,
    PublicKey,
    Signature,
    Verdict,
    VerificationPolicy,
    WorkSubmission,
)
from consensus.work import CheckResult, TrainedUnit, submission_id
from tdml_node.storage import MemoryBlobStore
from tdml_node.work.datasets import synthetic_bundle
from tdml_node.work.executor import TorchExecutor
from tdml_node.work.jobs import get_job, make_job, optimizer_spec
from tdml_node.work.models import make_model_spec

TRAINER = crypto.Keypair.from_seed(bytes(range(32)))
CHAIN_ID = "tdml-test"


@lru_cache(maxsize=1)
def small_synthetic() -> bytes:
    return synthetic_bundle(n_train=512, n_test=128, features=16, classes=4, seed=1)


def digits_job(steps: int = 20) -> tuple[JobSpec, bytes]:
    """The default preset (workload W), cut to ``steps`` steps."""
    return get_job("digits-mlp", steps=steps)


def local_job(steps: int = 4, inner_steps: int = 4, *, optimizer: str = "sgd") -> tuple[JobSpec, bytes]:
    """A small H > 1 job on synthetic data; every inner step is checked (``checked_steps = H``)."""
    data = small_synthetic()
    inner = (
        optimizer_spec("sgd", lr="0.05", momentum="0.9")
        if optimizer == "sgd"
        else optimizer_spec("adamw", lr="0.01")
    )
    spec = make_job(
        "local-test",
        dataset=data,
        model=make_model_spec("mlp", in_dim=16, hidden=32, layers=2, classes=4),
        optimizer=inner,
        outer_optimizer=optimizer_spec("sgd", lr="0.7", momentum="0.9", nesterov="1"),
        global_batch=64,
        shards=2,
        inner_steps=inner_steps,
        steps=steps,
        eval_every=2,
        verification=VerificationPolicy(
            checked_steps=inner_steps, checkers_per_unit=0, tolerance="0", unit_timeout_blocks=20
        ),
    )
    return spec, data


def make_executor(data: bytes, **kwargs: object) -> TorchExecutor:
    blobs = MemoryBlobStore()
    blobs.put(data)
    return TorchExecutor(blobs, **kwargs)  # type: ignore[arg-type]


def job_state(spec: JobSpec, root: Hash32, step: int = 0) -> JobState:
    """The job at ``step`` with every shard assigned to ``TRAINER`` and none accepted yet.

    A whole ``JobState``, since some tests also validate submissions against
    it; the executor itself reads only its ``WorkView`` part.
    """
    return JobState(
        job_id=Hash32(crypto.sha256(spec.name.encode())),
        spec=spec,
        submitter=Address(bytes(20)),
        status=JOB_ACTIVE,
        step=step,
        model_root=root,
        created_height=Height(0),
        step_started_height=Height(0),
        step_seed=ZERO_HASH,
        assignment=(crypto.address_of(TRAINER.public_key),) * spec.shards,
        deadlines=(Height(2**62),) * spec.shards,
        accepted=(None,) * spec.shards,
        results=(None,) * spec.shards,
        escrow=Amount(0),
        last_outcome=None,
        finished_height=Height(0),
    )


def submission_for(job: JobState, shard: int, unit: TrainedUnit, **changes: object) -> WorkSubmission:
    """The submission a trainer makes for a unit, with optional fields replaced (for fakes)."""
    sub = WorkSubmission(
        job=job.job_id,
        step=job.step,
        shard=shard,
        trainer=TRAINER.public_key,
        parent_model_root=job.model_root,
        checkpoint_digests=unit.checkpoint_digests,
        result_digest=unit.result_digest,
        losses=unit.losses,
        receipt=unit.receipt,
        links=unit.links,
    )
    return dataclasses.replace(sub, **changes)  # type: ignore[arg-type]


def verdict_for(sub: WorkSubmission, result: CheckResult, steps: Sequence[int]) -> Verdict:
    """An (unsigned) verdict carrying a check result; ``recheck`` reads only its claim."""
    return Verdict(
        submission_id=submission_id(sub),
        validator=PublicKey(bytes(32)),
        sample_signature=Signature(bytes(64)),
        checked_steps=tuple(steps),
        failure=result.failure,
        failed_step=result.failed_step,
        observed_digest=result.observed_digest,
        observed_loss=result.observed_loss,
        receipt=sub.receipt,
    )


def advance(executor: TorchExecutor, spec: JobSpec, root: Hash32, step: int) -> Hash32:
    """Train every shard of ``step`` honestly and aggregate; the new root."""
    job = job_state(spec, root, step)
    units = [executor.train_unit(job, k) for k in range(spec.shards)]
    return executor.step_outcome(job, tuple(u.result_digest for u in units)).model_root


def map_tensors(
    tensors: Mapping[str, torch.Tensor], prefix: str, fn: Callable[[torch.Tensor], torch.Tensor]
) -> dict[str, torch.Tensor]:
    """A copy of ``tensors`` with ``fn`` applied to those whose names start with ``prefix``."""
    return {name: (fn(t) if name.startswith(prefix) else t.clone()) for name, t in tensors.items()}
