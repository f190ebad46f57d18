"""The seen-cache: dedup by message id, expiry by time, eviction by age when full."""

from __future__ import annotations

import pytest
from p2p_fixtures import signed_transfer, signed_vote

from consensus.codec import encode
from consensus.crypto import sha256
from p2p.gossip import SeenCache, message_id


def ids(n: int) -> list[bytes]:
    return [i.to_bytes(32, "big") for i in range(n)]


def test_message_id_is_the_hash_of_the_canonical_bytes() -> None:
    vote = signed_vote(1)
    assert message_id(vote) == sha256(encode(vote))
    assert message_id(vote) == message_id(signed_vote(1))
    assert message_id(vote) != message_id(signed_vote(2))
    assert message_id(signed_transfer(1)) != message_id(vote)


def test_add_reports_new_ids_once() -> None:
    cache = SeenCache(capacity=10, ttl=5.0)
    a, b = ids(2)
    assert cache.add(a, 0.0) is True
    assert cache.add(a, 1.0) is False
    assert cache.add(b, 1.0) is True
    assert cache.contains(a, 1.0) and cache.contains(b, 1.0)
    assert len(cache) == 2


def test_ids_expire_after_the_ttl_since_last_seen() -> None:
    cache = SeenCache(capacity=10, ttl=5.0)
    a, b = ids(2)
    cache.add(a, 0.0)
    cache.add(b, 3.0)
    assert cache.contains(a, 4.9)
    assert not cache.contains(a, 5.0)
    assert cache.add(a, 5.0) is True  # forgotten, so new again
    cache.add(b, 7.0)  # seen again: its expiry moves to 12
    assert cache.contains(b, 11.9)
    cache.expire(12.0)
    assert not cache.contains(b, 12.0)
    assert len(cache) == 0  # a expired at 10.0, b at 12.0


def test_full_cache_forgets_the_least_recently_seen() -> None:
    cache = SeenCache(capacity=3, ttl=100.0)
    a, b, c, d = ids(4)
    for i, x in enumerate((a, b, c)):
        cache.add(x, float(i))
    cache.add(a, 3.0)  # a is now the most recent
    cache.add(d, 4.0)  # evicts b
    assert len(cache) == 3
    assert not cache.contains(b, 4.0)
    assert all(cache.contains(x, 4.0) for x in (a, c, d))


def test_memory_stays_bounded() -> None:
    cache = SeenCache(capacity=100, ttl=1000.0)
    for i, x in enumerate(ids(1000)):
        cache.add(x, float(i) / 1000)
    assert len(cache) == 100


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        SeenCache(capacity=0)
    with pytest.raises(ValueError):
        SeenCache(ttl=0)
