"""Pending transactions: cheap admission, the full check against a sender's earlier ones, selection.

The mempool only collects and selects; whether a transaction applies is
``consensus.transition``'s rule. Selection is deterministic (senders, then
nonces, ascending), so a node that builds the same block twice, for
instance after a restart, builds identical bytes.

This module must never perform I/O or run torch: ``check_transaction`` and
``select_transactions`` take the work oracle as an argument and are run on
the work queue by their callers.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Sequence

from consensus import crypto
from consensus.errors import FaultKind, ProtocolError
from consensus.state import LedgerState
from consensus.transition import BlockContext, InvalidBlock, apply_transaction
from consensus.types import MAX_BLOCK_TXS, Hash32, SignedTransaction
from consensus.work import WorkOracle

MAX_NONCE_GAP = 64


class TxRejected(ProtocolError):
    """A transaction cannot enter the mempool; the message says why, the kind how bad it is."""


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
            raise TxRejected("mempool is full", FaultKind.STALE)
        tx = signed.tx
        if not crypto.verify_value(tx.sender, crypto.DOMAIN_TX, state.chain_id, tx, signed.signature):
            raise TxRejected("bad signature (or a transaction for another chain)", FaultKind.BAD_SIGNATURE)
        acct = state.get_account(crypto.address_of(tx.sender))
        if tx.nonce < acct.nonce:
            raise TxRejected(f"nonce {tx.nonce} already used (next is {acct.nonce})", FaultKind.STALE)
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

    def earlier_of(self, signed: SignedTransaction) -> list[SignedTransaction]:
        """The sender's pending transactions with lower nonces, one per nonce (the first admitted).

        Two that share a nonce cannot both apply, and checking both would
        refuse every later one.
        """
        pending: dict[int, SignedTransaction] = {}
        for t in self._txs.values():
            if t.tx.sender == signed.tx.sender and t.tx.nonce < signed.tx.nonce:
                pending.setdefault(t.tx.nonce, t)
        return [pending[n] for n in sorted(pending)]

    def prune(self, state: LedgerState) -> None:
        for digest, signed in list(self._txs.items()):
            if signed.tx.nonce < state.get_account(crypto.address_of(signed.tx.sender)).nonce:
                del self._txs[digest]

    def items(self) -> list[SignedTransaction]:
        return list(self._txs.values())


def check_transaction(
    state: LedgerState,
    ctx: BlockContext,
    earlier: Sequence[SignedTransaction],
    signed: SignedTransaction,
    work: WorkOracle,
) -> None:
    """Apply a transaction after its sender's pending ones on a scratch state; ``TxRejected`` if it cannot."""
    try:
        for tx in earlier:
            state = apply_transaction(state, ctx, tx, work)
        apply_transaction(state, ctx, signed, work)
    except InvalidBlock as exc:
        raise TxRejected(str(exc), exc.kind) from exc


def select_transactions(
    state: LedgerState, ctx: BlockContext, candidates: Sequence[SignedTransaction], work: WorkOracle
) -> tuple[SignedTransaction, ...]:
    """The candidates a proposer includes: those admissible now that apply in order."""
    pool = Mempool()
    for signed in candidates:
        with contextlib.suppress(TxRejected):
            pool.admit(signed, state)
    return pool.select(state, ctx, work)
