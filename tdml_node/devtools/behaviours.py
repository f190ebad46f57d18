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
serves none of its blobs). Each of these plays on a pipeline stage unit
too (``zero`` and the others forge its result: a forward unit's output
activations, else its parameter gradients).
Stage trainers (pipeline jobs only): ``forge-gradient`` (hands a forged
gradient on to the stage before), ``forge-inputs`` (trains from a forged
input and names it, as if a neighbour had handed it on), ``skip-micro``
(leaves its last micro-batch out).
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
from torch import nn

from consensus import crypto, pipeline
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
from consensus.work import PASSED, CheckResult, TrainedUnit, WorkExecutor, WorkUnavailable
from tdml_node.runtime.netlink import Network
from tdml_node.runtime.seams import Judgement, Seams, honest_check, honest_train
from tdml_node.work import stage
from tdml_node.work.datasets import Dataset
from tdml_node.work.executor import TorchExecutor, model_state_optimizer
from tdml_node.work.models import build_model, build_model_skeleton
from tdml_node.work.pipeline_state import decode_pipeline_state
from tdml_node.work.profile import torch_dtype
from tdml_node.work.stage_unit import StageOutput, stage_parameters
from tdml_node.work.state import parse_state
from tdml_node.work.tensors import decode_bundle, encode_bundle
from tdml_node.work.unit import delta_result, unit_batch

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


def _get(executor: TorchExecutor, digest: Hash32) -> bytes:
    data = executor.blobs.get(digest)
    if data is None:
        raise WorkUnavailable(f"blob {digest.hex()} is missing", digest)
    return data


def _negated(executor: TorchExecutor, digest: Hash32) -> Hash32:
    """The bundle ``digest`` with every tensor negated: the right size and shape, the wrong direction."""
    return executor.blobs.put(encode_bundle({n: -t for n, t in decode_bundle(_get(executor, digest)).items()}))


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
        unit = honest_train(executor, dataclasses.replace(job, model_root=seen[-2]), shard)
        if unit.links is None:
            return unit
        # A stage unit names its stage's state: it claims the committed one, as a plain unit claims the parent.
        state = decode_pipeline_state(_get(_torch(executor), job.model_root), job.spec)
        current = state.stage_roots[pipeline.place_of(job.spec, shard).stage]
        return dataclasses.replace(unit, links=dataclasses.replace(unit.links, stage_root=current))


def _claiming(sub: WorkSubmission, work: WorkSubmission) -> WorkSubmission:
    """``sub`` with the digests and losses of ``work``: a claim to have done that work."""
    return dataclasses.replace(
        sub, checkpoint_digests=work.checkpoint_digests, result_digest=work.result_digest, losses=work.losses
    )


class Copier(Behaviour):
    """Claims another trainer's unit of the same step as its own (a stage unit: another trainer's outputs)."""

    names = ("copy",)

    def bend(self, seams: Seams) -> Seams:
        return dataclasses.replace(seams, amend=self.amend)

    def amend(self, job: JobState, sub: WorkSubmission, others: Sequence[WorkSubmission]) -> WorkSubmission:
        for other in others:
            if other.trainer != sub.trainer:
                self.note_fault()
                if sub.links is None:
                    return _claiming(sub, other)
                gradient = other.links.output_gradient if other.links is not None else None
                losses = other.losses if len(other.losses) == len(sub.losses) else sub.losses
                return _claiming_outputs(sub, other.result_digest, gradient, losses)
        if sub.links is not None:  # the units before a stage unit are accepted, so mostly gone from the pool
            me = crypto.address_of(sub.trainer)
            for u, result in enumerate(job.results):
                if result is not None and job.assignment[u] != me:
                    self.note_fault()
                    gradient = job.output_gradients[u] if u < len(job.output_gradients) else None
                    return _claiming_outputs(sub, result, gradient, sub.losses)
        return sub


def _claiming_outputs(
    sub: WorkSubmission, result: Hash32, gradient: Hash32 | None, losses: tuple[int, ...]
) -> WorkSubmission:
    """(A stage unit) ``sub`` claiming another unit's outputs; its own inputs and loss count stay (else it is refused unchecked)."""
    assert sub.links is not None
    links = sub.links
    if links.output_gradient is not None and gradient is not None:
        links = dataclasses.replace(links, output_gradient=gradient)
    return dataclasses.replace(sub, result_digest=result, losses=losses, links=links)


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
        if unit.links is not None and unit.links.output_gradient is not None:
            self._withheld.add(unit.links.output_gradient)
        self.note_fault()
        return unit

    def serve_blob(self, digest: Hash32, get: Callable[[Hash32], bytes | None]) -> bytes | None:
        return None if digest in self._withheld else get(digest)


# ---------------------------------------------------------------------------
# Stage trainers (pipeline jobs; on any other job they train honestly)


class ForgedGradient(Behaviour):
    """Computes the unit, then hands the stage before a forged (negated) gradient; the result stays honest.

    The stage before would compute wrong parameter gradients from it: the
    attack hopes the blame lands there.
    """

    names = ("forge-gradient",)

    def bend(self, seams: Seams) -> Seams:
        return dataclasses.replace(seams, train=self.train)

    def train(self, executor: WorkExecutor, job: JobState, shard: int) -> TrainedUnit:
        unit = honest_train(executor, job, shard)
        if unit.links is None or unit.links.output_gradient is None:
            return unit
        forged = _negated(_torch(executor), unit.links.output_gradient)
        self.note_fault()
        return dataclasses.replace(unit, links=dataclasses.replace(unit.links, output_gradient=forged))


