"""Structure-aware mutation of msgpack encodings, and plain byte mutation.

``tokenize`` walks a msgpack encoding and lists every item (its offset, header
size, kind and length), so a mutator can change one item's type byte, claim a
huge length in its header, replace its tag or version, turn an int into a
float, cut the bytes at an item boundary or splice two encodings together,
rather than only flipping random bits. ``mutate`` applies one to three such
mutations to a valid encoding; everything is drawn from the ``random.Random``
it is given, so the same generator state gives the same bytes.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

HUGE_LENGTHS = (2**31, 2**32 - 1, 2**31 - 1, 0x7FFF_FFFF + 2, 2**16 - 1, 2**24)
"""Lengths a header may claim that are far beyond any real frame."""

INTERESTING_INTS = (
    0, 1, -1, 2, 127, 128, 255, 256, -32, -33, 2**15, 2**16 - 1, 2**16, 2**31 - 1, 2**31,
    2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1, -(2**31), -(2**63),
)


@dataclass(frozen=True, slots=True)
class Token:
    """One msgpack item of an encoding (containers list their children after them)."""

    offset: int
    header: int  # bytes of the header (type byte and length or value field)
    kind: str  # int, nil, bool, float, bin, str, array, map, ext
    length: int  # payload bytes (bin, str, ext), items (array), pairs (map), else 0
    end: int  # offset just past the whole item, children included
    depth: int

    @property
    def payload(self) -> int:
        return self.offset + self.header


class Malformed(ValueError):
    """The bytes are not one well-formed msgpack item."""


def _uint(data: bytes, pos: int, size: int) -> int:
    if pos + size > len(data):
        raise Malformed("truncated header")
    return int.from_bytes(data[pos : pos + size], "big")


def tokenize(data: bytes, *, max_tokens: int = 100_000) -> list[Token]:
    """The items of one msgpack value, in pre-order; raises ``Malformed`` for anything else."""
    tokens: list[Token] = []
    # Each stack entry: [index of the container token, children still to read].
    stack: list[list[int]] = []
    pos = 0
    first = True
    while first or stack:
        first = False
        if len(tokens) >= max_tokens:
            raise Malformed("too many items")
        if pos >= len(data):
            raise Malformed("truncated")
        b = data[pos]
        header, kind, length, children = _header(data, pos, b)
        start = pos
        pos += header
        if kind in ("bin", "str", "ext"):
            if pos + length > len(data):
                raise Malformed("truncated payload")
            pos += length
        tokens.append(Token(start, header, kind, length, pos, len(stack)))
        if children:
            stack.append([len(tokens) - 1, children])
            continue
        # Close every container whose last child this was.
        while stack:
            stack[-1][1] -= 1
            if stack[-1][1] > 0:
                break
            idx, _ = stack.pop()
            t = tokens[idx]
            tokens[idx] = Token(t.offset, t.header, t.kind, t.length, pos, t.depth)
    if pos != len(data):
        raise Malformed("trailing bytes")
    return tokens


def _header(data: bytes, pos: int, b: int) -> tuple[int, str, int, int]:
    """(header size, kind, length, child items to read) of the item whose type byte is ``b``."""
    if b <= 0x7F or b >= 0xE0:
        return 1, "int", 0, 0
    if 0x80 <= b <= 0x8F:
        return 1, "map", b & 0x0F, 2 * (b & 0x0F)
    if 0x90 <= b <= 0x9F:
        return 1, "array", b & 0x0F, b & 0x0F
    if 0xA0 <= b <= 0xBF:
        return 1, "str", b & 0x1F, 0
    if b == 0xC0:
        return 1, "nil", 0, 0
    if b in (0xC2, 0xC3):
        return 1, "bool", 0, 0
    if b in (0xC4, 0xC5, 0xC6):
        size = {0xC4: 1, 0xC5: 2, 0xC6: 4}[b]
        return 1 + size, "bin", _uint(data, pos + 1, size), 0
    if b in (0xC7, 0xC8, 0xC9):
        size = {0xC7: 1, 0xC8: 2, 0xC9: 4}[b]
        return 2 + size, "ext", _uint(data, pos + 1, size), 0
    if b == 0xCA:
        return 5, "float", 0, 0
    if b == 0xCB:
        return 9, "float", 0, 0
    if 0xCC <= b <= 0xCF:
        return 1 + (1 << (b - 0xCC)), "int", 0, 0
    if 0xD0 <= b <= 0xD3:
        return 1 + (1 << (b - 0xD0)), "int", 0, 0
    if 0xD4 <= b <= 0xD8:
        return 2, "ext", 1 << (b - 0xD4), 0
    if b in (0xD9, 0xDA, 0xDB):
        size = {0xD9: 1, 0xDA: 2, 0xDB: 4}[b]
        return 1 + size, "str", _uint(data, pos + 1, size), 0
    if b in (0xDC, 0xDD):
        size = 2 if b == 0xDC else 4
        n = _uint(data, pos + 1, size)
        return 1 + size, "array", n, n
    if b in (0xDE, 0xDF):
        size = 2 if b == 0xDE else 4
        n = _uint(data, pos + 1, size)
        return 1 + size, "map", n, 2 * n
    raise Malformed(f"reserved type byte 0x{b:02x}")


# ---------------------------------------------------------------------------
# Header builders


def len_header(kind: str, n: int, width: int | None = None) -> bytes:
    """A bin/str/array/map header claiming ``n``; ``width`` forces the length field size."""
    if kind == "bin":
        codes = {1: 0xC4, 2: 0xC5, 4: 0xC6}
    elif kind == "str":
        codes = {1: 0xD9, 2: 0xDA, 4: 0xDB}
    elif kind == "array":
        codes = {2: 0xDC, 4: 0xDD}
    elif kind == "map":
        codes = {2: 0xDE, 4: 0xDF}
    else:
        raise ValueError(kind)
    if width is None:
        width = next(w for w in sorted(codes) if n < 1 << (8 * w)) if n < 1 << 32 else 4
    return bytes([codes[width]]) + (n % (1 << (8 * width))).to_bytes(width, "big")


def pack_int(value: int, rng: random.Random | None = None) -> bytes:
    """``value`` as msgpack; with ``rng``, sometimes in a wider form than needed."""
    if rng is not None and rng.random() < 0.3 and 0 <= value < 2**64:
        width = rng.choice([w for w in (1, 2, 4, 8) if value < 1 << (8 * w)])
        return bytes([{1: 0xCC, 2: 0xCD, 4: 0xCE, 8: 0xCF}[width]]) + value.to_bytes(width, "big")
    if -(2**63) <= value < 2**64:
        packed: bytes = msgpack.packb(value)
        return packed
    return b"\xcf" + (value % 2**64).to_bytes(8, "big")


def random_msgpack(rng: random.Random, depth: int = 0) -> bytes:
    """A random well-formed msgpack value of any type (maps, floats and ext included)."""
    choice = rng.randrange(12 if depth < 4 else 8)
    if choice == 0:
        return pack_int(rng.choice(INTERESTING_INTS), rng)
    if choice == 1:
        return b"\xc0"
    if choice == 2:
        return rng.choice([b"\xc2", b"\xc3"])
    if choice == 3:
        return rng.choice([b"\xca" + struct.pack(">f", rng.uniform(-1e6, 1e6)), b"\xcb" + struct.pack(">d", rng.choice([0.0, 1.0, -0.0, float("nan"), float("inf"), 1e308]))])
    if choice == 4:
        n = rng.choice([0, 1, 20, 32, 33, 64, 65, 300])
        return len_header("bin", n) + rng.randbytes(n)
    if choice == 5:
        text = rng.choice(["", "a", "tdml", "x" * 300, "\u00e9\u4e2d", "\x00"])
        raw = text.encode()
        return (bytes([0xA0 | len(raw)]) if len(raw) < 32 else len_header("str", len(raw))) + raw
    if choice == 6:
        # Invalid UTF-8 inside a str.
        raw = rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"])
        return bytes([0xA0 | len(raw)]) + raw
    if choice == 7:
        n = rng.choice([1, 2, 4, 8, 16])
        code = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}[n]
        return bytes([code, rng.randrange(256)]) + rng.randbytes(n)
    if choice == 8:
        n = rng.randrange(4)
        return bytes([0x90 | n]) + b"".join(random_msgpack(rng, depth + 1) for _ in range(n))
    if choice == 9:
        n = rng.randrange(3)
        return bytes([0x80 | n]) + b"".join(random_msgpack(rng, depth + 1) + random_msgpack(rng, depth + 1) for _ in range(n))
    if choice == 10:
        # Deep nesting: arrays of one item, far deeper than any message.
        n = rng.choice([64, 500, 5000, 100_000])
        return b"\x91" * n + b"\xc0"
    return b"\xc1"  # the one byte msgpack never uses


# ---------------------------------------------------------------------------
# Mutators: each takes the bytes, their tokens (None if they do not parse) and
# the rng, and returns new bytes.

Mutator = Callable[[bytes, "list[Token] | None", random.Random, Sequence[bytes]], bytes]


def _pick(tokens: list[Token], rng: random.Random, kinds: tuple[str, ...] | None = None) -> Token | None:
    pool = tokens if kinds is None else [t for t in tokens if t.kind in kinds]
    return rng.choice(pool) if pool else None


def m_flip(data: bytes, tokens: list[Token] | None, rng: random.Random, others: Sequence[bytes]) -> bytes:
    if not data:
        return bytes([rng.randrange(256)])
    pos = rng.randrange(len(data))
    out = bytearray(data)
    if rng.random() < 0.5:
        out[pos] ^= 1 << rng.randrange(8)
    else:
        out[pos] = rng.randrange(256)
    return bytes(out)


def m_insert(data: bytes, tokens: list[Token] | None, rng: random.Random, others: Sequence[bytes]) -> bytes:
    pos = rng.randrange(len(data) + 1)
    n = rng.choice([1, 1, 2, 4, 9])
    return data[:pos] + rng.randbytes(n) + data[pos:]


def m_delete(data: bytes, tokens: list[Token] | None, rng: random.Random, others: Sequence[bytes]) -> bytes:
    if not data:
        return data
    pos = rng.randrange(len(data))
    n = rng.choice([1, 1, 2, 4, 16])
    return data[:pos] + data[pos + n :]


def m_truncate(data: bytes, tokens: list[Token] | None, rng: random.Random, others: Sequence[bytes]) -> bytes:
    if tokens and rng.random() < 0.5:
        t = rng.choice(tokens)
        cut = rng.choice([t.offset, t.payload, t.end - 1 if t.end > t.offset else t.offset])
        return data[:cut]
    return data[: rng.randrange(len(data) + 1)] if data else data


def m_retype(data: bytes, tokens: list[Token] | None, rng: random.Random, others: Sequence[bytes]) -> bytes:
    """Change one item's type byte (bin to str, array to map, int to nil, any to reserved...)."""
    if not tokens:
        return m_flip(data, tokens, rng, others)
    t = rng.choice(tokens)
    b = data[t.offset]
    swaps = {
        0xC4: [0xD9, 0xC5, 0xC6, 0xC7], 0xC5: [0xDA, 0xC4], 0xC6: [0xDB, 0xC4],
        0xD9: [0xC4, 0xDA], 0xDA: [0xC5], 0xDB: [0xC6],
        0xDC: [0xDE, 0xDD], 0xDD: [0xDF, 0xDC],
    }
    if b in swaps:
        new = rng.choice(swaps[b])
    elif 0x90 <= b <= 0x9F:
        new = rng.choice([b - 0x10, b + 1 if b < 0x9F else 0x90, 0x90])  # fixmap, one more item, empty
    elif 0xA0 <= b <= 0xBF:
        new = rng.choice([0xC4, 0x90 | (b & 0x0F), 0xC0])
    elif b <= 0x7F or b >= 0xE0:
        new = rng.choice([0xC0, 0xC2, 0xC3, 0xCA, 0xCB, 0xCC, 0xD0, 0xA0, 0x90])
    else:
        new = rng.choice([0xC0, 0xC1, 0xC2, 0xC3, 0xCA, 0xCB, 0xCC, 0xCF, 0xD3, 0xD4, 0xD8])
    return data[: t.offset] + bytes([new]) + data[t.offset + 1 :]


