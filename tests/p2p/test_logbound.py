"""The log bound: per-key and global token buckets, short escaped lines, no tracebacks, a suppressed count."""

from __future__ import annotations

import logging

from p2p.logbound import EXCERPT, LogBound, excerpt, peer_extra


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(msg: str, *args: object, peer: str | None = None, level: int = logging.ERROR, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("bad bytes \x00\xff" + "x" * 500)
        except ValueError as e:
            exc_info = (type(e), e, e.__traceback__)
    r = logging.LogRecord("test.bound", level, __file__, 1, msg, args, exc_info)
    if peer is not None:
        r.peer = peer
    return r


def test_a_key_gets_its_burst_then_its_rate() -> None:
    clock = Clock()
    bound = LogBound(rate=1.0, burst=3, global_rate=100.0, global_burst=100, clock=clock)
    passed = [bound.filter(record("junk from %s", "a", peer="1.2.3.4")) for _ in range(10)]
    assert passed == [True] * 3 + [False] * 7
    assert bound.filter(record("junk from %s", "b", peer="5.6.7.8"))  # another peer has its own bucket
    clock.now = 2.0
    later = record("junk from %s", "a", peer="1.2.3.4")
    assert bound.filter(later) and bound.filter(record("junk from %s", "a", peer="1.2.3.4"))
    assert not bound.filter(record("junk from %s", "a", peer="1.2.3.4"))
    assert "(7 similar messages suppressed)" in later.getMessage()


def test_the_global_bucket_bounds_many_keys_together() -> None:
    clock = Clock()
    bound = LogBound(rate=1.0, burst=5, global_rate=1.0, global_burst=10, clock=clock)
    passed = sum(bound.filter(record("junk", peer=f"10.0.{i // 256}.{i % 256}")) for i in range(1000))
    assert passed == 10
    clock.now = 5.0
    passed = sum(bound.filter(record("junk", peer=f"10.1.{i // 256}.{i % 256}")) for i in range(1000))
    assert passed == 5  # the steady global rate, whatever the number of peers
    assert bound.suppressed_total == 1985


def test_a_passed_record_is_one_short_escaped_warning_line_without_traceback() -> None:
    bound = LogBound(max_line=200)
    r = record("bad request %r", "\x00\x01\n" + "A" * 10_000, exc=True)
    assert bound.filter(r)
    message = r.getMessage()
    assert len(message) <= 200 + 40
    assert "\n" not in message and "\x00" not in message and message.isascii()
    assert r.exc_info is None and r.exc_text is None and r.stack_info is None
    assert r.levelno == logging.WARNING and r.levelname == "WARNING"
    formatted = logging.Formatter("%(levelname)s %(message)s").format(r)
    assert "Traceback" not in formatted and "\n" not in formatted


def test_the_exception_type_and_an_excerpt_of_its_text_survive() -> None:
    bound = LogBound(max_line=400)
    r = record("Error handling request", exc=True)
    assert bound.filter(r)
    assert "ValueError: bad bytes \\x00\\xff" in r.getMessage()


def test_tagged_only_leaves_our_own_untagged_records_whole() -> None:
    bound = LogBound(rate=0.0, burst=1, tagged_only=True)
    untagged = record("task crashed", exc=True)
    assert all(bound.filter(record("task crashed")) for _ in range(20))
    assert bound.filter(untagged) and untagged.exc_info is not None and untagged.levelno == logging.ERROR
    assert bound.filter(record("peer said %s", "x", peer="1.1.1.1"))
    assert not bound.filter(record("peer said %s", "x", peer="1.1.1.1"))


def test_excerpt_and_peer_extra() -> None:
    assert excerpt("plain") == "plain"
    cut = excerpt("\x00" * 100)
    assert len(cut) == EXCERPT and cut.endswith("...") and cut.startswith("\\x00")
    assert excerpt(b"\xff\x00") == "b'\\xff\\x00'"
    assert excerpt("é\n") == "\\xe9\\n"
    assert peer_extra("127.0.0.2:4000") == {"peer": "127.0.0.2"}
    assert peer_extra("[::1]:4000") == {"peer": "::1"}
    assert peer_extra("?") == {"peer": "?"}
