"""Fuzz target (b): ``p2p.session.Session.receive`` before and after the handshake.

Property: ``receive`` never raises, and answers only with the events its state
allows. Before the handshake: ``Send``, ``Violation``, ``Closed`` and, only for
the one correct ``Auth``, ``Established``; a violation closes the session with
a Goodbye. After it: ``Message`` for a well-formed message (whose canonical
bytes are the frame), ``Closed`` only for a Goodbye, and otherwise a
``Violation`` with one of the network's severities that leaves the session
established, so a peer that keeps sending garbage keeps being penalised.

Inputs are mutations of valid frames of every wire message: Hellos (also of
another chain, genesis or protocol version, or with our own key), Auths
(also with a bad signature, one of another key, of another chain id, over
another challenge), and after the handshake status, peer exchange, requests,
responses and gossip with real and random payloads.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from consensus import crypto
from consensus.codec import encode
from consensus.crypto import DOMAIN_HANDSHAKE, DOMAIN_TX, DOMAIN_VOTE, Keypair
from consensus.types import (
    Address,
    Amount,
    Hash32,
    Height,
    Round,
    Signature,
    SignedTransaction,
    SignedVote,
    Transaction,
    Transfer,
    Vote,
)
from p2p.messages import (
    Auth,
    BlobChunk,
    BlobRequest,
    Blocks,
    BlocksRequest,
    BlockWithCommit,
    Challenge,
    FrameError,
    Goodbye,
    Gossip,
    Hello,
    NotFound,
    Peers,
    PeersRequest,
    RequestId,
    Status,
    WireMessage,
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
    Send,
    Session,
    SessionEvent,
    Violation,
    compute_handshake_proof,
)

from .common import FuzzFailure
from .mutate import mutate, random_msgpack
from .values import message_of

TARGET = "session"
CHAIN_ID = "tdml-fuzz"
OTHER_CHAIN = "tdml-fuzz-other"
GENESIS = crypto.sha256(b"tdml fuzz genesis")
VERSION = 1
SEVERITIES = {SEVERITY_MINOR, SEVERITY_MAJOR, SEVERITY_FATAL}
OUR_CHALLENGE = crypto.sha256(b"our challenge")
PEER_CHALLENGE = crypto.sha256(b"peer challenge")
MODES = ("fresh", "await-auth", "established")


def our_key() -> Keypair:
    return Keypair.from_seed(crypto.sha256(b"tdml-fuzz/us"))


def peer_key() -> Keypair:
    return Keypair.from_seed(crypto.sha256(b"tdml-fuzz/peer"))


def new_session(now: float = 0.0) -> Session:
    """Our side of a connection, started (its Hello sent)."""
    session = Session(
        our_key(), CHAIN_ID, GENESIS, VERSION, "127.0.0.1:26656", 7, now=now, challenge=OUR_CHALLENGE
    )
    session.start()
    return session


def _hello(key: Keypair, *, chain_id: str = CHAIN_ID, genesis: Hash32 = GENESIS, version: int = VERSION) -> bytes:
    return encode_frame(
        Hello(version, chain_id, genesis, key.public_key, "127.0.0.1:30303", Challenge(PEER_CHALLENGE), Height(5))
    )


def _auth(
    key: Keypair,
    *,
    challenge: bytes = OUR_CHALLENGE,
    chain_id: str = CHAIN_ID,
    domain: bytes = DOMAIN_HANDSHAKE,
    claimed: Keypair | None = None,
) -> bytes:
    """An Auth signed by ``key`` over a proof that names ``claimed`` (default ``key``)."""
    proof = compute_handshake_proof(challenge, (claimed or key).public_key, chain_id, GENESIS)
    return encode_frame(Auth(key.sign_value(domain, chain_id, proof)))


def _signed_vote(key: Keypair, chain_id: str) -> SignedVote:
    vote = Vote(1, Height(3), Round(0), Hash32(crypto.sha256(b"block")), key.public_key)
    return SignedVote(vote, key.sign_value(DOMAIN_VOTE, chain_id, vote))


def _signed_tx(key: Keypair, chain_id: str) -> SignedTransaction:
    tx = Transaction(key.public_key, 0, Amount(1), Transfer(Address(b"\x02" * 20), Amount(5)))
    return SignedTransaction(tx, key.sign_value(DOMAIN_TX, chain_id, tx))


@dataclass
class SessionCorpus:
    valid_hello: bytes
    valid_auth: bytes
    handshake: tuple[bytes, ...]
    after: tuple[bytes, ...]
    everything: tuple[bytes, ...]
    established: Session | None = None
    now: float = 0.0
    # Frames already known to decode, for the Send check (saves re-decoding our own Goodbyes).
    sent_ok: set[bytes] = field(default_factory=set)


def build_corpus(seed: int) -> SessionCorpus:
    rng = random.Random(f"tdml-fuzz-session-corpus/{seed}")
    peer, us, other = peer_key(), our_key(), Keypair.from_seed(crypto.sha256(b"tdml-fuzz/other"))
    valid_hello = _hello(peer)
    valid_auth = _auth(peer)
    handshake = (
        valid_hello,
        valid_auth,
        _hello(peer, chain_id=OTHER_CHAIN),
        _hello(peer, genesis=Hash32(crypto.sha256(b"other genesis"))),
        _hello(peer, version=VERSION + 1),
        _hello(us),  # ourselves
        _auth(peer, chain_id=OTHER_CHAIN),  # signed for another chain
        _auth(peer, challenge=PEER_CHALLENGE),  # over the wrong challenge
        _auth(peer, domain=DOMAIN_VOTE),  # under another domain
        _auth(other, claimed=peer),  # another key's signature
        encode_frame(Auth(Signature(bytes(64)))),
        encode_frame(Auth(Signature(rng.randbytes(64)))),
        encode_frame(Goodbye("bye")),
    )
    vote, tx = _signed_vote(peer, CHAIN_ID), _signed_tx(peer, CHAIN_ID)
    after_msgs: list[WireMessage] = [
        PeersRequest(),
        Peers(("127.0.0.1:1", "[::1]:2", "host.example:3")),
        Status(Height(9), Hash32(crypto.sha256(b"tip"))),
        Gossip(vote),
        Gossip(tx),
        Gossip(_signed_vote(peer, OTHER_CHAIN)),  # wrong chain id: the node, not the session, judges it
        Gossip(SignedVote(vote.vote, Signature(bytes(64)))),  # invalid signature
        Gossip(SignedTransaction(tx.tx, Signature(rng.randbytes(64)))),
        BlocksRequest(RequestId(1), Height(1), 4),
        Blocks(RequestId(1), (BlockWithCommit(b"\x93\x2a\x01\xc0", b"\x90"),)),
        BlobRequest(RequestId(2), Hash32(crypto.sha256(b"blob")), 0, 1024),
        BlobChunk(RequestId(2), Hash32(crypto.sha256(b"blob")), 0, 3, b"abc"),
        NotFound(RequestId(3)),
    ]
    for cls in (Peers, Status, Gossip, BlocksRequest, Blocks, BlobRequest, BlobChunk, NotFound, Goodbye):
        for _ in range(4):
            after_msgs.append(message_of(cls, rng))
    after = tuple(encode_frame(m) for m in after_msgs)
    return SessionCorpus(valid_hello, valid_auth, handshake, after, handshake + after)


@dataclass(frozen=True)
class SessionInput:
    mode: str
    frame: bytes
    how: str

    def context(self) -> str:
        return f"mode={self.mode} after {self.how}"


def generate(corpus: SessionCorpus, rng: random.Random) -> SessionInput:
    mode = rng.choice(MODES)
    pool = corpus.handshake if mode != "established" and rng.random() < 0.7 else corpus.after
    if mode == "await-auth" and rng.random() < 0.5:
        base = rng.choice((corpus.valid_auth, *corpus.handshake[6:12]))
    else:
        base = rng.choice(pool)
    roll = rng.random()
    if roll < 0.08:
        return SessionInput(mode, base, "nothing (valid)")
    if roll < 0.11:
        return SessionInput(mode, random_msgpack(rng), "random msgpack")
    if roll < 0.13:
        return SessionInput(mode, rng.randbytes(rng.randrange(80)), "random bytes")
    if roll < 0.14:
        # A frame too large for the state (the handshake bound is 4 KiB).
        return SessionInput(mode, base + bytes(rng.choice([4096, 70_000])), "oversized")
    frame, names = mutate(base, rng, corpus.everything)
    return SessionInput(mode, frame, "+".join(names))


def _session_for(corpus: SessionCorpus, mode: str, *, reuse: bool) -> tuple[Session, float]:
    if mode == "established":
        if reuse and corpus.established is not None and corpus.established.is_established:
            corpus.now += 1.0  # a second between frames: the rate limit never bites
            return corpus.established, corpus.now
        session = new_session()
        session.receive(corpus.valid_hello, 0.0)
        events = session.receive(corpus.valid_auth, 0.0)
        if not session.is_established:
            raise FuzzFailure("setup", f"the valid handshake did not establish: {events}")
        if reuse:
            corpus.established, corpus.now = session, 1.0
        return session, 1.0
    session = new_session()
    if mode == "await-auth":
        session.receive(corpus.valid_hello, 0.0)
    return session, 0.0


def _kind(event: SessionEvent) -> str:
    if isinstance(event, Violation):
        return f"Violation/{event.severity}"
    return type(event).__name__


def check(corpus: SessionCorpus, inp: SessionInput, *, reuse: bool = True) -> str:
    """Feed the frame to a session in the input's state and check the events."""
    session, now = _session_for(corpus, inp.mode, reuse=reuse)
    events = session.receive(inp.frame, now)
    if not isinstance(events, list):
        raise FuzzFailure("events", f"receive returned {type(events).__name__}")
    _check_events(corpus, inp, session, events)
    return inp.mode + ":" + ("+".join(sorted({_kind(e) for e in events})) or "nothing")


