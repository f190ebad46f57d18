"""JSON views of protocol values for RPC answers and reports.

Bytes become ``0x``-prefixed lowercase hex, tuples lists, messages objects
with a ``type`` field naming their class, so a union (a transaction payload,
a piece of evidence) says what it is. Float32 bit patterns (losses) are kept
as integers for exactness and given readable companions where the RPC adds
summaries.

This module must never be used to decide anything: it only presents.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from typing import Any


def to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {"type": type(value).__name__}
        for f in dataclasses.fields(value):
            out[f.name] = to_json(getattr(value, f.name))
        return out
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, tuple | list):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    return value


def hex0x(data: bytes) -> str:
    return "0x" + data.hex()


def f32(bits: int) -> float | None:
    """The float32 whose IEEE-754 bit pattern is ``bits`` (None for NaN, which JSON cannot hold)."""
    value: float = struct.unpack("<f", struct.pack("<I", bits))[0]
    return None if math.isnan(value) else value
