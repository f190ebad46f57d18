"""Reading, writing and composing genesis files.

The genesis file is the canonical encoding of ``consensus.types.Genesis``;
its hash is the chain's identity that peers compare in the handshake.

This module must never start a node.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from consensus.codec import DecodeError, decode_as, encode
from consensus.crypto import address_of
from consensus.types import (
    ROLES_ALL,
    Amount,
    ChainParams,
    Genesis,
    GenesisBalance,
    GenesisNode,
    PublicKey,
    SignedTransaction,
)

DEFAULT_PARAMS = ChainParams(
    min_validator_stake=Amount(1_000),
    min_trainer_stake=Amount(1_000),
    slash_fraction_bps=5_000,
    reporter_reward_bps=1_000,
    max_jobs_active=16,
)
DEFAULT_STAKE = 1_000_000
DEFAULT_NODE_BALANCE = 1_000_000
DEFAULT_CLIENT_BALANCE = 10**12


class GenesisError(Exception):
    """A genesis file is missing or malformed."""


def read_genesis(path: Path) -> Genesis:
    try:
        return decode_as(path.read_bytes(), Genesis)
    except FileNotFoundError as exc:
        raise GenesisError(f"no genesis file at {path}") from exc
    except DecodeError as exc:
        raise GenesisError(f"{path} is not a valid genesis file: {exc}") from exc


def write_genesis(path: Path, genesis: Genesis) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(genesis))


def compose_genesis(
    chain_id: str,
    nodes: Sequence[tuple[PublicKey, str]],
    *,
    clients: Sequence[PublicKey] = (),
    stake: int = DEFAULT_STAKE,
    roles: int = ROLES_ALL,
    transactions: Sequence[SignedTransaction] = (),
    params: ChainParams = DEFAULT_PARAMS,
) -> Genesis:
    """A genesis with ``nodes`` registered (stake and roles) and funded clients."""
    balances = [GenesisBalance(address_of(pk), Amount(DEFAULT_NODE_BALANCE)) for pk, _ in nodes]
    balances += [GenesisBalance(address_of(pk), Amount(DEFAULT_CLIENT_BALANCE)) for pk in clients]
    return Genesis(
        chain_id=chain_id,
        params=params,
        balances=tuple(sorted(balances, key=lambda b: b.address)),
        nodes=tuple(GenesisNode(pk, Amount(stake), roles, endpoint) for pk, endpoint in nodes),
        transactions=tuple(transactions),
    )
