"""Members of a private job seal its data key to nodes that joined after it was submitted.

A private job's key shares are fixed by its client at submission, but the
job's worker set changes: a trainer registers, a validator joins, a
shard moves to a node that was not there. The client need not be online:
after each commit, a member that holds the key seals it to every
registered trainer and validator without a share, in one ``ShareDataKey``
transaction signed with its node key. So the key reaches only nodes a
member vouched for on chain.

One member does it, not all of them, since each would spend a nonce on a
transaction that only the first can apply. The members are ranked per
(job, newcomer) by a hash, and the i-th waits ``i · RESEAL_STAGGER_BLOCKS``
blocks after this node first saw the newcomer without a share. A member
that is offline is thus replaced by the next one.

This module must never put a key anywhere but in a sealed share.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from consensus import crypto
from consensus.state import LedgerState, get_trainers, get_validator_set
from consensus.types import (
    JOB_DONE,
    Amount,
    JobState,
    KeyShare,
    PublicKey,
    ShareDataKey,
    SignedTransaction,
    Transaction,
)
from tdml_node.node.intake import TransactionIntake
from tdml_node.node.keyring import KeyRing
from tdml_node.pools import TxRejected
from tdml_node.runtime.views import CommittedBlock
from tdml_node.work.sealed import seal_key

log = logging.getLogger("tdml.reseal")

RESEAL_STAGGER_BLOCKS = 10


def wanted_members(state: LedgerState) -> list[PublicKey]:
    """The nodes a private job's key should reach: every validator and every trainer the next step deals to."""
    keys = set(get_validator_set(state).keys)
    for address in get_trainers(state):
        key = state.get_account(address).public_key
        if key is not None:
            keys.add(key)
    return sorted(keys)


def reseal_order(job: JobState, newcomer: bytes) -> list[PublicKey]:
    """The job's members in the order they take turns to share its key with ``newcomer``."""

    def rank(member: PublicKey) -> bytes:
        return hashlib.sha256(b"TDML/reseal/" + job.job_id + newcomer + member).digest()

    return sorted((s.recipient for s in job.key_shares), key=rank)


class Resealer:
    def __init__(
        self,
        *,
        keypair: crypto.Keypair,
        keyring: KeyRing,
        intake: TransactionIntake,
        spawn: Callable[[Coroutine[Any, Any, None], str], None],
    ) -> None:
        self.keypair = keypair
        self.keyring = keyring
        self.intake = intake
        self._spawn = spawn
        self._first_missing: dict[tuple[bytes, bytes], int] = {}
        self._sent_at: dict[tuple[bytes, bytes], int] = {}
        """When this node last sealed the key to a newcomer: it tries again only a stagger later."""

    def on_commit(self, committed: CommittedBlock) -> None:
        state = committed.state
        me = self.keypair.public_key
        mine = [
            j for j in sorted(state.jobs.values(), key=lambda j: j.job_id)
            if j.status != JOB_DONE and j.spec.private and any(s.recipient == me for s in j.key_shares)
        ]
        if not mine:
            return  # the common case, every commit: nothing of ours to share
        wanted = wanted_members(state)
        for job in mine:
            members = {s.recipient for s in job.key_shares}
            due = []
            for newcomer in (k for k in wanted if k not in members):
                first = self._first_missing.setdefault((job.job_id, newcomer), state.height)
                turn = reseal_order(job, newcomer).index(me)
                sent = self._sent_at.get((job.job_id, newcomer))
                if state.height - first >= turn * RESEAL_STAGGER_BLOCKS and (
                    sent is None or state.height - sent >= RESEAL_STAGGER_BLOCKS
                ):
                    due.append(newcomer)
            if due and self.keyring.holds(job.spec):
                for newcomer in due:
                    self._sent_at[(job.job_id, newcomer)] = state.height
                signed = self._transaction(state, job, due)
                self._spawn(self._submit(signed, job, len(due)), f"reseal-{job.job_id.hex()[:8]}")
                return  # one transaction a block: the next one's nonce follows it

    def _transaction(self, state: LedgerState, job: JobState, newcomers: list[PublicKey]) -> SignedTransaction:
        key = self.keyring.key_for(job.spec)
        assert key is not None
        shares = tuple(KeyShare(k, seal_key(key, k)) for k in newcomers)
        me = self.keypair.public_key
        nonce = state.get_account(crypto.address_of(me)).nonce
        tx = Transaction(me, nonce, Amount(0), ShareDataKey(job.job_id, shares))
        return SignedTransaction(tx, self.keypair.sign_value(crypto.DOMAIN_TX, state.chain_id, tx))

    async def _submit(self, signed: SignedTransaction, job: JobState, count: int) -> None:
        try:
            await self.intake.submit(signed)
        except TxRejected as exc:
            log.info("a key share was refused: %s", exc, extra={"job": job.job_id})
            return
        log.info("sealed a private job's key to new members", extra={"job": job.job_id, "members": count})
