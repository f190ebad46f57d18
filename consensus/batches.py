"""Which training samples each inner step of each work unit uses.

The sample stream of a job is a sequence of epochs; epoch ``e`` is a
permutation of ``range(n)`` made by a Fisher-Yates shuffle driven by SHAKE-256
(see ``compute_permutation``). Global sample position
``p = ((step * H + inner) * K + shard) * b + j`` (``b = global_batch / K``,
``j < b``) reads epoch ``p // n`` at offset ``p % n``, so batches run across
epoch boundaries and every shard of every step reads distinct positions.

This module must never depend on torch or numpy: an independent trainer must
be able to compute the same indices from ``docs/protocol.md`` alone.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

PERMUTATION_DOMAIN = b"TDML/permutation/v1"


@lru_cache(maxsize=8)
def compute_permutation(seed: int, epoch: int, n: int) -> tuple[int, ...]:
    """Epoch ``epoch``'s permutation of ``range(n)``.

    Draw ``i`` (0-based) is bytes ``[8i, 8i+8)`` of
    ``SHAKE-256(domain || seed as u64 BE || epoch as u64 BE || n as u64 BE)``
    read as a big-endian u64. Starting from the identity, for ``i`` from
    ``n - 1`` down to 1 swap positions ``i`` and ``draw[n-1-i] % (i + 1)``.
    """
    if n <= 0:
        raise ValueError("a dataset needs at least one sample")
    stream = hashlib.shake_256(
        PERMUTATION_DOMAIN + seed.to_bytes(8, "big") + epoch.to_bytes(8, "big") + n.to_bytes(8, "big")
    ).digest(8 * max(n - 1, 1))
    order = list(range(n))
    for draw, i in enumerate(range(n - 1, 0, -1)):
        j = int.from_bytes(stream[8 * draw : 8 * draw + 8], "big") % (i + 1)
        order[i], order[j] = order[j], order[i]
    return tuple(order)


def compute_batch_indices(
    *,
    seed: int,
    n: int,
    global_batch: int,
    shards: int,
    inner_steps: int,
    step: int,
    shard: int,
    inner: int,
) -> tuple[int, ...]:
    """The sample indices of one inner step of one work unit, in order."""
    if global_batch % shards:
        raise ValueError("the global batch must divide evenly into shards")
    if not (0 <= shard < shards and 0 <= inner < inner_steps):
        raise ValueError("shard or inner step out of range")
    per_shard = global_batch // shards
    start = ((step * inner_steps + inner) * shards + shard) * per_shard
    out: list[int] = []
    for p in range(start, start + per_shard):
        epoch, offset = divmod(p, n)
        out.append(compute_permutation(seed, epoch, n)[offset])
    return tuple(out)
