"""The seams of a node's own behaviour: six function-valued hooks with honest defaults.

A node does six things that a Byzantine node would do differently, and each
is one field of ``Seams``:

- ``train``: compute a unit assigned to us (on the work thread);
- ``amend``: the last look at our own unit before it is signed, given its
  job and the other units of its step that this node holds;
- ``check``: replay the sampled steps of someone else's unit (on the work thread);
- ``judge``: decide whether a proposal is valid, given the honest check;
- ``publish``: send our own signed proposal or vote to the peers;
- ``serve_blob``: answer a peer's request for a blob.

The honest node runs with ``HONEST``, whose functions do exactly the honest
thing and nothing else; the node's code never asks whether it is honest.
Deliberate misbehaviour for test networks replaces one seam (see
``tdml_node.devtools``), and only the ``--dev`` wiring installs it, after
the CometBFT practice of overriding the propose/prevote seams in its
Byzantine tests.

This module must never hold misbehaviour, nor any state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from consensus import pipeline
from consensus.transition import BlockResult
from consensus.types import Block, Hash32, JobState, SignedProposal, SignedVote, WorkSubmission
from consensus.work import CheckResult, TrainedUnit, WorkExecutor, check_unit
from tdml_node.runtime.netlink import Network


@dataclass(frozen=True, slots=True)
class Judgement:
    """Whether a proposal is valid and, when the check ran, the state after it."""

    valid: bool
    result: BlockResult | None


TrainFn = Callable[[WorkExecutor, JobState, int], TrainedUnit]
AmendFn = Callable[[JobState, WorkSubmission, Sequence[WorkSubmission]], WorkSubmission]
CheckFn = Callable[[WorkExecutor, JobState, WorkSubmission, tuple[int, ...]], CheckResult]
JudgeFn = Callable[[Block, Callable[[], Awaitable[Judgement]]], Awaitable[Judgement]]
PublishFn = Callable[[Network, SignedProposal | SignedVote], Awaitable[None]]
ServeBlobFn = Callable[[Hash32, Callable[[Hash32], bytes | None]], bytes | None]


def honest_train(executor: WorkExecutor, job: JobState, shard: int) -> TrainedUnit:
    """Unit ``shard`` of the step; a pipeline unit from the accepted outputs the chain links it to."""
    if job.spec.pipeline is None:
        return executor.train_unit(job, shard)
    inputs = pipeline.job_inputs(job, shard)
    if inputs is None:
        raise ValueError(f"unit {shard}'s inputs are not accepted yet")
    return executor.train_stage(job, shard, inputs)


def honest_amend(job: JobState, submission: WorkSubmission, others: Sequence[WorkSubmission]) -> WorkSubmission:
    return submission


def honest_check(executor: WorkExecutor, job: JobState, submission: WorkSubmission, steps: tuple[int, ...]) -> CheckResult:
    return check_unit(executor, job, submission, steps)


def honest_judge(block: Block, validate: Callable[[], Awaitable[Judgement]]) -> Awaitable[Judgement]:
    return validate()


async def honest_publish(network: Network, signed: SignedProposal | SignedVote) -> None:
    await network.broadcast(signed)


def honest_serve_blob(digest: Hash32, get: Callable[[Hash32], bytes | None]) -> bytes | None:
    return get(digest)


@dataclass(frozen=True, slots=True)
class Seams:
    train: TrainFn = honest_train
    amend: AmendFn = honest_amend
    check: CheckFn = honest_check
    judge: JudgeFn = honest_judge
    publish: PublishFn = honest_publish
    serve_blob: ServeBlobFn = honest_serve_blob


HONEST = Seams()
