"""The node's story at INFO: what a committed block did to jobs, stakes and registrations, and a heartbeat.

``describe_block`` is pure: a committed block in, the lifecycle events it
holds out (a job started or finished, a node registered, an offender
slashed). ``BlockEvents`` logs them from the node's block listener; the
per-block line itself stays at DEBUG, so an idle chain is quiet at INFO.

``watch`` runs beside the node: a heartbeat every ``HEARTBEAT_SECONDS``
(height, peers, syncing), so an operator sees the node is alive and moving
without a line per block, and a warning while the node has no peers and
cannot commit alone.

This module must never change the node's state; it only reads and logs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from consensus import crypto
from consensus.transition import compute_job_id
from consensus.types import (
    JOB_DONE,
    JOB_STALLED,
    Equivocation,
    Evidence,
    FalseVerdict,
    RegisterNode,
    SubmitJob,
    WorkFraud,
)
from tdml_node.runtime.views import ChainView, CommittedBlock

log = logging.getLogger("tdml.lifecycle")

HEARTBEAT_SECONDS = 60.0
"""An idle node's one INFO line a minute: proof of life and of height, at about 1,500 lines a day."""
NO_PEERS_WARN_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class LifecycleEvent:
    msg: str
    fields: dict[str, Any] = field(default_factory=dict)
    level: int = logging.INFO


def describe_block(committed: CommittedBlock) -> Iterator[LifecycleEvent]:
    """The lifecycle events of one committed block, in the order the block applied them."""
    block, state = committed.block, committed.state
    height = block.header.height
    for signed in block.body.transactions:
        payload = signed.tx.payload
        if isinstance(payload, SubmitJob):
            yield LifecycleEvent("job started", {
                "job": compute_job_id(signed.tx), "job_name": payload.spec.name, "steps": payload.spec.steps,
                "shards": payload.spec.shards, "height": height,
            })
        elif isinstance(payload, RegisterNode):
            yield LifecycleEvent("node registered", {
                "address": crypto.address_of(signed.tx.sender), "stake": payload.stake, "roles": payload.roles,
                "height": height,
            })
    for evidence in block.body.evidence:
        offender, kind = _offender(evidence)
        yield LifecycleEvent(
            "slashed", {"offender": crypto.address_of(offender), "kind": kind, "height": height}, logging.WARNING
        )
    for job in state.jobs.values():
        if job.finished_height == height and job.status in (JOB_DONE, JOB_STALLED):
            yield LifecycleEvent("job finished", {
                "job": job.job_id, "status": "done" if job.status == JOB_DONE else "stalled", "step": job.step,
                "model_root": job.model_root, "height": height,
            })


class BlockEvents:
    """A block listener that logs each committed block: the lifecycle at INFO, the block itself at DEBUG."""

    def __call__(self, committed: CommittedBlock) -> None:
        block = committed.block
        if log.isEnabledFor(logging.DEBUG):
            log.debug("committed", extra={
                "height": block.header.height, "hash": committed.block_hash, "round": committed.commit.round,
                "txs": len(block.body.transactions), "units": len(block.body.submissions),
                "verdicts": len(block.body.verdicts), "steps": len(block.body.outcomes),
                "evidence": len(block.body.evidence),
            })
        for event in describe_block(committed):
            log.log(event.level, event.msg, extra=event.fields)


def can_commit_alone(chain: ChainView, me: bytes) -> bool:
    """Whether this node's own power is a quorum: a one-validator chain needs no peers to move."""
    validators = chain.validators()
    return validators.is_quorum(validators.power_of(me))


def warn_without_bootstrap(chain: ChainView, me: bytes, bootstrap: tuple[str, ...]) -> None:
    if not bootstrap and not can_commit_alone(chain, me):
        log.warning(
            "no bootstrap peers configured; this node will sit at height %d until a peer connects "
            "— pass --bootstrap host:port", chain.state.height, extra={"height": chain.state.height},
        )


async def watch(
    chain: ChainView,
    me: bytes,
    peer_count: Callable[[], int],
    syncing_to: Callable[[], int],
    *,
    heartbeat_s: float = HEARTBEAT_SECONDS,
    no_peers_warn_s: float = NO_PEERS_WARN_SECONDS,
) -> None:
    """Log a heartbeat now and then, and warn (at most every ``no_peers_warn_s``) while the node is alone and stuck."""
    tick = min(heartbeat_s, no_peers_warn_s, 5.0)
    last_beat = alone_since = time.monotonic()
    last_warning: float | None = None
    while True:
        await asyncio.sleep(tick)
        now = time.monotonic()
        peers = peer_count()
        height = chain.state.height
        if now - last_beat >= heartbeat_s:
            last_beat = now
            log.info("heartbeat", extra={"height": height, "peers": peers, "syncing_to": syncing_to()})
        if peers:
            alone_since, last_warning = now, None
            continue
        stuck = not can_commit_alone(chain, me)
        if stuck and now - alone_since >= no_peers_warn_s and (last_warning is None or now - last_warning >= no_peers_warn_s):
            last_warning = now
            log.warning(
                "no peers connected for %.0f s; this node cannot commit until one connects",
                now - alone_since, extra={"height": height, "alone_s": round(now - alone_since)},
            )


def _offender(evidence: Evidence) -> tuple[bytes, str]:
    if isinstance(evidence, Equivocation):
        return evidence.vote_a.vote.validator, "equivocation"
    if isinstance(evidence, WorkFraud):
        return evidence.submission.submission.trainer, "work-fraud"
    if isinstance(evidence, FalseVerdict):
        return evidence.verdict.verdict.validator, "false-verdict"
    return evidence.verdict.verdict.validator, "false-pass"
