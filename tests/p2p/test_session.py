"""The sans-I/O session: handshake, refusals, violations and rate limits, all in memory.

Two ``Session`` objects exchange frames through ``Wire``; no socket, loop or
clock is involved, so every case is exact and instant.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from p2p_fixtures import (
    CHAIN_ID,
    GENESIS,
    Wire,
    challenge,
    established_wire,
    keypair,
    make_session,
    property_settings,
    signed_vote,
)

from consensus.crypto import DOMAIN_HANDSHAKE, DOMAIN_VOTE
from consensus.types import Hash32, Height, Signature
from p2p.messages import (
    HANDSHAKE_LIMIT,
    Auth,
    Challenge,
    Goodbye,
    Gossip,
    HandshakeProof,
    Hello,
    NotFound,
    PeersRequest,
    RequestId,
    Status,
    decode_frame,
    encode_frame,
)
from p2p.session import (
    SEVERITY_FATAL,
    SEVERITY_MAJOR,
    SEVERITY_MINOR,
    Closed,
    Established,
    Message,
    RateLimit,
    Send,
    Session,
    SessionError,
    SessionEvent,
    SessionState,
    Violation,
)

OTHER_GENESIS = Hash32(hashlib.sha256(b"another genesis").digest())


def kinds(events: list[SessionEvent]) -> list[str]:
    return [type(e).__name__ for e in events]


def sent(events: list[SessionEvent]) -> list[Any]:
    return [decode_frame(e.frame) for e in events if isinstance(e, Send)]


def closed(events: list[SessionEvent]) -> Closed:
    found = [e for e in events if isinstance(e, Closed)]
    assert len(found) == 1, events
    return found[0]


# ---------------------------------------------------------------------------
# Handshake


def test_handshake_happy_path() -> None:
    wire = Wire(make_session(1, height=5), make_session(2, height=lambda: 9))
    hello_a = wire.a.start()
    assert wire.a.state is SessionState.AWAIT_HELLO
    assert isinstance(decode_frame(hello_a[0]), Hello)
    wire.deliver(wire.b.start(), hello_a)

    assert wire.events_a == [
        Send(wire.events_a[0].frame),  # type: ignore[union-attr]
        Established(keypair(2).public_key, "127.0.0.1:20002", 9),
    ]
    assert wire.events_b == [
        Send(wire.events_b[0].frame),  # type: ignore[union-attr]
        Established(keypair(1).public_key, "127.0.0.1:20001", 5),
    ]
    assert isinstance(decode_frame(wire.events_a[0].frame), Auth)  # type: ignore[union-attr]
    assert wire.a.peer_key == keypair(2).public_key and wire.b.peer_key == keypair(1).public_key


def test_auth_signs_the_peers_challenge_under_the_handshake_domain() -> None:
    a = make_session(1)
    a.start()
    b = make_session(2)
    hello_b = b.start()[0]
    events = a.receive(hello_b, 0.0)
    auth = decode_frame(events[0].frame)  # type: ignore[union-attr]
    assert isinstance(auth, Auth)
    proof = HandshakeProof(Challenge(challenge(2)), keypair(1).public_key, CHAIN_ID, GENESIS)
    assert auth.signature == keypair(1).sign_value(DOMAIN_HANDSHAKE, CHAIN_ID, proof)


def test_established_sessions_deliver_messages_both_ways() -> None:
    wire = established_wire()
    status = Status(Height(3), GENESIS)
    assert wire.b.receive(wire.a.send(status), 1.0) == [Message(status)]
    gossip = Gossip(signed_vote(4))
    assert wire.a.receive(wire.b.send(gossip), 1.0) == [Message(gossip)]


@pytest.mark.parametrize(
    ("b_kwargs", "reason_a", "reason_b"),
    [
        (
            {"chain_id": "other-chain"},
            f"chain id mismatch: ours {CHAIN_ID!r}, yours 'other-chain'",
            f"chain id mismatch: ours 'other-chain', yours {CHAIN_ID!r}",
        ),
        (
            {"genesis": OTHER_GENESIS},
            f"genesis hash mismatch: ours {GENESIS.hex()}, yours {OTHER_GENESIS.hex()}",
            f"genesis hash mismatch: ours {OTHER_GENESIS.hex()}, yours {GENESIS.hex()}",
        ),
        (
            {"version": 2},
            "protocol version mismatch: ours 1, yours 2",
            "protocol version mismatch: ours 2, yours 1",
        ),
    ],
    ids=["chain-id", "genesis", "version"],
)
def test_mismatch_is_refused_with_a_clear_reason_on_both_sides(
    b_kwargs: dict[str, Any], reason_a: str, reason_b: str
) -> None:
    wire = Wire(make_session(1), make_session(2, **b_kwargs))
    wire.open()
    for session, events, reason in ((wire.a, wire.events_a, reason_a), (wire.b, wire.events_b, reason_b)):
        assert kinds(events) == ["Send", "Closed"]
        assert sent(events) == [Goodbye(reason)]
        assert closed(events) == Closed(reason, by_peer=False)
        assert session.is_closed and session.close_reason == reason
    assert not any(isinstance(e, Violation) for e in wire.events_a + wire.events_b)


def test_a_goodbye_reaching_a_peer_first_closes_it_with_that_reason() -> None:
    a, b = make_session(1), make_session(2, chain_id="other-chain")
    a.start()
    hello_b = b.start()[0]
    goodbye = a.receive(hello_b, 0.0)[0]
    assert isinstance(goodbye, Send)
    events = b.receive(goodbye.frame, 0.0)
    assert events == [Closed(f"chain id mismatch: ours {CHAIN_ID!r}, yours 'other-chain'", by_peer=True)]
    assert b.receive(encode_frame(Status(Height(1), GENESIS)), 0.0) == []


def test_a_node_refuses_itself() -> None:
    wire = Wire(make_session(1), make_session(2, key_index=1))
    wire.open()
    for events in (wire.events_a, wire.events_b):
        assert closed(events) == Closed("connected to self", by_peer=False)
        assert sent(events) == [Goodbye("connected to self")]


def _auth_events(auth: Auth) -> list[SessionEvent]:
    """Events of session 1 after it received session 2's Hello and then ``auth``."""
    a, b = make_session(1), make_session(2)
    a.start()
    a.receive(b.start()[0], 0.0)
    return a.receive(encode_frame(auth), 0.0)


