"""Deliberate misbehaviour for test networks: the seams a Byzantine node bends.

An honest node uses ``Honest``: every hook leaves its input alone. Any other
behaviour is refused unless the node runs on a dev network (``--dev``); the
options are listed as test-only in ``tdml-node run --help``. Each behaviour
counts the faults it commits (``faults``) and the height of the first, so the
adversarial suite can compare what was done with what the chain caught.

Trainers: ``zero``, ``random``, ``scale``, ``shift``, ``noise`` (forged
results), ``skip-steps`` (H > 1: an inner step left out), ``wrong-shard``,
``stale-parent`` (trained from the previous step's state, claiming the
current one), ``copy`` (another trainer's unit claimed as its own),
``replay-old`` (its previous step's unit again), ``withhold`` (submits, then
serves none of its blobs).
Validators: ``lazy`` (passes units without replaying them), ``accuse``
(signs failing verdicts against honest units), ``equivocate`` (signs two
different votes per step and sends each to half its peers),
``approve-invalid`` (prevotes for proposals without validating them).
Peers: ``flood`` (gossips junk transactions as fast as it can),
``malformed`` (sends frames that are not valid messages).

This module must never be active on a production network.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from typing import TYPE_CHECKING

from consensus.types import (
    FAILURE_NONE,
    FAILURE_REPLAY,
    Hash32,
    JobState,
    Signature,
    SignedTransaction,
    Transaction,
    Transfer,
    WorkSubmission,
)
from consensus.work import PASSED, CheckResult, TrainedUnit

if TYPE_CHECKING:
    from tdml_node.node import Node
    from tdml_node.work.executor import TorchExecutor

TRAINER_BEHAVIOURS = (
    "zero", "random", "scale", "shift", "noise", "skip-steps", "wrong-shard",
    "stale-parent", "copy", "replay-old", "withhold",
)
VALIDATOR_BEHAVIOURS = ("lazy", "accuse", "equivocate", "approve-invalid")
PEER_BEHAVIOURS = ("flood", "malformed")
ALL_BEHAVIOURS = ("honest", *TRAINER_BEHAVIOURS, *VALIDATOR_BEHAVIOURS, *PEER_BEHAVIOURS)


class Honest:
    """No misbehaviour; the base of every behaviour."""

    def __init__(self, name: str = "honest") -> None:
        self.name = name
        self.faults = 0
        self.first_fault_height = 0
        self._previous_roots: dict[bytes, Hash32] = {}
        self._own_units: dict[tuple[bytes, int], WorkSubmission] = {}
        self._withheld: set[bytes] = set()

    @property
    def is_honest(self) -> bool:
        return self.name == "honest"

    def note_fault(self, height: int) -> None:
        self.faults += 1
        if not self.first_fault_height:
            self.first_fault_height = height

    # ---------------------------------------------------------- trainer

    def remember_root(self, job: JobState) -> None:
        """Track each job's model root as steps pass (a stale-parent trainer trains from the old one)."""
        key = bytes(job.job_id)
        if self._previous_roots.get(key + b"now") != job.model_root:
            if key + b"now" in self._previous_roots:
                self._previous_roots[key] = self._previous_roots[key + b"now"]
            self._previous_roots[key + b"now"] = job.model_root

    def train(self, executor: TorchExecutor, job: JobState, shard: int) -> tuple[TrainedUnit, bool]:
        """Compute the unit to submit (on the worker thread), and whether it is faulty."""
        name = self.name
        if name == "wrong-shard" and job.spec.shards > 1:
            return executor.train_unit(job, (shard + 1) % job.spec.shards), True
        if name == "stale-parent" and bytes(job.job_id) in self._previous_roots:
            stale = dataclasses.replace(job, model_root=self._previous_roots[bytes(job.job_id)])
            return executor.train_unit(stale, shard), True
        unit = executor.train_unit(job, shard)
        if name in ("zero", "random", "scale", "shift", "noise"):
            return _forge_result(executor, unit, name), True
        if name == "skip-steps" and job.spec.inner_steps > 1:
            return _skip_a_step(executor, job, unit), True
        return unit, False

    def alter_submission(self, node: Node, sub: WorkSubmission) -> tuple[WorkSubmission, bool]:
        """Last change before signing (claim someone else's work, or an old unit), and whether it is faulty."""
        key = (bytes(sub.job), sub.shard)
        previous = self._own_units.get(key)
        self._own_units[key] = sub
        if self.name == "replay-old" and previous is not None and previous.step < sub.step:
            return _claiming(sub, previous), True
        if self.name == "copy":
            for entry in node.workpool.units.values():
                other = entry.signed.submission
                if other.job == sub.job and other.step == sub.step and other.trainer != sub.trainer:
                    return _claiming(sub, other), True
        if self.name == "withhold":
            self._withheld.update((sub.result_digest, *sub.checkpoint_digests))
            return sub, True
        return sub, False

    def serves_blob(self, digest: bytes) -> bool:
        return digest not in self._withheld

    # -------------------------------------------------------- validator

    def skips_replay(self) -> bool:
        return self.name == "lazy"

    def alter_check(self, result: CheckResult, sub: WorkSubmission, steps: tuple[int, ...]) -> CheckResult:
        if self.name == "lazy":
            return PASSED
        if self.name == "accuse" and result.failure == FAILURE_NONE and steps:
            return CheckResult(FAILURE_REPLAY, steps[0], Hash32(os.urandom(32)), 0)
        return result

    def approves_everything(self) -> bool:
        return self.name == "approve-invalid"

    def equivocates(self) -> bool:
        return self.name == "equivocate"

    # -------------------------------------------------------------- peer

    async def run(self, node: Node) -> None:
        """Background misbehaviour of a peer (flood, malformed frames); idle otherwise."""
        if self.name == "flood":
            while True:
                for _ in range(200):
                    junk = _junk_transaction(node.chain_id)
                    await node.network.broadcast(junk)
                    self.note_fault(node.state.height)
                await asyncio.sleep(0.1)
        if self.name == "malformed":
            send_raw = getattr(node.network, "send_raw_all", None)
            while send_raw is not None:
                send_raw(os.urandom(64) + b"\xc1" + os.urandom(64))
                self.note_fault(node.state.height)
                await asyncio.sleep(0.05)


