"""The validator's guard against signing twice, persisted before a vote leaves the node.

Before a proposal or vote is signed, its (height, round, step) and the hash
of its sign bytes are written to the store with ``sync=True``. Asked to sign
at the same (height, round, step) again, the guard returns the earlier
signature when the bytes are identical (a restart re-sending its own vote)
and refuses otherwise; asked to sign at an earlier (height, round, step), it
refuses. So a node killed at any moment never equivocates after a restart.

This module must never sign anything but proposals and votes.
"""

from __future__ import annotations

from consensus.codec import encode
from consensus.crypto import DOMAIN_PROPOSAL, DOMAIN_VOTE, Keypair, sha256
from consensus.types import PRECOMMIT, PREVOTE, Proposal, Signature, Vote
from tdml_node.storage import ChainStore

STEP_OF_PROPOSAL = 0
_KEY = b"privval"


class DoubleSignRefused(Exception):
    """Signing this would conflict with something already signed."""


class PrivValidator:
    def __init__(self, store: ChainStore, keypair: Keypair, chain_id: str) -> None:
        self._store = store
        self.keypair = keypair
        self.chain_id = chain_id

    def last_signed(self) -> tuple[int, int, int] | None:
        raw = self._store.get_meta(_KEY)
        if raw is None:
            return None
        return int.from_bytes(raw[0:8], "big"), int.from_bytes(raw[8:12], "big"), raw[12]

    def sign_proposal(self, proposal: Proposal) -> Signature:
        return self._sign(DOMAIN_PROPOSAL, proposal.height, proposal.round, STEP_OF_PROPOSAL, encode(proposal))

    def sign_vote(self, vote: Vote) -> Signature:
        step = {PREVOTE: 1, PRECOMMIT: 2}[vote.kind]
        return self._sign(DOMAIN_VOTE, vote.height, vote.round, step, encode(vote))

    def _sign(self, domain: bytes, height: int, round_: int, step: int, payload: bytes) -> Signature:
        raw = self._store.get_meta(_KEY)
        digest = sha256(payload)
        if raw is not None:
            last = (int.from_bytes(raw[0:8], "big"), int.from_bytes(raw[8:12], "big"), raw[12])
            here = (height, round_, step)
            if here < last:
                raise DoubleSignRefused(f"already signed at {last}, refusing {here}")
            if here == last:
                if raw[13:45] == digest:
                    return Signature(raw[45:109])
                raise DoubleSignRefused(f"already signed different bytes at {here}")
        signature = self.keypair.sign(domain, self.chain_id, payload)
        record = height.to_bytes(8, "big") + round_.to_bytes(4, "big") + bytes([step]) + digest + signature
        self._store.put_meta_synced(_KEY, record)
        return signature
