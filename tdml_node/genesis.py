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
    Address,
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


DEV_CHAIN_SUFFIXES = ("-dev", "-devnet")
"""A chain whose id ends so is a throwaway dev chain: the only kind on which a node takes dev options.

The chain id is part of the genesis hash and of every signature's domain,
so the genesis itself says whether a chain is dev, and no node of a real
network can be talked into test-only behaviour by its own config."""


class GenesisError(Exception):
    """A genesis file is missing or malformed."""


def is_dev_chain(chain_id: str) -> bool:
    return chain_id in ("dev", "devnet") or chain_id.endswith(DEV_CHAIN_SUFFIXES)


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
    clients: Sequence[bytes] = (),
    stake: int = DEFAULT_STAKE,
    roles: int = ROLES_ALL,
    transactions: Sequence[SignedTransaction] = (),
    params: ChainParams = DEFAULT_PARAMS,
) -> Genesis:
    """A genesis with ``nodes`` registered (stake and roles) and funded clients.

    A client is a 32-byte public key or a 20-byte address.
    """
    balances = [GenesisBalance(address_of(pk), Amount(DEFAULT_NODE_BALANCE)) for pk, _ in nodes]
    balances += [
        GenesisBalance(Address(c) if len(c) == 20 else address_of(c), Amount(DEFAULT_CLIENT_BALANCE)) for c in clients
    ]
    return Genesis(
        chain_id=chain_id,
        params=params,
        balances=tuple(sorted(balances, key=lambda b: b.address)),
        nodes=tuple(GenesisNode(pk, Amount(stake), roles, endpoint) for pk, endpoint in nodes),
        transactions=tuple(transactions),
    )
