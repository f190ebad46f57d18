"""CI share of the session fuzzing, pinned handshake attacks, and bans for peers that keep sending garbage.

A session never raises on a frame: before the handshake it answers bad input
with a ``Violation`` and closes; after it, it keeps answering each bad frame
with a ``Violation`` whose severity the network charges to the peer's score
(``P2PNetwork`` passes ``event.severity`` to ``PeerBook.penalize``
unchanged), so a peer that keeps doing it is banned.
"""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus.types import PublicKey
from p2p.peers import PeerBook
from p2p.session import (
    SEVERITY_FATAL,
    SEVERITY_MAJOR,
    SEVERITY_MINOR,
    Closed,
    Message,
    RateLimit,
    Send,
    Session,
    Violation,
)
from p2p.settings import NetworkConfig

from . import target_session as ts
from .mutate import mutate
from .run import run_session

SEED = int(os.environ.get("TDML_FUZZ_SEED", "20240611"))
CI_INPUTS = int(os.environ.get("TDML_FUZZ_CI_INPUTS", "20000"))
CORPUS = ts.build_corpus(SEED)
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_seeded_mutation_share_finds_no_failure() -> None:
    result = run_session(SEED, 0, CI_INPUTS)
    assert result.failure_count == 0, "\n\n".join(f.describe() for f in result.failures)
    seen = set(result.outcomes)
    # Every state was reached, with each kind of answer it can give.
    assert {
        "fresh:Closed+Send+Violation/20",
        "await-auth:Closed+Send+Violation/100",
        "await-auth:Established",
        "established:Violation/20",
        "established:Message",
        "established:Closed",
    } <= seen


def _established() -> Session:
    session = ts.new_session()
    session.receive(CORPUS.valid_hello, 0.0)
    session.receive(CORPUS.valid_auth, 0.0)
    assert session.is_established
    return session


@pytest.mark.parametrize(
    ("frame_index", "what"),
    [
        (6, "an Auth signed for another chain id"),
        (7, "an Auth over the wrong challenge"),
        (8, "an Auth under another signing domain"),
        (9, "an Auth signed by another key"),
        (10, "an all-zero signature"),
        (11, "a random signature"),
    ],
)
def test_an_invalid_handshake_signature_is_fatal_and_closes(frame_index: int, what: str) -> None:
    session = ts.new_session()
    session.receive(CORPUS.valid_hello, 0.0)
    events = session.receive(CORPUS.handshake[frame_index], 0.0)
    assert [type(e) for e in events] == [Violation, Send, Closed], what
    assert isinstance(events[0], Violation) and events[0].severity == SEVERITY_FATAL
    assert session.is_closed


@pytest.mark.parametrize(("frame_index", "reason"), [(2, "chain id"), (3, "genesis"), (4, "protocol version"), (5, "self")])
def test_a_hello_we_cannot_follow_is_refused_with_a_goodbye_not_a_penalty(frame_index: int, reason: str) -> None:
    session = ts.new_session()
    events = session.receive(CORPUS.handshake[frame_index], 0.0)
    assert [type(e) for e in events] == [Send, Closed]
    assert isinstance(events[1], Closed) and reason in events[1].reason


def _bad_frames(n: int, seed: int) -> list[bytes]:
    """Frames that an established session refuses (mutations that no longer decode)."""
    rng = random.Random(seed)
    out: list[bytes] = []
    session = _established()
    while len(out) < n:
        frame, _ = mutate(rng.choice(CORPUS.after), rng, CORPUS.everything)
        events = session.receive(frame, float(len(out)))
        if len(events) == 1 and isinstance(events[0], Violation):
            out.append(frame)
    return out


def _book() -> PeerBook:
    """A peer book set up the way ``P2PNetwork`` sets up its own."""
    cfg = NetworkConfig()
    return PeerBook(
        ban_threshold=cfg.ban_threshold,
        ban_duration=cfg.ban_duration,
        backoff_min=cfg.backoff_min,
        backoff_max=cfg.backoff_max,
    )


def _feed(session: Session, book: PeerBook, key: PublicKey, frames: list[bytes], times: list[float]) -> int:
    """Deliver frames, charge violations as the network does; returns frames sent until the ban."""
    for i, (frame, now) in enumerate(zip(frames, times, strict=True)):
        for event in session.receive(frame, now):
            if isinstance(event, Violation) and book.penalize(key, event.severity, now):
                return i + 1
        assert session.is_established, "bad frames after the handshake must not end the session by themselves"
    return 0


