"""The validator set of a height: voting power, quorum arithmetic, proposer choice.

Voting power is bonded stake. A quorum is more than two thirds of the total
power ("2f + 1" in the Tendermint paper), a skip set more than one third
("f + 1"). The proposer of (height, round) is drawn by weight from the sorted
set with SHA-256 of (chain id, height, round) as the randomness, so every node
computes the same proposer and each validator proposes in proportion to its
power.

This module must never read the ledger: ``transition.get_validator_set``
builds a set from state.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

from consensus.types import Amount, PublicKey, ValidatorEntry


@dataclass(frozen=True)
class ValidatorSet:
    entries: tuple[ValidatorEntry, ...]

    def __post_init__(self) -> None:
        keys = [e.public_key for e in self.entries]
        if keys != sorted(keys) or len(set(keys)) != len(keys):
            raise ValueError("validator entries must be sorted by key and unique")
        if any(e.power <= 0 for e in self.entries):
            raise ValueError("every validator needs positive power")

    @classmethod
    def of(cls, powers: Iterable[tuple[PublicKey, int]]) -> ValidatorSet:
        return cls(tuple(ValidatorEntry(k, Amount(p)) for k, p in sorted(powers)))

    @cached_property
    def total_power(self) -> int:
        return sum(e.power for e in self.entries)

    @cached_property
    def _power(self) -> dict[bytes, int]:
        return {e.public_key: e.power for e in self.entries}

    @property
    def keys(self) -> tuple[PublicKey, ...]:
        return tuple(e.public_key for e in self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, key: object) -> bool:
        return key in self._power

    def power_of(self, key: bytes) -> int:
        return self._power.get(key, 0)

    def power_of_all(self, keys: Iterable[bytes]) -> int:
        return sum(self._power.get(k, 0) for k in set(keys))

    def is_quorum(self, power: int) -> bool:
        """More than two thirds of the total power."""
        return 3 * power > 2 * self.total_power

    def is_skip(self, power: int) -> bool:
        """More than one third of the total power."""
        return 3 * power > self.total_power

    @property
    def max_faulty(self) -> int:
        """f: how many validators of equal power may be Byzantine (n >= 3f + 1)."""
        return (len(self.entries) - 1) // 3

    def get_proposer(self, chain_id: str, height: int, round_: int) -> PublicKey:
        if not self.entries:
            raise ValueError("an empty validator set has no proposer")
        seed = hashlib.sha256(
            b"TDML/proposer/" + chain_id.encode() + b"\x00" + height.to_bytes(8, "big") + round_.to_bytes(4, "big")
        ).digest()
        ticket = int.from_bytes(seed, "big") % self.total_power
        for entry in self.entries:
            if ticket < entry.power:
                return entry.public_key
            ticket -= entry.power
        raise AssertionError("unreachable: ticket below total power")
