"""The peer book: addresses, back-off with deterministic jitter, scores and bans."""

from __future__ import annotations

import pytest
from p2p_fixtures import keypair

from p2p.peers import (
    MAX_UNVERIFIED_FAILURES,
    SOURCE_BOOTSTRAP,
    SOURCE_HANDSHAKE,
    SOURCE_PEX,
    PeerBook,
    parse_addr,
)

KEY_A = keypair(1).public_key
KEY_B = keypair(2).public_key


@pytest.mark.parametrize(
    ("addr", "parsed"),
    [
        ("127.0.0.1:26656", ("127.0.0.1", 26656)),
        ("node-1.example.org:1", ("node-1.example.org", 1)),
        ("localhost:65535", ("localhost", 65535)),
        ("[::1]:80", ("::1", 80)),
        ("", None),
        ("127.0.0.1", None),
        ("127.0.0.1:0", None),
        ("127.0.0.1:65536", None),
        ("127.0.0.1:080", None),
        ("127.0.0.1:+80", None),
        ("0.0.0.0:80", None),
        ("[::]:80", None),
        ("[nothost]:80", None),
        ("::1:80", None),
        ("bad host:80", None),
        ("-bad:80", None),
        ("a:b:80", None),
    ],
)
def test_parse_addr(addr: str, parsed: tuple[str, int] | None) -> None:
    assert parse_addr(addr) == parsed


def test_addresses_are_learned_once_and_own_ones_never() -> None:
    book = PeerBook()
    book.add_own_address("127.0.0.1:1000")
    assert book.add_address("127.0.0.1:1001", SOURCE_BOOTSTRAP)
    assert not book.add_address("127.0.0.1:1001", SOURCE_PEX)
    assert not book.add_address("127.0.0.1:1000", SOURCE_PEX)
    assert not book.add_address("nonsense", SOURCE_PEX)
    assert book.known_addresses() == ["127.0.0.1:1001"]
    assert book.addresses_to_dial(0.0) == ["127.0.0.1:1001"]


def test_backoff_grows_exponentially_from_half_a_second_to_a_minute() -> None:
    book = PeerBook()
    delays = [book.compute_backoff("127.0.0.1:9", n) for n in range(1, 12)]
    bases = [min(60.0, 0.5 * 2 ** (n - 1)) for n in range(1, 12)]
    for delay, base in zip(delays, bases, strict=True):
        assert base <= delay <= min(60.0, base * 1.5)
    assert delays[-1] == 60.0
    assert book.compute_backoff("127.0.0.1:9", 0) == 0.0
    # The jitter is a hash: the same every run, different per address.
    assert delays == [PeerBook().compute_backoff("127.0.0.1:9", n) for n in range(1, 12)]
    assert delays[:5] != [book.compute_backoff("127.0.0.1:10", n) for n in range(1, 6)]
    assert delays[:5] != [PeerBook(jitter_seed=b"x").compute_backoff("127.0.0.1:9", n) for n in range(1, 6)]


def test_failures_delay_the_next_dial_and_success_clears_them() -> None:
    book = PeerBook()
    addr = "127.0.0.1:2000"
    book.add_address(addr, SOURCE_BOOTSTRAP)
    delay = book.record_failure(addr, 10.0)
    assert 0.5 <= delay < 0.75
    assert book.addresses_to_dial(10.0 + delay - 0.01) == []
    assert book.addresses_to_dial(10.0 + delay) == [addr]
    second = book.record_failure(addr, 20.0)
    assert 1.0 <= second < 1.5
    book.record_success(addr, 21.0, KEY_A)
    info = book.get_address(addr)
    assert info is not None and info.failures == 0 and info.verified and info.node_key == KEY_A
    assert book.addresses_to_dial(21.0) == [addr]


def test_dial_order_and_exclusions() -> None:
    book = PeerBook()
    for port, source in ((3001, SOURCE_PEX), (3002, SOURCE_BOOTSTRAP), (3003, SOURCE_PEX)):
        book.add_address(f"127.0.0.1:{port}", source)
    book.record_failure("127.0.0.1:3001", 0.0)
    book.record_verified("127.0.0.1:3003", KEY_B)
    assert book.addresses_to_dial(100.0) == ["127.0.0.1:3002", "127.0.0.1:3003", "127.0.0.1:3001"]
    assert book.addresses_to_dial(100.0, limit=1) == ["127.0.0.1:3002"]
    assert book.addresses_to_dial(100.0, exclude_addrs={"127.0.0.1:3002"}, exclude_keys={bytes(KEY_B)}) == [
        "127.0.0.1:3001"
    ]


