"""The canonical codec: round trips of every message, and strict, bounded rejection.

Values are generated from the same type hints the codec compiles from (see
``codec_strategies``), so a new message type is covered without a new test.
Every malformed input must raise ``DecodeError`` naming what is wrong, and
nothing else: a decoder that leaks ``KeyError`` or ``RecursionError`` lets a
peer crash the node's message loop.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import pytest
from codec_strategies import (
    Shape,
    fields_of,
    message_strategy,
    minimal,
    minimal_message,
    shape_of,
)
from consensus_fixtures import keypair, property_settings
from hypothesis import given
from hypothesis import strategies as st

from consensus import codec, crypto
from consensus.codec import DecodeError, EncodeError, decode, encode
from consensus.types import (
    Address,
    Amount,
    Block,
    Equivocation,
    Evidence,
    IntArg,
    ModelSpec,
    Transfer,
    WorkFraud,
)

MESSAGES = sorted(codec.registered_messages().items())
MESSAGE_IDS = [cls.__name__ for _, cls in MESSAGES]
ALL_CLASSES = [cls for _, cls in MESSAGES]

# Large limits (a million accounts, a gigabyte tensor) are checked by reading
# the declaration; building an over-limit value for them would only test the
# machine's memory.
MAX_OVERSIZE_ITEMS = 5000
MAX_OVERSIZE_BYTES = 1 << 17


def raw_of(value: Any) -> list[Any]:
    """The decoded msgpack form of a value, as a mutable list."""
    return list(msgpack.unpackb(encode(value), raw=False, use_list=False))


def pack(raw: Any) -> bytes:
    packed: bytes = msgpack.packb(raw, use_bin_type=True)
    return packed


def assert_rejected(data: bytes, expected: Any, *fragments: str, **kwargs: Any) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        decode(data, expected, **kwargs)
    text = str(info.value)
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in the error {text!r}"
    return info.value


# ---------------------------------------------------------------------------
# Round trips


def test_every_message_has_a_unique_tag() -> None:
    tags = [codec.tag_of(cls) for cls in ALL_CLASSES]
    assert len(tags) == len(set(tags))
    assert all(codec.registered_messages()[codec.tag_of(c)] is c for c in ALL_CLASSES)


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=MESSAGE_IDS)
def test_minimal_value_round_trips(cls: type) -> None:
    value = minimal_message(cls)
    data = encode(value)
    assert decode(data, cls) == value


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=MESSAGE_IDS)
@property_settings(15)
@given(data=st.data())
def test_round_trip(cls: type, data: st.DataObject) -> None:
    value = data.draw(message_strategy(cls))
    encoded = encode(value)
    decoded = decode(encoded, cls)
    assert decoded == value
    assert type(decoded) is cls
    # Canonical: one value, one encoding, so hashes are well defined.
    assert encode(decoded) == encoded
    assert crypto.hash_value(decoded) == crypto.sha256(encoded)


@property_settings(30)
@given(ev=st.one_of(message_strategy(WorkFraud), message_strategy(Equivocation)))
def test_union_round_trip_keeps_the_member_type(ev: Any) -> None:
    assert decode(encode(ev), Evidence) == ev
    assert type(decode(encode(ev), Evidence)) is type(ev)


def test_decode_accepts_bytearray_and_memoryview() -> None:
    value = Transfer(keypair(1).address, Amount(7))
    data = encode(value)
    assert decode(bytearray(data), Transfer) == value
    assert decode(memoryview(data), Transfer) == value


# ---------------------------------------------------------------------------
# Envelope errors: tag, version, arity, framing


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=MESSAGE_IDS)
def test_envelope_errors(cls: type) -> None:
    name = cls.__name__
    raw = raw_of(minimal_message(cls))
    unused_tag = max(codec.registered_messages()) + 1

    assert_rejected(pack([unused_tag, *raw[1:]]), cls, "expected tag", name)
    other = next(c for c in ALL_CLASSES if c is not cls)
    assert_rejected(encode(minimal_message(other)), cls, "expected tag", name)
    assert_rejected(pack([raw[0], raw[1] + 1, *raw[2:]]), cls, "version", "not supported")
    assert_rejected(pack([raw[0], 0, *raw[2:]]), cls, "version")
    assert_rejected(pack([raw[0], True, *raw[2:]]), cls, "version")
    assert_rejected(pack([True if raw[0] == 1 else float(raw[0]), *raw[1:]]), cls, "tag")
    assert_rejected(pack([*raw, 0]), cls, "fields", f"got {len(raw) - 1}")
    if len(raw) > 2:
        assert_rejected(pack(raw[:-1]), cls, "fields", f"got {len(raw) - 3}")
    assert_rejected(pack(raw[:1]), cls, "tag")
    assert_rejected(pack([]), cls, "tag")
    assert_rejected(pack(dict(enumerate(raw))), cls, "not valid msgpack")
    assert_rejected(pack(0), cls, "expected an array", name)
    assert_rejected(pack(None), cls, "expected an array", name)


@pytest.mark.parametrize("cls", [Transfer, Block, WorkFraud], ids=lambda c: c.__name__)
def test_trailing_and_truncated_bytes(cls: type) -> None:
    data = encode(minimal_message(cls))
    for extra in (b"\x00", b"\xc0", data):
        assert_rejected(data + extra, cls)
    for cut in range(len(data)):
        assert_rejected(data[:cut], cls)


def test_message_size_limit() -> None:
    value = Transfer(keypair(1).address, Amount(7))
    data = encode(value)
    assert decode(data, Transfer, max_size=len(data)) == value
    assert_rejected(data, Transfer, "over the limit", max_size=len(data) - 1)


def test_not_bytes_and_not_a_message() -> None:
    assert_rejected("abc", Transfer, "expected bytes")  # type: ignore[arg-type]
    assert_rejected(encode(Transfer(keypair(1).address, Amount(1))), int, "not a registered message")


def test_union_rejects_other_members() -> None:
    assert_rejected(encode(Transfer(keypair(1).address, Amount(1))), Evidence, "unknown tag")
    assert_rejected(pack(None), Evidence, "required")
    assert_rejected(pack(5), Evidence, "tagged array")
    assert_rejected(pack(["x", 1]), Evidence, "tagged array")


# ---------------------------------------------------------------------------
# Field errors: every field of every message, with values of the wrong type,
# out of range, and over its size limit.


def _bad_values(shape: Shape) -> list[tuple[Any, str]]:
    """(raw value, fragment of the expected error) that a field of this shape must refuse."""
    bad: list[tuple[Any, str]] = []
    if not shape.optional:
        bad.append((None, "nil"))
    if shape.kind == "int":
        bad += [(1.0, "float"), ("1", "str"), (True, "bool"), (b"\x01", "bytes"), ((), "array")]
        if shape.lo - 1 >= -(2**63):
            bad.append((shape.lo - 1, "out of range"))
        if shape.hi + 1 <= codec.U64_MAX:
            bad.append((shape.hi + 1, "out of range"))
    elif shape.kind == "bool":
        bad += [(1, "int"), (0, "int"), ("true", "str"), (0.0, "float")]
    elif shape.kind == "bytes":
        bad += [("x" * (shape.exact_len or 1), "str"), (0, "int"), ((), "array")]
        if shape.exact_len is not None:
            bad += [(bytes(shape.exact_len - 1), "exactly"), (bytes(shape.exact_len + 1), "exactly")]
        elif shape.max_len is not None and shape.max_len < MAX_OVERSIZE_BYTES:
            bad.append((bytes(shape.max_len + 1), "over the limit"))
    elif shape.kind == "str":
        bad += [(b"x", "bytes"), (0, "int"), (False, "bool")]
        if shape.max_len is not None and shape.max_len < MAX_OVERSIZE_BYTES:
            bad.append(("a" * (shape.max_len + 1), "over the limit"))
    elif shape.kind == "tuple":
        bad += [(b"", "bytes"), (0, "int"), ("x", "str")]
        if shape.max_len is not None and shape.max_len < MAX_OVERSIZE_ITEMS:
            item = minimal(shape.item)
            raw_item = pack_item(item)
            bad.append(((raw_item,) * (shape.max_len + 1), "over the limit"))
    else:
        bad += [(0, ""), ("x", ""), ((), ""), ((9999, 1), "tag")]
    return bad


def pack_item(value: Any) -> Any:
    """A value in the raw form the codec produces for it."""
    if value is None or isinstance(value, bool | int | bytes | str):
        return value
    return tuple(msgpack.unpackb(encode(value), raw=False, use_list=False))


FIELD_CASES = [
    (cls, index, name, tp) for cls in ALL_CLASSES for index, (name, tp) in enumerate(fields_of(cls))
]


@pytest.mark.parametrize(
    ("cls", "index", "name", "tp"), FIELD_CASES, ids=[f"{c.__name__}.{n}" for c, _, n, _ in FIELD_CASES]
)
def test_field_rejects_wrong_values(cls: type, index: int, name: str, tp: Any) -> None:
    raw = raw_of(minimal_message(cls))
    shape = shape_of(tp)
    for bad, fragment in _bad_values(shape):
        mutated = list(raw)
        mutated[2 + index] = bad
        error = assert_rejected(pack(mutated), cls, f"{cls.__name__}.{name}")
        assert fragment.lower() in str(error).lower(), (bad, str(error))


@pytest.mark.parametrize(
    ("cls", "index", "name", "tp"),
    [case for case in FIELD_CASES if shape_of(case[3]).kind in ("bytes", "str", "tuple")],
    ids=lambda v: getattr(v, "__name__", str(v)),
)
def test_field_accepts_its_size_limit(cls: type, index: int, name: str, tp: Any) -> None:
    """Exactly at a limit is fine: the bound is inclusive on both sides of the wire."""
    shape = shape_of(tp)
    limit = shape.exact_len if shape.exact_len is not None else shape.max_len
    assert limit is not None
    if limit >= (MAX_OVERSIZE_ITEMS if shape.kind == "tuple" else MAX_OVERSIZE_BYTES):
        pytest.skip("limit too large to build in a unit test")
    if shape.kind == "bytes":
        at_limit: Any = bytes(limit)
    elif shape.kind == "str":
        at_limit = "é" * limit  # characters, not bytes, are what the limit counts
    else:
        at_limit = (minimal(shape.item),) * limit
    value = minimal_message(cls)
    value = type(value)(**{**{n: getattr(value, n) for n, _ in fields_of(cls)}, name: at_limit})
    assert decode(encode(value), cls) == value


def test_nested_errors_name_the_path() -> None:
    block = minimal_message(Block)
    raw = raw_of(block)
    header = list(raw[2])
    header[3] = 5  # height as... a valid int; the round is index 4
    header[4] = -1
    raw[2] = tuple(header)
    assert_rejected(pack(raw), Block, "Block.header.round", "out of range")


def test_encode_rejects_out_of_bounds_values() -> None:
    with pytest.raises(EncodeError, match=r"Transfer\.amount"):
        encode(Transfer(keypair(1).address, Amount(-1)))
    with pytest.raises(EncodeError, match=r"Transfer\.to"):
        encode(Transfer(Address(b"short"), Amount(1)))
    with pytest.raises(EncodeError, match=r"Transfer\.amount"):
        encode(Transfer(keypair(1).address, True))  # type: ignore[arg-type]
    with pytest.raises(EncodeError, match=r"IntArg\.name"):
        encode(IntArg("x" * 33, 1))
    with pytest.raises(EncodeError, match=r"ModelSpec\.args"):
        encode(ModelSpec("m", [IntArg("a", 1)]))  # type: ignore[arg-type]
    with pytest.raises(EncodeError, match="not a registered message"):
        encode(object())


# ---------------------------------------------------------------------------
# Non-canonical encodings: the same value written with a wider msgpack form.


class Wide:
    """Marks a raw value to be written in msgpack's widest form for its type."""

    def __init__(self, value: Any) -> None:
        self.value = value


