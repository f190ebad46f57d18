"""Canonical tensor bundles: the one byte form of model states, checkpoints, results and datasets.

A bundle is ``consensus.types.TensorBundle``: records sorted by name, names
unique, each holding a dtype name, a shape and the tensor's little-endian
C-order bytes. Its digest (SHA-256 of the canonical bytes) is what the chain
commits to, so encoding must be a pure function of the tensors' values and
decoding must accept exactly the bytes encoding can produce.

This module must never accept a bundle leniently (unsorted, duplicated,
unknown dtype, wrong byte count) and never hand out tensors that alias the
caller's buffer: every decoded tensor owns fresh, torch-allocated memory.
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from consensus import codec, crypto
from consensus.types import Hash32, TensorBundle, TensorRecord
from consensus.work import InvalidWork

MAX_BUNDLE_BYTES = 1 << 32
"""Largest bundle ``decode_bundle`` reads; each tensor is further capped by the codec."""

DTYPES: dict[str, torch.dtype] = {
    "uint8": torch.uint8,
    "int8": torch.int8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}
_NAMES: dict[torch.dtype, str] = {dt: name for name, dt in DTYPES.items()}

# Tensors are written and read through their native memory, which is the
# canonical little-endian form only on little-endian hosts (every platform
# torch ships for). Refusing big-endian hosts beats silently forking the chain.
if sys.byteorder != "little":  # pragma: no cover - no such host runs torch today
    raise ImportError("tensor bundles need a little-endian host")


def dtype_name(dtype: torch.dtype) -> str:
    """The bundle name of a torch dtype; ``InvalidWork`` for one bundles do not carry."""
    try:
        return _NAMES[dtype]
    except KeyError:
        raise InvalidWork(f"dtype {dtype} cannot be stored in a tensor bundle") from None


def encode_record(name: str, tensor: torch.Tensor) -> TensorRecord:
    """One tensor as a record: a CPU, contiguous copy of its bytes."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    data = flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""
    return TensorRecord(name=name, dtype=dtype_name(tensor.dtype), shape=tuple(tensor.shape), data=data)


def encode_bundle(tensors: Mapping[str, torch.Tensor]) -> bytes:
    """The canonical bytes of the named tensors."""
    records = tuple(encode_record(name, tensors[name]) for name in sorted(tensors))
    return codec.encode(TensorBundle(records))


def decode_record(record: TensorRecord) -> torch.Tensor:
    """A fresh tensor holding the record's values; ``InvalidWork`` if the record is inconsistent."""
    dtype = DTYPES.get(record.dtype)
    if dtype is None:
        raise InvalidWork(f"tensor {record.name!r} has unknown dtype {record.dtype!r}")
    expected = math.prod(record.shape) * dtype.itemsize
    if len(record.data) != expected:
        raise InvalidWork(
            f"tensor {record.name!r} of shape {record.shape} and dtype {record.dtype} "
            f"needs {expected} bytes, has {len(record.data)}"
        )
    out = torch.empty(record.shape, dtype=dtype)
    if expected:
        # Copy straight from the immutable bytes into torch-owned memory: one copy,
        # and the result never aliases the (read-only) decoded buffer.
        out.reshape(-1).view(torch.uint8).numpy()[:] = np.frombuffer(record.data, dtype=np.uint8)
    return out


def decode_bundle(data: bytes, *, max_size: int = MAX_BUNDLE_BYTES) -> dict[str, torch.Tensor]:
    """The tensors of canonical bundle bytes, in name order; ``InvalidWork`` on any defect."""
    try:
        bundle = codec.decode_as(data, TensorBundle, max_size=max_size)
    except codec.DecodeError as exc:
        raise InvalidWork(f"not a tensor bundle: {exc}") from exc
    names = [r.name for r in bundle.tensors]
    for before, after in itertools.pairwise(names):
        if before >= after:
            kind = "duplicate" if before == after else "unsorted"
            raise InvalidWork(f"bundle has {kind} tensor names ({before!r}, {after!r})")
    return {r.name: decode_record(r) for r in bundle.tensors}


def bundle_digest(data: bytes) -> Hash32:
    """The digest of a bundle: SHA-256 of its canonical bytes."""
    return crypto.sha256(data)


def f32_bits(value: torch.Tensor) -> int:
    """The IEEE-754 bit pattern of a one-element tensor rounded to float32, as an unsigned int.

    Done by a tensor view rather than through a Python float so that every
    value, NaN payloads included, maps to exactly one pattern.
    """
    f32 = value.detach().to("cpu", torch.float32).reshape(1)
    return int(f32.view(torch.int32).item()) & 0xFFFFFFFF


def f32_from_bits(bits: Sequence[int]) -> torch.Tensor:
    """A float32 vector whose elements have the given bit patterns (the inverse of ``f32_bits``)."""
    if any(not 0 <= b <= 0xFFFFFFFF for b in bits):
        raise InvalidWork("a float32 bit pattern must fit in 32 unsigned bits")
    return torch.from_numpy(np.array(bits, dtype=np.uint32).view(np.float32).copy())