def m_huge_length(data: bytes, tokens: list[Token] | None, rng: random.Random, others: Sequence[bytes]) -> bytes:
    """Rewrite a bin/str/array/map header to claim a huge (or off-by-one) length."""
    if not tokens:
        return data + len_header(rng.choice(["bin", "str", "array"]), rng.choice(HUGE_LENGTHS), 4)
    t = _pick(tokens, rng, ("bin", "str", "array", "map")) or rng.choice(tokens)
    kind = t.kind if t.kind in ("bin", "str", "array", "map") else rng.choice(["bin", "array"])
    n = rng.choice([*HUGE_LENGTHS, t.length + 1, max(t.length - 1, 0), t.length * 2 + 7])
    width = 4 if n >= 1 << 16 else rng.choice([None, 4])
    return data[: t.offset] + len_header(kind, n, width) + data[t.payload :]


def m_wide_int(data: bytes, tokens: list[Token] | None, rng: random.Random, others: Sequence[bytes]) -> bytes:
    """Re-encode an int in a wider form (valid msgpack, not canonical) or as another int."""
    ints = [t for t in tokens or [] if t.kind == "int"]
    if not ints:
        return m_flip(data, tokens, rng, others)
    t = rng.choice(ints)
    value = msgpack.unpackb(data[t.offset : t.end])
    if rng.random() < 0.5:
        repl = pack_int(value if value >= 0 else 0, rng)
        if repl == data[t.offset : t.end] and 0 <= value < 2**32:
            repl = b"\xcf" + value.to_bytes(8, "big")
    else:
        repl = pack_int(rng.choice((*INTERESTING_INTS, value + 1, value - 1)))
    return data[: t.offset] + repl + data[t.end :]