def _check_events(corpus: SessionCorpus, inp: SessionInput, session: Session, events: list[SessionEvent]) -> None:
    allowed: set[type] = (
        {Violation, Message, Closed} if inp.mode == "established" else {Send, Violation, Closed, Established}
    )
    for event in events:
        if type(event) not in allowed:
            raise FuzzFailure("event", f"{type(event).__name__} in mode {inp.mode}: {event!r}")
        if isinstance(event, Violation):
            if event.severity not in SEVERITIES or not event.reason:
                raise FuzzFailure("severity", f"violation {event!r} has no known severity")
        elif isinstance(event, Send):
            if event.frame not in corpus.sent_ok:
                try:
                    decode_frame(event.frame)
                except FrameError as exc:
                    raise FuzzFailure("send", f"the session sent an invalid frame: {exc}") from exc
                if len(corpus.sent_ok) < 10_000:
                    corpus.sent_ok.add(event.frame)
        elif isinstance(event, Established):
            if inp.frame != corpus.valid_auth or event.peer_key != peer_key().public_key:
                raise FuzzFailure("auth", "established by a frame other than the one valid Auth")
        elif isinstance(event, Message):
            if isinstance(event.msg, Hello | Auth | Goodbye):
                raise FuzzFailure("message", f"handshake message {type(event.msg).__name__} delivered")
            if encode(event.msg) != inp.frame:
                raise FuzzFailure("message", "a delivered message is not the canonical form of its frame")
        elif isinstance(event, Closed) and inp.mode == "established":
            if not event.by_peer or not _is_goodbye(inp.frame):
                raise FuzzFailure("closed", f"an established session closed on a non-Goodbye frame: {event!r}")
    violated = any(isinstance(e, Violation) for e in events)
    if inp.mode == "established":
        if violated and not session.is_established:
            raise FuzzFailure("state", "a violation after the handshake ended the session")
        if len(events) != 1:
            raise FuzzFailure("events", f"an established session answered one frame with {events!r}")
    elif violated:
        if not session.is_closed or not any(isinstance(e, Closed) and not e.by_peer for e in events):
            raise FuzzFailure("state", "a violation before the handshake left the session open")


def _is_goodbye(frame: bytes) -> bool:
    try:
        return isinstance(decode_frame(frame), Goodbye)
    except FrameError:
        return False