def pack_wide(obj: Any) -> bytes:
    if obj is None:
        return b"\xc0"
    if obj is True:
        return b"\xc3"
    if obj is False:
        return b"\xc2"
    if isinstance(obj, int):
        return b"\xcf" + struct.pack(">Q", obj) if obj >= 0 else b"\xd3" + struct.pack(">q", obj)
    if isinstance(obj, bytes):
        return b"\xc6" + struct.pack(">I", len(obj)) + obj
    if isinstance(obj, str):
        text = obj.encode()
        return b"\xdb" + struct.pack(">I", len(text)) + text
    if isinstance(obj, tuple | list):
        return b"\xdd" + struct.pack(">I", len(obj)) + b"".join(pack_wide(x) for x in obj)
    raise TypeError(type(obj))


def pack_mixed(obj: Any) -> bytes:
    """Canonical msgpack except where a value is wrapped in ``Wide``."""
    if isinstance(obj, Wide):
        return pack_wide(obj.value)
    if isinstance(obj, tuple | list):
        n = len(obj)
        head = bytes([0x90 | n]) if n < 16 else b"\xdc" + struct.pack(">H", n)
        return head + b"".join(pack_mixed(x) for x in obj)
    return pack(obj)


def test_pack_mixed_is_canonical_without_wide() -> None:
    value = minimal_message(Block)
    assert pack_mixed(raw_of(value)) == encode(value)