def test_bad_auth_signature_is_a_fatal_violation() -> None:
    good_proof = HandshakeProof(Challenge(challenge(1)), keypair(2).public_key, CHAIN_ID, GENESIS)
    wrong = [
        Auth(Signature(bytes(64))),
        # Signed by another key than the one the Hello named.
        Auth(keypair(3).sign_value(DOMAIN_HANDSHAKE, CHAIN_ID, good_proof)),
        # A replay from a session with another challenge.
        Auth(
            keypair(2).sign_value(
                DOMAIN_HANDSHAKE,
                CHAIN_ID,
                HandshakeProof(Challenge(challenge(9)), keypair(2).public_key, CHAIN_ID, GENESIS),
            )
        ),
        # The right bytes under another signing domain.
        Auth(keypair(2).sign_value(DOMAIN_VOTE, CHAIN_ID, good_proof)),
    ]
    for auth in wrong:
        events = _auth_events(auth)
        assert events[0] == Violation("bad handshake signature", SEVERITY_FATAL)
        assert sent(events) == [Goodbye("protocol violation: bad handshake signature")]
        assert closed(events).by_peer is False
    assert kinds(_auth_events(Auth(keypair(2).sign_value(DOMAIN_HANDSHAKE, CHAIN_ID, good_proof)))) == [
        "Established"
    ]


@pytest.mark.parametrize(
    "early",
    [Status(Height(1), GENESIS), PeersRequest(), Gossip(signed_vote(1)), NotFound(RequestId(1))],
    ids=lambda m: type(m).__name__,
)
def test_messages_before_the_handshake_are_violations(early: Any) -> None:
    # Before the peer's Hello ...
    a = make_session(1)
    a.start()
    events = a.receive(encode_frame(early), 0.0)
    assert isinstance(events[0], Violation) and events[0].severity == SEVERITY_MAJOR
    assert "before the handshake completed" in events[0].reason
    assert closed(events).by_peer is False and a.is_closed
    # ... and between Hello and Auth.
    a, b = make_session(1), make_session(2)
    a.start()
    a.receive(b.start()[0], 0.0)
    events = a.receive(encode_frame(early), 0.0)
    assert kinds(events) == ["Violation", "Send", "Closed"]


def test_auth_before_hello_is_a_violation() -> None:
    a = make_session(1)
    a.start()
    events = a.receive(encode_frame(Auth(Signature(bytes(64)))), 0.0)
    assert kinds(events) == ["Violation", "Send", "Closed"]
    assert "unexpected Auth" in events[0].reason  # type: ignore[union-attr]