def m_float_for_int(data: bytes, tokens: list[Token] | None, rng: random.Random, others: Sequence[bytes]) -> bytes:
    ints = [t for t in tokens or [] if t.kind == "int"]
    if not ints:
        return m_flip(data, tokens, rng, others)
    t = rng.choice(ints)
    value = float(msgpack.unpackb(data[t.offset : t.end]))
    repl = b"\xca" + struct.pack(">f", value) if rng.random() < 0.5 else b"\xcb" + struct.pack(">d", value)
    return data[: t.offset] + repl + data[t.end :]


def m_replace_item(data: bytes, tokens: list[Token] | None, rng: random.Random, others: Sequence[bytes]) -> bytes:
    """Replace one whole item (scalar or container) by a random msgpack value."""
    if not tokens:
        return random_msgpack(rng)
    t = rng.choice(tokens)
    return data[: t.offset] + random_msgpack(rng) + data[t.end :]


def m_drop_or_dup_item(data: bytes, tokens: list[Token] | None, rng: random.Random, others: Sequence[bytes]) -> bytes:
    """Remove or repeat one array element without fixing the count, or fix the count too."""
    arrays = [t for t in tokens or [] if t.kind == "array" and t.length > 0]
    if not arrays or tokens is None:
        return m_delete(data, tokens, rng, others)
    arr = rng.choice(arrays)
    children = [t for t in tokens if t.depth == arr.depth + 1 and arr.payload <= t.offset < arr.end]
    child = rng.choice(children)
    if rng.random() < 0.5:
        body = data[arr.payload : child.offset] + data[child.end : arr.end]
        count = arr.length - 1
    else:
        body = data[arr.payload : child.end] + data[child.offset : arr.end]
        count = arr.length + 1
    header = data[arr.offset : arr.payload] if rng.random() < 0.3 else _array_header(count)
    return data[: arr.offset] + header + body + data[arr.end :]


