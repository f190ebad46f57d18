"""Random valid values of every registered message, read from the dataclass type hints.

The generator resolves a field's declared type the way the codec does
(``Annotated`` bounds, the rules registered for ``NewType`` scalars, optional
and union fields, homogeneous tuples) and draws a value inside every bound
from a ``random.Random``. Sizes are kept small (a few items, short bytes) and
nesting is cut at a depth, so a corpus of every message type builds in well
under a second; the fuzzers then mutate these encodings.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from functools import cache
from random import Random
from typing import Any

import consensus.types  # noqa: F401  (registers the consensus messages)
import p2p.messages  # noqa: F401  (registers the wire messages)
from consensus import codec

MAX_ITEMS = 3
MAX_BYTES = 40
MAX_TEXT = 12
MAX_DEPTH = 6


@cache
def fields_of(cls: type) -> tuple[tuple[str, Any], ...]:
    hints = typing.get_type_hints(cls, include_extras=True)
    return tuple((f.name, hints[f.name]) for f in dataclasses.fields(cls))


def registered() -> list[type]:
    """Every registered message class, by tag."""
    return [cls for _, cls in sorted(codec.registered_messages().items())]


def _unwrap(tp: Any) -> tuple[Any, int | None, codec.IntRange | None]:
    return codec.unwrap_bounds(tp)


def _int_in(rng: Random, lo: int, hi: int) -> int:
    pick = rng.randrange(4)
    if pick == 0:
        return lo
    if pick == 1:
        return hi
    if pick == 2:
        return rng.randint(lo, min(hi, lo + 100))
    return rng.randint(lo, hi)


def _bytes(rng: Random, exact: int | None, limit: int | None) -> bytes:
    if exact is not None:
        return rng.randbytes(exact)
    return rng.randbytes(rng.randint(0, min(limit or MAX_BYTES, MAX_BYTES)))


_ALPHABET = "abcxyz019_-. \u00e9\u4e2d"


def _text(rng: Random, limit: int | None) -> str:
    n = rng.randint(0, min(limit or MAX_TEXT, MAX_TEXT))
    return "".join(rng.choice(_ALPHABET) for _ in range(n))


def value_of(tp: Any, rng: Random, depth: int = 0) -> Any:
    """A random value of a field type, inside its declared bounds."""
    tp, limit, int_range = _unwrap(tp)
    rule = codec.get_scalar_rule(tp)
    if rule is not None:
        if rule.base is int:
            lo, hi = (int_range.lo, int_range.hi) if int_range else (rule.lo, rule.hi)
            return _int_in(rng, lo, hi)
        if rule.base is bytes:
            return _bytes(rng, rule.exact_len, limit or rule.max_len)
        return _text(rng, limit or rule.max_len)
    if tp is int:
        r = int_range or codec.IntRange(0, codec.U64_MAX)
        return _int_in(rng, r.lo, r.hi)
    if tp is bool:
        return rng.random() < 0.5
    if tp is bytes:
        return _bytes(rng, None, limit)
    if tp is str:
        return _text(rng, limit)
    origin = typing.get_origin(tp)
    if origin is tuple:
        item, _ = typing.get_args(tp)
        cap = 0 if depth >= MAX_DEPTH else min(limit or MAX_ITEMS, MAX_ITEMS)
        return tuple(value_of(item, rng, depth + 1) for _ in range(rng.randint(0, cap)))
    if origin in (typing.Union, types.UnionType):
        members = [m for m in typing.get_args(tp) if m is not type(None)]
        if type(None) in typing.get_args(tp) and (depth >= MAX_DEPTH or rng.random() < 0.3):
            return None
        return value_of(rng.choice(members), rng, depth + 1)
    if isinstance(tp, type):
        return message_of(tp, rng, depth + 1)
    raise TypeError(f"cannot generate {tp!r}")


def message_of(cls: type, rng: Random, depth: int = 0) -> Any:
    """A random instance of a registered message class."""
    return cls(**{name: value_of(tp, rng, depth) for name, tp in fields_of(cls)})
