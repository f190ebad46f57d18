"""The ledger state: accounts, work records, jobs, and the validator set they imply.

``LedgerState`` is immutable: its mappings are read-only views, so no code
can change a state others hold. The block transition works on a
``LedgerDraft``, an explicit writable copy (``state.draft()``), and freezes
it into the next state only when the whole block is valid; a block that
fails leaves nothing changed, by construction. ``BlockContext`` says which
block a draft is being changed for.

A state's root is the hash of its canonical snapshot (``StateSnapshot``);
``tip_hash``, the hash of the last applied block, is kept beside the state
and is not part of the root (the block's header holds the root, so the root
cannot hold the block's hash). So is ``tip_time_ms``, the last block's time,
which the next block's time must exceed: no clock reading enters the root.

This module must never validate blocks or transactions: it only stores,
reads and derives.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol, cast

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
    PublicKey,
    StateSnapshot,
    ValidatorEntry,
    WorkRecord,
)
from consensus.validators import ValidatorSet

EMPTY_ACCOUNT = Account(
    balance=Amount(0), nonce=0, stake=Amount(0), roles=0, public_key=None, endpoint="", slashed=False
)
EMPTY_RECORD = WorkRecord(0, 0, 0, 0, 0, 0, Amount(0), 0, Height(0))


@dataclass(frozen=True, slots=True)
class BlockContext:
    """What the transition needs of a header besides the body: the block a draft is changed for."""

    chain_id: str
    height: Height
    parent_hash: Hash32
    proposer: PublicKey


class Ledger(Protocol):
    """What reading a ledger needs; a state and a draft both are one."""

    @property
    def chain_id(self) -> str: ...

    @property
    def params(self) -> ChainParams: ...

    @property
    def accounts(self) -> Mapping[Address, Account]: ...

    @property
    def records(self) -> Mapping[Address, WorkRecord]: ...

    @property
    def jobs(self) -> Mapping[Hash32, JobState]: ...

    def get_account(self, address: Address) -> Account: ...

    def get_record(self, address: Address) -> WorkRecord: ...


@dataclass(frozen=True)
class LedgerState:
    chain_id: str
    height: Height
    tip_hash: Hash32
    params: ChainParams
    accounts: Mapping[Address, Account] = field(default_factory=dict)
    records: Mapping[Address, WorkRecord] = field(default_factory=dict)
    jobs: Mapping[Hash32, JobState] = field(default_factory=dict)
    last_validators: tuple[ValidatorEntry, ...] = ()
    tip_time_ms: int = 0  # the last block's header time; 0 at genesis

    def __post_init__(self) -> None:
        # Read-only views of private copies, so that a caller that keeps the
        # dict it passed in cannot change the state through it. A view is kept
        # as it is: it is a state's own (``replace``) or a frozen draft's.
        for name in ("accounts", "records", "jobs"):
            value = getattr(self, name)
            if not isinstance(value, MappingProxyType):
                object.__setattr__(self, name, MappingProxyType(dict(value)))

    def draft(self) -> LedgerDraft:
        """A writable copy to build the next state on; this state stays as it is."""
        return LedgerDraft(self)

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
    def from_snapshot(cls, snap: StateSnapshot, tip_hash: Hash32, tip_time_ms: int = 0) -> LedgerState:
        return cls(
            chain_id=snap.chain_id,
            height=snap.height,
            tip_hash=tip_hash,
            params=snap.params,
            accounts={e.address: e.account for e in snap.accounts if e.account != EMPTY_ACCOUNT},
            records={e.address: e.record for e in snap.accounts if e.record != EMPTY_RECORD},
            jobs={j.job_id: j for j in snap.jobs},
            last_validators=snap.last_validators,
            tip_time_ms=tip_time_ms,
        )

    @classmethod
    def decode(cls, data: bytes, tip_hash: Hash32, tip_time_ms: int = 0) -> LedgerState:
        return cls.from_snapshot(decode_as(data, StateSnapshot), tip_hash, tip_time_ms)


class LedgerDraft:
    """A writable copy of a ledger state, which the transition changes and then freezes.

    Nothing but the transition writes to a draft, and a draft becomes a state
    only through ``freeze``; an abandoned draft (an invalid block) changes
    nothing anyone else holds.
    """

    def __init__(self, base: LedgerState) -> None:
        self.chain_id = base.chain_id
        self.height = base.height
        self.tip_hash = base.tip_hash
        self.params = base.params
        self.accounts: dict[Address, Account] = dict(base.accounts)
        self.records: dict[Address, WorkRecord] = dict(base.records)
        self.jobs: dict[Hash32, JobState] = dict(base.jobs)
        self.last_validators = base.last_validators
        self.tip_time_ms = base.tip_time_ms

    def get_account(self, address: Address) -> Account:
        return self.accounts.get(address, EMPTY_ACCOUNT)

    def get_record(self, address: Address) -> WorkRecord:
        return self.records.get(address, EMPTY_RECORD)

    def freeze(
        self,
        *,
        height: Height | None = None,
        tip_hash: Hash32 | None = None,
        last_validators: tuple[ValidatorEntry, ...] | None = None,
    ) -> LedgerState:
        """The state the draft holds, with the given height, tip and last validators.

        The draft hands its mappings over without a copy and keeps only
        read-only views of them: writing to a frozen draft raises.
        """
        accounts, records, jobs = (MappingProxyType(m) for m in (self.accounts, self.records, self.jobs))
        self.accounts, self.records, self.jobs = cast(Any, accounts), cast(Any, records), cast(Any, jobs)
        return LedgerState(
            chain_id=self.chain_id,
            height=self.height if height is None else height,
            tip_hash=self.tip_hash if tip_hash is None else tip_hash,
            params=self.params,
            accounts=accounts,
            records=records,
            jobs=jobs,
            last_validators=self.last_validators if last_validators is None else last_validators,
            tip_time_ms=self.tip_time_ms,
        )


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


def get_validator_set(state: Ledger) -> ValidatorSet:
    """The validators of the next height: unslashed accounts with the role and enough stake."""
    powers = [
        (acct.public_key, int(acct.stake))
        for acct in state.accounts.values()
        if is_validator(state.params, acct) and acct.public_key is not None
    ]
    return ValidatorSet.of(powers)


def get_trainers(state: Ledger, at_height: int | None = None) -> tuple[Address, ...]:
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