def _array_header(n: int) -> bytes:
    return bytes([0x90 | n]) if n < 16 else len_header("array", n)


def m_tag_version(data: bytes, tokens: list[Token] | None, rng: random.Random, others: Sequence[bytes]) -> bytes:
    """Replace the tag or the version of a tagged message array (nested ones included)."""
    if not tokens:
        return m_flip(data, tokens, rng, others)
    tagged = []
    for i, t in enumerate(tokens[:-2]):
        if t.kind == "array" and t.length >= 2 and tokens[i + 1].kind == "int" and tokens[i + 2].kind == "int":
            tagged.append(i)
    if not tagged:
        return m_wide_int(data, tokens, rng, others)
    i = rng.choice(tagged)
    which = tokens[i + 1] if rng.random() < 0.6 else tokens[i + 2]
    value = rng.choice([0, 1, 2, 3, 5, 42, 99, 100, 102, 107, 113, 114, 127, 200, 255, 2**16, 2**32, -1])
    repl = pack_int(value)
    return data[: which.offset] + repl + data[which.end :]


def m_splice(data: bytes, tokens: list[Token] | None, rng: random.Random, others: Sequence[bytes]) -> bytes:
    """Join the head of this encoding with the tail of another one (or append a whole one)."""
    if not others:
        return data + data
    other = rng.choice(others)
    mode = rng.randrange(3)
    if mode == 0:
        return data + other  # two messages in one frame
    if mode == 1 and tokens:
        try:
            other_tokens = tokenize(other)
        except Malformed:
            other_tokens = []
        if other_tokens:
            a = rng.choice(tokens)
            b = rng.choice(other_tokens)
            return data[: a.offset] + other[b.offset : b.end] + data[a.end :]
    cut_a = rng.randrange(len(data) + 1)
    cut_b = rng.randrange(len(other) + 1)
    return data[:cut_a] + other[cut_b:]