@pytest.mark.parametrize(
    ("value", "index"),
    [
        (Transfer(keypair(1).address, Amount(5)), 3),  # uint64 where a fixint fits
        (Transfer(keypair(1).address, Amount(5)), 2),  # bin32 where bin8 fits
        (Transfer(keypair(1).address, Amount(5)), 0),  # the tag itself
        (IntArg("lr", 3), 2),  # str32 where fixstr fits
        (ModelSpec("mlp", ()), 3),  # array32 where fixarray fits
        (ModelSpec("mlp", (IntArg("a", 1),)), 3),
    ],
)
def test_non_canonical_field_rejected(value: Any, index: int) -> None:
    raw: list[Any] = raw_of(value)
    raw[index] = Wide(raw[index])
    data = pack_mixed(raw)
    assert msgpack.unpackb(data, raw=False, use_list=False) == tuple(raw_of(value))
    assert_rejected(data, type(value), "canonical")


def test_non_canonical_str16() -> None:
    raw = raw_of(IntArg("lr", 3))
    text = raw[2].encode()
    data = bytes([0x94]) + pack(raw[0]) + pack(raw[1]) + b"\xda" + struct.pack(">H", len(text)) + text + pack(3)
    assert msgpack.unpackb(data, raw=False) == [raw[0], raw[1], "lr", 3]
    assert_rejected(data, IntArg, "canonical")


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=MESSAGE_IDS)
@property_settings(5)
@given(data=st.data())
def test_widest_encoding_always_rejected(cls: type, data: st.DataObject) -> None:
    value = data.draw(message_strategy(cls))
    wide = pack_wide(msgpack.unpackb(encode(value), raw=False, use_list=False))
    assert wide != encode(value)
    assert_rejected(wide, cls, "canonical")