def test_large_frames_before_the_handshake_are_refused_undecoded() -> None:
    a = make_session(1)
    a.start()
    events = a.receive(bytes(HANDSHAKE_LIMIT + 1), 0.0)
    assert isinstance(events[0], Violation) and "over the limit of 4096" in events[0].reason
    assert a.is_closed


def test_after_the_handshake_bad_frames_are_dropped_and_the_session_goes_on() -> None:
    wire = established_wire()
    assert kinds(wire.b.receive(b"\xc1junk", 1.0)) == ["Violation"]
    hello = Hello(1, CHAIN_ID, GENESIS, keypair(1).public_key, "", Challenge(bytes(32)), Height(0))
    again = wire.b.receive(encode_frame(hello), 1.0)
    assert again == [Violation("a second Hello", SEVERITY_MAJOR)]
    assert wire.b.is_established
    status = Status(Height(1), GENESIS)
    assert wire.b.receive(encode_frame(status), 1.0) == [Message(status)]


def test_goodbye_closes_by_peer() -> None:
    wire = established_wire()
    frames = wire.a.close("shutting down")
    assert wire.a.is_closed
    assert wire.b.receive(frames[0], 1.0) == [Closed("shutting down", by_peer=True)]
    assert wire.a.close("again") == []
    assert wire.b.receive(encode_frame(Status(Height(1), GENESIS)), 1.0) == []


def test_connection_lost_and_handshake_timeout() -> None:
    wire = established_wire()
    assert wire.a.on_connection_lost() == [Closed("connection lost", by_peer=True)]
    assert wire.a.on_connection_lost() == []

    a = make_session(1, now=100.0)
    a.start()
    assert a.on_tick(105.0) == []
    events = a.on_tick(110.0)
    assert sent(events) == [Goodbye("handshake timed out")]
    assert closed(events) == Closed("handshake timed out", by_peer=False)
    assert established_wire().a.on_tick(1e9) == []


def test_misuse_by_the_caller_raises() -> None:
    a = make_session(1)
    with pytest.raises(SessionError, match="before start"):
        a.receive(b"", 0.0)
    a.start()
    with pytest.raises(SessionError, match="start"):
        a.start()
    with pytest.raises(SessionError, match="cannot send"):
        a.send(Status(Height(1), GENESIS))
    wire = established_wire()
    with pytest.raises(SessionError, match="belongs to the session"):
        wire.a.send(Goodbye("x"))
    with pytest.raises(SessionError, match="32 random bytes"):
        Session(keypair(1), CHAIN_ID, GENESIS, 1, "", 0, now=0.0, challenge=b"short")


def test_long_reasons_are_clipped_to_fit_a_goodbye() -> None:
    wire = established_wire()
    frames = wire.a.close("x" * 1000)
    goodbye = decode_frame(frames[0])
    assert isinstance(goodbye, Goodbye) and len(goodbye.reason) == 256 and goodbye.reason.endswith("...")


# ---------------------------------------------------------------------------
# Rate limits


def test_message_rate_limit_with_a_fake_clock() -> None:
    limit = RateLimit(messages_per_s=10.0, message_burst=10.0)
    wire = Wire(make_session(1, rate_limit=limit), make_session(2, rate_limit=limit))
    wire.open()  # two frames (Hello, Auth) of each side's budget are spent
    status = encode_frame(Status(Height(1), GENESIS))
    for _ in range(8):
        assert kinds(wire.b.receive(status, 0.0)) == ["Message"]
    events = wire.b.receive(status, 0.0)
    assert events == [Violation("rate limit: over 10 messages per second", SEVERITY_MINOR)]
    assert wire.b.is_established
    assert kinds(wire.b.receive(status, 0.05)) == ["Violation"]  # half a token is not enough
    assert kinds(wire.b.receive(status, 0.1)) == ["Message"]
    # A second later the bucket holds at most its burst.
    results = [kinds(wire.b.receive(status, 5.0)) for _ in range(11)]
    assert results == [["Message"]] * 10 + [["Violation"]]


