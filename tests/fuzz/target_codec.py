"""Fuzz target (a): ``consensus.codec.decode`` of every registered message type.

Property: whatever the bytes, ``decode`` either raises ``DecodeError`` or
returns a value whose canonical encoding is exactly those bytes (and which
decodes back to itself). Any other exception, or a value that re-encodes
differently, is a failure.

Inputs are valid encodings of random values of every registered type, of
the wire-message and gossip unions, mutated by ``mutate`` (byte flips,
retyped items, huge length claims, wrong tags and versions, floats for ints,
truncation, splices) or rebuilt from a mutated msgpack tree (values out of
range, over-long bytes, wrong item counts), decoded as their own type, as a
union, or as an unrelated type.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import msgpack

from consensus import codec
from p2p.messages import GossipPayload, WireMessage

from .common import FuzzFailure
from .mutate import mutate, mutate_tree, pack_tree, random_msgpack
from .values import message_of, registered

TARGET = "codec"
PER_TYPE = 8


@dataclass(frozen=True)
class CodecCorpus:
    classes: tuple[type, ...]
    seeds: dict[type, tuple[bytes, ...]]
    everything: tuple[bytes, ...]


def build_corpus(seed: int, per_type: int = PER_TYPE) -> CodecCorpus:
    """Valid encodings of ``per_type`` random values of every registered message."""
    rng = random.Random(f"tdml-fuzz-corpus/{seed}")
    classes = tuple(registered())
    seeds = {cls: tuple(codec.encode(message_of(cls, rng)) for _ in range(per_type)) for cls in classes}
    everything = tuple(b for group in seeds.values() for b in group)
    return CodecCorpus(classes, seeds, everything)


@dataclass(frozen=True)
class CodecInput:
    data: bytes
    expected: Any
    expected_name: str
    how: str
    max_size: int = codec.DEFAULT_MAX_MESSAGE

    def context(self) -> str:
        return f"decode as {self.expected_name} (max_size={self.max_size}) after {self.how}"


def generate(corpus: CodecCorpus, rng: random.Random) -> CodecInput:
    cls = rng.choice(corpus.classes)
    base = rng.choice(corpus.seeds[cls])
    roll = rng.random()
    if roll < 0.05:
        data, how = base, "nothing (valid)"
    elif roll < 0.20:
        tree = msgpack.unpackb(base, raw=False, use_list=True)
        data, how = pack_tree(mutate_tree(tree, rng)), "tree mutation"
    elif roll < 0.23:
        data, how = random_msgpack(rng), "random msgpack"
    elif roll < 0.25:
        data, how = rng.randbytes(rng.randrange(64)), "random bytes"
    else:
        data, names = mutate(base, rng, corpus.everything)
        how = "+".join(names)
    pick = rng.random()
    if pick < 0.80:
        expected: Any = cls
        name = cls.__name__
    elif pick < 0.90:
        expected, name = WireMessage, "WireMessage"
    elif pick < 0.95:
        expected, name = GossipPayload, "GossipPayload"
    else:
        other = rng.choice(corpus.classes)
        expected, name = other, other.__name__
    max_size = rng.choice([len(data), max(len(data) - 1, 0), 64]) if rng.random() < 0.03 else codec.DEFAULT_MAX_MESSAGE
    return CodecInput(data, expected, name, how, max_size)


_REASONS = (
    ("not valid msgpack", "msgpack"),
    ("canonical", "non-canonical"),
    ("cannot re-encode", "re-encode"),
    ("over the limit", "size"),
    ("out of range", "range"),
    ("exactly", "length"),
    ("version", "version"),
    ("tag", "tag"),
    ("fields, got", "field-count"),
    ("expected", "type"),
    ("required", "missing"),
)


def classify_error(message: str) -> str:
    for needle, name in _REASONS:
        if needle in message:
            return name
    return "other"


def check(inp: CodecInput) -> str:
    """Decode and check the property; returns the outcome class."""
    try:
        value = codec.decode(inp.data, inp.expected, max_size=inp.max_size)
    except codec.DecodeError as exc:
        return f"rejected:{classify_error(str(exc))}"
    try:
        again = codec.encode(value)
    except codec.CodecError as exc:
        raise FuzzFailure("reencode-error", f"decoded {type(value).__name__} does not encode: {exc}") from exc
    if again != bytes(inp.data):
        raise FuzzFailure("roundtrip", f"decoded {type(value).__name__} re-encodes to {again.hex()}")
    if codec.decode(again, inp.expected) != value:
        raise FuzzFailure("roundtrip", "the re-encoding decodes to another value")
    return "accepted"
