"""CI share of the codec fuzzing: seeded mutation runs, Hypothesis properties, and pinned bad inputs.

``decode`` must raise only ``DecodeError`` for bad bytes, and whatever it
accepts must be the canonical encoding of what it returns. The long run
(``python -m tests.fuzz.run --target codec``) checks the same on far more
inputs.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus import codec
from consensus.types import Block, SignedTransaction, SignedVote
from p2p.messages import Hello, WireMessage

from . import target_codec
from .common import FuzzFailure, rng_for
from .mutate import HUGE_LENGTHS, Malformed, len_header, mutate, tokenize
from .run import run_codec
from .values import message_of, registered

SEED = int(os.environ.get("TDML_FUZZ_SEED", "20240611"))
CI_INPUTS = int(os.environ.get("TDML_FUZZ_CI_INPUTS", "10000"))
CORPUS = target_codec.build_corpus(SEED)
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_seeded_mutation_share_finds_no_failure() -> None:
    result = run_codec(SEED, 0, CI_INPUTS)
    assert result.failure_count == 0, "\n\n".join(f.describe() for f in result.failures)
    assert result.inputs == CI_INPUTS
    # The mutations reach both sides of the decoder and many kinds of rejection.
    assert result.outcomes["accepted"] > CI_INPUTS // 50
    rejections = {k for k in result.outcomes if k.startswith("rejected:")}
    assert {"rejected:msgpack", "rejected:tag", "rejected:type", "rejected:non-canonical", "rejected:range"} <= rejections


def test_inputs_are_a_function_of_seed_target_and_index() -> None:
    a = target_codec.generate(CORPUS, rng_for(SEED, "codec", 1234))
    b = target_codec.generate(target_codec.build_corpus(SEED), rng_for(SEED, "codec", 1234))
    assert a == b


@pytest.mark.parametrize("cls", registered(), ids=lambda c: c.__name__)
def test_every_message_type_round_trips_and_tokenizes(cls: type) -> None:
    for data in CORPUS.seeds[cls]:
        assert codec.encode(codec.decode(data, cls)) == data
        tokens = tokenize(data)
        assert tokens[0].offset == 0 and tokens[0].end == len(data)


def _check(data: bytes, expected: Any) -> str:
    return target_codec.check(target_codec.CodecInput(data, expected, getattr(expected, "__name__", "union"), "pinned"))


@pytest.mark.parametrize("kind", ["bin", "str", "array", "map"])
@pytest.mark.parametrize("claim", HUGE_LENGTHS)
def test_huge_length_claims_are_refused_without_allocating(kind: str, claim: int) -> None:
    started = time.perf_counter()
    for cls in (SignedTransaction, Block, Hello):
        valid = CORPUS.seeds[cls][0]
        for data in (len_header(kind, claim, 4) + b"\x00" * 16, valid[:1] + len_header(kind, claim, 4) + valid[1:]):
            assert _check(data, cls).startswith("rejected:")
    assert time.perf_counter() - started < 1.0


def test_pinned_bad_inputs() -> None:
    vote = CORPUS.seeds[SignedVote][0]
    cases = [
        b"",  # nothing
        b"\xc1",  # the reserved byte
        b"\x91" * 100_000 + b"\xc0",  # nesting far deeper than any message
        vote + vote,  # two messages in one buffer
        vote[:-1],  # truncated
        b"\x93\xcb" + bytes(8) + b"\x01\xc0",  # a float where the tag goes
        b"\x92\x33\xcf" + (1).to_bytes(8, "big"),  # the version in a wider form than needed
        b"\x81\xa1k\x90",  # a map
        b"\xc7\x01\x01\x00",  # an ext
    ]
    for data in cases:
        for expected in (SignedVote, WireMessage):
            assert _check(data, expected).startswith("rejected:"), data[:40].hex()


def test_a_broken_property_is_reported_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checker itself: a decoder that accepted non-canonical bytes would be caught."""
    valid = CORPUS.seeds[SignedVote][0]
    value = codec.decode(valid, SignedVote)
    monkeypatch.setattr(codec, "decode", lambda data, expected, max_size=0: value)
    with pytest.raises(FuzzFailure, match="roundtrip"):
        target_codec.check(target_codec.CodecInput(valid + b"\x00", SignedVote, "SignedVote", "test"))


@PROPERTY
@given(cls_index=st.integers(0, len(CORPUS.classes) - 1), seed=st.integers(0, 2**32), rounds=st.integers(1, 4))
def test_property_mutated_encodings_decode_canonically_or_raise_decode_error(cls_index: int, seed: int, rounds: int) -> None:
    cls = CORPUS.classes[cls_index]
    rng = random.Random(seed)
    base = codec.encode(message_of(cls, rng))
    data, _ = mutate(base, rng, CORPUS.everything, rounds=rounds)
    _check(data, cls)
    _check(data, WireMessage)


@PROPERTY
@given(cls_index=st.integers(0, len(CORPUS.classes) - 1), data=st.binary(max_size=300))
def test_property_arbitrary_bytes_never_crash_the_decoder(cls_index: int, data: bytes) -> None:
    _check(data, CORPUS.classes[cls_index])


@PROPERTY
@given(cls_index=st.integers(0, len(CORPUS.classes) - 1), seed=st.integers(0, 2**32))
def test_property_tokenizer_agrees_with_msgpack(cls_index: int, seed: int) -> None:
    """Mutated bytes tokenize exactly when msgpack reads them as one value (so the mutators see true items)."""
    import msgpack

    rng = random.Random(seed)
    data, _ = mutate(CORPUS.seeds[CORPUS.classes[cls_index]][0], rng, CORPUS.everything)
    try:
        msgpack.unpackb(data, raw=True, strict_map_key=False)
        parses = True
    except Exception:
        parses = False
    try:
        tokenize(data)
        tokenizes = True
    except Malformed:
        tokenizes = False
    # msgpack refuses some well-formed items (reserved ext types, recursion limits)
    # that the tokenizer walks; the other way round must never happen.
    assert tokenizes or not parses