def test_byte_rate_limit_with_a_fake_clock() -> None:
    limit = RateLimit(bytes_per_s=1000.0, byte_burst=2000.0)
    wire = Wire(make_session(1, rate_limit=limit), make_session(2, rate_limit=limit))
    wire.open()
    big = encode_frame(Gossip(signed_vote(1)))
    assert 100 < len(big) < 400
    count = 0
    while kinds(wire.b.receive(big, 0.0)) == ["Message"]:
        count += 1
        assert count < 100
    # The Hello and Auth took their share of the 2000-byte burst; the rest went to gossip.
    assert 2000 - 600 < count * len(big) <= 2000
    assert "bytes per second" in wire.b.receive(big, 0.0)[0].reason  # type: ignore[union-attr]
    assert kinds(wire.b.receive(big, 2.0)) == ["Message"]


def test_a_clock_that_steps_back_mints_no_tokens() -> None:
    limit = RateLimit(messages_per_s=1.0, message_burst=3.0)
    wire = Wire(make_session(1, rate_limit=limit, now=100.0), make_session(2, rate_limit=limit, now=100.0))
    wire.now = 100.0
    wire.open()
    status = encode_frame(Status(Height(1), GENESIS))
    assert kinds(wire.b.receive(status, 100.0)) == ["Message"]
    assert kinds(wire.b.receive(status, 50.0)) == ["Violation"]
    assert kinds(wire.b.receive(status, 101.0)) == ["Message"]


# ---------------------------------------------------------------------------
# Fuzzing: whatever arrives, a session only ever answers with events.

ALLOWED_BEFORE = {"Violation", "Send", "Closed", "Established"}
ALLOWED_AFTER = {"Violation", "Message", "Closed"}


def _valid_frames() -> list[bytes]:
    b = make_session(2)
    hello = b.start()[0]
    a = make_session(1)
    a.start()
    auth_for_b = a.receive(hello, 0.0)[0].frame  # type: ignore[union-attr]
    return [
        hello,
        auth_for_b,
        encode_frame(Goodbye("bye")),
        encode_frame(Status(Height(3), GENESIS)),
        encode_frame(Gossip(signed_vote(2))),
        encode_frame(PeersRequest()),
    ]


VALID_FRAMES = _valid_frames()


def _feed(session: Session, frames: list[bytes], allowed: set[str]) -> None:
    for i, frame in enumerate(frames):
        events = session.receive(frame, float(i))
        assert set(kinds(events)) <= allowed, events
        for event in events:
            if isinstance(event, Send):
                decode_frame(event.frame)  # whatever we send is itself a valid frame


def _mutations() -> st.SearchStrategy[bytes]:
    def mutate(args: tuple[bytes, int, int, str]) -> bytes:
        frame, pos, value, how = args
        pos %= max(len(frame), 1)
        if how == "truncate":
            return frame[:pos]
        if how == "flip":
            return frame[:pos] + bytes([frame[pos] ^ (value or 1)]) + frame[pos + 1 :]
        if how == "insert":
            return frame[:pos] + bytes([value]) + frame[pos:]
        return frame[:pos] + frame[pos + 1 :]

    return st.tuples(
        st.sampled_from(VALID_FRAMES),
        st.integers(0, 4096),
        st.integers(0, 255),
        st.sampled_from(["truncate", "flip", "insert", "delete"]),
    ).map(mutate)


FRAMES = st.lists(st.one_of(st.binary(max_size=300), _mutations(), st.sampled_from(VALID_FRAMES)), max_size=8)


@property_settings(300)
@given(frames=FRAMES)
def test_fuzz_fresh_session_never_raises(frames: list[bytes]) -> None:
    session = make_session(1)
    session.start()
    _feed(session, frames, ALLOWED_BEFORE | {"Message"})


@property_settings(300)
@given(frames=FRAMES)
def test_fuzz_established_session_never_raises(frames: list[bytes]) -> None:
    wire = established_wire()
    _feed(wire.a, frames, ALLOWED_AFTER)


@property_settings(200)
@given(frames=st.lists(_mutations(), min_size=1, max_size=4))
def test_fuzz_mutated_frames_before_the_handshake_only_give_violations_or_closes(frames: list[bytes]) -> None:
    session = make_session(1)
    session.start()
    for frame in frames:
        events = session.receive(frame, 0.0)
        assert set(kinds(events)) <= ALLOWED_BEFORE, events
        if any(isinstance(e, Violation) for e in events):
            assert session.is_closed


def test_vote_payload_round_trips_through_sessions() -> None:
    wire = established_wire()
    vote = signed_vote(5)
    [event] = wire.b.receive(wire.a.send(Gossip(vote)), 0.0)
    assert event == Message(Gossip(vote))
    assert vote.signature == keypair(5).sign_value(DOMAIN_VOTE, CHAIN_ID, vote.vote)
