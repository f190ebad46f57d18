"""Canonical tensor bundles: round trips, strict rejection, stable digests, float32 bit patterns."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import codec
from consensus.types import TensorBundle, TensorRecord
from consensus.work import InvalidWork
from tdml_node.work.tensors import (
    DTYPES,
    bundle_digest,
    decode_bundle,
    encode_bundle,
    encode_record,
    f32_bits,
    f32_from_bits,
)


def sample_tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "b/weight": torch.randn(3, 4, generator=g),
        "a/bias": torch.randn(4, generator=g, dtype=torch.float64),
        "c/labels": torch.arange(7, dtype=torch.int64),
        "d/scalar": torch.tensor(2.5),
        "e/empty": torch.zeros(0, 5),
        "f/bytes": torch.tensor([0, 255, 7], dtype=torch.uint8),
        "g/half": torch.tensor([1.5, -2.0], dtype=torch.bfloat16),
        "h/int32": torch.tensor([[-1, 2**31 - 1]], dtype=torch.int32),
    }


def raw(records: list[TensorRecord]) -> bytes:
    return codec.encode(TensorBundle(tuple(records)))


def test_round_trip_keeps_values_dtypes_shapes_and_sorts_names() -> None:
    tensors = sample_tensors()
    out = decode_bundle(encode_bundle(tensors))
    assert list(out) == sorted(tensors)
    for name, t in tensors.items():
        assert out[name].dtype == t.dtype
        assert out[name].shape == t.shape
        assert torch.equal(out[name], t)


def test_encoding_ignores_layout_and_autograd() -> None:
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    transposed = base.t().contiguous().t()  # same values, column-major memory
    param = torch.nn.Parameter(base.clone())
    assert not transposed.is_contiguous()
    data = encode_bundle({"x": base})
    assert encode_bundle({"x": transposed}) == data
    assert encode_bundle({"x": param}) == data


def test_decoded_tensors_own_their_memory() -> None:
    data = encode_bundle({"x": torch.ones(4)})
    first = decode_bundle(data)["x"]
    first += 1
    assert torch.equal(decode_bundle(data)["x"], torch.ones(4))


def test_record_layout_is_little_endian_c_order() -> None:
    rec = encode_record("x", torch.tensor([[1, 2], [3, 4]], dtype=torch.int32))
    assert rec.dtype == "int32"
    assert rec.shape == (2, 2)
    assert rec.data == b"".join(v.to_bytes(4, "little") for v in (1, 2, 3, 4))


def test_digest_is_stable() -> None:
    data = encode_bundle({"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "n": torch.tensor([1, 2])})
    # Pinned: a change here changes every model root on every chain.
    assert bundle_digest(data).hex() == "c9f0c76b791f62853c9691d6941799ae701976f8c652d5c92b9bed73acc9f9ea"
    expected = raw(
        [
            TensorRecord("n", "int64", (2,), (1).to_bytes(8, "little") + (2).to_bytes(8, "little")),
            TensorRecord(
                "w", "float32", (2, 3), torch.arange(6, dtype=torch.float32).numpy().astype("<f4").tobytes()
            ),
        ]
    )
    assert data == expected


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([TensorRecord("b", "int64", (0,), b""), TensorRecord("a", "int64", (0,), b"")], "unsorted"),
        ([TensorRecord("a", "int64", (0,), b""), TensorRecord("a", "int64", (0,), b"")], "duplicate"),
        ([TensorRecord("a", "complex64", (1,), bytes(8))], "unknown dtype"),
        ([TensorRecord("a", "float32", (2,), bytes(7))], "needs 8 bytes"),
        ([TensorRecord("a", "float32", (2, 2), bytes(8))], "needs 16 bytes"),
        ([TensorRecord("a", "int64", (), bytes(9))], "needs 8 bytes"),
    ],
)
def test_rejects_malformed_bundles(records: list[TensorRecord], message: str) -> None:
    with pytest.raises(InvalidWork, match=message):
        decode_bundle(raw(records))


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x93\x01\x02\x03", codec.encode(TensorRecord("a", "int64", (), bytes(8)))])
def test_rejects_bytes_that_are_no_bundle(data: bytes) -> None:
    with pytest.raises(InvalidWork, match="not a tensor bundle"):
        decode_bundle(data)


def test_rejects_trailing_bytes() -> None:
    with pytest.raises(InvalidWork):
        decode_bundle(encode_bundle({"a": torch.ones(1)}) + b"\x00")


def test_rejects_oversized_bundle() -> None:
    data = encode_bundle({"a": torch.ones(100)})
    with pytest.raises(InvalidWork):
        decode_bundle(data, max_size=len(data) - 1)


def test_unsupported_dtype_cannot_be_encoded() -> None:
    with pytest.raises(InvalidWork):
        encode_bundle({"a": torch.ones(2, dtype=torch.complex64)})


def test_float32_bits_round_trip_including_special_values() -> None:
    values = torch.tensor([0.0, -0.0, 1.0, math.inf, -math.inf, 3.4e38, 1e-45], dtype=torch.float32)
    bits = [f32_bits(v) for v in values]
    assert bits[1] == 0x80000000
    assert bits[2] == 0x3F800000
    assert torch.equal(f32_from_bits(bits).view(torch.int32), values.view(torch.int32))
    nan = f32_from_bits([0x7FC00001])
    assert f32_bits(nan[0]) == 0x7FC00001
    assert f32_bits(torch.tensor(1.0, dtype=torch.float64)) == 0x3F800000
    with pytest.raises(InvalidWork):
        f32_from_bits([1 << 32])


@settings(max_examples=40, deadline=None)
@given(
    st.dictionaries(
        st.text(min_size=1, max_size=12),
        st.tuples(st.sampled_from(sorted(DTYPES)), st.lists(st.integers(0, 3), max_size=3), st.integers(0, 2**16)),
        max_size=5,
    )
)
def test_round_trip_property(spec: dict[str, tuple[str, list[int], int]]) -> None:
    tensors = {}
    for name, (dtype, shape, seed) in spec.items():
        g = torch.Generator().manual_seed(seed)
        t = torch.randint(0, 100, tuple(shape), generator=g).to(DTYPES[dtype])
        tensors[name] = t
    data = encode_bundle(tensors)
    out = decode_bundle(data)
    assert set(out) == set(tensors)
    for name, t in tensors.items():
        assert out[name].dtype == t.dtype and torch.equal(out[name], t)
    assert encode_bundle(out) == data