class ForgedInputs(Behaviour):
    """Trains from a forged input (the handed gradient, else the activations, negated) and names it as handed on.

    Its outputs are a faithful function of the inputs it names, so only the
    chain's link check (inputs = the accepted outputs) can refuse it.
    """

    names = ("forge-inputs",)

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._forged: set[tuple[bytes, int, int]] = set()
        """The units forged: the node trains a refused unit again until its deadline, one fault each."""

    def bend(self, seams: Seams) -> Seams:
        return dataclasses.replace(seams, train=self.train)

    def train(self, executor: WorkExecutor, job: JobState, shard: int) -> TrainedUnit:
        unit = honest_train(executor, job, shard)  # also fetches the inputs it will forge
        if unit.links is None or not unit.links.inputs:
            return unit
        inputs = unit.links.inputs
        forged = (*inputs[:-1], _negated(_torch(executor), inputs[-1]))
        key = (bytes(job.job_id), job.step, shard)
        if key not in self._forged:
            self._forged.add(key)
            self.note_fault()
        return executor.train_stage(job, shard, forged)


class SkippedMicroBatch(Behaviour):
    """Computes the unit on all but its last micro-batch (whose outputs it leaves zero), claiming all of them."""

    names = ("skip-micro",)

    def bend(self, seams: Seams) -> Seams:
        return dataclasses.replace(seams, train=self.train)

    def train(self, executor: WorkExecutor, job: JobState, shard: int) -> TrainedUnit:
        unit = honest_train(executor, job, shard)  # applies the profile, fetches every blob the unit reads
        p = job.spec.pipeline
        if unit.links is None or p is None or p.micro_batches < 2:
            return unit
        torch_executor = _torch(executor)
        blobs = torch_executor.blobs
        out = _without_last_micro_batch(torch_executor, job, shard, unit.links.stage_root, unit.links.inputs)
        gradient = blobs.put(out.gradient) if out.gradient is not None else None
        self.note_fault()
        return dataclasses.replace(
            unit,
            result_digest=blobs.put(out.result),
            losses=(out.loss_bits,) if unit.losses else (),
            links=dataclasses.replace(unit.links, output_gradient=gradient),
        )


def _without_last_micro_batch(
    executor: TorchExecutor, job: JobState, u: int, stage_root: Hash32, inputs: tuple[Hash32, ...]
) -> StageOutput:
    """Unit ``u`` as ``compute_stage_unit`` computes it, but over micro-batches 0..M-2; micro-batch M-1's outputs are zero."""
    spec = job.spec
    dtype = torch_dtype(spec.profile)
    model = build_model_skeleton(spec.model, dtype=dtype)
    dataset = Dataset.decode(_get(executor, spec.dataset), task=spec.task, seq_len=spec.seq_len, dtype=dtype)
    read = [decode_bundle(_get(executor, d)) for d in inputs]
    with stage_parameters(model, spec, pipeline.place_of(spec, u).stage, decode_bundle(_get(executor, stage_root)),
                          dataset.device) as params:
        return _skipping_last(model, job, u, params, dataset, read)


def _skipping_last(
    model: nn.Module, job: JobState, u: int, params: dict[str, nn.Parameter], dataset: Dataset,
    read: list[dict[str, torch.Tensor]],
) -> StageOutput:
    """The body of ``_without_last_micro_batch``, with the stage's parameters in place."""
    spec = job.spec
    assert spec.pipeline is not None
    micro, place = spec.pipeline.micro_batches, pipeline.place_of(spec, u)
    layers = stage.stage_layers(model, spec, place.stage)
    model.train()
    x, y = unit_batch(spec, dataset, job.step, place.shard, 0)
    acts = stage.split_micro_batches(x, micro) if place.stage == 0 else stage.read_micro_batches(read[0], stage.ACT_PREFIX, micro)
    hands_on = pipeline.emits_gradient(spec, u)
    if place.phase == pipeline.PHASE_FORWARD:
        return StageOutput(_pad_last(stage.forward_unit(layers, acts[:-1]), stage.ACT_PREFIX, micro), None, 0)
    if place.phase == pipeline.PHASE_BACKWARD:
        handed = stage.read_micro_batches(read[-1], stage.ACT_GRAD_PREFIX, micro)
        result, gradient = stage.backward_unit(layers, params, acts[:-1], handed[:-1], hands_on=hands_on)
        bits = 0
    else:
        targets = stage.split_micro_batches(y, micro)
        result, bits, gradient = stage.last_unit(layers, params, acts[:-1], targets[:-1], hands_on=hands_on)
    return StageOutput(result, _pad_last(gradient, stage.ACT_GRAD_PREFIX, micro) if gradient is not None else None, bits)


def _pad_last(bundle: bytes, prefix: str, micro: int) -> bytes:
    """A bundle of micro-batches 0..M-2 with micro-batch M-1 added as zeros, so it decodes as M of them."""
    tensors = decode_bundle(bundle)
    tensors[f"{prefix}{micro - 1}"] = torch.zeros_like(tensors[f"{prefix}{micro - 2}"])
    return encode_bundle(tensors)


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
    ForgedGradient, ForgedInputs, SkippedMicroBatch, Lazy, Accuser, Equivocator, ApproveInvalid,
)