def test_a_peer_that_keeps_sending_bad_frames_is_banned() -> None:
    session, book, key = _established(), _book(), ts.peer_key().public_key
    frames = _bad_frames(20, SEED)
    # A burst of malformed frames: each is a major violation, and the fifth bans.
    sent = _feed(session, book, key, frames, [100.0] * len(frames))
    assert sent == -int(NetworkConfig().ban_threshold) // SEVERITY_MAJOR
    assert book.is_banned(101.0, node_key=key)
    assert book.banned_until(key, 101.0) == pytest.approx(100.0 + NetworkConfig().ban_duration)
    # Spread over a few seconds it takes one more (the score creeps back meanwhile).
    session, book2 = _established(), _book()
    assert _feed(session, book2, key, frames, [100.0 + 0.5 * i for i in range(len(frames))]) == sent + 1
    # The ban runs out, and the peer starts again from a clean score.
    later = 100.0 + NetworkConfig().ban_duration
    assert not book.is_banned(later, node_key=key) and book.get_score(key, later) == 0.0


def test_good_frames_between_bad_ones_do_not_save_a_persistent_offender() -> None:
    session, book, key = _established(), _book(), ts.peer_key().public_key
    bad = _bad_frames(10, SEED + 1)
    good = [f for f in CORPUS.after if ts._is_goodbye(f) is False][:10]
    frames = [f for pair in zip(good, bad, strict=True) for f in pair]
    events_seen: list[type] = []
    for i, frame in enumerate(frames):
        for event in session.receive(frame, 10.0 + i):
            events_seen.append(type(event))
            if isinstance(event, Violation):
                book.penalize(key, event.severity, 10.0 + i)
    assert Message in events_seen and Violation in events_seen
    assert book.is_banned(30.0, node_key=key)


def test_an_occasional_bad_frame_is_forgiven() -> None:
    """Scores recover with time: one malformed frame every five minutes never adds up to a ban."""
    session, book, key = _established(), _book(), ts.peer_key().public_key
    frames = _bad_frames(20, SEED + 2)
    assert _feed(session, book, key, frames, [300.0 * i for i in range(len(frames))]) == 0
    assert not book.is_banned(300.0 * 20, node_key=key)


def test_a_flooding_peer_gets_minor_violations_that_ban_in_the_end() -> None:
    limit = RateLimit(messages_per_s=1.0, message_burst=5.0)
    session = Session(
        ts.our_key(), ts.CHAIN_ID, ts.GENESIS, ts.VERSION, "127.0.0.1:1", 0, now=0.0, challenge=ts.OUR_CHALLENGE, rate_limit=limit
    )
    session.start()
    session.receive(CORPUS.valid_hello, 0.0)
    session.receive(CORPUS.valid_auth, 0.0)
    book, key = _book(), ts.peer_key().public_key
    status = CORPUS.after[2]
    severities: list[int] = []
    banned_after = 0
    for i in range(200):
        for event in session.receive(status, 1.0):  # all at the same instant
            if isinstance(event, Violation):
                severities.append(event.severity)
                if book.penalize(key, event.severity, 1.0):
                    banned_after = i + 1
        if banned_after:
            break
    assert set(severities) == {SEVERITY_MINOR}
    assert banned_after == 4 + -int(NetworkConfig().ban_threshold) // SEVERITY_MINOR  # the burst, then twenty minors


@PROPERTY
@given(seed=st.integers(0, 2**32), mode=st.sampled_from(ts.MODES), rounds=st.integers(1, 4))
def test_property_any_mutated_frame_gives_only_allowed_events(seed: int, mode: str, rounds: int) -> None:
    rng = random.Random(seed)
    base = rng.choice(CORPUS.everything)
    frame, names = mutate(base, rng, CORPUS.everything, rounds=rounds)
    ts.check(CORPUS, ts.SessionInput(mode, frame, "+".join(names)), reuse=False)


@PROPERTY
@given(frames=st.lists(st.binary(max_size=200), min_size=1, max_size=10))
def test_property_an_established_session_survives_any_bytes(frames: list[bytes]) -> None:
    session = _established()
    for i, frame in enumerate(frames):
        events = session.receive(frame, 1.0 + i)
        assert all(isinstance(e, Violation | Message | Closed) for e in events)
        assert session.is_established or any(isinstance(e, Closed) and e.by_peer for e in events)
