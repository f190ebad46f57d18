"""Canonical, strict and bounded msgpack encoding of protocol values.

Every protocol message is a frozen dataclass registered here with a tag and a
version. On the wire it is a msgpack array ``[tag, version, field_1, ...]``
with the fields in declaration order; nested messages use the same form, so a
union field is told apart by its tag. Scalars are msgpack ints, bins (bytes),
strs (UTF-8 text), bools and nil (``None`` for ``Optional`` fields); sequences
are arrays decoded to tuples. Maps and floats never appear.

Decoding is strict: an unknown tag, a wrong version, a wrong type, a missing
or extra field, a value out of its range or over its size limit, trailing
bytes, or a non-minimal encoding (the bytes must equal the re-encoding of
what they decode to) raise ``DecodeError`` naming the path of the bad field.
Because the encoding is canonical, the hash of a value is the hash of its
bytes.

This module must never hold protocol rules beyond the shape of values: what a
field means is for the modules that define the types.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgpack

T = TypeVar("T")

DEFAULT_MAX_MESSAGE = 16 * 1024 * 1024
DEFAULT_MAX_BYTES = 64 * 1024
DEFAULT_MAX_STR = 256
DEFAULT_MAX_ITEMS = 4096
U64_MAX = 2**64 - 1


class CodecError(ValueError):
    """Base of the codec's errors."""


class DecodeError(CodecError):
    """Raised when bytes are not the canonical encoding of the expected type."""


class EncodeError(CodecError):
    """Raised when a value cannot be encoded (out of range, wrong type)."""


@dataclass(frozen=True, slots=True)
class MaxLen:
    """``Annotated`` marker: the most bytes, characters or items a field may hold."""

    n: int


@dataclass(frozen=True, slots=True)
class IntRange:
    """``Annotated`` marker: the inclusive range of an int field."""

    lo: int
    hi: int


@dataclass(frozen=True, slots=True)
class _ScalarRule:
    base: type
    lo: int = 0
    hi: int = U64_MAX
    exact_len: int | None = None
    max_len: int | None = None


_SCALARS: dict[Any, _ScalarRule] = {}
_BY_TAG: dict[int, type] = {}
_TAG_OF: dict[type, tuple[int, int]] = {}
_COMPILED: dict[type, tuple[Callable[[Any, str], Any], Callable[[Any, str], Any]]] = {}


def register_scalar(
    newtype: Any,
    *,
    lo: int = 0,
    hi: int = U64_MAX,
    exact_len: int | None = None,
    max_len: int | None = None,
) -> None:
    """Give a ``NewType`` over int, bytes or str its range or length rule."""
    base = newtype.__supertype__
    _SCALARS[newtype] = _ScalarRule(base, lo, hi, exact_len, max_len)


def message(tag: int, version: int = 1) -> Callable[[type[T]], type[T]]:
    """Class decorator: register a frozen dataclass as a protocol message."""

    def register(cls: type[T]) -> type[T]:
        params = getattr(cls, "__dataclass_params__", None)
        if params is None or not params.frozen:
            raise TypeError(f"{cls.__name__} must be a frozen dataclass")
        if tag in _BY_TAG and _BY_TAG[tag] is not cls:
            raise TypeError(f"tag {tag} already used by {_BY_TAG[tag].__name__}")
        _BY_TAG[tag] = cls
        _TAG_OF[cls] = (tag, version)
        return cls

    return register


def encode(value: Any) -> bytes:
    """The canonical bytes of a registered message."""
    enc, _ = _compiled(type(value))
    try:
        packed: bytes = msgpack.packb(enc(value, type(value).__name__), use_bin_type=True)
    except (OverflowError, ValueError, TypeError) as exc:
        raise EncodeError(str(exc)) from exc
    return packed


