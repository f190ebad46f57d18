"""Content-addressed blob storage: the interface and an in-memory implementation.

A blob's key is the SHA-256 of its bytes, so a blob fetched from anywhere is
checked by hashing it. Model states, checkpoints, work results and datasets
are blobs. The LevelDB-backed store is ``chainstore.ChainStore``.

This module must never decide what to keep: retention is the node's policy.
"""

from __future__ import annotations

import threading
from typing import Protocol

from consensus.crypto import sha256
from consensus.types import Hash32


class BlobStore(Protocol):
    def get(self, digest: Hash32) -> bytes | None: ...

    def put(self, data: bytes) -> Hash32: ...

    def has(self, digest: Hash32) -> bool: ...


class MemoryBlobStore:
    """A thread-safe dict of blobs; for tests, the reference run and caches."""

    def __init__(self) -> None:
        self._blobs: dict[bytes, bytes] = {}
        self._lock = threading.Lock()

    def get(self, digest: Hash32) -> bytes | None:
        with self._lock:
            return self._blobs.get(digest)

    def put(self, data: bytes) -> Hash32:
        digest = sha256(data)
        with self._lock:
            self._blobs[digest] = bytes(data)
        return digest

    def has(self, digest: Hash32) -> bool:
        with self._lock:
            return digest in self._blobs

    def __len__(self) -> int:
        with self._lock:
            return len(self._blobs)
