"""Keys, addresses and domain-separated signatures.

The property that matters is that a signature is valid for exactly one
(kind, chain id, payload): a vote must not verify as a transaction, nor on
another chain, nor with any byte of the payload changed.
"""

from __future__ import annotations

import hashlib

import pytest
from consensus_fixtures import CHAIN_ID, keypair, property_settings
from hypothesis import given
from hypothesis import strategies as st

from consensus import crypto
from consensus.codec import encode
from consensus.types import (
    PREVOTE,
    Amount,
    Hash32,
    Height,
    PublicKey,
    Round,
    Signature,
    Transaction,
    Transfer,
    Vote,
)


def _vote() -> Vote:
    return Vote(PREVOTE, Height(3), Round(1), Hash32(bytes(range(32))), keypair(0).public_key)


def test_signature_verifies_in_its_own_domain() -> None:
    kp = keypair(0)
    vote = _vote()
    sig = kp.sign_value(crypto.DOMAIN_VOTE, CHAIN_ID, vote)
    assert len(sig) == 64
    assert crypto.verify_value(kp.public_key, crypto.DOMAIN_VOTE, CHAIN_ID, vote, sig)


@pytest.mark.parametrize("other", sorted(crypto.DOMAINS - {crypto.DOMAIN_VOTE}))
def test_vote_signature_does_not_verify_in_another_domain(other: bytes) -> None:
    kp = keypair(0)
    vote = _vote()
    sig = kp.sign_value(crypto.DOMAIN_VOTE, CHAIN_ID, vote)
    assert not crypto.verify_value(kp.public_key, other, CHAIN_ID, vote, sig)


def test_vote_signature_is_not_a_transaction_signature() -> None:
    # The same bytes signed as a vote cannot be passed off as a signed transaction.
    kp = keypair(0)
    tx = Transaction(kp.public_key, 0, Amount(0), Transfer(keypair(1).address, Amount(5)))
    sig = kp.sign(crypto.DOMAIN_VOTE, CHAIN_ID, encode(tx))
    assert not crypto.verify_value(kp.public_key, crypto.DOMAIN_TX, CHAIN_ID, tx, sig)
    assert crypto.verify_value(kp.public_key, crypto.DOMAIN_TX, CHAIN_ID, tx, kp.sign_value(crypto.DOMAIN_TX, CHAIN_ID, tx))


@pytest.mark.parametrize("chain_id", ["tdml-other", "", CHAIN_ID + "x", CHAIN_ID[:-1]])
def test_signature_is_bound_to_the_chain(chain_id: str) -> None:
    kp = keypair(0)
    vote = _vote()
    sig = kp.sign_value(crypto.DOMAIN_VOTE, CHAIN_ID, vote)
    assert not crypto.verify_value(kp.public_key, crypto.DOMAIN_VOTE, chain_id, vote, sig)


def test_signing_bytes_layout() -> None:
    assert crypto.signing_bytes(b"vote", "c", b"\x01") == b"TDML/vote/c\x00\x01"
    with pytest.raises(ValueError, match="unknown signing domain"):
        crypto.signing_bytes(b"votes", "c", b"")
    with pytest.raises(ValueError, match="unknown signing domain"):
        keypair(0).sign(b"", CHAIN_ID, b"")


@property_settings(50)
@given(payload=st.binary(min_size=1, max_size=200), data=st.data())
def test_tampered_payload_fails(payload: bytes, data: st.DataObject) -> None:
    kp = keypair(1)
    sig = kp.sign(crypto.DOMAIN_TX, CHAIN_ID, payload)
    assert crypto.verify(kp.public_key, crypto.DOMAIN_TX, CHAIN_ID, payload, sig)
    at = data.draw(st.integers(0, len(payload) - 1))
    flip = data.draw(st.integers(1, 255))
    tampered = payload[:at] + bytes([payload[at] ^ flip]) + payload[at + 1 :]
    assert not crypto.verify(kp.public_key, crypto.DOMAIN_TX, CHAIN_ID, tampered, sig)
    assert not crypto.verify(kp.public_key, crypto.DOMAIN_TX, CHAIN_ID, payload + b"\x00", sig)
    assert not crypto.verify(kp.public_key, crypto.DOMAIN_TX, CHAIN_ID, payload[:-1], sig)


def test_tampered_signature_and_wrong_key_fail() -> None:
    kp = keypair(0)
    sig = kp.sign(crypto.DOMAIN_TX, CHAIN_ID, b"payload")
    bad = Signature(bytes([sig[0] ^ 1]) + sig[1:])
    assert not crypto.verify(kp.public_key, crypto.DOMAIN_TX, CHAIN_ID, b"payload", bad)
    assert not crypto.verify(keypair(1).public_key, crypto.DOMAIN_TX, CHAIN_ID, b"payload", sig)


@pytest.mark.parametrize(
    ("key", "sig"),
    [
        (PublicKey(b"\x00" * 31), Signature(b"\x00" * 64)),  # short key
        (PublicKey(b"\x00" * 32), Signature(b"\x00" * 63)),  # short signature
        (PublicKey(b"\xff" * 32), Signature(b"\x00" * 64)),  # not a curve point
        (PublicKey(b""), Signature(b"")),
    ],
)
def test_malformed_key_or_signature_is_false_not_an_exception(key: PublicKey, sig: Signature) -> None:
    assert crypto.verify(key, crypto.DOMAIN_TX, CHAIN_ID, b"payload", sig) is False


def test_signatures_are_deterministic() -> None:
    # Ed25519 (RFC 8032) derives its nonce from the key and message: the
    # checkers' sampling relies on this (they cannot grind their signature).
    seed = hashlib.sha256(b"deterministic").digest()
    a, b = crypto.Keypair.from_seed(seed), crypto.Keypair.from_seed(seed)
    assert a.public_key == b.public_key
    assert a.seed == seed
    assert a.sign(crypto.DOMAIN_SAMPLE, CHAIN_ID, b"x") == b.sign(crypto.DOMAIN_SAMPLE, CHAIN_ID, b"x")
    assert a.sign(crypto.DOMAIN_SAMPLE, CHAIN_ID, b"x") != a.sign(crypto.DOMAIN_SAMPLE, CHAIN_ID, b"y")


def test_generated_keys_differ() -> None:
    assert crypto.Keypair.generate().public_key != crypto.Keypair.generate().public_key


def test_address_derivation() -> None:
    kp = keypair(5)
    expected = hashlib.sha256(kp.public_key).digest()[:20]
    assert kp.address == expected == crypto.address_of(kp.public_key)
    assert len(kp.address) == 20
    assert len({keypair(i).address for i in range(20)}) == 20


def test_hash_value_is_hash_of_canonical_bytes() -> None:
    vote = _vote()
    assert crypto.hash_value(vote) == hashlib.sha256(encode(vote)).digest()
    assert crypto.sha256(b"") == hashlib.sha256(b"").digest()
