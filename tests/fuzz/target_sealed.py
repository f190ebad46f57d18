"""Fuzz target (f): the sealed-envelope and key-share decoders of private jobs (``tdml_node.work.sealed``).

Property: whatever the bytes, ``open_blob`` under the corpus key either
raises ``SealError`` or returns exactly a plaintext the corpus sealed (a
splice may reassemble another whole envelope; no forged one opens to
anything else), and ``open_key`` either raises
``SealError`` or returns the corpus key. Any other exception, or another
plaintext, is a failure.

Inputs are valid envelopes (several sizes and chunk sizes) and key shares,
mutated bytewise (flips, truncation, extension, splices between envelopes,
a rewritten header field) or replaced by random bytes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import msgpack

from consensus.crypto import Keypair
from tdml_node.work import sealed

from .common import FuzzFailure

TARGET = "sealed"


@dataclass(frozen=True)
class SealedCorpus:
    key: bytes
    keypair: Keypair
    envelopes: tuple[tuple[bytes, bytes], ...]
    """(envelope, plaintext) pairs under ``key``."""
    shares: tuple[bytes, ...]


def build_corpus(seed: int) -> SealedCorpus:
    rng = random.Random(f"tdml-fuzz-sealed/{seed}")
    key = rng.randbytes(sealed.KEY_BYTES)
    keypair = Keypair.from_seed(rng.randbytes(32))
    envelopes = []
    for size, chunk in ((0, 16), (1, 16), (15, 16), (16, 16), (17, 16), (100, 7), (1000, 256), (4096, 4096)):
        plain = rng.randbytes(size)
        envelopes.append((sealed.seal_blob(plain, key, chunk_size=chunk), plain))
    shares = tuple(sealed.seal_key(key, keypair.public_key) for _ in range(4))
    return SealedCorpus(key, keypair, tuple(envelopes), shares)


@dataclass(frozen=True)
class SealedInput:
    data: bytes
    share: bool
    how: str

    def context(self) -> str:
        return f"open as {'a key share' if self.share else 'an envelope'} after {self.how}"


def _rewrite_header(envelope: bytes, rng: random.Random) -> bytes:
    header, offset = sealed.read_header(envelope)
    fields = [sealed.VERSION, header.chunk_size, header.chunks, header.length, header.prefix]
    i = rng.randrange(len(fields))
    fields[i] = rng.choice([0, 1, 2, -1, 2**31, header.length + 1, b"", rng.randbytes(16), "x", None])
    packed = msgpack.packb(fields)
    start = len(sealed.MAGIC) + 2
    return sealed.MAGIC + len(packed).to_bytes(2, "big") + packed + envelope[offset:] if len(packed) < 65536 else envelope[:start]


def _mutate(data: bytes, rng: random.Random, others: list[bytes]) -> tuple[bytes, str]:
    b = bytearray(data)
    roll = rng.random()
    if roll < 0.3 and b:
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        return bytes(b), "bit flips"
    if roll < 0.5:
        return bytes(b[: rng.randrange(len(b) + 1)]), "truncation"
    if roll < 0.6:
        return bytes(b) + rng.randbytes(rng.randint(1, 40)), "extension"
    if roll < 0.8:
        other = rng.choice(others)
        cut = rng.randrange(min(len(b), len(other)) + 1)
        return bytes(b[:cut]) + other[cut:], "splice"
    return rng.randbytes(rng.randrange(120)), "random bytes"


def generate(corpus: SealedCorpus, rng: random.Random) -> SealedInput:
    if rng.random() < 0.25:
        share = rng.choice(corpus.shares)
        data, how = _mutate(share, rng, list(corpus.shares)) if rng.random() > 0.05 else (share, "nothing (valid)")
        return SealedInput(data, True, how)
    envelope, _ = rng.choice(corpus.envelopes)
    roll = rng.random()
    if roll < 0.05:
        data, how = envelope, "nothing (valid)"
    elif roll < 0.25:
        data, how = _rewrite_header(envelope, rng), "header rewrite"
    else:
        data, how = _mutate(envelope, rng, [e for e, _ in corpus.envelopes])
    return SealedInput(data, False, how)


def check(corpus: SealedCorpus, inp: SealedInput) -> str:
    try:
        got = sealed.open_key(inp.data, corpus.keypair.signing_key) if inp.share else sealed.open_blob(inp.data, corpus.key)
    except sealed.SealError:
        return "rejected"
    allowed = {corpus.key} if inp.share else {plain for _, plain in corpus.envelopes}
    if got not in allowed:
        raise FuzzFailure("forged-open", f"{inp.context()} opened to {len(got)} bytes the corpus never sealed")
    return "opened"