# ---------------------------------------------------------------------------
# Fuzzing: arbitrary and mutated bytes raise DecodeError or decode canonically.


def _decode_or_decode_error(data: bytes, expected: Any) -> Any:
    try:
        value = decode(data, expected)
    except DecodeError:
        return None
    # Whatever decodes must be the canonical encoding of what it decoded to.
    assert encode(value) == data
    return value


@property_settings(300)
@given(data=st.binary(max_size=600))
def test_random_bytes_never_crash_the_decoder(data: bytes) -> None:
    _decode_or_decode_error(data, Block)
    _decode_or_decode_error(data, Evidence)


@property_settings(200)
@given(
    raw=st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=40)
        | st.text(max_size=10) | st.floats(),
        lambda children: st.lists(children, max_size=8),
        max_leaves=40,
    ),
)
def test_random_msgpack_trees_never_crash_the_decoder(raw: Any) -> None:
    # Starting from well-formed msgpack reaches the field checks, which random
    # bytes almost never do.
    data = msgpack.packb(raw, use_bin_type=True)
    for cls in (Block, Transfer, WorkFraud):
        _decode_or_decode_error(data, cls)


@property_settings(100)
@given(
    value=message_strategy(Block),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255), st.sampled_from("sid")), max_size=4),
)
def test_mutated_blocks_never_crash_the_decoder(value: Block, edits: list[tuple[int, int, str]]) -> None:
    data = bytearray(encode(value))
    for pos, byte, op in edits:
        at = pos % (len(data) + 1)
        if op == "s" and at < len(data):
            data[at] = byte
        elif op == "i":
            data.insert(at, byte)
        elif op == "d" and at < len(data):
            del data[at]
    _decode_or_decode_error(bytes(data), Block)


@pytest.mark.parametrize(
    "data",
    [
        b"\x91" * 5000 + b"\xc0",  # deep nesting
        b"\xdd\xff\xff\xff\xff",  # an array claiming 4 billion items
        b"\xc6\xff\xff\xff\xff",  # a bin claiming 4 GB
        b"\xc7\x00\x05",  # an empty ext
        b"\xd6\xff\x00\x00\x00\x00",  # a timestamp ext
        b"\xc1",  # the never-used byte
        b"\x81\x00\x00",  # a map
        b"\xcb" + struct.pack(">d", 1.0),  # a float
        b"",
    ],
)
def test_hostile_inputs(data: bytes) -> None:
    assert_rejected(data, Block)
