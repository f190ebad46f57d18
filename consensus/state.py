"""The ledger state: accounts, work records, jobs, and the validator set they imply.

``LedgerState`` is what the transition reads and produces. It is never
changed in place by anyone but ``transition`` working on its own copy;
callers treat every instance as a value. Its root is the hash of its
canonical snapshot (``StateSnapshot``); ``tip_hash``, the hash of the last
applied block, is kept beside the state and is not part of the root (the
block's header holds the root, so the root cannot hold the block's hash).

This module must never validate blocks or transactions: it only stores,
reads and derives.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from consensus import crypto
from consensus.codec import decode_as, encode
from consensus.types import (
    ROLE_TRAINER,
    ROLE_VALIDATOR,
    Account,
    AccountEntry,
    Address,
    Amount,
    ChainParams,
    Hash32,
    Height,
    JobState,
    StateSnapshot,
    ValidatorEntry,
    WorkRecord,
)
from consensus.validators import ValidatorSet

EMPTY_ACCOUNT = Account(
    balance=Amount(0), nonce=0, stake=Amount(0), roles=0, public_key=None, endpoint="", slashed=False
)
EMPTY_RECORD = WorkRecord(0, 0, 0, 0, 0, 0, Amount(0), 0, Height(0))


@dataclass(frozen=True)
class LedgerState:
    chain_id: str
    height: Height
    tip_hash: Hash32
    params: ChainParams
    accounts: dict[Address, Account] = field(default_factory=dict)
    records: dict[Address, WorkRecord] = field(default_factory=dict)
    jobs: dict[Hash32, JobState] = field(default_factory=dict)
    last_validators: tuple[ValidatorEntry, ...] = ()

    def copy(self) -> LedgerState:
        return LedgerState(
            chain_id=self.chain_id,
            height=self.height,
            tip_hash=self.tip_hash,
            params=self.params,
            accounts=dict(self.accounts),
            records=dict(self.records),
            jobs=dict(self.jobs),
            last_validators=self.last_validators,
        )

    def get_account(self, address: Address) -> Account:
        return self.accounts.get(address, EMPTY_ACCOUNT)

    def get_record(self, address: Address) -> WorkRecord:
        return self.records.get(address, EMPTY_RECORD)

    def snapshot(self) -> StateSnapshot:
        # An account with nothing in it and no record is the same as no account
        # (a transfer of 0 to a fresh address creates one), so it is left out:
        # otherwise a node that reloaded its state would compute another root.
        addresses = sorted(set(self.accounts) | set(self.records))
        entries = (AccountEntry(a, self.get_account(a), self.get_record(a)) for a in addresses)
        return StateSnapshot(
            chain_id=self.chain_id,
            height=self.height,
            params=self.params,
            accounts=tuple(e for e in entries if e.account != EMPTY_ACCOUNT or e.record != EMPTY_RECORD),
            jobs=tuple(self.jobs[j] for j in sorted(self.jobs)),
            last_validators=self.last_validators,
        )

    def encode(self) -> bytes:
        return encode(self.snapshot())

    @property
    def root(self) -> Hash32:
        return crypto.sha256(self.encode())

    @classmethod
    def from_snapshot(cls, snap: StateSnapshot, tip_hash: Hash32) -> LedgerState:
        return cls(
            chain_id=snap.chain_id,
            height=snap.height,
            tip_hash=tip_hash,
            params=snap.params,
            accounts={e.address: e.account for e in snap.accounts if e.account != EMPTY_ACCOUNT},
            records={e.address: e.record for e in snap.accounts if e.record != EMPTY_RECORD},
            jobs={j.job_id: j for j in snap.jobs},
            last_validators=snap.last_validators,
        )

    @classmethod
    def decode(cls, data: bytes, tip_hash: Hash32) -> LedgerState:
        return cls.from_snapshot(decode_as(data, StateSnapshot), tip_hash)


def is_validator(params: ChainParams, account: Account) -> bool:
    return (
        not account.slashed
        and bool(account.roles & ROLE_VALIDATOR)
        and account.public_key is not None
        and account.stake >= max(params.min_validator_stake, 1)
    )


def is_trainer(params: ChainParams, account: Account) -> bool:
    return (
        not account.slashed
        and bool(account.roles & ROLE_TRAINER)
        and account.public_key is not None
        and account.stake >= max(params.min_trainer_stake, 1)
    )


def get_validator_set(state: LedgerState) -> ValidatorSet:
    """The validators of the next height: unslashed accounts with the role and enough stake."""
    powers = [
        (acct.public_key, int(acct.stake))
        for acct in state.accounts.values()
        if is_validator(state.params, acct) and acct.public_key is not None
    ]
    return ValidatorSet.of(powers)


def get_trainers(state: LedgerState, at_height: int | None = None) -> tuple[Address, ...]:
    """Trainers in address order; with ``at_height``, only those that may be given work then.

    A benched trainer (one whose units timed out) sits out until its bench ends.
    """
    return tuple(
        sorted(
            a
            for a, acct in state.accounts.items()
            if is_trainer(state.params, acct)
            and (at_height is None or state.get_record(a).benched_until <= at_height)
        )
    )
