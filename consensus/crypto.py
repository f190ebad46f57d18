"""Ed25519 keys, domain-separated signing, and hashing.

Every signature covers ``b"TDML/" + kind + b"/" + chain_id + b"\\x00" +
canonical bytes``: the kind names what is signed (a vote, a transaction, a
work submission, ...) and the chain id binds it to one chain, so no signed
object can be replayed as another kind or onto another chain.

Hashes are SHA-256 of canonical bytes. An address is the first 20 bytes of
the hash of a public key.

This module must never read keys from files or hold key material beyond the
``SigningKey`` object a caller passes in.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from consensus.codec import encode
from consensus.types import Address, Hash32, PublicKey, Signature

DOMAIN_TX = b"tx"
DOMAIN_VOTE = b"vote"
DOMAIN_PROPOSAL = b"proposal"
DOMAIN_WORK = b"work"
DOMAIN_VERDICT = b"verdict"
DOMAIN_SAMPLE = b"sample"
DOMAIN_HANDSHAKE = b"handshake"

DOMAINS = frozenset(
    {DOMAIN_TX, DOMAIN_VOTE, DOMAIN_PROPOSAL, DOMAIN_WORK, DOMAIN_VERDICT, DOMAIN_SAMPLE, DOMAIN_HANDSHAKE}
)


def sha256(data: bytes) -> Hash32:
    return Hash32(hashlib.sha256(data).digest())


def hash_value(value: Any) -> Hash32:
    """The hash of a protocol value: SHA-256 of its canonical bytes."""
    return sha256(encode(value))


def address_of(public_key: PublicKey | bytes) -> Address:
    return Address(hashlib.sha256(bytes(public_key)).digest()[:20])


def signing_bytes(kind: bytes, chain_id: str, payload: bytes) -> bytes:
    if kind not in DOMAINS:
        raise ValueError(f"unknown signing domain {kind!r}")
    return b"TDML/" + kind + b"/" + chain_id.encode() + b"\x00" + payload


@dataclass(frozen=True, slots=True)
class Keypair:
    """An Ed25519 key pair; ``public_key`` is the node id."""

    signing_key: SigningKey

    @classmethod
    def generate(cls) -> Keypair:
        return cls(SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Keypair:
        return cls(SigningKey(seed))

    @property
    def seed(self) -> bytes:
        return bytes(self.signing_key)

    @property
    def public_key(self) -> PublicKey:
        return PublicKey(bytes(self.signing_key.verify_key))

    @property
    def address(self) -> Address:
        return address_of(self.public_key)

    def sign(self, kind: bytes, chain_id: str, payload: bytes) -> Signature:
        signed = self.signing_key.sign(signing_bytes(kind, chain_id, payload))
        return Signature(signed.signature)

    def sign_value(self, kind: bytes, chain_id: str, value: Any) -> Signature:
        return self.sign(kind, chain_id, encode(value))


def verify(public_key: PublicKey, kind: bytes, chain_id: str, payload: bytes, signature: Signature) -> bool:
    """True when ``signature`` is ``public_key``'s over ``payload`` in this domain."""
    return _verify_signed(bytes(public_key), signing_bytes(kind, chain_id, payload), bytes(signature))


@lru_cache(maxsize=16384)
def _verify_signed(public_key: bytes, message: bytes, signature: bytes) -> bool:
    # A node checks the same submission, verdict or vote several times (on
    # arrival, when building a block, when validating it); the answer is a
    # pure function of these bytes, so it is remembered.
    try:
        VerifyKey(public_key).verify(message, signature)
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True


def verify_value(public_key: PublicKey, kind: bytes, chain_id: str, value: Any, signature: Signature) -> bool:
    return verify(public_key, kind, chain_id, encode(value), signature)
