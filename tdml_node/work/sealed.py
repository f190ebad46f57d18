"""Sealed blobs of private jobs: a dataset encrypted in authenticated chunks, and its key sealed to members.

A **sealed envelope** is ``MAGIC || header || chunks``. The header (msgpack)
names the format version, the chunk size, the chunk count, the plaintext
length and a random 16-byte nonce prefix. Chunk ``i`` is the XSalsa20-Poly1305
``SecretBox`` of plaintext bytes ``[i·size, (i+1)·size)`` under the data key,
with the nonce ``BLAKE2b-192(header || i (8 bytes) || final)`` (``final`` is
1 on the last chunk only): a truncated or reordered envelope fails to open,
and so does one with any header byte changed. The chain names the
digest of the envelope, the ciphertext, so blob transfer verifies what it
moves without anyone but a key holder reading it.

A **key share** is the data key in a libsodium sealed box to one member's
X25519 key, derived from its Ed25519 node key (libsodium's ``ed25519_pk_to_curve25519``):
anyone can seal to a node from its public key alone, and only that node's
secret key opens it.

This module must never log, return in an error, or keep a key or a
plaintext beyond the call: errors say what failed, not what was read.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import msgpack
from nacl import bindings
from nacl.exceptions import CryptoError
from nacl.public import SealedBox
from nacl.secret import SecretBox
from nacl.signing import SigningKey, VerifyKey

from consensus.work import WorkUnavailable

MAGIC = b"TDMLSEAL"
VERSION = 1
KEY_BYTES = SecretBox.KEY_SIZE
SEALED_KEY_BYTES = KEY_BYTES + bindings.crypto_box_SEALBYTES
"""A sealed box adds an ephemeral X25519 key (32 bytes) and a Poly1305 tag (16)."""
DEFAULT_CHUNK = 1 << 20
MAX_HEADER = 256
NONCE_PREFIX = 16


class SealError(ValueError):
    """An envelope or key share that does not open: wrong key, tampered, truncated, or not one at all."""


@dataclass(frozen=True, slots=True)
class Header:
    chunk_size: int
    chunks: int
    length: int
    prefix: bytes
    raw: bytes
    """The header's bytes, which every chunk's nonce is derived from."""


def new_data_key() -> bytes:
    return os.urandom(KEY_BYTES)


def _nonce(header: bytes, index: int, final: bool) -> bytes:
    # Every byte of the header (its random prefix included) goes into every chunk's nonce, so a changed
    # header opens no chunk: the header is authenticated without a MAC of its own.
    return hashlib.blake2b(header + index.to_bytes(8, "big") + (b"\x01" if final else b"\x00"), digest_size=24).digest()


def seal_blob(data: bytes, key: bytes, chunk_size: int = DEFAULT_CHUNK) -> bytes:
    """``data`` as a sealed envelope under ``key`` (a fresh nonce prefix each call)."""
    if len(key) != KEY_BYTES:
        raise SealError(f"a data key is {KEY_BYTES} bytes")
    if chunk_size < 1:
        raise SealError("chunks hold at least one byte")
    box = SecretBox(key)
    prefix = os.urandom(NONCE_PREFIX)
    count = max(1, -(-len(data) // chunk_size))
    header = msgpack.packb([VERSION, chunk_size, count, len(data), prefix])
    parts = [MAGIC, len(header).to_bytes(2, "big"), header]
    for i in range(count):
        chunk = data[i * chunk_size : (i + 1) * chunk_size]
        parts.append(box.encrypt(chunk, _nonce(header, i, i == count - 1)).ciphertext)
    return b"".join(parts)


def is_sealed(blob: bytes) -> bool:
    return blob.startswith(MAGIC)


def read_header(blob: bytes) -> tuple[Header, int]:
    """The envelope's header and the offset of its first chunk; ``SealError`` unless it is well formed."""
    if not is_sealed(blob) or len(blob) < len(MAGIC) + 2:
        raise SealError("not a sealed envelope")
    size = int.from_bytes(blob[len(MAGIC) : len(MAGIC) + 2], "big")
    start = len(MAGIC) + 2
    if size > MAX_HEADER or start + size > len(blob):
        raise SealError("the envelope's header is cut short or too long")
    try:
        fields = msgpack.unpackb(blob[start : start + size])
    except (ValueError, msgpack.ExtraData) as exc:
        raise SealError("the envelope's header does not decode") from exc
    if not (isinstance(fields, list) and len(fields) == 5 and fields[0] == VERSION):
        raise SealError("the envelope's header is not version 1")
    _, chunk_size, chunks, length, prefix = fields
    if not (
        all(isinstance(v, int) and not isinstance(v, bool) for v in (chunk_size, chunks, length))
        and isinstance(prefix, bytes) and len(prefix) == NONCE_PREFIX
        and chunk_size >= 1 and chunks == max(1, -(-length // chunk_size))
    ):
        raise SealError("the envelope's header is inconsistent")
    expected = length + chunks * SecretBox.MACBYTES
    if len(blob) - start - size != expected:
        raise SealError("the envelope is truncated or has bytes after its last chunk")
    return Header(chunk_size, chunks, length, prefix, blob[start : start + size]), start + size


def open_blob(blob: bytes, key: bytes) -> bytes:
    """The plaintext of a sealed envelope; ``SealError`` when it does not open under ``key``."""
    header, offset = read_header(blob)
    if len(key) != KEY_BYTES:
        raise SealError(f"a data key is {KEY_BYTES} bytes")
    box = SecretBox(key)
    out = []
    for i in range(header.chunks):
        plain = min(header.chunk_size, header.length - i * header.chunk_size)
        end = offset + plain + SecretBox.MACBYTES
        try:
            out.append(box.decrypt(blob[offset:end], _nonce(header.raw, i, i == header.chunks - 1)))
        except CryptoError as exc:
            raise SealError(f"chunk {i} does not open under this key (wrong key or tampered)") from exc
        offset = end
    return b"".join(out)


def seal_key(key: bytes, ed25519_public: bytes) -> bytes:
    """The data key sealed to the node whose Ed25519 public key is given."""
    try:
        recipient = VerifyKey(ed25519_public).to_curve25519_public_key()
    except (CryptoError, ValueError, TypeError) as exc:
        raise SealError("not an Ed25519 public key a share can be sealed to") from exc
    return SealedBox(recipient).encrypt(key)


def open_key(sealed: bytes, signing_key: SigningKey) -> bytes:
    """Open a share with a node's Ed25519 signing key; ``SealError`` when it is not sealed to this node."""
    try:
        key = SealedBox(signing_key.to_curve25519_private_key()).decrypt(sealed)
    except (CryptoError, ValueError, TypeError) as exc:
        raise SealError("the key share does not open with this node's key") from exc
    if len(key) != KEY_BYTES:
        raise SealError("the key share holds no data key")
    return key


class NoDataKey(WorkUnavailable):
    """This node cannot read a private job's dataset: no key share of its own, or one that does not open it.

    It is unavailability, never a verdict: a node outside the job's members
    neither trains nor checks its units, and applies its certified steps
    without recomputing them.
    """
