"""One peer connection as a sans-I/O state machine: frames in, events out.

A ``Session`` runs the handshake and then turns each received frame into
events for the network layer, in the manner of h11: it never touches a
socket, a clock or a random source. The caller passes the current time with
every frame, the challenge bytes at construction, and carries out the events
(``Send`` a frame, note a peer as ``Established``, deliver a ``Message``,
penalise a ``Violation``, drop a ``Closed`` connection).

The handshake: both sides send ``Hello`` at once. On the peer's Hello a side
compares protocol version, chain id and genesis hash and refuses itself as a
peer; a mismatch is answered with a ``Goodbye`` saying what differs, and the
session closes. Otherwise it answers with ``Auth``: its signature, under
``DOMAIN_HANDSHAKE``, over a ``HandshakeProof`` of the peer's challenge, its
own key, the chain id and the genesis hash. On the peer's Auth it checks that
signature against the key the peer's Hello named; then the session is
established. Only then are other messages delivered.

Two kinds of trouble are kept apart (STYLE point 8). Something bad from the
peer is a ``Violation`` event with a severity, never an exception; before the
handshake it also closes the session, after it the offending frame is dropped
and the network decides from the peer's score whether to carry on. Misuse by
the caller (receiving before ``start``, sending before the handshake) raises
``SessionError``, because that is our bug.

This module must never do I/O, read a clock, draw randomness or keep peer
scores: time and challenges come in as arguments, scoring is ``peers``'s.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from consensus.crypto import DOMAIN_HANDSHAKE, Keypair, verify_value
from consensus.types import Hash32, Height, PublicKey
from p2p.messages import (
    CHALLENGE_LEN,
    HANDSHAKE_LIMIT,
    MAX_FRAME,
    MAX_REASON_LEN,
    Auth,
    Challenge,
    FrameError,
    Goodbye,
    HandshakeProof,
    Hello,
    WireMessage,
    decode_frame,
    encode_frame,
)

# How much a violation costs the peer's score (see ``peers.PeerBook``, whose
# default ban threshold is -100): a fatal one bans at once, five major ones
# ban, a minor one (a burst over the rate limit) takes twenty to ban.
SEVERITY_MINOR = 5
SEVERITY_MAJOR = 20
SEVERITY_FATAL = 100

DEFAULT_HANDSHAKE_TIMEOUT = 10.0


class SessionError(RuntimeError):
    """The session was used wrongly by its caller (a bug on our side, not the peer's)."""


# ---------------------------------------------------------------------------
# Events


@dataclass(frozen=True, slots=True)
class Send:
    """Write this frame to the peer."""

    frame: bytes


@dataclass(frozen=True, slots=True)
class Established:
    """The handshake is done: the peer proved ``peer_key`` and follows our chain."""

    peer_key: PublicKey
    listen_addr: str
    height: int


@dataclass(frozen=True, slots=True)
class Message:
    """A message from an established peer, for the network layer to handle."""

    msg: WireMessage


@dataclass(frozen=True, slots=True)
class Violation:
    """The peer broke the protocol; ``severity`` is what it costs the peer's score."""

    reason: str
    severity: int


@dataclass(frozen=True, slots=True)
class Closed:
    """The session is over; no more frames will be read or may be sent."""

    reason: str
    by_peer: bool


SessionEvent = Send | Established | Message | Violation | Closed


# ---------------------------------------------------------------------------
# Rate limiting


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Per-peer limits on received traffic: two token buckets, refilled continuously."""

    messages_per_s: float = 500.0
    message_burst: float = 2000.0
    bytes_per_s: float = 32.0 * 1024 * 1024
    # At least two of the largest frames, so a peer answering a block-range
    # request at full size is never over the limit by itself.
    byte_burst: float = 2.0 * MAX_FRAME


class TokenBucket:
    """Tokens refill at ``rate`` per second up to ``burst``; time is passed in."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.last = now

    def refill(self, now: float) -> None:
        # A clock that steps back must not mint tokens, so only forward time counts.
        if now > self.last:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now

    def has(self, amount: float) -> bool:
        return self.tokens >= amount

    def take(self, amount: float) -> None:
        self.tokens -= amount


# ---------------------------------------------------------------------------
# The session


class SessionState(enum.Enum):
    NEW = "new"
    AWAIT_HELLO = "await-hello"
    AWAIT_AUTH = "await-auth"
    ESTABLISHED = "established"
    CLOSED = "closed"


def compute_handshake_proof(
    peer_challenge: bytes, node_key: PublicKey, chain_id: str, genesis_hash: Hash32
) -> HandshakeProof:
    return HandshakeProof(Challenge(peer_challenge), node_key, chain_id, genesis_hash)


def _clip(reason: str) -> str:
    return reason if len(reason) <= MAX_REASON_LEN else reason[: MAX_REASON_LEN - 3] + "..."


class Session:
    """The handshake and message filter of one connection, driven by ``receive``."""

    def __init__(
        self,
        identity: Keypair,
        chain_id: str,
        genesis_hash: Hash32,
        protocol_version: int,
        listen_addr: str,
        height: int | Callable[[], int],
        *,
        now: float,
        challenge: bytes,
        rate_limit: RateLimit | None = None,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    ) -> None:
        if len(challenge) != CHALLENGE_LEN:
            raise SessionError(f"the challenge must be {CHALLENGE_LEN} random bytes, got {len(challenge)}")
        self.identity = identity
        self.chain_id = chain_id
        self.genesis_hash = genesis_hash
        self.protocol_version = protocol_version
        self.listen_addr = listen_addr
        self._height = height
        self.challenge = Challenge(bytes(challenge))
        limits = rate_limit or RateLimit()
        self._messages = TokenBucket(limits.messages_per_s, limits.message_burst, now)
        self._bytes = TokenBucket(limits.bytes_per_s, limits.byte_burst, now)
        self.handshake_deadline = now + handshake_timeout
        self.state = SessionState.NEW
        self.peer_hello: Hello | None = None
        self.close_reason: str | None = None

    # ------------------------------------------------------------- queries

    @property
    def is_established(self) -> bool:
        return self.state is SessionState.ESTABLISHED

    @property
    def is_closed(self) -> bool:
        return self.state is SessionState.CLOSED

    @property
    def peer_key(self) -> PublicKey | None:
        return self.peer_hello.node_key if self.peer_hello is not None else None

    def get_height(self) -> int:
        return self._height() if callable(self._height) else self._height

    # ------------------------------------------------------------- outputs

    def start(self) -> list[bytes]:
        """The frames that open the connection (our Hello); call once, before ``receive``."""
        if self.state is not SessionState.NEW:
            raise SessionError(f"start() called in state {self.state.value}")
        self.state = SessionState.AWAIT_HELLO
        hello = Hello(
            protocol_version=self.protocol_version,
            chain_id=self.chain_id,
            genesis_hash=self.genesis_hash,
            node_key=self.identity.public_key,
            listen_addr=self.listen_addr,
            challenge=self.challenge,
            height=Height(self.get_height()),
        )
        return [encode_frame(hello)]

    def send(self, msg: WireMessage) -> bytes:
        """The frame for a message to the established peer."""
        if self.state is not SessionState.ESTABLISHED:
            raise SessionError(f"cannot send {type(msg).__name__} in state {self.state.value}")
        if isinstance(msg, Hello | Auth | Goodbye):
            raise SessionError(f"{type(msg).__name__} belongs to the session; use close() to say goodbye")
        return encode_frame(msg)

    def close(self, reason: str) -> list[bytes]:
        """Close from our side: the Goodbye frame to send (nothing if already closed)."""
        if self.state is SessionState.CLOSED:
            return []
        was_new = self.state is SessionState.NEW
        self._set_closed(reason)
        # A session that never sent its Hello has no peer to say goodbye to.
        return [] if was_new else [encode_frame(Goodbye(_clip(reason)))]

    # ------------------------------------------------------------- inputs

    def receive(self, frame: bytes, now: float) -> list[SessionEvent]:
        """Handle one frame from the peer."""
        if self.state is SessionState.NEW:
            raise SessionError("receive() before start()")
        if self.state is SessionState.CLOSED:
            return []
        over = self._check_rate(len(frame), now)
        if over is not None:
            return self._violation(over, SEVERITY_MINOR)
        # Until the peer has proved its key it may only send handshake
        # messages, so a larger frame is refused before any decoding work.
        bound = MAX_FRAME if self.is_established else HANDSHAKE_LIMIT
        try:
            msg = decode_frame(frame, max_size=bound)
        except FrameError as exc:
            return self._violation(str(exc), SEVERITY_MAJOR)
        return self._on_message(msg)

    def on_tick(self, now: float) -> list[SessionEvent]:
        """Let time pass: a handshake not done by its deadline closes the session."""
        if self.state in (SessionState.AWAIT_HELLO, SessionState.AWAIT_AUTH) and now >= self.handshake_deadline:
            return self._close_events("handshake timed out")
        return []

    def on_connection_lost(self, reason: str = "connection lost") -> list[SessionEvent]:
        """The transport ended without a Goodbye."""
        if self.state is SessionState.CLOSED:
            return []
        self._set_closed(reason)
        return [Closed(reason, by_peer=True)]

    # ------------------------------------------------------------- internals

    def _on_message(self, msg: WireMessage) -> list[SessionEvent]:
        if isinstance(msg, Goodbye):
            self._set_closed(msg.reason)
            return [Closed(msg.reason, by_peer=True)]
        if isinstance(msg, Hello):
            if self.state is not SessionState.AWAIT_HELLO:
                return self._violation("a second Hello", SEVERITY_MAJOR)
            return self._on_hello(msg)
        if isinstance(msg, Auth):
            if self.state is not SessionState.AWAIT_AUTH:
                return self._violation(f"unexpected Auth in state {self.state.value}", SEVERITY_MAJOR)
            return self._on_auth(msg)
        if self.state is not SessionState.ESTABLISHED:
            return self._violation(f"{type(msg).__name__} before the handshake completed", SEVERITY_MAJOR)
        return [Message(msg)]

    def _on_hello(self, hello: Hello) -> list[SessionEvent]:
        refusal = self._refusal(hello)
        if refusal is not None:
            return self._close_events(refusal)
        self.peer_hello = hello
        self.state = SessionState.AWAIT_AUTH
        proof = compute_handshake_proof(hello.challenge, self.identity.public_key, self.chain_id, self.genesis_hash)
        auth = Auth(self.identity.sign_value(DOMAIN_HANDSHAKE, self.chain_id, proof))
        return [Send(encode_frame(auth))]

    def _refusal(self, hello: Hello) -> str | None:
        """Why we will not talk to the sender of ``hello`` (None when we will)."""
        if hello.protocol_version != self.protocol_version:
            return f"protocol version mismatch: ours {self.protocol_version}, yours {hello.protocol_version}"
        if hello.chain_id != self.chain_id:
            return f"chain id mismatch: ours {self.chain_id!r}, yours {hello.chain_id!r}"
        if hello.genesis_hash != self.genesis_hash:
            return f"genesis hash mismatch: ours {self.genesis_hash.hex()}, yours {hello.genesis_hash.hex()}"
        if hello.node_key == self.identity.public_key:
            return "connected to self"
        return None

    def _on_auth(self, auth: Auth) -> list[SessionEvent]:
        hello = self.peer_hello
        assert hello is not None, "AWAIT_AUTH is entered only after a Hello"
        proof = compute_handshake_proof(self.challenge, hello.node_key, self.chain_id, self.genesis_hash)
        if not verify_value(hello.node_key, DOMAIN_HANDSHAKE, self.chain_id, proof, auth.signature):
            return self._violation("bad handshake signature", SEVERITY_FATAL)
        self.state = SessionState.ESTABLISHED
        return [Established(hello.node_key, hello.listen_addr, hello.height)]

    def _check_rate(self, size: int, now: float) -> str | None:
        self._messages.refill(now)
        self._bytes.refill(now)
        if not self._messages.has(1):
            return f"rate limit: over {self._messages.rate:g} messages per second"
        if not self._bytes.has(size):
            return f"rate limit: over {self._bytes.rate:g} bytes per second"
        self._messages.take(1)
        self._bytes.take(size)
        return None

    def _violation(self, reason: str, severity: int) -> list[SessionEvent]:
        """A violation; before the handshake it also ends the session."""
        events: list[SessionEvent] = [Violation(reason, severity)]
        if not self.is_established:
            events += self._close_events(f"protocol violation: {reason}")
        return events

    def _close_events(self, reason: str) -> list[SessionEvent]:
        frames = self.close(reason)
        return [*(Send(f) for f in frames), Closed(reason, by_peer=False)]

    def _set_closed(self, reason: str) -> None:
        self.state = SessionState.CLOSED
        self.close_reason = reason
