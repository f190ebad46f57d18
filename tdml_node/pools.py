"""What a node holds between blocks: pending transactions, work units, verdicts, evidence.

The pools only collect and select; every rule about what is valid comes from
``consensus``. Selection is deterministic (sorted by job, shard, validator
key, sender and nonce), so a node that builds the same block twice, for
instance after a restart, builds identical bytes.

This module must never perform I/O or run torch.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass

from consensus import crypto
from consensus.state import LedgerState
from consensus.transition import BlockContext, InvalidBlock, apply_transaction
from consensus.types import (
    JOB_ACTIVE,
    MAX_BLOCK_TXS,
    Address,
    Equivocation,
    FalsePass,
    FalseVerdict,
    Hash32,
    SignedTransaction,
    SignedVerdict,
    SignedWorkSubmission,
    WorkFraud,
)
from consensus.validators import ValidatorSet
from consensus.work import (
    WorkOracle,
    WorkRejected,
    compute_checkers,
    required_checkers,
    submission_id,
    validate_submission,
    validate_verdict,
)

Evidence = WorkFraud | FalseVerdict | FalsePass | Equivocation
MAX_NONCE_GAP = 64
MAX_EARLY = 4096


class TxRejected(ValueError):
    """A transaction cannot enter the mempool; the message says why."""


def tx_hash(signed: SignedTransaction) -> Hash32:
    return crypto.hash_value(signed)


class Mempool:
    def __init__(self, max_txs: int = 10_000) -> None:
        self.max_txs = max_txs
        self._txs: OrderedDict[bytes, SignedTransaction] = OrderedDict()

    def __len__(self) -> int:
        return len(self._txs)

    def __contains__(self, digest: object) -> bool:
        return digest in self._txs

    def admit(self, signed: SignedTransaction, state: LedgerState) -> Hash32:
        """Cheap admission checks; the full rules run when a block is built."""
        digest = tx_hash(signed)
        if digest in self._txs:
            return digest
        if len(self._txs) >= self.max_txs:
            raise TxRejected("mempool is full")
        tx = signed.tx
        if not crypto.verify_value(tx.sender, crypto.DOMAIN_TX, state.chain_id, tx, signed.signature):
            raise TxRejected("bad signature (or a transaction for another chain)")
        acct = state.get_account(crypto.address_of(tx.sender))
        if tx.nonce < acct.nonce:
            raise TxRejected(f"nonce {tx.nonce} already used (next is {acct.nonce})")
        if tx.nonce >= acct.nonce + MAX_NONCE_GAP:
            raise TxRejected(f"nonce {tx.nonce} is too far ahead (next is {acct.nonce})")
        self._txs[digest] = signed
        return digest

    def select(self, state: LedgerState, ctx: BlockContext, work: WorkOracle | None) -> tuple[SignedTransaction, ...]:
        """Transactions that apply in order on ``state``, senders' nonces ascending."""
        pending = sorted(self._txs.values(), key=lambda s: (s.tx.sender, s.tx.nonce))
        chosen: list[SignedTransaction] = []
        scratch = state
        for signed in pending:
            if len(chosen) >= MAX_BLOCK_TXS:
                break
            try:
                scratch = apply_transaction(scratch, ctx, signed, work)
            except InvalidBlock:
                continue
            chosen.append(signed)
        return tuple(chosen)

    def prune(self, state: LedgerState) -> None:
        for digest, signed in list(self._txs.items()):
            if signed.tx.nonce < state.get_account(crypto.address_of(signed.tx.sender)).nonce:
                del self._txs[digest]

    def items(self) -> list[SignedTransaction]:
        return list(self._txs.values())


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
            raise WorkRejected("no such active job")
        validate_submission(chain_id, job, signed)
        self.units[sid] = UnitEntry(signed)
        return True

    def add_verdict(self, chain_id: str, signed: SignedVerdict, state: LedgerState, validators: ValidatorSet) -> bool:
        entry = self.units.get(signed.verdict.submission_id)
        if entry is None:
            raise WorkRejected("verdict on an unknown submission")
        if signed.verdict.validator in entry.verdicts:
            return False
        job = state.jobs[entry.signed.submission.job]
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

    def includable(
        self, state: LedgerState, validators: ValidatorSet
    ) -> list[tuple[SignedWorkSubmission, tuple[SignedVerdict, ...]]]:
        """Units of steps in progress with enough passing verdicts, by job then shard."""
        out = []
        for job_id in sorted(state.jobs):
            job = state.jobs[job_id]
            if job.status != JOB_ACTIVE:
                continue
            for shard in range(job.spec.shards):
                if job.accepted[shard] is not None:
                    continue
                for entry in self._entries_for(job_id, job.step, shard):
                    need = required_checkers(job.spec, validators, entry.signed.submission.trainer)
                    ranked = compute_checkers(job, shard, entry.signed.submission.trainer, validators)
                    allowed = ranked[: need + validators.max_faulty]
                    passing = [
                        entry.verdicts[k] for k in allowed if k in entry.verdicts and not entry.verdicts[k].verdict.failure
                    ]
                    if len(passing) >= need and self._still_valid(state, entry):
                        out.append((entry.signed, tuple(passing[:need])))
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

    def prune(self, state: LedgerState) -> None:
        """Forget units of finished steps or moved shards, and evidence that no longer applies."""
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
        for digest, ev in list(self.evidence.items()):
            if state.get_account(_offender(ev)).slashed or _is_stale(ev, state):
                del self.evidence[digest]
        for sid, signed in list(self.early_units.items()):
            job = state.jobs.get(signed.submission.job)
            if job is not None and (job.status != JOB_ACTIVE or signed.submission.step < job.step):
                del self.early_units[sid]

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
