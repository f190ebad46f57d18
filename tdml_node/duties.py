"""The node's work duties: train assigned units, check units it must check, judge failures.

- Training: every unit of a step in progress that the chain assigns to this
  node is computed on the worker thread from the committed model state,
  signed and gossiped.
- Checking: every unit this validator is a designated checker of is
  replayed at the steps its own sample signature picks, and the verdict is
  signed and gossiped; a stand-in checker (ranked after the designated ones)
  steps in once a unit has waited ``standin_after`` seconds without enough
  passing verdicts, or at once when a designated checker is not connected
  to it (a stopped node would otherwise cost every step it is drawn for the
  whole wait).
- Judging: another validator's failing verdict is re-checked; either way it
  becomes evidence (fraud, or a false accusation) for the next proposer.
- Prefetching: a validator fetches each unit's result blob as soon as the
  unit is known, since it will aggregate it, and a checker also the
  checkpoints it will replay from.

Missing blobs are fetched from peers and the work retried. This module must
never decide validity itself: the rules are ``consensus.work``'s.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from consensus.crypto import address_of
from consensus.state import get_validator_set
from consensus.types import (
    JOB_ACTIVE,
    FalsePass,
    FalseVerdict,
    Hash32,
    JobState,
    SignedVerdict,
    SignedWorkSubmission,
    WorkFraud,
    WorkSubmission,
)
from consensus.validators import ValidatorSet
from consensus.work import (
    PASSED,
    InvalidWork,
    WorkRejected,
    WorkUnavailable,
    check_unit,
    compute_checkers,
    make_verdict,
    required_checkers,
    sample_for,
    sign_submission,
    submission_id,
)
from tdml_node.netlink import SEVERITY_MAJOR
from tdml_node.pools import Evidence
from tdml_node.workqueue import PRIORITY_CHECK, PRIORITY_TRAIN

if TYPE_CHECKING:
    from tdml_node.node import Node

log = logging.getLogger("tdml.duties")
T = TypeVar("T")

FETCH_ATTEMPTS = 8
MAX_FRAUDS_KEPT = 256


class Duties:
    def __init__(self, node: Node, *, standin_after: float = 3.0) -> None:
        self.node = node
        self.standin_after = standin_after
        self.training: set[tuple[Hash32, int, int]] = set()
        self.checking: set[bytes] = set()
        self.first_seen: dict[bytes, float] = {}
        self.started_at: float | None = None
        self.frauds: dict[bytes, tuple[SignedWorkSubmission, JobState]] = {}

    # ---------------------------------------------------------- running work

    async def run_work(self, priority: int, fn: Callable[..., T], *args: Any) -> T:
        """Run torch work on the worker; fetch a missing blob from peers and retry."""
        for _ in range(FETCH_ATTEMPTS):
            try:
                return await self.node.worker.submit(priority, fn, *args)
            except WorkUnavailable as exc:
                if exc.digest is None or not await self.node.blobs.ensure(exc.digest):
                    raise
        return await self.node.worker.submit(priority, fn, *args)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        self.node.spawn(coro, name)

    # -------------------------------------------------------------- roles

    def is_designated(self, job: JobState, sub: WorkSubmission, validators: ValidatorSet, *, standin: bool = False) -> bool:
        need = required_checkers(job.spec, validators, sub.trainer)
        ranked = compute_checkers(job, sub.shard, sub.trainer, validators)
        upto = need + validators.max_faulty if standin else need
        return self.node.keypair.public_key in ranked[:upto]

    def pending(self, open_keys: set[tuple[Hash32, int, int]]) -> bool:
        """Whether this node is still training or checking a unit of a step in progress."""
        if open_keys & self.training:
            return True
        me = self.node.keypair.public_key
        for sid in self.checking:
            entry = self.node.workpool.get(sid)
            if entry is not None and me not in entry.verdicts:
                return True
        return False

    # ------------------------------------------------------------ training

    def schedule(self) -> None:
        """Start every unit assigned to this node that is not trained or training yet; check units too."""
        node = self.node
        for job in node.state.jobs.values():
            node.byzantine.remember_root(job)
            if job.status != JOB_ACTIVE or not node.executor.can_run(job.spec):
                continue
            for shard in range(job.spec.shards):
                key = (job.job_id, job.step, shard)
                if job.assignment[shard] != node.address or job.accepted[shard] is not None:
                    continue
                if key in self.training or node.workpool.unit_for(*key, node.address) is not None:
                    continue
                self.training.add(key)
                self.spawn(self._train(job, shard), f"train-{job.step}-{shard}")
        self._schedule_checks()

    async def _train(self, job: JobState, shard: int) -> None:
        node = self.node
        key = (job.job_id, job.step, shard)
        try:
            unit, faulty = await self.run_work(PRIORITY_TRAIN, node.byzantine.train, node.executor, job, shard)
        except WorkUnavailable as exc:
            log.warning("cannot train step %d shard %d yet: %s", job.step, shard, exc)
            self.training.discard(key)
            return
        try:
            current = node.state.jobs.get(job.job_id)
            if current is None or current.step != job.step or current.assignment[shard] != node.address:
                return
            sub = WorkSubmission(
                job=job.job_id,
                step=job.step,
                shard=shard,
                trainer=node.keypair.public_key,
                parent_model_root=job.model_root,
                checkpoint_digests=unit.checkpoint_digests,
                result_digest=unit.result_digest,
                losses=unit.losses,
                receipt=unit.receipt,
            )
            sub, altered = node.byzantine.alter_submission(node, sub)
            if faulty or altered:
                node.byzantine.note_fault(node.state.height)
                log.warning("BYZANTINE (%s): submitting a faulty unit, step %d shard %d", node.byzantine.name, job.step, shard)
            node.metrics.units_trained.inc()
            await self.on_submission(sign_submission(node.keypair, node.chain_id, sub), origin=None)
        finally:
            self.training.discard(key)

    # ------------------------------------------------------------ checking

    async def on_submission(self, signed: SignedWorkSubmission, origin: bytes | None) -> None:
        node = self.node
        try:
            added = node.workpool.add_submission(node.chain_id, signed, node.state)
        except WorkRejected as exc:
            if self._is_early(signed.submission):
                node.workpool.hold_unit(signed)
                return
            log.debug("submission rejected: %s", exc)
            if origin is not None and "signature" in str(exc):
                node.network.penalize(origin, f"submission: {exc}", SEVERITY_MAJOR)
            return
        if not added:
            return
        sid = submission_id(signed.submission)
        self.first_seen[sid] = asyncio.get_running_loop().time()
        await node.network.broadcast(signed, exclude=origin)
        node.changed.set()
        job = node.state.jobs[signed.submission.job]
        validators = get_validator_set(node.state)
        if node.keypair.public_key in validators:
            self.spawn(self._prefetch(signed.submission, job, validators), "prefetch")
            self._schedule_checks()  # a designated checker, or a stand-in for an absent one

    def _is_early(self, sub: WorkSubmission) -> bool:
        """A unit of a job or step this node has not reached yet (its block is still on the way)."""
        job = self.node.state.jobs.get(sub.job)
        return job is None or (job.status == JOB_ACTIVE and sub.step > job.step) or (
            job.status == JOB_ACTIVE and sub.step == job.step and job.assignment[sub.shard] != address_of(sub.trainer)
        )

    async def retry_early(self) -> None:
        """Offer held gossip again now that a block has committed."""
        units, verdicts = self.node.workpool.take_early()
        for signed in units:
            await self.on_submission(signed, origin=None)
        for verdict in verdicts:
            await self.on_verdict(verdict, origin=None)

    async def _prefetch(self, sub: WorkSubmission, job: JobState, validators: ValidatorSet) -> None:
        wanted = [sub.result_digest]
        if self.is_designated(job, sub, validators, standin=True):
            wanted += list(sub.checkpoint_digests)
        for digest in wanted:
            await self.node.blobs.ensure(digest)

    def _schedule_checks(self) -> None:
        node = self.node
        validators = get_validator_set(node.state)
        me = node.keypair.public_key
        if me not in validators:
            return
        now = asyncio.get_running_loop().time()
        if self.started_at is None:
            self.started_at = now
        reachable = node.network.connected_keys() | {me}
        for sid, entry in list(node.workpool.units.items()):
            sub = entry.signed.submission
            job = node.state.jobs.get(sub.job)
            if job is None or me in entry.verdicts or sid in self.checking:
                continue
            need = required_checkers(job.spec, validators, sub.trainer)
            ranked = compute_checkers(job, sub.shard, sub.trainer, validators)
            designated = tuple(ranked[:need])
            passing = sum(1 for v in entry.verdicts.values() if not v.verdict.failure)
            if me in designated or (
                me in ranked[: need + validators.max_faulty]
                and passing < need
                and standin_due(
                    now - self.first_seen.get(sid, now), now - self.started_at, self.standin_after, designated, reachable
                )
            ):
                self.spawn(self._check(entry.signed, job), f"check-{job.step}-{sub.shard}")

    async def _check(self, signed: SignedWorkSubmission, job: JobState) -> None:
        node = self.node
        sub = signed.submission
        sid = submission_id(sub)
        if sid in self.checking:
            return
        self.checking.add(sid)
        try:
            sample_sig, steps = sample_for(node.keypair, node.chain_id, job, sub)
            if node.byzantine.skips_replay():
                result = PASSED
            else:
                try:
                    result = await self.run_work(PRIORITY_CHECK, check_unit, node.executor, job, sub, steps)
                except WorkUnavailable as exc:
                    log.warning("cannot check %s yet: %s", sid.hex()[:16], exc)
                    return
            honest = result
            result = node.byzantine.alter_check(result, sub, steps)
            if result != honest or node.byzantine.skips_replay():
                node.byzantine.note_fault(node.state.height)
            verdict = make_verdict(
                node.keypair, node.chain_id, job, sub, result, steps, sample_sig, node.executor.receipt(job.spec)
            )
            node.metrics.units_checked.inc()
            if result.failure:
                node.metrics.units_failed.inc()
                log.warning(
                    "unit %s (step %d shard %d) failed replay: failure %d at step %d",
                    sid.hex()[:16], sub.step, sub.shard, result.failure, result.failed_step,
                )
                node.workpool.add_evidence(WorkFraud(signed, verdict))
                self._found_fraud(sid)
            await self.on_verdict(verdict, origin=None)
        finally:
            self.checking.discard(sid)

    async def on_verdict(self, signed: SignedVerdict, origin: bytes | None) -> None:
        node = self.node
        sid = signed.verdict.submission_id
        if sid in self.frauds and not signed.verdict.failure and node.workpool.get(sid) is None:
            self.spawn(self._judge_pass(signed), "judge-pass")
            return
        if node.workpool.get(sid) is None:
            node.workpool.hold_verdict(signed)
            return
        try:
            added = node.workpool.add_verdict(node.chain_id, signed, node.state, get_validator_set(node.state))
        except (WorkRejected, KeyError) as exc:
            log.debug("verdict rejected: %s", exc)
            if origin is not None and "signature" in str(exc):
                node.network.penalize(origin, f"verdict: {exc}", SEVERITY_MAJOR)
            return
        if not added:
            return
        await node.network.broadcast(signed, exclude=origin)
        node.changed.set()
        if signed.verdict.failure and signed.verdict.validator != node.keypair.public_key:
            self.spawn(self._judge(signed), "judge")
        elif not signed.verdict.failure and signed.verdict.submission_id in self.frauds:
            self.spawn(self._judge_pass(signed), "judge-pass")

    async def _judge(self, signed: SignedVerdict) -> None:
        """Re-check another validator's failure claim; either way it becomes evidence."""
        node = self.node
        entry = node.workpool.get(signed.verdict.submission_id)
        if entry is None:
            return
        job = node.state.jobs.get(entry.signed.submission.job)
        if job is None:
            return
        try:
            upheld = await self.run_work(PRIORITY_CHECK, node.executor.recheck, job, entry.signed.submission, signed.verdict)
        except (WorkUnavailable, InvalidWork) as exc:
            log.warning("cannot judge a failing verdict: %s", exc)
            return
        ev: Evidence = WorkFraud(entry.signed, signed) if upheld else FalseVerdict(entry.signed, signed)
        if not upheld:
            log.warning("validator %s accused an honest unit", signed.verdict.validator.hex()[:16])
        else:
            self._found_fraud(signed.verdict.submission_id)
        if node.workpool.add_evidence(ev):
            node.changed.set()

    def _found_fraud(self, sid: bytes) -> None:
        """A unit is known to fail: every passing verdict on it, now or later, is suspect."""
        entry = self.node.workpool.get(sid)
        if entry is None:
            return
        # Kept apart from the pool, which forgets the unit once its trainer is slashed.
        self.frauds[sid] = (entry.signed, self.node.state.jobs[entry.signed.submission.job])
        while len(self.frauds) > MAX_FRAUDS_KEPT:
            self.frauds.pop(next(iter(self.frauds)))
        for verdict in list(entry.verdicts.values()):
            if not verdict.verdict.failure:
                self.spawn(self._judge_pass(verdict), "judge-pass")

    async def _judge_pass(self, signed: SignedVerdict) -> None:
        """Re-run the checks a passing verdict on a failing unit claims; a lie becomes evidence."""
        node = self.node
        known = self.frauds.get(signed.verdict.submission_id)
        if known is None:
            return
        unit, job = known
        try:
            false = await self.run_work(PRIORITY_CHECK, node.executor.recheck_pass, job, unit.submission, signed.verdict)
        except (WorkUnavailable, InvalidWork) as exc:
            log.warning("cannot judge a passing verdict: %s", exc)
            return
        if false:
            log.warning("validator %s passed a unit that fails its own checked steps", signed.verdict.validator.hex()[:16])
            if node.workpool.add_evidence(FalsePass(unit, signed)):
                node.changed.set()

    def prune(self) -> None:
        """Forget bookkeeping of units no longer in the pool."""
        for sid in list(self.first_seen):
            if self.node.workpool.get(sid) is None:
                del self.first_seen[sid]
        for sid, (_, job) in list(self.frauds.items()):
            current = self.node.state.jobs.get(job.job_id)
            if current is None or current.step != job.step:
                del self.frauds[sid]


def standin_due(
    waited: float, uptime: float, standin_after: float, designated: tuple[bytes, ...], reachable: frozenset[bytes]
) -> bool:
    """Whether a stand-in checker should check a unit still short of passing verdicts.

    It waits ``standin_after`` seconds for the designated checkers, unless one
    of them is not reachable (not connected, and not this node): then it
    checks at once, provided this node has run ``standin_after`` seconds
    itself, time enough to have connected to the peers that are up.
    """
    if waited >= standin_after:
        return True
    return uptime >= standin_after and any(k not in reachable for k in designated)
