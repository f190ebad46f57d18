"""Values of every registered message, generated from the dataclass type hints.

Two generators read the same declarations the codec compiles from (field
order, ``Annotated`` bounds, the rules registered for ``NewType`` scalars):
``strategy_for`` gives Hypothesis strategies that stay inside every bound, and
``minimal`` gives the smallest valid value, which the rejection tests mutate
one field at a time. Sizes are capped well below the protocol limits so that
examples stay small; the limits themselves are tested by ``field_shapes``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any

from hypothesis import strategies as st

from consensus import codec

# Generated sizes: large enough to cover the interesting shapes (empty, one,
# several), small enough that a Block with nested jobs stays cheap.
GEN_MAX_ITEMS = 3
GEN_MAX_BYTES = 48
GEN_MAX_TEXT = 24


@dataclass(frozen=True)
class Shape:
    """What the codec makes of one field's declared type."""

    kind: str  # "int", "bool", "bytes", "str", "tuple", "message", "union"
    optional: bool = False
    lo: int = 0
    hi: int = codec.U64_MAX
    exact_len: int | None = None
    max_len: int | None = None
    item: Any = None  # the item type of a tuple
    choices: tuple[type, ...] = ()  # the message classes of a message or union field


def shape_of(tp: Any) -> Shape:
    """Resolve a field type the way ``codec._field_codec`` does."""
    tp, limit, int_range = codec.unwrap_bounds(tp)
    rule = codec.get_scalar_rule(tp)
    if rule is not None:
        lo, hi = (int_range.lo, int_range.hi) if int_range else (rule.lo, rule.hi)
        kind = {int: "int", bytes: "bytes", str: "str"}[rule.base]
        return Shape(kind, lo=lo, hi=hi, exact_len=rule.exact_len, max_len=limit or rule.max_len)
    if tp is int:
        r = int_range or codec.IntRange(0, codec.U64_MAX)
        return Shape("int", lo=r.lo, hi=r.hi)
    if tp is bool:
        return Shape("bool")
    if tp is bytes:
        return Shape("bytes", max_len=limit or codec.DEFAULT_MAX_BYTES)
    if tp is str:
        return Shape("str", max_len=limit or codec.DEFAULT_MAX_STR)
    origin = typing.get_origin(tp)
    if origin is tuple:
        item, _ = typing.get_args(tp)
        return Shape("tuple", max_len=limit or codec.DEFAULT_MAX_ITEMS, item=item)
    if origin in (typing.Union, types.UnionType):
        members = typing.get_args(tp)
        optional = type(None) in members
        rest = tuple(m for m in members if m is not type(None))
        if len(rest) == 1:
            return dataclasses.replace(shape_of(rest[0]), optional=optional)
        return Shape("union", optional=optional, choices=rest)
    return Shape("message", choices=(tp,))


@cache
def fields_of(cls: type) -> tuple[tuple[str, Any], ...]:
    hints = typing.get_type_hints(cls, include_extras=True)
    return tuple((f.name, hints[f.name]) for f in dataclasses.fields(cls))


def strategy_for(tp: Any) -> st.SearchStrategy[Any]:
    shape = shape_of(tp)
    inner = _strategy_for_shape(shape)
    return st.one_of(st.none(), inner) if shape.optional else inner


def _strategy_for_shape(shape: Shape) -> st.SearchStrategy[Any]:
    if shape.kind == "int":
        return st.integers(shape.lo, shape.hi)
    if shape.kind == "bool":
        return st.booleans()
    if shape.kind == "bytes":
        if shape.exact_len is not None:
            return st.binary(min_size=shape.exact_len, max_size=shape.exact_len)
        return st.binary(max_size=min(shape.max_len or GEN_MAX_BYTES, GEN_MAX_BYTES))
    if shape.kind == "str":
        return st.text(max_size=min(shape.max_len or GEN_MAX_TEXT, GEN_MAX_TEXT))
    if shape.kind == "tuple":
        cap = min(shape.max_len or GEN_MAX_ITEMS, GEN_MAX_ITEMS)
        return st.lists(strategy_for(shape.item), max_size=cap).map(tuple)
    return st.one_of(*(message_strategy(c) for c in shape.choices))


@cache
def message_strategy(cls: type) -> st.SearchStrategy[Any]:
    """Instances of a registered message with every field inside its declared bounds."""
    return st.builds(cls, **{name: strategy_for(tp) for name, tp in fields_of(cls)})


def minimal(tp: Any) -> Any:
    """The smallest valid value of a field type (``None`` for an optional one)."""
    shape = shape_of(tp)
    if shape.optional:
        return None
    return minimal_of_shape(shape)


def minimal_of_shape(shape: Shape) -> Any:
    if shape.kind == "int":
        return shape.lo
    if shape.kind == "bool":
        return False
    if shape.kind == "bytes":
        return bytes(shape.exact_len or 0)
    if shape.kind == "str":
        return ""
    if shape.kind == "tuple":
        return ()
    return minimal_message(shape.choices[0])


def minimal_message(cls: type) -> Any:
    return cls(**{name: minimal(tp) for name, tp in fields_of(cls)})