def test_unverified_addresses_that_keep_failing_are_forgotten() -> None:
    book = PeerBook()
    book.add_address("127.0.0.1:4001", SOURCE_PEX)
    book.add_address("127.0.0.1:4002", SOURCE_BOOTSTRAP)
    for i in range(MAX_UNVERIFIED_FAILURES):
        book.record_failure("127.0.0.1:4001", float(i))
        book.record_failure("127.0.0.1:4002", float(i))
    assert book.known_addresses() == ["127.0.0.1:4002"]


def test_a_full_book_evicts_learned_addresses_not_bootstrap_or_verified_ones() -> None:
    book = PeerBook(max_addresses=3)
    book.add_address("127.0.0.1:5001", SOURCE_BOOTSTRAP)
    book.add_address("127.0.0.1:5002", SOURCE_PEX)
    book.record_verified("127.0.0.1:5002", KEY_A)
    book.add_address("127.0.0.1:5003", SOURCE_PEX)
    book.record_failure("127.0.0.1:5003", 0.0)
    assert book.add_address("127.0.0.1:5004", SOURCE_HANDSHAKE)
    assert book.known_addresses() == ["127.0.0.1:5001", "127.0.0.1:5002", "127.0.0.1:5004"]
    book.record_verified("127.0.0.1:5004", KEY_B)
    assert not book.add_address("127.0.0.1:5005", SOURCE_PEX)


def test_shareable_addresses_are_the_verified_ones() -> None:
    book = PeerBook()
    book.add_address("127.0.0.1:6001", SOURCE_PEX)
    book.add_address("127.0.0.1:6002", SOURCE_PEX)
    book.record_verified("127.0.0.1:6002", KEY_A)
    assert book.shareable_addresses(0.0, 10) == ["127.0.0.1:6002"]
    book.ban(0.0, node_key=KEY_A)
    assert book.shareable_addresses(0.0, 10) == []


def test_score_drops_by_severity_and_a_ban_follows() -> None:
    book = PeerBook(ban_threshold=-100, ban_duration=600, score_recovery=0.0)
    assert book.get_score(KEY_A, 0.0) == 0.0
    for i in range(4):
        assert book.penalize(KEY_A, 20, float(i)) is False
    assert book.get_score(KEY_A, 4.0) == -80.0
    assert not book.is_banned(4.0, node_key=KEY_A)
    assert book.penalize(KEY_A, 20, 5.0, addr="127.0.0.1:7001") is True
    assert book.is_banned(5.0, node_key=KEY_A)
    assert book.is_banned(5.0, addr="127.0.0.1:7001")
    assert book.banned_until(KEY_A, 5.0) == 605.0
    assert not book.is_banned(5.0, node_key=KEY_B)
    # The ban runs out and the peer starts over with a clean score.
    assert not book.is_banned(605.0, node_key=KEY_A)
    assert not book.is_banned(605.0, addr="127.0.0.1:7001")
    assert book.get_score(KEY_A, 605.0) == 0.0


def test_a_fatal_violation_bans_at_once() -> None:
    book = PeerBook()
    assert book.penalize(KEY_A, 100, 0.0) is True


def test_a_ban_by_key_covers_the_addresses_verified_for_it() -> None:
    book = PeerBook()
    book.add_address("127.0.0.1:8001", SOURCE_PEX)
    book.record_verified("127.0.0.1:8001", KEY_A)
    book.add_address("127.0.0.1:8002", SOURCE_PEX)
    book.penalize(KEY_A, 1000, 0.0)
    assert book.is_banned(1.0, addr="127.0.0.1:8001")
    assert book.addresses_to_dial(1.0) == ["127.0.0.1:8002"]
    assert book.addresses_to_dial(601.0) == ["127.0.0.1:8001", "127.0.0.1:8002"]


def test_scores_recover_with_time() -> None:
    book = PeerBook(score_recovery=1.0)
    book.penalize(KEY_A, 50, 0.0)
    assert book.get_score(KEY_A, 20.0) == -30.0
    assert book.get_score(KEY_A, 100.0) == 0.0
    assert book.get_score(KEY_A, 50.0) == 0.0  # a clock stepping back changes nothing


def test_bad_backoff_parameters() -> None:
    with pytest.raises(ValueError):
        PeerBook(backoff_min=2.0, backoff_max=1.0)
