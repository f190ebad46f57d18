"""JSON views of blocks, jobs and step outcomes, as the RPC methods and notifications answer them.

This module must never decide anything: it presents what it is given.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from consensus import crypto
from consensus.transition import compute_block_hash, compute_job_id
from consensus.types import (
    JOB_ACTIVE,
    JOB_DONE,
    ROLE_TRAINER,
    ROLE_VALIDATOR,
    Block,
    CommitCertificate,
    JobState,
    RegisterNode,
    ShareDataKey,
    SignedTransaction,
    StepOutcome,
    SubmitJob,
    Transfer,
)
from consensus.work import submission_id
from tdml_node.jsonview import f32, hex0x, to_json
from tdml_node.pools import tx_hash
from tdml_node.runtime.views import CommittedBlock


def block_view(block: Block, commit: CommitCertificate | None, full: bool) -> dict[str, Any]:
    header = block.header
    view: dict[str, Any] = {
        "number": header.height,
        "hash": hex0x(compute_block_hash(header)),
        "time": header.time_ms,
        "time_iso": iso_time(header.time_ms),
        "header": to_json(header),
    }
    body = block.body
    if full:
        view["body"] = to_json(body)
    else:
        view["transactions"] = [hex0x(tx_hash(t)) for t in body.transactions]
        view["submissions"] = [hex0x(submission_id(s.submission)) for s in body.submissions]
        view["evidence"] = len(body.evidence)
        view["outcomes"] = [outcome_view(o) for o in body.outcomes]
    view["commit"] = to_json(commit) if commit is not None else None
    return view


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso_time(time_ms: int) -> str:
    """A block time as ISO 8601 in UTC with milliseconds, e.g. ``2026-12-03T06:38:19.123Z``.

    Integer arithmetic, so no float rounding moves a millisecond; a time past
    year 9999 (the header allows any u64) has no ISO form and reads as "".
    """
    try:
        moment = EPOCH + timedelta(milliseconds=time_ms)
    except OverflowError:
        return ""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def block_summary(committed: CommittedBlock) -> dict[str, Any]:
    """A committed block in a notification: its number, hash, round, proposer and what it holds."""
    block = committed.block
    return {
        "number": block.header.height,
        "hash": hex0x(committed.block_hash),
        "round": committed.commit.round,
        "time": block.header.time_ms,
        "proposer": hex0x(block.header.proposer),
        "transactions": len(block.body.transactions),
        "submissions": len(block.body.submissions),
        "evidence": len(block.body.evidence),
        "outcomes": [outcome_view(o) for o in block.body.outcomes],
    }


def transaction_view(signed: SignedTransaction, height: int, block_hash: bytes, index: int) -> dict[str, Any]:
    """A committed transaction: its hash, where it is, its sender's address, and the signed transaction."""
    return {
        "hash": hex0x(tx_hash(signed)),
        "blockNumber": height,
        "blockHash": hex0x(block_hash),
        "index": index,
        "from": hex0x(crypto.address_of(signed.tx.sender)),
        "nonce": signed.tx.nonce,
        "transaction": to_json(signed),
    }


def receipt_view(signed: SignedTransaction, height: int, block_hash: bytes, index: int) -> dict[str, Any]:
    """What a committed transaction did. Its status is always ``applied``: a block holding a transaction
    that fails its rule is invalid as a whole (decision 24), so no block records a failed one."""
    tx = signed.tx
    payload = tx.payload
    effect: dict[str, Any]
    match payload:
        case Transfer():
            effect = {"to": hex0x(payload.to), "amount": payload.amount}
        case RegisterNode():
            effect = {"stake": payload.stake, "roles": role_names(payload.roles), "endpoint": payload.endpoint}
        case SubmitJob():
            effect = {"jobId": hex0x(compute_job_id(tx)), "budget": payload.budget}
        case ShareDataKey():
            effect = {"jobId": hex0x(payload.job), "newMembers": [hex0x(s.recipient) for s in payload.shares]}
    return {
        "transactionHash": hex0x(tx_hash(signed)),
        "blockNumber": height,
        "blockHash": hex0x(block_hash),
        "index": index,
        "from": hex0x(crypto.address_of(tx.sender)),
        "status": "applied",
        "fee": tx.fee,
        "kind": type(payload).__name__,
        "effect": effect,
    }


def job_summary(job: JobState) -> dict[str, Any]:
    return {
        "id": hex0x(job.job_id),
        "name": job.spec.name,
        "status": status_name(job.status),
        "step": job.step,
        "steps": job.spec.steps,
        "modelRoot": hex0x(job.model_root),
    }


def job_view(job: JobState, last_eval: StepOutcome | None) -> dict[str, Any]:
    view = job_summary(job)
    view.update(
        submitter=hex0x(job.submitter),
        createdHeight=job.created_height,
        finishedHeight=job.finished_height if job.status == JOB_DONE else None,
        escrow=job.escrow,
        assignment=[hex0x(a) for a in job.assignment],
        accepted=[hex0x(a) if a is not None else None for a in job.accepted],
        lastOutcome=outcome_view(job.last_outcome) if job.last_outcome is not None else None,
        lastEval=outcome_view(last_eval) if last_eval is not None else None,
        spec=to_json(job.spec),
        # A private job's data key is sealed to this many members; the shares themselves are not shown.
        sealedTo=len(job.key_shares),
    )
    return view


def outcome_view(o: StepOutcome) -> dict[str, Any]:
    view: dict[str, Any] = to_json(o)
    view["trainLossFloat"] = f32(o.train_loss)
    if o.eval_total:
        view["evalLossFloat"] = f32(o.eval_loss)
        view["testAccuracy"] = o.eval_correct / o.eval_total
    return view


def status_name(code: int) -> str:
    return {JOB_ACTIVE: "active", JOB_DONE: "done"}.get(code, "stalled")


def role_names(bits: int) -> list[str]:
    return [name for flag, name in ((ROLE_TRAINER, "trainer"), (ROLE_VALIDATOR, "validator")) if bits & flag]