def _junk_transaction(chain_id: str) -> SignedTransaction:
    """A well-formed transaction with a signature that cannot verify."""
    sender = os.urandom(32)
    tx = Transaction(sender, 0, 0, Transfer(os.urandom(20), 1))  # type: ignore[arg-type]
    return SignedTransaction(tx, Signature(os.urandom(64)))


def _forge_result(executor: TorchExecutor, unit: TrainedUnit, how: str) -> TrainedUnit:
    """Replace the result's update tensors (gradient or delta) with a forgery; keep the claimed losses."""
    import torch

    from tdml_node.work.tensors import decode_bundle, encode_bundle

    data = executor.blobs.get(unit.result_digest)
    assert data is not None
    tensors = decode_bundle(data)
    gen = torch.Generator().manual_seed(int.from_bytes(unit.result_digest[:4], "big"))
    forged = {}
    for name, t in tensors.items():
        if name.startswith("meta/"):
            forged[name] = t
            continue
        rms = t.float().pow(2).mean().sqrt().clamp_min(1e-6).to(t.dtype)
        if how == "zero":
            forged[name] = torch.zeros_like(t)
        elif how == "random":
            forged[name] = torch.randn(t.shape, generator=gen, dtype=t.dtype) * rms
        elif how == "scale":
            forged[name] = t * 10
        elif how == "shift":
            forged[name] = t + 0.1 * rms
        else:
            forged[name] = t + torch.randn(t.shape, generator=gen, dtype=t.dtype) * (0.01 * rms)
    digest = executor.blobs.put(encode_bundle(forged))
    return dataclasses.replace(unit, result_digest=digest)


def _skip_a_step(executor: TorchExecutor, job: JobState, unit: TrainedUnit) -> TrainedUnit:
    """Claim H inner steps while leaving out the last one: its checkpoint repeats the one before."""
    from tdml_node.work.executor import model_state_optimizer
    from tdml_node.work.models import build_model
    from tdml_node.work.profile import torch_dtype
    from tdml_node.work.state import parse_state
    from tdml_node.work.tensors import decode_bundle
    from tdml_node.work.unit import delta_result

    h = job.spec.inner_steps
    digests = list(unit.checkpoint_digests)
    digests[h - 1] = digests[h - 2]
    losses = list(unit.losses)
    losses[h - 1] = losses[h - 2]
    model = build_model(job.spec.model, seed=0, dtype=torch_dtype(job.spec.profile))
    committed = executor.blobs.get(job.model_root)
    assert committed is not None
    start = parse_state(decode_bundle(committed), model, model_state_optimizer(job.spec)).params
    before_last = executor.blobs.get(digests[h - 2])
    assert before_last is not None
    end = parse_state(decode_bundle(before_last), model, job.spec.optimizer).params
    result = executor.blobs.put(delta_result(start, end, losses))
    return dataclasses.replace(unit, checkpoint_digests=tuple(digests), result_digest=result, losses=tuple(losses))


def make_behaviour(names: tuple[str, ...], *, dev: bool) -> Honest:
    """The behaviour named in the config; refuses any misbehaviour outside a dev network."""
    wanted = [n for n in names if n and n != "honest"]
    if not wanted:
        return Honest()
    if not dev:
        raise ValueError("Byzantine behaviours are test-only: they need a dev network (--dev)")
    if len(wanted) > 1:
        raise ValueError("give one Byzantine behaviour at a time")
    if wanted[0] not in ALL_BEHAVIOURS:
        raise ValueError(f"unknown Byzantine behaviour {wanted[0]!r}; known: {', '.join(ALL_BEHAVIOURS[1:])}")
    return Honest(wanted[0])


def _claiming(sub: WorkSubmission, work: WorkSubmission) -> WorkSubmission:
    """``sub`` with the digests and losses of ``work``: a claim to have done that work."""
    return dataclasses.replace(
        sub, checkpoint_digests=work.checkpoint_digests, result_digest=work.result_digest, losses=work.losses
    )