def m_map_wrap(data: bytes, tokens: list[Token] | None, rng: random.Random, others: Sequence[bytes]) -> bytes:
    """Wrap the value in a map, an ext, or a one-item array."""
    choice = rng.randrange(3)
    if choice == 0:
        return b"\x81\xa1k" + data
    if choice == 1:
        return b"\xc7" + bytes([min(len(data), 255), 1]) + data[:255]
    return b"\x91" + data


MUTATORS: tuple[tuple[Mutator, int], ...] = (
    (m_flip, 6),
    (m_insert, 3),
    (m_delete, 3),
    (m_truncate, 4),
    (m_retype, 5),
    (m_huge_length, 5),
    (m_wide_int, 3),
    (m_float_for_int, 3),
    (m_replace_item, 4),
    (m_drop_or_dup_item, 3),
    (m_tag_version, 4),
    (m_splice, 3),
    (m_map_wrap, 1),
)
_FUNCS = [m for m, _ in MUTATORS]
_WEIGHTS = [w for _, w in MUTATORS]


def _tokens_or_none(data: bytes) -> list[Token] | None:
    try:
        return tokenize(data, max_tokens=2000)
    except Malformed:
        return None


_BASE_TOKENS: dict[bytes, list[Token] | None] = {}


def _base_tokens(data: bytes) -> list[Token] | None:
    """Tokens of an input's starting bytes, cached: they are the few valid encodings of a corpus."""
    if data not in _BASE_TOKENS:
        if len(_BASE_TOKENS) >= 4096:
            _BASE_TOKENS.clear()
        _BASE_TOKENS[data] = _tokens_or_none(data)
    return _BASE_TOKENS[data]


def mutate(data: bytes, rng: random.Random, others: Sequence[bytes] = (), *, rounds: int | None = None) -> tuple[bytes, list[str]]:
    """Apply one to three mutations; returns the bytes and the names of the mutators used."""
    n = rounds if rounds is not None else rng.choice([1, 1, 1, 2, 3])
    names: list[str] = []
    for i in range(n):
        tokens = _base_tokens(data) if i == 0 else _tokens_or_none(data)
        fn = rng.choices(_FUNCS, _WEIGHTS)[0]
        data = fn(data, tokens, rng, others)
        names.append(fn.__name__)
    return data, names


def mutate_tree(value: Any, rng: random.Random) -> Any:
    """Change one node of an unpacked msgpack tree (lists and scalars) to an out-of-bounds value."""
    if isinstance(value, list) and value and rng.random() < 0.75:
        out = list(value)
        i = rng.randrange(len(out))
        out[i] = mutate_tree(out[i], rng)
        return out
    if isinstance(value, bool):
        return rng.choice([0, 1, None, not value])
    if isinstance(value, int):
        return rng.choice([-1, min(value + 1, 2**64 - 1), value - 1 if value > 0 else 2**64 - 1, 2**63, 2**64 - 1, True, None, str(value)])
    if isinstance(value, bytes):
        return rng.choice([value + b"\x00", value[:-1], b"", value + rng.randbytes(70_000) if rng.random() < 0.1 else value * 3, value.hex()])
    if isinstance(value, str):
        return rng.choice([value + "x" * 300, value.encode(), "", value * 10])
    if isinstance(value, list):
        return rng.choice([[], [None], value + value, [value]])
    return rng.choice([0, b"", [], None])


def pack_tree(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed
