"""Deliberate misbehaviour for test networks: one small class per behaviour, each bending one seam.

A behaviour takes the honest ``Seams`` and returns them with one function
replaced (``Withhold`` bends two: it must know its own blobs to refuse
them). It counts the faults it commits and the height of the first, which
the adversarial suite compares with what the chain caught; the counts are
served as the ``tdml_byzantine_*`` metrics by the dev wiring, which also
binds the node's committed height (the height a fault is counted at).

Trainers: ``zero``, ``random``, ``scale``, ``shift``, ``noise`` (forged
results), ``skip-steps`` (H > 1: an inner step left out), ``wrong-shard``,
``stale-parent`` (trained from an earlier step's state, claiming the
current one), ``copy`` (another trainer's unit claimed as its own),
``replay-old`` (its previous step's unit again), ``withhold`` (submits, then
serves none of its blobs).
Validators: ``lazy`` (passes units without replaying them), ``accuse``
(signs failing verdicts against honest units), ``equivocate`` (signs two
different votes per step and sends each to half its peers),
``approve-invalid`` (finds every proposal valid without checking it).
Floods and malformed frames are played by a rogue wire client in the tests
(``tests/adversarial/wire.py``), not by a node.

This module must never be imported by an honest node's code path, nor be
active on a production network: only ``devtools.wiring`` installs it, and
only on a dev network.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import ClassVar

import torch

from consensus import crypto
from consensus.crypto import Keypair
from consensus.types import (
    FAILURE_NONE,
    FAILURE_REPLAY,
    Block,
    Hash32,
    JobState,
    SignedProposal,
    SignedVote,
    WorkSubmission,
)
from consensus.work import PASSED, CheckResult, TrainedUnit, WorkExecutor
from tdml_node.runtime.netlink import Network
from tdml_node.runtime.seams import Judgement, Seams, honest_check, honest_train
from tdml_node.work.executor import TorchExecutor, model_state_optimizer
from tdml_node.work.models import build_model
from tdml_node.work.profile import torch_dtype
from tdml_node.work.state import parse_state
from tdml_node.work.tensors import decode_bundle, encode_bundle
from tdml_node.work.unit import delta_result

log = logging.getLogger("tdml.byzantine")


class Behaviour:
    """A deliberate misbehaviour: the seams it bends, and the faults it has committed."""

    names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name: str) -> None:
        self.name = name
        self.faults = 0
        self.first_fault_height = 0
        self.height: Callable[[], int] = lambda: 0
        """The node's committed height, bound by the dev wiring once the node exists."""

    def note_fault(self) -> None:
        height = self.height()
        self.faults += 1
        if not self.first_fault_height:
            self.first_fault_height = height
        log.warning("BYZANTINE (%s): fault %d at height %d", self.name, self.faults, height)

    def bend(self, seams: Seams) -> Seams:
        raise NotImplementedError


def _torch(executor: WorkExecutor) -> TorchExecutor:
    if not isinstance(executor, TorchExecutor):
        raise TypeError("Byzantine trainers forge through the torch executor's blob store")
    return executor


# ---------------------------------------------------------------------------
# Trainers (the train and amend seams)


class ForgedResult(Behaviour):
    """Computes the unit, then replaces its update tensors with a forgery (the claimed losses stay)."""

    names = ("zero", "random", "scale", "shift", "noise")

    def bend(self, seams: Seams) -> Seams:
        return dataclasses.replace(seams, train=self.train)

    def train(self, executor: WorkExecutor, job: JobState, shard: int) -> TrainedUnit:
        unit = honest_train(executor, job, shard)
        blobs = _torch(executor).blobs
        data = blobs.get(unit.result_digest)
        assert data is not None
        tensors = decode_bundle(data)
        gen = torch.Generator().manual_seed(int.from_bytes(unit.result_digest[:4], "big"))
        forged = {name: t if name.startswith("meta/") else self._forge(t, gen) for name, t in tensors.items()}
        self.note_fault()
        return dataclasses.replace(unit, result_digest=blobs.put(encode_bundle(forged)))

    def _forge(self, t: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        rms = t.float().pow(2).mean().sqrt().clamp_min(1e-6).to(t.dtype)
        if self.name == "zero":
            return torch.zeros_like(t)
        if self.name == "random":
            return torch.randn(t.shape, generator=gen, dtype=t.dtype) * rms
        if self.name == "scale":
            return t * 10
        if self.name == "shift":
            return t + 0.1 * rms
        return t + torch.randn(t.shape, generator=gen, dtype=t.dtype) * (0.01 * rms)


class SkippedStep(Behaviour):
    """(H > 1) claims H inner steps while leaving out the last: its checkpoint repeats the one before."""

    names = ("skip-steps",)

    def bend(self, seams: Seams) -> Seams:
        return dataclasses.replace(seams, train=self.train)

    def train(self, executor: WorkExecutor, job: JobState, shard: int) -> TrainedUnit:
        unit = honest_train(executor, job, shard)
        h = job.spec.inner_steps
        if h < 2:
            return unit
        blobs = _torch(executor).blobs
        digests = list(unit.checkpoint_digests)
        digests[h - 1] = digests[h - 2]
        losses = list(unit.losses)
        losses[h - 1] = losses[h - 2]
        model = build_model(job.spec.model, seed=0, dtype=torch_dtype(job.spec.profile))
        committed, before_last = blobs.get(job.model_root), blobs.get(digests[h - 2])
        assert committed is not None and before_last is not None
        start = parse_state(decode_bundle(committed), model, model_state_optimizer(job.spec)).params
        end = parse_state(decode_bundle(before_last), model, job.spec.optimizer).params
        result = blobs.put(delta_result(start, end, losses))
        self.note_fault()
        return dataclasses.replace(unit, checkpoint_digests=tuple(digests), result_digest=result, losses=tuple(losses))


class WrongShard(Behaviour):
    """Trains the next shard's samples and submits them as its own shard."""

    names = ("wrong-shard",)

    def bend(self, seams: Seams) -> Seams:
        return dataclasses.replace(seams, train=self.train)

    def train(self, executor: WorkExecutor, job: JobState, shard: int) -> TrainedUnit:
        if job.spec.shards < 2:
            return honest_train(executor, job, shard)
        self.note_fault()
        return honest_train(executor, job, (shard + 1) % job.spec.shards)


class StaleParent(Behaviour):
    """Trains from the model state of an earlier step while claiming the current one."""

    names = ("stale-parent",)

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._roots: dict[bytes, list[Hash32]] = {}

    def bend(self, seams: Seams) -> Seams:
        return dataclasses.replace(seams, train=self.train)

    def train(self, executor: WorkExecutor, job: JobState, shard: int) -> TrainedUnit:
        seen = self._roots.setdefault(bytes(job.job_id), [])
        if not seen or seen[-1] != job.model_root:
            seen.append(job.model_root)
        if len(seen) < 2:
            return honest_train(executor, job, shard)
        self.note_fault()
        return honest_train(executor, dataclasses.replace(job, model_root=seen[-2]), shard)


def _claiming(sub: WorkSubmission, work: WorkSubmission) -> WorkSubmission:
    """``sub`` with the digests and losses of ``work``: a claim to have done that work."""
    return dataclasses.replace(
        sub, checkpoint_digests=work.checkpoint_digests, result_digest=work.result_digest, losses=work.losses
    )


class Copier(Behaviour):
    """Claims another trainer's unit of the same step as its own."""

    names = ("copy",)

    def bend(self, seams: Seams) -> Seams:
        return dataclasses.replace(seams, amend=self.amend)

    def amend(self, job: JobState, sub: WorkSubmission, others: Sequence[WorkSubmission]) -> WorkSubmission:
        for other in others:
            if other.trainer != sub.trainer:
                self.note_fault()
                return _claiming(sub, other)
        return sub


class OldReplay(Behaviour):
    """Submits its previous step's unit of the same shard again."""

    names = ("replay-old",)

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._own: dict[tuple[bytes, int], WorkSubmission] = {}

    def bend(self, seams: Seams) -> Seams:
        return dataclasses.replace(seams, amend=self.amend)

    def amend(self, job: JobState, sub: WorkSubmission, others: Sequence[WorkSubmission]) -> WorkSubmission:
        key = (bytes(sub.job), sub.shard)
        previous = self._own.get(key)
        self._own[key] = sub
        if previous is not None and previous.step < sub.step:
            self.note_fault()
            return _claiming(sub, previous)
        return sub


class Withhold(Behaviour):
    """Submits its units honestly, then serves none of their blobs."""

    names = ("withhold",)

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._withheld: set[bytes] = set()

    def bend(self, seams: Seams) -> Seams:
        return dataclasses.replace(seams, train=self.train, serve_blob=self.serve_blob)

    def train(self, executor: WorkExecutor, job: JobState, shard: int) -> TrainedUnit:
        unit = honest_train(executor, job, shard)
        self._withheld.update((unit.result_digest, *unit.checkpoint_digests))
        self.note_fault()
        return unit

    def serve_blob(self, digest: Hash32, get: Callable[[Hash32], bytes | None]) -> bytes | None:
        return None if digest in self._withheld else get(digest)


# ---------------------------------------------------------------------------
# Validators (the check, judge and publish seams)


class Lazy(Behaviour):
    """Passes every unit it must check without replaying it."""

    names = ("lazy",)

    def bend(self, seams: Seams) -> Seams:
        return dataclasses.replace(seams, check=self.check)

    def check(self, executor: WorkExecutor, job: JobState, sub: WorkSubmission, steps: tuple[int, ...]) -> CheckResult:
        self.note_fault()
        return PASSED


class Accuser(Behaviour):
    """Signs a failing verdict against every honest unit it checks."""

    names = ("accuse",)

    def bend(self, seams: Seams) -> Seams:
        return dataclasses.replace(seams, check=self.check)

    def check(self, executor: WorkExecutor, job: JobState, sub: WorkSubmission, steps: tuple[int, ...]) -> CheckResult:
        result = honest_check(executor, job, sub, steps)
        if result.failure != FAILURE_NONE or not steps:
            return result
        self.note_fault()
        # Derived from the unit, not drawn at random, so a simulation seed replays exactly.
        forged = Hash32(crypto.sha256(b"accuse" + sub.result_digest))
        return CheckResult(FAILURE_REPLAY, steps[0], forged, 0)


class ApproveInvalid(Behaviour):
    """Finds every proposal valid without checking it."""

    names = ("approve-invalid",)

    def bend(self, seams: Seams) -> Seams:
        return dataclasses.replace(seams, judge=self.judge)

    async def judge(self, block: Block, validate: Callable[[], Awaitable[Judgement]]) -> Judgement:
        self.note_fault()
        return Judgement(True, None)


class Equivocator(Behaviour):
    """Signs a second, conflicting vote for every vote it casts, and sends each to half its peers."""

    names = ("equivocate",)

    def __init__(self, name: str, keypair: Keypair, chain_id: str) -> None:
        super().__init__(name)
        self.keypair = keypair
        self.chain_id = chain_id

    def bend(self, seams: Seams) -> Seams:
        return dataclasses.replace(seams, publish=self.publish)

    async def publish(self, network: Network, signed: SignedProposal | SignedVote) -> None:
        if not isinstance(signed, SignedVote):
            await network.broadcast(signed)
            return
        vote = signed.vote
        other_hash = None if vote.block_hash is not None else Hash32(crypto.sha256(b"equivocation" + bytes(vote.height)))
        other = dataclasses.replace(vote, block_hash=other_hash)
        # Signed with the raw key, past the double-sign guard: that is the fault.
        conflicting = SignedVote(other, self.keypair.sign_value(crypto.DOMAIN_VOTE, self.chain_id, other))
        for i, peer in enumerate(sorted(network.connected_keys())):
            network.send_to(peer, conflicting if i % 2 else signed)
        self.note_fault()


BEHAVIOURS: tuple[type[Behaviour], ...] = (
    ForgedResult, SkippedStep, WrongShard, StaleParent, Copier, OldReplay, Withhold,
    Lazy, Accuser, Equivocator, ApproveInvalid,
)
