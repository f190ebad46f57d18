"""Work units, verdicts and evidence a node holds between blocks, for the steps in progress.

The pool only collects and selects; every rule about what is valid comes
from ``consensus.work``. Selection is deterministic (by job, shard and
submission id, verdicts in checker rank order), so a node that builds the
same block twice builds identical bytes.

This module must never perform I/O or run torch.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from consensus import crypto, pipeline
from consensus.errors import FaultKind
from consensus.state import LedgerState
from consensus.types import (
    JOB_ACTIVE,
    Address,
    Equivocation,
    FalsePass,
    FalseVerdict,
    SignedVerdict,
    SignedWorkSubmission,
    WorkFraud,
    WorkSubmission,
)
from consensus.validators import ValidatorSet
from consensus.work import (
    WorkRejected,
    compute_checker_slots,
    submission_id,
    validate_submission,
    validate_verdict,
)

Evidence = WorkFraud | FalseVerdict | FalsePass | Equivocation
MAX_EARLY = 4096


@dataclass
class UnitEntry:
    signed: SignedWorkSubmission
    verdicts: dict[bytes, SignedVerdict] = dataclasses.field(default_factory=dict)


class WorkPool:
    """Submissions and verdicts for the steps in progress, plus pending evidence."""

    def __init__(self) -> None:
        self.units: dict[bytes, UnitEntry] = {}
        self.evidence: dict[bytes, Evidence] = {}
        self.early_units: OrderedDict[bytes, SignedWorkSubmission] = OrderedDict()
        self.early_verdicts: OrderedDict[bytes, SignedVerdict] = OrderedDict()

    def get(self, sid: bytes) -> UnitEntry | None:
        return self.units.get(sid)

    def add_submission(self, chain_id: str, signed: SignedWorkSubmission, state: LedgerState) -> bool:
        """Keep a valid submission for a step in progress; False if already known."""
        sid = submission_id(signed.submission)
        if sid in self.units:
            return False
        job = state.jobs.get(signed.submission.job)
        if job is None or job.status != JOB_ACTIVE:
            raise WorkRejected("no such active job", FaultKind.STALE)
        validate_submission(chain_id, job, signed)
        self.units[sid] = UnitEntry(signed)
        return True

    def add_verdict(self, chain_id: str, signed: SignedVerdict, state: LedgerState, validators: ValidatorSet) -> bool:
        entry = self.units.get(signed.verdict.submission_id)
        if entry is None:
            raise WorkRejected("verdict on an unknown submission", FaultKind.STALE)
        if signed.verdict.validator in entry.verdicts:
            return False
        job = state.jobs.get(entry.signed.submission.job)
        if job is None:
            raise WorkRejected("verdict on a unit of a job this node does not know", FaultKind.STALE)
        validate_verdict(chain_id, job, entry.signed.submission, signed, validators)
        entry.verdicts[signed.verdict.validator] = signed
        return True

    def add_evidence(self, ev: Evidence) -> bool:
        digest = crypto.hash_value(ev)
        if digest in self.evidence:
            return False
        self.evidence[digest] = ev
        return True

    def unit_for(self, job_id: bytes, step: int, shard: int, trainer: bytes) -> UnitEntry | None:
        """The unit of (job, step, shard) from ``trainer`` (an address), if the pool has one."""
        for entry in self.units.values():
            s = entry.signed.submission
            if s.job == job_id and s.step == step and s.shard == shard and crypto.address_of(s.trainer) == trainer:
                return entry
        return None

    def entries(self) -> Iterator[tuple[bytes, UnitEntry]]:
        """The units held (submission id, entry), in arrival order; a copy, safe to change the pool meanwhile."""
        return iter(list(self.units.items()))

    def units_of_step(self, job_id: bytes, step: int) -> list[WorkSubmission]:
        """Every unit held for one step of one job, by submission id."""
        found = [e.signed.submission for e in self.units.values() if e.signed.submission.job == job_id and e.signed.submission.step == step]
        return sorted(found, key=submission_id)

    def verdicts_by(self, validator: bytes) -> dict[bytes, SignedVerdict]:
        """The verdicts ``validator`` signed on units the pool holds, by submission id."""
        return {sid: e.verdicts[validator] for sid, e in self.units.items() if validator in e.verdicts}

    def includable(
        self, state: LedgerState, validators: ValidatorSet
    ) -> list[tuple[SignedWorkSubmission, tuple[SignedVerdict, ...]]]:
        """Units of steps in progress with enough passing verdicts, by job then shard."""
        out = []
        for job_id in sorted(state.jobs):
            job = state.jobs[job_id]
            if job.status != JOB_ACTIVE:
                continue
            for shard in range(pipeline.units_per_step(job.spec)):
                if job.accepted[shard] is not None:
                    continue
                for entry in self._entries_for(job_id, job.step, shard):
                    slots = compute_checker_slots(job, shard, entry.signed.submission.trainer, validators)
                    passing = [
                        entry.verdicts[k]
                        for k in slots.allowed
                        if k in entry.verdicts and not entry.verdicts[k].verdict.failure
                    ]
                    if len(passing) >= slots.need and self._still_valid(state, entry):
                        out.append((entry.signed, tuple(passing[: slots.need])))
                        break
        return out

    def _entries_for(self, job_id: bytes, step: int, shard: int) -> list[UnitEntry]:
        found = [
            e for e in self.units.values()
            if e.signed.submission.job == job_id and e.signed.submission.step == step and e.signed.submission.shard == shard
        ]
        return sorted(found, key=lambda e: submission_id(e.signed.submission))

    @staticmethod
    def _still_valid(state: LedgerState, entry: UnitEntry) -> bool:
        try:
            validate_submission(state.chain_id, state.jobs[entry.signed.submission.job], entry.signed, check_signature=False)
        except WorkRejected:
            return False
        return True

    def pending_evidence(self, state: LedgerState) -> tuple[Evidence, ...]:
        """Evidence whose offender is not slashed yet, one per offender, in hash order."""
        chosen: list[Evidence] = []
        offenders: set[bytes] = set()
        for digest in sorted(self.evidence):
            ev = self.evidence[digest]
            offender = _offender(ev)
            if offender in offenders or state.get_account(offender).slashed:
                continue
            if not isinstance(ev, Equivocation):
                job = state.jobs.get(ev.submission.submission.job)
                if job is None or job.status != JOB_ACTIVE or job.step != ev.submission.submission.step:
                    continue
            offenders.add(offender)
            chosen.append(ev)
        return tuple(chosen)

    def prune(self, state: LedgerState) -> list[SignedWorkSubmission | SignedVerdict]:
        """Forget units of finished steps or moved shards, and evidence that no longer applies.

        Returns the units and verdicts dropped, for the network to forget as
        well: a unit can be dealt again to the trainer that held it (its step
        restarted, or its shard came back), which then signs the same bytes
        again, and every peer must let that copy through rather than drop it
        as already seen.
        """
        dropped: list[SignedWorkSubmission | SignedVerdict] = []
        for sid, entry in list(self.units.items()):
            s = entry.signed.submission
            job = state.jobs.get(s.job)
            if (
                job is None
                or job.status != JOB_ACTIVE
                or s.step < job.step
                or job.accepted[s.shard] is not None
                or job.assignment[s.shard] != crypto.address_of(s.trainer)
            ):
                del self.units[sid]
                dropped += [entry.signed, *entry.verdicts.values()]
        for digest, ev in list(self.evidence.items()):
            if state.get_account(_offender(ev)).slashed or _is_stale(ev, state):
                del self.evidence[digest]
        for sid, signed in list(self.early_units.items()):
            job = state.jobs.get(signed.submission.job)
            if job is not None and (job.status != JOB_ACTIVE or signed.submission.step < job.step):
                del self.early_units[sid]
        return dropped

    # Gossip can arrive before the block that makes it valid (a unit of a step
    # this node has not committed yet, a verdict on a unit it has not seen).
    # The network delivers each message once, so such messages wait here
    # (bounded, oldest dropped first) and are retried after each commit.

    def hold_unit(self, signed: SignedWorkSubmission) -> None:
        self.early_units[submission_id(signed.submission)] = signed
        while len(self.early_units) > MAX_EARLY:
            self.early_units.pop(next(iter(self.early_units)))

    def hold_verdict(self, signed: SignedVerdict) -> None:
        self.early_verdicts[crypto.hash_value(signed)] = signed
        while len(self.early_verdicts) > MAX_EARLY:
            self.early_verdicts.pop(next(iter(self.early_verdicts)))

    def take_early(self) -> tuple[list[SignedWorkSubmission], list[SignedVerdict]]:
        units, verdicts = list(self.early_units.values()), list(self.early_verdicts.values())
        self.early_units.clear()
        self.early_verdicts.clear()
        return units, verdicts


def open_unit_keys(state: LedgerState) -> set[tuple[bytes, int, int]]:
    """(job, step, shard) of every unit a step in progress still needs and can be trained now.

    A stage unit whose inputs are not accepted yet is not open: a proposer
    waiting for it as well as for the units of the phase in progress would
    wait out its whole patience at every phase.
    """
    return {
        (job.job_id, job.step, shard)
        for job in state.jobs.values()
        if job.status == JOB_ACTIVE
        for shard in range(pipeline.units_per_step(job.spec))
        if job.accepted[shard] is None
        and pipeline.job_inputs(job, shard) is not None
    }


def _is_stale(ev: Evidence, state: LedgerState) -> bool:
    if isinstance(ev, Equivocation):
        return False
    sub = ev.submission.submission
    job = state.jobs.get(sub.job)
    return job is None or job.status != JOB_ACTIVE or sub.step != job.step


def _offender(ev: Evidence) -> Address:
    if isinstance(ev, Equivocation):
        return crypto.address_of(ev.vote_a.vote.validator)
    if isinstance(ev, WorkFraud):
        return crypto.address_of(ev.submission.submission.trainer)
    return crypto.address_of(ev.verdict.verdict.validator)  # a false verdict or a false pass