def decode(data: bytes | bytearray | memoryview, expected: Any, *, max_size: int = DEFAULT_MAX_MESSAGE) -> Any:
    """Decode canonical bytes into a value of ``expected`` (a message or a union of them)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_size:
        raise DecodeError(f"message of {len(data)} bytes is over the limit of {max_size}")
    try:
        raw = msgpack.unpackb(
            data,
            raw=False,
            use_list=False,
            strict_map_key=True,
            max_bin_len=max_size,
            max_str_len=max_size,
            max_array_len=max_size,
            max_map_len=0,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise DecodeError(f"not valid msgpack: {type(exc).__name__}: {exc}") from exc
    value = _decoder_for(expected)(raw, _type_name(expected))
    try:
        again = msgpack.packb(raw, use_bin_type=True)
    except Exception as exc:
        raise DecodeError(f"cannot re-encode: {exc}") from exc
    if again != bytes(data):
        raise DecodeError("not the canonical encoding (a field uses a wider form than needed)")
    return value


def decode_as(data: bytes, expected: type[T], *, max_size: int = DEFAULT_MAX_MESSAGE) -> T:
    """Typed form of ``decode`` for a single message class."""
    value: T = decode(data, expected, max_size=max_size)
    return value


def tag_of(cls: type) -> int:
    return _TAG_OF[cls][0]


def version_of(cls: type) -> int:
    """The version a registered message is encoded with (the array's second item)."""
    return _TAG_OF[cls][1]


def registered_messages() -> dict[int, type]:
    return dict(_BY_TAG)


def get_scalar_rule(newtype: Any) -> _ScalarRule | None:
    """The range or length rule registered for a ``NewType`` (None when it has none).

    Read by property tests that generate values within the declared bounds.
    """
    return _SCALARS.get(newtype)


# ---------------------------------------------------------------------------
# Compilation of per-type encoders and decoders from the type hints.

_Enc = Callable[[Any, str], Any]
_Dec = Callable[[Any, str], Any]


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _compiled(cls: type) -> tuple[_Enc, _Dec]:
    if cls not in _TAG_OF:
        raise EncodeError(f"{_type_name(cls)} is not a registered message")
    got = _COMPILED.get(cls)
    if got is None:
        got = _compile_message(cls)
        _COMPILED[cls] = got
    return got


def _compile_message(cls: type) -> tuple[_Enc, _Dec]:
    tag, version = _TAG_OF[cls]
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = [f.name for f in dataclasses.fields(cls)]
    encs = [_field_codec(hints[name])[0] for name in fields]
    decs = [_field_codec(hints[name])[1] for name in fields]
    count = len(fields)
    name = cls.__name__

    def enc(value: Any, path: str) -> Any:
        if type(value) is not cls:
            raise EncodeError(f"{path}: expected {name}, got {type(value).__name__}")
        out: list[Any] = [tag, version]
        for field, fenc in zip(fields, encs, strict=True):
            out.append(fenc(getattr(value, field), f"{path}.{field}"))
        return out

    def dec(raw: Any, path: str) -> Any:
        if type(raw) is not tuple:
            raise DecodeError(f"{path}: expected an array for {name}, got {_kind(raw)}")
        if len(raw) < 2 or raw[0] != tag or type(raw[0]) is not int:
            raise DecodeError(f"{path}: expected tag {tag} ({name}), got {raw[:1]!r}")
        if raw[1] != version or type(raw[1]) is not int:
            raise DecodeError(f"{path}: {name} version {raw[1]!r} is not supported (want {version})")
        if len(raw) != count + 2:
            raise DecodeError(f"{path}: {name} has {count} fields, got {len(raw) - 2}")
        kwargs = {
            field: fdec(item, f"{path}.{field}")
            for field, fdec, item in zip(fields, decs, raw[2:], strict=True)
        }
        return cls(**kwargs)

    return enc, dec


def unwrap_bounds(tp: Any) -> tuple[Any, int | None, IntRange | None]:
    """A field type without its ``Annotated`` bounds, and those bounds (length limit, int range)."""
    limit: int | None = None
    int_range: IntRange | None = None
    if typing.get_origin(tp) is typing.Annotated:
        base, *extras = typing.get_args(tp)
        for extra in extras:
            if isinstance(extra, MaxLen):
                limit = extra.n
            elif isinstance(extra, IntRange):
                int_range = extra
        tp = base
    return tp, limit, int_range


def _field_codec(tp: Any) -> tuple[_Enc, _Dec]:
    tp, limit, int_range = unwrap_bounds(tp)
    if tp in _SCALARS:
        rule = _SCALARS[tp]
        if int_range is not None:
            rule = dataclasses.replace(rule, lo=int_range.lo, hi=int_range.hi)
        if limit is not None:
            rule = dataclasses.replace(rule, max_len=limit)
        return _scalar_codec(rule)
    if tp is int:
        r = int_range or IntRange(0, U64_MAX)
        return _scalar_codec(_ScalarRule(int, r.lo, r.hi))
    if tp is bool:
        return _bool_codec()
    if tp is bytes:
        return _scalar_codec(_ScalarRule(bytes, max_len=limit or DEFAULT_MAX_BYTES))
    if tp is str:
        return _scalar_codec(_ScalarRule(str, max_len=limit or DEFAULT_MAX_STR))
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return _tuple_codec(args[0], limit or DEFAULT_MAX_ITEMS)
        raise TypeError(f"only homogeneous tuples (tuple[T, ...]) are supported, got {tp}")
    if origin in (typing.Union, types.UnionType):
        return _union_codec(typing.get_args(tp))
    if isinstance(tp, type) and tp in _TAG_OF:
        return _lazy_message_codec(tp)
    raise TypeError(f"type {tp!r} cannot appear in a protocol message")


def _lazy_message_codec(cls: type) -> tuple[_Enc, _Dec]:
    # Messages may refer to each other before all are registered, so the
    # nested codec is looked up at first use rather than at compile time.
    def enc(value: Any, path: str) -> Any:
        return _compiled(cls)[0](value, path)

    def dec(raw: Any, path: str) -> Any:
        return _compiled(cls)[1](raw, path)

    return enc, dec


def _scalar_codec(rule: _ScalarRule) -> tuple[_Enc, _Dec]:
    base = rule.base

    def check(value: Any, path: str, err: type[CodecError]) -> Any:
        if base is int:
            if type(value) is not int:
                raise err(f"{path}: expected int, got {_kind(value)}")
            if not rule.lo <= value <= rule.hi:
                raise err(f"{path}: {value} is out of range [{rule.lo}, {rule.hi}]")
            return value
        if base is bytes:
            if type(value) is not bytes:
                raise err(f"{path}: expected bytes, got {_kind(value)}")
        elif type(value) is not str:
            raise err(f"{path}: expected text, got {_kind(value)}")
        n = len(value)
        if rule.exact_len is not None and n != rule.exact_len:
            raise err(f"{path}: expected exactly {rule.exact_len} bytes, got {n}")
        if rule.max_len is not None and n > rule.max_len:
            raise err(f"{path}: length {n} is over the limit of {rule.max_len}")
        return value

    def enc(value: Any, path: str) -> Any:
        return check(value, path, EncodeError)

    def dec(raw: Any, path: str) -> Any:
        return check(raw, path, DecodeError)

    return enc, dec


def _bool_codec() -> tuple[_Enc, _Dec]:
    def enc(value: Any, path: str) -> Any:
        if type(value) is not bool:
            raise EncodeError(f"{path}: expected bool, got {_kind(value)}")
        return value

    def dec(raw: Any, path: str) -> Any:
        if type(raw) is not bool:
            raise DecodeError(f"{path}: expected bool, got {_kind(raw)}")
        return raw

    return enc, dec


def _tuple_codec(item_tp: Any, limit: int) -> tuple[_Enc, _Dec]:
    item_enc, item_dec = _field_codec(item_tp)

    def enc(value: Any, path: str) -> Any:
        if type(value) is not tuple:
            raise EncodeError(f"{path}: expected a tuple, got {_kind(value)}")
        if len(value) > limit:
            raise EncodeError(f"{path}: {len(value)} items is over the limit of {limit}")
        return [item_enc(v, f"{path}[{i}]") for i, v in enumerate(value)]

    def dec(raw: Any, path: str) -> Any:
        if type(raw) is not tuple:
            raise DecodeError(f"{path}: expected an array, got {_kind(raw)}")
        if len(raw) > limit:
            raise DecodeError(f"{path}: {len(raw)} items is over the limit of {limit}")
        return tuple(item_dec(v, f"{path}[{i}]") for i, v in enumerate(raw))

    return enc, dec


def _union_codec(members: tuple[Any, ...]) -> tuple[_Enc, _Dec]:
    optional = type(None) in members
    choices = [m for m in members if m is not type(None)]
    if len(choices) == 1:
        inner_enc, inner_dec = _field_codec(choices[0])
    else:
        if not all(isinstance(c, type) and c in _TAG_OF for c in choices):
            raise TypeError(f"a union must be of registered messages, got {members}")
        inner_enc, inner_dec = _message_union_codec(tuple(choices))

    def enc(value: Any, path: str) -> Any:
        if value is None:
            if optional:
                return None
            raise EncodeError(f"{path}: a value is required")
        return inner_enc(value, path)

    def dec(raw: Any, path: str) -> Any:
        if raw is None:
            if optional:
                return None
            raise DecodeError(f"{path}: a value is required, got nil")
        return inner_dec(raw, path)

    return enc, dec


def _message_union_codec(choices: tuple[type, ...]) -> tuple[_Enc, _Dec]:
    by_tag = {_TAG_OF[c][0]: c for c in choices}
    names = "|".join(c.__name__ for c in choices)

    def enc(value: Any, path: str) -> Any:
        if type(value) not in choices:
            raise EncodeError(f"{path}: expected one of {names}, got {type(value).__name__}")
        return _compiled(type(value))[0](value, path)

    def dec(raw: Any, path: str) -> Any:
        if type(raw) is not tuple or not raw or type(raw[0]) is not int:
            raise DecodeError(f"{path}: expected a tagged array ({names}), got {_kind(raw)}")
        cls = by_tag.get(raw[0])
        if cls is None:
            raise DecodeError(f"{path}: unknown tag {raw[0]} (expected one of {names})")
        return _compiled(cls)[1](raw, path)

    return enc, dec


def _decoder_for(expected: Any) -> _Dec:
    if isinstance(expected, type) and expected in _TAG_OF:
        return _compiled(expected)[1]
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        return _union_codec(typing.get_args(expected))[1]
    raise DecodeError(f"{expected!r} is not a registered message or a union of them")


def _kind(value: Any) -> str:
    if value is None:
        return "nil"
    if type(value) is tuple:
        return "an array"
    if type(value) is float:
        return "a float"
    return type(value).__name__
