"""The validator's guard against signing twice, persisted before a message leaves the node.

Before a proposal or vote is signed, its (height, round, step), the hash of
its sign bytes, the signature and the message itself are written to the
store with ``sync=True``. Asked to sign at a (height, round, step) it has
signed before, the guard returns the earlier signature when the bytes are
identical (a restarted node re-sending its own vote) and refuses otherwise;
asked to sign below the highest (height, round, step) signed, it refuses
unless it is that same identical message. So a node killed at any moment
never equivocates after a restart.

The records of the current height double as the consensus write-ahead log:
``replay`` returns them so a restarted node resumes the height where it
stopped (its own proposal and votes), instead of starting it afresh.

This module must never sign anything but proposals and votes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

from consensus.codec import decode_as, encode
from consensus.crypto import DOMAIN_PROPOSAL, DOMAIN_VOTE, Keypair, sha256
from consensus.errors import LocalFault
from consensus.tendermint import Step
from consensus.types import (
    Proposal,
    Signature,
    SignedProposal,
    SignedVote,
    Vote,
)

_LAST = b"privval"
_RECORD = b"pv/"


class RecordStore(Protocol):
    """Where the records live: the chain store's metadata entries (or, in a simulation, memory)."""

    def get_meta(self, name: bytes) -> bytes | None: ...

    def write_meta_synced(self, values: dict[bytes, bytes], delete: Iterable[bytes] = ()) -> None: ...

    def iter_meta(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]: ...


class DoubleSignRefused(LocalFault):
    """Signing this would conflict with something already signed: the node must stop, not sign."""


def _position(height: int, round_: int, step: int) -> bytes:
    return height.to_bytes(8, "big") + round_.to_bytes(4, "big") + bytes([step])


class PrivValidator:
    def __init__(self, store: RecordStore, keypair: Keypair, chain_id: str) -> None:
        self._store = store
        self.keypair = keypair
        self.chain_id = chain_id

    def last_signed(self) -> tuple[int, int, int] | None:
        raw = self._store.get_meta(_LAST)
        if raw is None:
            return None
        return int.from_bytes(raw[0:8], "big"), int.from_bytes(raw[8:12], "big"), raw[12]

    def sign_proposal(self, proposal: Proposal) -> Signature:
        return self._sign(DOMAIN_PROPOSAL, proposal.height, proposal.round, Step.of_message(proposal), encode(proposal))

    def sign_vote(self, vote: Vote) -> Signature:
        return self._sign(DOMAIN_VOTE, vote.height, vote.round, Step.of_message(vote), encode(vote))

    def replay(self, height: int) -> list[SignedProposal | SignedVote]:
        """Everything this validator signed at ``height``, in signing order."""
        out: list[SignedProposal | SignedVote] = []
        prefix = _RECORD + height.to_bytes(8, "big")
        for key, raw in self._store.iter_meta(prefix):
            step = key[-1]
            signature, payload = Signature(raw[32:96]), raw[96:]
            if step == Step.PROPOSE:
                out.append(SignedProposal(decode_as(payload, Proposal), signature))
            else:
                out.append(SignedVote(decode_as(payload, Vote), signature))
        return out

    def _sign(self, domain: bytes, height: int, round_: int, step: Step, payload: bytes) -> Signature:
        here = _position(height, round_, step)
        digest = sha256(payload)
        earlier = self._store.get_meta(_RECORD + here)
        if earlier is not None:
            if earlier[:32] == digest:
                return Signature(earlier[32:96])
            raise DoubleSignRefused(f"already signed different bytes at {(height, round_, step)}")
        last = self._store.get_meta(_LAST)
        if last is not None and here < last:
            raise DoubleSignRefused(f"already signed at {self.last_signed()}, refusing {(height, round_, step)}")
        signature = self.keypair.sign(domain, self.chain_id, payload)
        stale = [k for k, _ in self._store.iter_meta(_RECORD) if k[len(_RECORD) : len(_RECORD) + 8] < here[:8]]
        self._store.write_meta_synced(
            {_LAST: here, _RECORD + here: digest + signature + payload}, delete=stale
        )
        return signature
